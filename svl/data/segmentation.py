"""Datasets with a label per point (part and semantic segmentation). A sample adds ``segment (N,)``
(int64 class of each point) to the usual dict; transforms resample it with the points.

- `shapenetpart`: ShapeNetPart v0 (`<synset>/points/<id>.pts` + `<synset>/points_label/<id>.seg`,
  labels 1-based within the category, mapped to the 50 global part ids), the official
  `train_test_split/shuffled_{train,val,test}_file_list.json` lists; ``label`` is the category.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from svl.data.base import PointDataset, register_dataset, resolve_root
from svl.data.transforms import Compose

__all__ = ["ShapeNetPart", "read_pts_seg"]


def read_pts_seg(pts: str | Path, seg: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(xyz (N, 3) float32, labels (N,) int64) of a ShapeNetPart v0 shape; lengths must agree."""
    pts, seg = Path(pts), Path(seg)
    for f in (pts, seg):
        if not f.is_file():
            raise FileNotFoundError(f"{f}: no such file")
    try:
        xyz = np.loadtxt(pts, dtype=np.float32, ndmin=2)
    except ValueError as e:
        raise ValueError(f"{pts}: not a table of x y z rows ({e})") from None
    if xyz.shape[1] != 3 or len(xyz) == 0 or not np.isfinite(xyz).all():
        raise ValueError(f"{pts}: expected N >= 1 finite rows of 3 numbers, got shape {xyz.shape}")
    try:
        lab = np.loadtxt(seg, dtype=np.int64, ndmin=1)
    except ValueError as e:
        raise ValueError(f"{seg}: not one integer label per line ({e})") from None
    if len(lab) != len(xyz):
        raise ValueError(f"{seg}: {len(lab)} labels for {len(xyz)} points in {pts.name}")
    return xyz, lab


class ShapeNetPart(PointDataset):
    """ShapeNetPart v0; see the module docstring."""

    name = "shapenetpart"
    up_axis_on_disk = "y"

    def __init__(self, items, categories, split, transforms, seed, num_points):
        super().__init__(split, categories, transforms, seed)
        self.items, self.num_points = items, num_points
        self._labels = np.asarray([it[2] for it in items], np.int64)

    def __len__(self) -> int:
        return len(self.items)

    def labels(self) -> np.ndarray:
        return self._labels

    def _load(self, i: int) -> dict[str, Any]:
        from svl.eval.segmentation import SHAPENETPART_PARTS

        pts, seg, cat = self.items[i]
        xyz, lab = read_pts_seg(pts, seg)
        parts = SHAPENETPART_PARTS[self.classes[cat]]
        if lab.min() < 1 or lab.max() > len(parts):
            raise ValueError(
                f"{seg}: part labels {int(lab.min())}..{int(lab.max())} outside 1..{len(parts)} "
                f"({self.classes[cat]} has {len(parts)} parts)"
            )
        if self.num_points is not None and len(xyz) != self.num_points:
            rng = np.random.default_rng([self.seed, self.epoch, i, 5])
            idx = rng.choice(len(xyz), self.num_points, replace=len(xyz) < self.num_points)
            xyz, lab = xyz[idx], lab[idx]
        return {"xyz": xyz, "segment": np.asarray(parts)[lab - 1], "label": cat}


@register_dataset("shapenetpart")
def _build_shapenetpart(
    split: str,
    root: Any,
    transforms: Compose,
    seed: int,
    num_points: int | None = 2048,
    skip_missing: bool = False,
) -> PointDataset:
    """root: the v0 folder (synsetoffset2category.txt, <synset>/points*, train_test_split/).
    skip_missing: keep only the listed shapes present on disk (for partial copies)."""
    if split not in ("train", "val", "test"):
        raise ValueError(f"shapenetpart: split must be train, val or test, got {split!r}")
    base = resolve_root(root, "shapenetpart_samples" if root is None else "")
    cats_file = base / "synsetoffset2category.txt"
    if not cats_file.is_file():
        raise FileNotFoundError(f"{cats_file}: category list not found (is {base} a ShapeNetPart v0 folder?)")
    rows = [ln.split() for ln in cats_file.read_text().splitlines() if ln.strip()]
    if any(len(r) != 2 for r in rows):
        raise ValueError(f"{cats_file}: expected '<Category> <synset>' lines")
    names = [r[0] for r in rows]
    synset = {r[1]: i for i, r in enumerate(rows)}
    listing = base / "train_test_split" / f"shuffled_{split}_file_list.json"
    if not listing.is_file():
        raise FileNotFoundError(f"{listing}: split list not found")
    try:
        entries = json.loads(listing.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{listing}: not JSON ({e})") from None
    items, missing = [], []
    for e in entries:
        parts = str(e).split("/")
        if len(parts) < 2 or parts[-2] not in synset:
            raise ValueError(f"{listing}: entry {e!r} names no known synset")
        s, sid = parts[-2], parts[-1]
        pts, seg = base / s / "points" / f"{sid}.pts", base / s / "points_label" / f"{sid}.seg"
        if pts.is_file():
            items.append((pts, seg, synset[s]))
        else:
            missing.append(pts)
    if missing and not skip_missing:
        raise FileNotFoundError(
            f"shapenetpart/{split}: {len(missing)} of {len(entries)} listed shapes are missing under {base} "
            f"(first: {missing[0]}); pass skip_missing=True for a partial copy"
        )
    if not items:
        raise ValueError(f"shapenetpart/{split}: no listed shape found under {base}")
    return ShapeNetPart(items, names, split, transforms, seed, num_points)
