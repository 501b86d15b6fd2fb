"""Datasets with a label per point (part and semantic segmentation). A sample adds ``segment (N,)``
(int64 class of each point) to the usual dict; transforms resample it with the points.

- `shapenetpart`: ShapeNetPart v0 (`<synset>/points/<id>.pts` + `<synset>/points_label/<id>.seg`,
  labels 1-based within the category, mapped to the 50 global part ids), the official
  `train_test_split/shuffled_{train,val,test}_file_list.json` lists; ``label`` is the category.
  Coordinates as stored (ShapeNet is y-up).
- `s3dis`, `scannet`: Pointcept's preprocessed layout (one folder per scene: coord.npy, color.npy,
  segment.npy / segment20.npy, optional normal.npy, instance.npy).
- `semantic_kitti`: sequences/XX/velodyne/*.bin + labels/*.label, the learning map to 19 classes.
Points no class covers are labelled IGNORE (-1).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from svl.data.base import PointDataset, register_dataset, resolve_root
from svl.data.transforms import Compose

__all__ = [
    "IGNORE",
    "SHAPENETPART_PARTS",
    "S3DIS_CLASSES",
    "SCANNET20_CLASSES",
    "SEMANTIC_KITTI_CLASSES",
    "SEMANTIC_KITTI_LEARNING_MAP",
    "SceneSegmentation",
    "ShapeNetPart",
    "read_pts_seg",
    "read_semantic_kitti",
]


# category -> its global part ids (50 parts), in the category order of synsetoffset2category.txt
SHAPENETPART_PARTS: dict[str, list[int]] = {
    "Airplane": [0, 1, 2, 3], "Bag": [4, 5], "Cap": [6, 7], "Car": [8, 9, 10, 11],
    "Chair": [12, 13, 14, 15], "Earphone": [16, 17, 18], "Guitar": [19, 20, 21], "Knife": [22, 23],
    "Lamp": [24, 25, 26, 27], "Laptop": [28, 29], "Motorbike": [30, 31, 32, 33, 34, 35],
    "Mug": [36, 37], "Pistol": [38, 39, 40], "Rocket": [41, 42, 43], "Skateboard": [44, 45, 46],
    "Table": [47, 48, 49],
}  # fmt: skip


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
        # the 50 per-point classes ("Airplane part 1", ...); `classes` stay the 16 categories (label)
        self.segment_classes = [
            f"{c} part {j + 1}" for c in categories for j in range(len(SHAPENETPART_PARTS[c]))
        ]
        self._labels = np.asarray([it[2] for it in items], np.int64)

    def __len__(self) -> int:
        return len(self.items)

    def labels(self) -> np.ndarray:
        return self._labels

    def allowed_segments(self, label: int) -> np.ndarray:
        """(50,) bool: the parts a shape of category `label` may take. The PointNet++ protocol (and
        every paper since) predicts a shape's parts by argmax over its own category's parts only."""
        mask = np.zeros(sum(len(v) for v in SHAPENETPART_PARTS.values()), bool)
        mask[SHAPENETPART_PARTS[self.classes[int(label)]]] = True
        return mask

    def _load(self, i: int) -> dict[str, Any]:
        pts, seg, cat = self.items[i]
        xyz, lab = read_pts_seg(pts, seg)
        parts = SHAPENETPART_PARTS[self.classes[cat]]
        if lab.min() < 1 or lab.max() > len(parts):
            raise ValueError(
                f"{seg}: part labels {int(lab.min())}..{int(lab.max())} outside 1..{len(parts)} "
                f"({self.classes[cat]} has {len(parts)} parts)"
            )
        if self.num_points is not None and len(xyz) != self.num_points:
            rng = self.sample_rng(i, 5)
            idx = rng.choice(len(xyz), self.num_points, replace=len(xyz) < self.num_points)
            xyz, lab = xyz[idx], lab[idx]
        return {"xyz": xyz, "segment": np.asarray(parts)[lab - 1], "label": cat}


@register_dataset("shapenetpart", takes=("num_points",))
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


# ----------------------------------------------------------------------------- scene datasets
IGNORE = -1  # the label of points no class covers (Pointcept's ignore_index)

S3DIS_CLASSES = (
    "ceiling", "floor", "wall", "beam", "column", "window", "door", "table", "chair", "sofa", "bookcase",
    "board", "clutter",
)  # fmt: skip
SCANNET20_CLASSES = (
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf", "picture",
    "counter", "desk", "curtain", "refrigerator", "shower curtain", "toilet", "sink", "bathtub",
    "otherfurniture",
)  # fmt: skip
SEMANTIC_KITTI_CLASSES = (
    "car", "bicycle", "motorcycle", "truck", "other-vehicle", "person", "bicyclist", "motorcyclist",
    "road", "parking", "sidewalk", "other-ground", "building", "fence", "vegetation", "trunk", "terrain",
    "pole", "traffic-sign",
)  # fmt: skip
# semantic-kitti.yaml learning_map: raw label -> 1..19 (0 = ignored); svl then subtracts 1 (IGNORE = -1)
SEMANTIC_KITTI_LEARNING_MAP = {
    0: 0, 1: 0, 10: 1, 11: 2, 13: 5, 15: 3, 16: 5, 18: 4, 20: 5, 30: 6, 31: 7, 32: 8, 40: 9, 44: 10,
    48: 11, 49: 12, 50: 13, 51: 14, 52: 0, 60: 9, 70: 15, 71: 16, 72: 17, 80: 18, 81: 19, 99: 0,
    252: 1, 253: 7, 254: 6, 255: 8, 256: 5, 257: 5, 258: 4, 259: 5,
}  # fmt: skip
SEMANTIC_KITTI_SPLITS = {
    "train": ["00", "01", "02", "03", "04", "05", "06", "07", "09", "10"],
    "val": ["08"],
    "test": [f"{s:02d}" for s in range(11, 22)],
}


def read_semantic_kitti(scan: str | Path, label: str | Path | None) -> dict[str, np.ndarray]:
    """A SemanticKITTI scan: xyz, reflectance, and (with its .label file) the 19-class `segment`
    (IGNORE for unlabelled / outlier points) and `instance` (upper 16 bits of each uint32 label)."""
    scan = Path(scan)
    if not scan.is_file():
        raise FileNotFoundError(f"{scan}: no such file")
    size = scan.stat().st_size
    if size == 0 or size % 16:
        raise ValueError(
            f"{scan}: {size} bytes is not a whole number of 16-byte (x, y, z, r) float32 records"
        )
    pts = np.fromfile(scan, dtype="<f4").reshape(-1, 4)
    out = {"xyz": pts[:, :3].copy(), "reflectance": pts[:, 3].copy()}
    if label is None:
        return out
    label = Path(label)
    if not label.is_file():
        raise FileNotFoundError(f"{label}: no such file")
    lsize = label.stat().st_size
    if lsize % 4 or lsize // 4 != len(pts):
        raise ValueError(
            f"{label}: {lsize} bytes = {lsize / 4:g} labels for {len(pts)} points in {scan.name}"
        )
    raw = np.fromfile(label, dtype="<u4")
    sem = (raw & 0xFFFF).astype(np.int64)
    lut = np.zeros(max(max(SEMANTIC_KITTI_LEARNING_MAP), int(sem.max())) + 1, np.int64)
    known = np.zeros_like(lut, bool)
    for k, v in SEMANTIC_KITTI_LEARNING_MAP.items():
        lut[k], known[k] = v, True
    if not known[sem].all():
        bad = np.unique(sem[~known[sem]])
        raise ValueError(f"{label}: raw labels {bad[:8].tolist()} are not in the SemanticKITTI learning map")
    out["segment"] = lut[sem] - 1  # 0..18, IGNORE = -1
    out["instance"] = (raw >> 16).astype(np.int64)
    return out


class SceneSegmentation(PointDataset):
    """Scenes of per-point labelled points read by `read(item) -> dict`; resampled to `num_points`."""

    def __init__(self, name, items, read, classes, split, transforms, seed, num_points):
        super().__init__(split, classes, transforms, seed)
        self.name, self.items, self.read, self.num_points = name, items, read, num_points

    def __len__(self) -> int:
        return len(self.items)

    def labels(self) -> np.ndarray:
        return np.zeros(len(self.items), np.int64)  # scenes carry no scene-level class

    def _load(self, i: int) -> dict[str, Any]:
        s = self.read(self.items[i])
        k = len(self.classes)
        seg = s.get("segment")
        if seg is not None:
            bad = (seg != IGNORE) & ((seg < 0) | (seg >= k))
            if bad.any():
                raise ValueError(
                    f"{self.items[i]}: label {int(seg[bad][0])} outside 0..{k - 1} "
                    f"({self.name} has {k} classes)"
                )
        n = len(s["xyz"])
        if n == 0:
            raise ValueError(f"{self.items[i]}: empty scene")
        if self.num_points is not None and n != self.num_points:
            rng = self.sample_rng(i, 6)
            idx = rng.choice(n, self.num_points, replace=n < self.num_points)
            s = {key: (v[idx] if isinstance(v, np.ndarray) and len(v) == n else v) for key, v in s.items()}
        s["label"] = 0
        return s


def _read_pointcept(folder: Path, segment_file: str) -> dict[str, np.ndarray]:
    """Pointcept's preprocessed scene folder: coord.npy (N, 3), color.npy (0-255), segment*.npy (N,)."""
    out: dict[str, np.ndarray] = {}
    for key, fname in (("xyz", "coord.npy"), ("rgb", "color.npy"), ("normals", "normal.npy"),
                       ("segment", segment_file), ("instance", "instance.npy")):  # fmt: skip
        f = folder / fname
        if not f.is_file():
            if key in ("xyz", "segment"):
                raise FileNotFoundError(
                    f"{f}: missing (Pointcept scene folders hold coord.npy and {segment_file})"
                )
            continue
        try:
            a = np.load(f, allow_pickle=False)
        except ValueError as e:
            raise ValueError(f"{f}: unreadable array ({e})") from None
        out[key] = a
    n = len(out["xyz"])
    if out["xyz"].ndim != 2 or out["xyz"].shape[1] != 3:
        raise ValueError(f"{folder / 'coord.npy'}: expected (N, 3), got {out['xyz'].shape}")
    for key, v in out.items():
        if len(v) != n:
            raise ValueError(f"{folder}: {key} has {len(v)} rows for {n} points")
    out["xyz"] = out["xyz"].astype(np.float32)
    if "rgb" in out:
        out["rgb"] = (out["rgb"].astype(np.float32) / (255.0 if out["rgb"].max() > 1 else 1.0)).clip(0, 1)
    out["segment"] = out["segment"].reshape(-1).astype(np.int64)
    out["segment"][out["segment"] < 0] = IGNORE
    return out


