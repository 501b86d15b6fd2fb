"""Build a Rep-VLI head file: embed a vocabulary with the text teacher, project, fold (docs/SPEC.md §5).

The one step of zero-shot classification that needs a text model; everything after it
(`svl.models.heads`: load, attach, fold) runs without one.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from svl.models.heads import build_class_weights, fold_head, head_metadata, save_head
from svl.models.loading import load_encoder
from svl.teachers.base import create_teacher
from svl.vocab import class_embeddings, class_texts, load_templates

__all__ = ["build_head_file"]


def build_head_file(
    checkpoint: str | os.PathLike[str],
    class_names: Sequence[str],
    out: str | os.PathLike[str],
    teacher: str | None = None,
    text_mode: str = "names",
    templates: Sequence[str] | None = None,
    device: str | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Embed the vocabulary with the text teacher, project, fold, and save a head file.

    `text_mode="names"` puts each name into the (default: 64 shipped) prompt templates and averages;
    "descriptions" embeds each class's shipped one-sentence shape description as is (templates
    would garble a full sentence). `teacher=None` uses the checkpoint's recorded text teacher.
    """
    names = [str(n) for n in class_names]
    if not names:
        raise ValueError("the class list is empty")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"duplicate class names: {dup}")
    ckpt = Path(checkpoint)
    if not ckpt.exists():
        raise FileNotFoundError(f"checkpoint {ckpt} does not exist")
    model, tensors, cmeta = load_encoder(ckpt)
    recorded = (cmeta.get("teachers") or {}).get("text") if isinstance(cmeta.get("teachers"), dict) else None
    teacher_id = teacher or recorded or "minilm"
    if teacher and recorded and teacher != recorded:
        raise ValueError(
            f"{ckpt}: trained with text teacher {recorded!r}, but --teacher {teacher!r} was given; "
            "the text projection only fits the teacher it was trained with"
        )
    texts = class_texts(names, text_mode)
    if text_mode == "names":
        tmpl = list(templates) if templates is not None else load_templates()
    else:
        tmpl = ["{}"]
    t = create_teacher(teacher_id, device=device)
    emb = class_embeddings(t, texts, tmpl)
    W = build_class_weights(tensors, emb)
    fold_head(model, W)
    meta = head_metadata(names, texts, getattr(t, "id", teacher_id), tmpl, text_mode, ckpt, cmeta)
    path = save_head(out, model.head, W, meta)
    return path, meta
