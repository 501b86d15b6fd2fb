"""The one way svl.infer turns a checkpoint into a ready model: `load_for_inference`.

TODO(loading-path): a single loader for every svl checkpoint, dispatching on its `kind`, is being
written in svl.models; when it lands this module becomes a call to it. Until then it holds the
loaders the task files had (`load_classifier`, `load_segmenter`, `load_detector`,
`load_task_checkpoint`): none needs a task class, so svl.infer imports nothing from svl.tasks.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from torch import nn

from svl.checkpoint import read_checkpoint_meta
from svl.models import create_model
from svl.models.heads import load_zeroshot_model

__all__ = ["CLASSIFIER_KIND", "DETECTOR_KIND", "SEGMENTER_KIND", "load_classifier", "load_for_inference"]

# The `kind` the training tasks write into a checkpoint's meta (svl/tasks/finetune.py, segment.py,
# detect.py hold the same strings as CLASSIFIER_KIND, SEGMENTER_KIND, DETECTOR_KIND; svl.infer may not
# import svl.tasks, and tests/test_infer.py checks the two agree). TODO(loading-path): one home.
CLASSIFIER_KIND = "svl-classifier"
SEGMENTER_KIND = "svl-segmenter"
DETECTOR_KIND = "svl-detector"
_TASK_OF = {SEGMENTER_KIND: "segmentation", DETECTOR_KIND: "detection"}


def load_for_inference(
    checkpoint: str | os.PathLike[str],
    head: str | os.PathLike[str] | None = None,
    kind: str | None = None,
) -> tuple[nn.Module, list[str], dict[str, Any]]:
    """(model in eval mode, class names, meta) of a checkpoint svl predicts with.

    With `head` (a Rep-VLI head file) the checkpoint is a pretrained encoder folded into a zero-shot
    classifier and meta is the head's. Otherwise the checkpoint's meta `kind` says what it holds (a
    fine-tuned classifier, segmenter or detector, each carrying its class names); `kind` given, any
    other file is refused with a message naming it and the command that makes the right one.
    """
    if head is not None:
        return load_zeroshot_model(checkpoint, head)
    if kind not in (None, CLASSIFIER_KIND, *_TASK_OF):
        raise ValueError(f"kind must be one of {[CLASSIFIER_KIND, *_TASK_OF]}, got {kind!r}")
    p = Path(checkpoint)
    if not p.is_file():
        raise FileNotFoundError(f"checkpoint {p} does not exist")
    meta = read_checkpoint_meta(p)
    held = meta.get("kind")
    want = kind or (held if held in _TASK_OF else CLASSIFIER_KIND)
    if want in _TASK_OF:
        if held != want:
            task = _TASK_OF[want]
            raise ValueError(
                f"{p}: not a {task} checkpoint (kind {held!r}); train one with `svl finetune task={task}`"
            )
    elif held != want or not meta.get("class_names"):
        raise ValueError(
            f"{p}: not a fine-tuned classifier (kind {held!r}); a pretraining checkpoint "
            "needs a Rep-VLI head file (--head, built with `svl build-head`)"
        )
    return create_model(None, pretrained=p).eval(), list(meta["class_names"]), meta


def load_classifier(checkpoint: str | os.PathLike[str]) -> tuple[nn.Module, list[str], dict[str, Any]]:
    """A fine-tuned classifier checkpoint: (encoder with its K-way head, class names, meta)."""
    return load_for_inference(checkpoint, kind=CLASSIFIER_KIND)
