"""The vocabulary: class lists, class-name normalisation, shipped descriptions, prompt templates and
prompt-averaged class embeddings (the input of a Rep-VLI head, docs/SPEC.md §5).

Every place that compares, prints or embeds a class name goes through here, so "flower_pot",
"Flower Pot" and "flower pot" are the same class everywhere. The shipped files live in
svl/data/labels/ (licences in LICENSE.md and templates.LICENSE there). numpy/torch-free at import.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_TEMPLATE_SET",
    "MODELNET10_CLASSES",
    "TEXT_MODES",
    "class_descriptions",
    "class_embeddings",
    "class_texts",
    "display_name",
    "format_prompts",
    "load_class_names",
    "load_templates",
    "name_key",
    "prompt_average",
    "read_list_file",
    "templates_hash",
]

TEXT_MODES = ("names", "descriptions")
DEFAULT_TEMPLATE_SET = "modelnet40_64"
# The unseen half of the ModelNet40 3D zero-shot benchmark (the ModelNet10 classes).
MODELNET10_CLASSES = (
    "bathtub", "bed", "chair", "desk", "dresser", "monitor", "night_stand", "sofa", "table", "toilet",
)  # fmt: skip


def _label_file(name: str) -> Any:
    return resources.files("svl.data").joinpath("labels", name)


# ----------------------------------------------------------------------------- names
def name_key(name: str) -> str:
    """The matching key of a class name: case-insensitive, '_' == ' ' ("Flower_Pot" -> "flower pot")."""
    return " ".join(str(name).replace("_", " ").lower().split())


def display_name(name: str) -> str:
    """A class name as prompts read it: 'night_stand' -> 'night stand' (case kept)."""
    return " ".join(str(name).replace("_", " ").split())


def load_class_names(which: str) -> list[str]:
    """Shipped category lists in label order: 'modelnet40', 'scanobjectnn', 'modelnet40_openshape',
    'scanobjnn_openshape', 'objaverse_lvis' (1156 LVIS categories, OpenShape order)."""
    if which == "modelnet40":
        return _label_file("modelnet40_shape_names.txt").read_text().split()
    if which == "scanobjectnn":
        return _label_file("scanobjectnn_shape_names_ext.txt").read_text().split()
    labels = json.loads(_label_file("uni3d_labels.json").read_text())
    key = {"objaverse_lvis": "objaverse_lvis_openshape"}.get(which, which)
    if key not in labels:
        raise ValueError(
            f"unknown class list {which!r}; known: modelnet40, scanobjectnn, {', '.join(labels)}"
        )
    return list(labels[key])


def read_list_file(path: str | Path, what: str = "class list") -> list[str]:
    """Non-empty strings from a .json list or a text file (one per line, '#' comments skipped)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{what} {p} does not exist")
    text = p.read_text(encoding="utf-8")
    if p.suffix.lower() == ".json":
        try:
            items = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{p}: invalid JSON ({e})") from None
        if not isinstance(items, list) or not all(isinstance(n, str) for n in items):
            raise ValueError(f"{p}: expected a JSON list of strings")
    else:
        items = [ln for ln in text.splitlines() if not ln.lstrip().startswith("#")]
    items = [n.strip() for n in items if n.strip()]
    if not items:
        raise ValueError(f"{p}: the {what} is empty")
    return items


# ----------------------------------------------------------------------------- descriptions
@lru_cache(maxsize=1)
def _descriptions_file() -> dict[str, Any]:
    ref = _label_file("class_descriptions.json")
    try:
        data = json.loads(ref.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:  # pragma: no cover - broken install
        raise ValueError(f"{ref}: cannot read the shipped class descriptions ({e})") from e
    if not isinstance(data.get("descriptions"), dict):
        raise ValueError(f"{ref}: expected a 'descriptions' object mapping class name -> sentence")
    return data


def class_descriptions() -> dict[str, str]:
    """The shipped one-sentence visual descriptions, keyed by `name_key`."""
    return {name_key(k): v for k, v in _descriptions_file()["descriptions"].items()}


def class_texts(names: Sequence[str], mode: str = "names") -> list[str]:
    """The text each class is embedded from: its display name, or its shipped shape description.

    The same treatment is applied to every class, seen or unseen.
    """
    if isinstance(names, str):
        raise ValueError("class_texts: names must be a list of class names, not a single string")
    names = list(names)
    if mode == "names":
        return [display_name(n) for n in names]
    if mode != "descriptions":
        raise ValueError(f"unknown text mode {mode!r}; use one of {TEXT_MODES}")
    table = class_descriptions()
    missing = [n for n in names if name_key(n) not in table]
    if missing:
        raise ValueError(
            f"svl/data/labels/class_descriptions.json has no description for {len(missing)} class(es): "
            f"{missing[:10]}; add them there or use mode='names'"
        )
    return [table[name_key(n)] for n in names]


# ----------------------------------------------------------------------------- templates
@lru_cache(maxsize=4)
def _template_file() -> dict[str, list[str]]:
    ref = _label_file("templates.json")
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


def templates_hash(templates: Sequence[str]) -> str:
    """Stable sha256 of a template list (order matters: it is part of what was averaged)."""
    return hashlib.sha256(json.dumps(list(templates), ensure_ascii=False).encode("utf-8")).hexdigest()


def format_prompts(name: str, templates: Sequence[str] | None = None) -> list[str]:
    """All prompts for one class name, read as its display name ('flower_pot' -> 'flower pot')."""
    templates = _check_templates(load_templates() if templates is None else templates)
    text = display_name(name).strip()
    return [t.format(text) for t in templates]


# ----------------------------------------------------------------------------- embeddings
def prompt_average(emb: Any, num_classes: int, normalize_prompts: bool = True) -> Any:
    """(K*T, dim) prompt embeddings (class-major) -> (K, dim): mean over the T templates, L2-normalised.

    `normalize_prompts=False` skips re-normalising each prompt (for teachers whose output already
    is unit-norm, where re-normalising only moves the last bit).
    """
    import torch.nn.functional as F

    if normalize_prompts:
        emb = F.normalize(emb, dim=-1)
    return F.normalize(emb.view(num_classes, -1, emb.shape[-1]).mean(1), dim=-1)


def class_embeddings(teacher: Any, names: Sequence[str], templates: Sequence[str] | None = None) -> Any:
    """(K, dim) class embeddings: mean over templates of the teacher's text embedding, L2-normalised.

    `teacher` is any object with `embed_texts(list[str]) -> (N, dim)` (a `svl.teachers.Teacher`).
    All K x T prompts go through the teacher in one batched call.
    """
    import torch

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
    return prompt_average(emb, len(names))
