"""Frozen teachers (text / image embedders) and the embedding store.

Prompt templates and prompt-averaged class embeddings live in svl.vocab; the point-cloud renderer in
svl.data.render (re-exported here).

Importing the package registers the built-in teachers (text.py, image.py, clip.py each register their
classes in `TEACHERS`); heavy libraries (sentence_transformers, transformers, open_clip) load only
when a teacher is built.
"""

from svl.data.render import (  # the renderer lives on the data floor; its names stay importable here
    render_mesh_views,
    render_views,
    sample_mesh_points,
    save_view_grid,
    view_rotations,
)

from . import clip, image, text  # noqa: F401  (register the built-in teachers)
from .base import TEACHERS, Teacher, create_teacher, list_teachers, register_aliases
from .store import (
    EmbeddingStore,
    PrecomputedFeatures,
    embed_dataset_views,
    embed_texts_cached,
    load_point_arrays,
    read_texts,
)

__all__ = [
    "TEACHERS",
    "Teacher",
    "create_teacher",
    "list_teachers",
    "register_aliases",
    "render_views",
    "render_mesh_views",
    "sample_mesh_points",
    "save_view_grid",
    "view_rotations",
    "EmbeddingStore",
    "PrecomputedFeatures",
    "embed_dataset_views",
    "embed_texts_cached",
    "load_point_arrays",
    "read_texts",
]
