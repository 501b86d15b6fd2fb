"""Segmentation metrics: confusion matrix, per-class IoU, mIoU, overall accuracy, and ShapeNetPart's
instance / class mIoU (the PointNet++ protocol every part-segmentation paper reports).

Conventions (the SemanticKITTI API's `np_ioueval.py` and Pointcept's tester): IoU_c = TP / (TP + FP
+ FN) from the confusion matrix summed over every scored point of the test set (points labelled
`ignore_index` are not scored). mIoU and mAcc average over the dataset's FIXED class list (19 for
SemanticKITTI, 13 S3DIS, 20 ScanNet, 41 modelnet40_scenes, 50 ShapeNetPart parts), not over the
classes that happen to occur: a class with no ground truth and no prediction (IoU 0/0) counts 0 in
the mean, as those tools' epsilon in the denominator makes it; its own IoU is reported as None, and
every class without ground truth is listed under `absent_classes` (`miou_present` gives the mean
over the classes with ground truth only, the number a reader may want beside it). For ShapeNetPart
a shape's IoU averages over the parts of its category only, and a part absent from both the shape's
labels and its predictions counts 1.0.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from svl.data.segmentation import SHAPENETPART_PARTS

__all__ = [
    "SHAPENETPART_PARTS",
    "confusion",
    "iou_from_confusion",
    "part_miou",
    "segmentation_metrics",
]


def confusion(
    labels: np.ndarray, pred: np.ndarray, num_classes: int, ignore_index: int | None = None
) -> np.ndarray:
    """(K, K) counts, rows = label, columns = prediction; points labelled `ignore_index` are skipped."""
    y, p = np.asarray(labels).ravel(), np.asarray(pred).ravel()
    if y.shape != p.shape:
        raise ValueError(f"confusion: {y.size} labels but {p.size} predictions")
    keep = np.ones(y.shape, bool) if ignore_index is None else y != ignore_index
    y, p = y[keep].astype(np.int64), p[keep].astype(np.int64)
    bad = (y < 0) | (y >= num_classes) | (p < 0) | (p >= num_classes)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"confusion: label {y[i]} / prediction {p[i]} outside 0..{num_classes - 1}")
    return np.bincount(y * num_classes + p, minlength=num_classes**2).reshape(num_classes, num_classes)


def iou_from_confusion(cm: np.ndarray) -> np.ndarray:
    """Per-class IoU = TP / (TP + FP + FN); NaN where that is 0/0 (no label and no prediction)."""
    cm = np.asarray(cm, np.float64)
    tp = np.diag(cm)
    union = cm.sum(0) + cm.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / union, np.nan)


def segmentation_metrics(
    labels: np.ndarray, pred: np.ndarray, class_names: Sequence[str], ignore_index: int | None = None
) -> dict[str, Any]:
    """`miou`, `oa`, `macc` (fractions, means over all of `class_names`; see the module docstring),
    per-class IoU, `absent_classes`, `points_scored` and the confusion counts (rows = label)."""
    k = len(class_names)
    cm = confusion(labels, pred, k, ignore_index)
    iou = iou_from_confusion(cm)
    support = cm.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = np.where(support > 0, np.diag(cm) / support, np.nan)
    total = int(cm.sum())
    present = support > 0
    ious = [None if np.isnan(v) else float(v) for v in iou]  # None: 0/0, no label and no prediction
    return {
        "miou": float(np.nan_to_num(iou).mean()) if total else float("nan"),
        "oa": float(np.trace(cm) / total) if total else float("nan"),
        "macc": float(np.nan_to_num(acc).mean()) if total else float("nan"),
        "miou_present": float(iou[present].mean()) if total else float("nan"),
        "points_scored": total,
        "absent_classes": [c for c, p in zip(class_names, present) if not p],
        "class_iou": dict(zip(class_names, ious)),
        "per_class": [
            {"class": c, "iou": ious[i], "points": int(support[i]), "predicted": int(cm[:, i].sum())}
            for i, c in enumerate(class_names)
        ],
        "confusion": cm.tolist(),
    }


def part_miou(
    labels: Sequence[np.ndarray], preds: Sequence[np.ndarray], categories: Sequence[str]
) -> dict[str, Any]:
    """ShapeNetPart instance mIoU (mean over shapes) and class mIoU (mean over categories of their
    shapes' mean), each shape scored on its own category's parts only."""
    if not len(labels) == len(preds) == len(categories):
        raise ValueError(
            f"part_miou: {len(labels)} label arrays, {len(preds)} predictions, {len(categories)} categories"
        )
    shape_iou, by_cat = [], {}
    for i, (y, p, cat) in enumerate(zip(labels, preds, categories)):
        if cat not in SHAPENETPART_PARTS:
            raise ValueError(f"part_miou: shape {i}: unknown category {cat!r}")
        y, p = np.asarray(y).ravel(), np.asarray(p).ravel()
        if y.shape != p.shape:
            raise ValueError(f"part_miou: shape {i} has {y.size} labels but {p.size} predictions")
        ious = []
        for part in SHAPENETPART_PARTS[cat]:
            inter = np.sum((y == part) & (p == part))
            union = np.sum((y == part) | (p == part))
            ious.append(1.0 if union == 0 else inter / union)
        shape_iou.append(float(np.mean(ious)))
        by_cat.setdefault(cat, []).append(shape_iou[-1])
    per_cat = {c: float(np.mean(v)) for c, v in by_cat.items()}
    return {
        "instance_miou": float(np.mean(shape_iou)),
        "class_miou": float(np.mean(list(per_cat.values()))),
        "per_category": per_cat,
        "shapes": len(shape_iou),
    }