def _scene_folders(base: Path, subs: list[str], what: str) -> list[Path]:
    found = [d for s in subs for d in sorted((base / s).glob("*")) if (d / "coord.npy").is_file()]
    if not found:
        raise FileNotFoundError(
            f"{what}: no scene folders with coord.npy under {[str(base / s) for s in subs]}"
        )
    return found


@register_dataset("s3dis", takes=("num_points",))
def _build_s3dis(
    split: str, root: Any, transforms: Compose, seed: int, num_points: int | None = None, test_area: int = 5
) -> PointDataset:
    """S3DIS in Pointcept's layout (root/Area_N/<room>/coord.npy ...); test = Area_5 by convention."""
    base = resolve_root(root, "s3dis")
    areas = [f"Area_{a}" for a in range(1, 7)]
    subs = [f"Area_{test_area}"] if split == "test" else [a for a in areas if a != f"Area_{test_area}"]
    if split not in ("train", "test"):
        raise ValueError(f"s3dis: split must be train or test, got {split!r}")
    items = _scene_folders(base, subs, f"s3dis/{split}")
    read = lambda d: _read_pointcept(d, "segment.npy")  # noqa: E731
    return SceneSegmentation("s3dis", items, read, S3DIS_CLASSES, split, transforms, seed, num_points)


