"""Frozen teachers (text / image embedders), the point-cloud renderer, prompts and the embedding store.

Heavy libraries (sentence_transformers, transformers, open_clip) load only when a teacher is built.
"""

from .base import Teacher, create_teacher, list_teachers
from .prompts import class_embeddings, format_prompts, load_templates
from .render import render_mesh_views, render_views, sample_mesh_points, save_view_grid, view_rotations
from .store import (
    EmbeddingStore,
    PrecomputedFeatures,
    embed_dataset_views,
    embed_texts_cached,
)

__all__ = [
    "Teacher",
    "create_teacher",
    "list_teachers",
    "class_embeddings",
    "format_prompts",
    "load_templates",
    "render_views",
    "render_mesh_views",
    "sample_mesh_points",
    "save_view_grid",
    "view_rotations",
    "EmbeddingStore",
    "PrecomputedFeatures",
    "embed_dataset_views",
    "embed_texts_cached",
]
