"""Prompt templates and prompt-ensembled class embeddings (the input of the Rep-VLI head).

The 64 templates ship with the package (svl/teachers/templates.json, from Uni3D / ULIP, licence in
templates.LICENSE) so class embeddings can be rebuilt offline for any vocabulary.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import lru_cache
from importlib import resources

import torch
import torch.nn.functional as F

__all__ = ["load_templates", "class_embeddings", "format_prompts"]

DEFAULT_TEMPLATE_SET = "modelnet40_64"


@lru_cache(maxsize=4)
def _template_file() -> dict[str, list[str]]:
    ref = resources.files("svl.teachers").joinpath("templates.json")
    try:
        data = json.loads(ref.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:  # pragma: no cover - broken install
        raise ValueError(f"{ref}: cannot read the shipped prompt templates ({e})") from e
    return {k: list(v) for k, v in data.items() if isinstance(v, list)}


def load_templates(name: str = DEFAULT_TEMPLATE_SET) -> list[str]:
    """The shipped template list `name` ("modelnet40_64" or "shapenet_64"; both are the 64 ULIP prompts)."""
    sets = _template_file()
    if name not in sets:
        raise ValueError(f"unknown template set {name!r}; shipped sets: {sorted(sets)}")
    return list(sets[name])


def _check_templates(templates: Sequence[str]) -> list[str]:
    templates = [templates] if isinstance(templates, str) else list(templates)
    if not templates:
        raise ValueError("templates must not be empty")
    for t in templates:
        if not isinstance(t, str) or t.count("{}") != 1:
            raise ValueError(f"each template must be a string with exactly one '{{}}', got {t!r}")
    return templates


def format_prompts(name: str, templates: Sequence[str] | None = None) -> list[str]:
    """All prompts for one class name (underscores read as spaces: 'flower_pot' -> 'flower pot')."""
    templates = _check_templates(load_templates() if templates is None else templates)
    text = name.replace("_", " ").strip()
    return [t.format(text) for t in templates]


def class_embeddings(
    teacher,
    names: Sequence[str],
    templates: Sequence[str] | None = None,
) -> torch.Tensor:
    """(K, dim) class embeddings: mean over templates of the teacher's text embedding, L2-normalised.

    `teacher` is any object with `embed_texts(list[str]) -> (N, dim)` (a `Teacher`). All K x T
    prompts go through the teacher in one batched call.
    """
    if isinstance(names, str):
        raise ValueError("class_embeddings: names must be a list of class names, not a single string")
    names = list(names)
    if not names:
        raise ValueError("class_embeddings: names must not be empty")
    bad = [n for n in names if not isinstance(n, str) or not n.strip()]
    if bad:
        raise ValueError(f"class_embeddings: class names must be non-empty strings, got {bad[0]!r}")
    templates = _check_templates(load_templates() if templates is None else templates)
    prompts = [p for n in names for p in format_prompts(n, templates)]
    emb = torch.as_tensor(teacher.embed_texts(prompts)).float()
    if emb.ndim != 2 or emb.shape[0] != len(prompts):
        raise ValueError(f"teacher returned shape {tuple(emb.shape)} for {len(prompts)} prompts")
    emb = F.normalize(emb, dim=-1).view(len(names), len(templates), -1).mean(1)
    return F.normalize(emb, dim=-1)
