"""Segmentation metrics: confusion matrix, per-class IoU, mIoU, overall accuracy, and ShapeNetPart's
instance / class mIoU (the PointNet++ protocol every part-segmentation paper reports).

Conventions (stated because papers differ): IoU_c = TP / (TP + FP + FN) from the confusion matrix
summed over the whole test set; a class that never occurs in the labels nor in the predictions has
no IoU (NaN) and is left out of the mean. For ShapeNetPart a shape's IoU averages over the parts of
its category only, and a part absent from both the shape's labels and its predictions counts 1.0.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from svl.data.segmentation import SHAPENETPART_PARTS

__all__ = [
    "SHAPENETPART_PARTS",
    "class_colors",
    "confusion",
    "iou_from_confusion",
    "part_miou",
    "plot_segmentation",
    "segment_files",
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
    """Per-class IoU = TP / (TP + FP + FN); NaN for a class absent from labels and predictions."""
    cm = np.asarray(cm, np.float64)
    tp = np.diag(cm)
    union = cm.sum(0) + cm.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / union, np.nan)


def segmentation_metrics(
    labels: np.ndarray, pred: np.ndarray, class_names: Sequence[str], ignore_index: int | None = None
) -> dict[str, Any]:
    """`miou`, `oa`, `macc` (fractions), per-class IoU and the confusion matrix over all points."""
    k = len(class_names)
    cm = confusion(labels, pred, k, ignore_index)
    iou = iou_from_confusion(cm)
    support = cm.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = np.where(support > 0, np.diag(cm) / support, np.nan)
    total = cm.sum()
    return {
        "miou": float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan"),
        "oa": float(np.trace(cm) / total) if total else float("nan"),
        "macc": float(np.nanmean(acc)) if np.isfinite(acc).any() else float("nan"),
        "per_class": [
            {"class": c, "iou": None if np.isnan(iou[i]) else float(iou[i]), "points": int(support[i])}
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


def class_colors(k: int) -> np.ndarray:
    """(k, 3) uint8 distinct colours (tab20, then hsv) for k classes."""
    from matplotlib import colormaps

    base = colormaps["tab20"](np.arange(20))[:, :3]
    extra = colormaps["hsv"](np.linspace(0, 1, max(k - 20, 1), endpoint=False))[:, :3]
    return (255 * np.concatenate([base, extra])[:k]).astype(np.uint8)


def plot_segmentation(
    xyz: np.ndarray, labels: np.ndarray, class_names: Sequence[str], path: str | Path, title: str = ""
) -> Path:
    """Top (x-y) and side (x-z) views of points coloured by class, with a legend of the classes present."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from svl.utils import atomic_write

    cols = class_colors(len(class_names)) / 255.0
    fig = Figure(figsize=(12, 5.5), dpi=100)
    FigureCanvasAgg(fig)
    present = np.unique(labels)
    for j, (a, b, name) in enumerate(((0, 1, "top (x-y)"), (0, 2, "side (x-z)"))):
        ax = fig.add_subplot(1, 2, j + 1)
        ax.scatter(xyz[:, a], xyz[:, b], c=cols[labels], s=1.5, linewidths=0)
        ax.set_aspect("equal")
        ax.set_title(name, fontsize=9)
    handles = [
        fig.axes[0].scatter([], [], color=cols[c], s=20, label=class_names[c]) for c in present if c >= 0
    ]
    fig.legend(handles=handles, loc="center right", fontsize=7, frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.subplots_adjust(right=0.83)
    with atomic_write(path) as fh:
        fig.savefig(fh, format="png")
    return Path(path)


def segment_files(
    net: Any,
    class_names: Sequence[str],
    paths: Sequence[str | Path],
    out_dir: str | Path,
    format: str | None = None,
) -> list[dict[str, Any]]:
    """Per-point labels of each point-cloud file, written as OUT/<stem>.ply (with a `label` property),
    OUT/<stem>.npy and OUT/<stem>.png (coloured by class); coordinates as stored (metres for scenes)."""
    import torch

    from svl.data import collate_points, load_points
    from svl.data.readers.ply import write_ply_labels

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cols = class_colors(len(class_names))
    results = []
    for p in paths:
        s = load_points(p, format=format)
        item = {"xyz": s["xyz"], "index": 0, **({"rgb": s["rgb"]} if s.get("rgb") is not None else {})}
        with torch.no_grad():
            logits = net.eval()(collate_points([item]))[0]
        if logits.shape[-1] != len(class_names):
            raise ValueError(
                f"model returned {logits.shape[-1]} scores per point for {len(class_names)} classes"
            )
        pred = logits.argmax(-1).numpy()
        stem = out / Path(p).stem
        write_ply_labels(stem.with_suffix(".ply"), s["xyz"], pred, cols[pred])
        from svl.utils import atomic_write

        with atomic_write(stem.with_suffix(".npy")) as fh:
            np.save(fh, pred.astype(np.int32))
        plot_segmentation(s["xyz"], pred, class_names, stem.with_suffix(".png"), title=Path(p).name)
        counts = np.bincount(pred, minlength=len(class_names))
        results.append({
            "file": str(p), "points": int(len(pred)), "ply": str(stem.with_suffix(".ply")),
            "png": str(stem.with_suffix(".png")),
            "classes": {class_names[c]: int(n) for c, n in enumerate(counts) if n},
        })  # fmt: skip
    return results