@register_dataset("scannet", takes=("num_points",))
def _build_scannet(
    split: str, root: Any, transforms: Compose, seed: int, num_points: int | None = None
) -> PointDataset:
    """ScanNet v2 in Pointcept's layout (root/train|val|test/<scene>/coord.npy, segment20.npy)."""
    if split not in ("train", "val", "test"):
        raise ValueError(f"scannet: split must be train, val or test, got {split!r}")
    base = resolve_root(root, "scannet")
    items = _scene_folders(base, [split], f"scannet/{split}")
    read = lambda d: _read_pointcept(d, "segment20.npy")  # noqa: E731
    return SceneSegmentation("scannet", items, read, SCANNET20_CLASSES, split, transforms, seed, num_points)


@register_dataset("semantic_kitti", takes=("num_points",))
def _build_semantic_kitti(
    split: str, root: Any, transforms: Compose, seed: int, num_points: int | None = None
) -> PointDataset:
    """SemanticKITTI (root/sequences/XX/velodyne/*.bin + labels/*.label), the standard sequence split."""
    if split not in SEMANTIC_KITTI_SPLITS:
        raise ValueError(f"semantic_kitti: split must be one of {list(SEMANTIC_KITTI_SPLITS)}, got {split!r}")
    base = resolve_root(root, "semantic_kitti")
    seq = base / "sequences" if (base / "sequences").is_dir() else base
    items = []
    for s in SEMANTIC_KITTI_SPLITS[split]:
        for scan in sorted((seq / s / "velodyne").glob("*.bin")):
            lab = seq / s / "labels" / (scan.stem + ".label")
            items.append((scan, lab if split != "test" else None))
    if not items:
        raise FileNotFoundError(f"semantic_kitti/{split}: no velodyne/*.bin under {seq} for sequences "
                                f"{SEMANTIC_KITTI_SPLITS[split]}")  # fmt: skip
    read = lambda it: read_semantic_kitti(*it)  # noqa: E731
    return SceneSegmentation(
        "semantic_kitti", items, read, SEMANTIC_KITTI_CLASSES, split, transforms, seed, num_points
    )
