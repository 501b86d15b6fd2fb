"""Per-point labels from a segmentation checkpoint: of point-cloud files (`segment`, what `svl segment`
writes) and of a dataset's scenes (`predict_points`, what the segmentation task scores)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from svl.data import collate_points, load_points
from svl.data.readers.ply import write_ply_labels
from svl.models.loading import SEGMENTER_KIND, load_model
from svl.plots import class_colors, plot_segmentation
from svl.utils import atomic_write, progress

__all__ = ["predict_points", "segment"]


@torch.no_grad()
def predict_points(net: nn.Module, dataset: Any, batch_size: int, desc: str = "segment") -> tuple[list, list]:
    """Per-scene (labels, predictions) arrays of `net` over `dataset`, in order."""
    net.eval()
    ys, ps = [], []
    idx = list(range(len(dataset)))
    for s in progress([idx[i : i + batch_size] for i in range(0, len(idx), batch_size)], desc=desc):
        b = collate_points([dataset[i] for i in s])
        pred = net(b).argmax(-1).numpy()
        y = b.extras["segment"].numpy()
        ys += list(y)
        ps += list(pred)
    return ys, ps


def segment(
    model: str | os.PathLike[str] | nn.Module,
    files: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    *,
    class_names: Sequence[str] | None = None,
    format: str | None = None,
) -> list[dict[str, Any]]:
    """Per-point labels of each point-cloud file, written as OUT/<stem>.ply (with a `label` property),
    OUT/<stem>.npy and OUT/<stem>.png (coloured by class); coordinates as stored (metres for scenes).

    `model`: a `svl finetune task=segmentation` checkpoint, or a built U-Net with its `class_names`.
    `format` forces a point-cloud reader (e.g. "kitti" for .bin scans).
    """
    if isinstance(model, nn.Module):
        if class_names is None:
            raise ValueError("segment: a built model needs its class_names")
        net, names = model, list(class_names)
    else:
        loaded = load_model(model, kind=SEGMENTER_KIND)
        net, names = loaded.model, loaded.class_names
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cols = class_colors(len(names))
    results = []
    for p in files:
        s = load_points(p, format=format)
        item = {"xyz": s["xyz"], "index": 0, **({"rgb": s["rgb"]} if s.get("rgb") is not None else {})}
        with torch.no_grad():
            logits = net.eval()(collate_points([item]))[0]
        if logits.shape[-1] != len(names):
            raise ValueError(f"model returned {logits.shape[-1]} scores per point for {len(names)} classes")
        pred = logits.argmax(-1).numpy()
        stem = out / Path(p).stem
        write_ply_labels(stem.with_suffix(".ply"), s["xyz"], pred, cols[pred])
        with atomic_write(stem.with_suffix(".npy")) as fh:
            np.save(fh, pred.astype(np.int32))
        plot_segmentation(s["xyz"], pred, names, stem.with_suffix(".png"), title=Path(p).name)
        counts = np.bincount(pred, minlength=len(names))
        results.append({
            "file": str(p), "points": int(len(pred)), "ply": str(stem.with_suffix(".ply")),
            "png": str(stem.with_suffix(".png")),
            "classes": {names[c]: int(n) for c, n in enumerate(counts) if n},
        })  # fmt: skip
    return results
