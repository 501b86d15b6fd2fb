"""ModelNet40 in its three on-disk forms, and the 3D zero-shot split of it.

Names: modelnet40 (the shared 1024-point npz, z-up), modelnet40_zsl (the 3D zero-shot split:
seen = 30 non-ModelNet10 classes, unseen = the 10 ModelNet10 classes), modelnet40_h5
(modelnet40_ply_hdf5_2048, y-up on disk), modelnet40_normal (modelnet40_normal_resampled txt
with normals, y-up on disk). y-up data is swapped to z-up the way OpenShape does (exchange of the
y and z columns, `svl.data.axes.swap_yz`) unless ``up_axis="z"`` says otherwise. The simulated
event streams (event_sim.py) and the scenes (scenes.py) are made of the same clouds
(`modelnet40_arrays`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from svl.data.axes import swap_yz
from svl.data.base import ArrayDataset, PointDataset, register_dataset, resolve_root
from svl.data.readers import load_points
from svl.data.transforms import Compose
from svl.vocab import MODELNET10_CLASSES, load_class_names

__all__ = ["ZeroShotSplit", "modelnet40_arrays", "zsl_indices"]


# ----------------------------------------------------------------------------- npz mmap cache
def _npz_mmap(path: Path, keys: Sequence[str]) -> dict[str, np.ndarray]:
    """Arrays of a (compressed) npz, extracted once to the svl cache as .npy and memory-mapped.

    Memory maps let DataLoader workers share the page cache instead of each holding a copy.
    Falls back to loading into memory when the cache is not writable.
    """
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    st = path.stat()
    key = hashlib.sha256(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:16]
    out: dict[str, np.ndarray] = {}
    try:
        from svl.utils import atomic_path, cache_dir

        folder = cache_dir("npz", f"{path.stem}-{key}")
        with np.load(path, allow_pickle=False) as z:
            for k in keys:
                if k not in z.files:
                    raise ValueError(f"{path}: missing array {k!r} (has {z.files})")
                f = folder / f"{k}.npy"
                if not f.exists():
                    with atomic_path(f) as tmp:
                        with open(tmp, "wb") as fh:
                            np.save(fh, z[k])
                out[k] = np.load(f, mmap_mode="r")
        return out
    except (OSError, PermissionError):
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in keys}


def _check_classes(path: Path, stored: np.ndarray, expected: list[str]) -> None:
    names = [str(c) for c in stored]
    if names != expected:
        raise ValueError(f"{path}: class list differs from modelnet40_shape_names.txt: {names[:5]}...")


# ----------------------------------------------------------------------------- ModelNet40
def modelnet40_arrays(root: Any, split: str) -> tuple[dict[str, np.ndarray], Path]:
    if split not in ("train", "test"):
        raise ValueError(f"modelnet40: split must be 'train' or 'test', got {split!r}")
    folder = resolve_root(root, "modelnet40")
    path = folder / f"modelnet40_pcd1024_{split}.npz"
    arrs = _npz_mmap(path, ["points", "labels", "names", "classes"])
    if arrs["points"].ndim != 3 or arrs["points"].shape[2] != 3:
        raise ValueError(f"{path}: points must be (S, N, 3), got {arrs['points'].shape}")
    if len(arrs["labels"]) != len(arrs["points"]):
        raise ValueError(f"{path}: {len(arrs['labels'])} labels for {len(arrs['points'])} clouds")
    _check_classes(path, arrs["classes"], load_class_names("modelnet40"))
    return arrs, path


@register_dataset("modelnet40", takes=())
def _build_modelnet40(split: str, root: Any, transforms: Compose, seed: int) -> PointDataset:
    """The shared ModelNet40 (1024 points, z-up, unit sphere, xyz only), official split."""
    arrs, _ = modelnet40_arrays(root, split)
    return ArrayDataset(
        arrs["points"], arrs["labels"], load_class_names("modelnet40"), split, transforms, seed,
        name="modelnet40", shape_ids=arrs["names"],
    )  # fmt: skip


class ZeroShotSplit(ArrayDataset):
    """ModelNet40 with the 3D zero-shot class split; labels stay in the 40-class space."""

    seen_classes: list[str]
    unseen_classes: list[str]


def zsl_indices(
    labels_train: np.ndarray, classes: list[str], val_fraction: float = 0.1, seed: int = 0
) -> dict:
    """Seen-class train/val indices: a fixed seeded ~val_fraction per class (at least one shape)."""
    unseen = {classes.index(c) for c in MODELNET10_CLASSES}
    train, val = [], []
    for c in range(len(classes)):
        if c in unseen:
            continue
        idx = np.flatnonzero(labels_train == c)
        perm = np.random.default_rng([seed, c]).permutation(idx)
        k = max(1, int(round(val_fraction * len(idx))))
        val.append(np.sort(perm[:k]))
        train.append(np.sort(perm[k:]))
    return {"train": np.sort(np.concatenate(train)), "val": np.sort(np.concatenate(val))}


@register_dataset("modelnet40_zsl", takes=())
def _build_modelnet40_zsl(
    split: str, root: Any, transforms: Compose, seed: int, val_fraction: float = 0.1, split_seed: int = 0
) -> PointDataset:
    """Splits: train (seen-class train shapes minus val), val (~10% of each seen class's train
    shapes, fixed by split_seed), test_unseen (908), test_seen (1560), test (all 2468)."""
    classes = load_class_names("modelnet40")
    splits = ("train", "val", "test_unseen", "test_seen", "test")
    if split not in splits:
        raise ValueError(f"modelnet40_zsl: split must be one of {splits}, got {split!r}")
    arrs, _ = modelnet40_arrays(root, "train" if split in ("train", "val") else "test")
    labels = np.asarray(arrs["labels"])
    unseen_ids = np.array([classes.index(c) for c in MODELNET10_CLASSES])
    if split in ("train", "val"):
        idx = zsl_indices(labels, classes, val_fraction, split_seed)[split]
    elif split == "test_unseen":
        idx = np.flatnonzero(np.isin(labels, unseen_ids))
    elif split == "test_seen":
        idx = np.flatnonzero(~np.isin(labels, unseen_ids))
    else:
        idx = np.arange(len(labels))
    ds = ZeroShotSplit(
        arrs["points"], labels, classes, split, transforms, seed, indices=idx, name="modelnet40_zsl",
        shape_ids=arrs["names"],
    )  # fmt: skip
    ds.unseen_classes = list(MODELNET10_CLASSES)
    ds.seen_classes = [c for c in classes if c not in MODELNET10_CLASSES]
    return ds


@register_dataset("modelnet40_h5", takes=())
def _build_modelnet40_h5(
    split: str, root: Any, transforms: Compose, seed: int, up_axis: str = "y"
) -> PointDataset:
    """PointNet's modelnet40_ply_hdf5_2048 (2048 points, y-up on disk)."""
    import h5py

    if split not in ("train", "test"):
        raise ValueError(f"modelnet40_h5: split must be 'train' or 'test', got {split!r}")
    folder = resolve_root(root, "modelnet40_ply_hdf5_2048")
    files = sorted(folder.glob(f"ply_data_{split}*.h5"))
    if not files:
        raise FileNotFoundError(f"{folder}: no ply_data_{split}*.h5 files")
    pts, lab = [], []
    for f in files:
        try:
            with h5py.File(f, "r") as h:
                pts.append(np.asarray(h["data"], dtype=np.float32))
                lab.append(np.asarray(h["label"]).reshape(-1).astype(np.int64))
        except (OSError, KeyError) as e:
            raise ValueError(f"{f}: not a ModelNet40 h5 file with 'data' and 'label' ({e})") from None
    names_file = folder / "shape_names.txt"
    classes = names_file.read_text().split() if names_file.exists() else load_class_names("modelnet40")
    return ArrayDataset(
        np.concatenate(pts), np.concatenate(lab), classes, split, transforms, seed, swap_yz=swap_yz(up_axis),
        name="modelnet40_h5",
    )  # fmt: skip


class _FileListDataset(PointDataset):
    """One file per shape, read on access (modelnet40_normal_resampled)."""

    def __init__(self, files: list[Path], labels: list[int], classes, split, transforms, seed, swap, name):
        super().__init__(split, classes, transforms, seed)
        self.files, self._labels, self.swap_yz, self.name = files, np.asarray(labels, np.int64), swap, name
        self.up_axis_on_disk = "y" if swap else "z"

    def __len__(self) -> int:
        return len(self.files)

    def labels(self) -> np.ndarray:
        return self._labels

    def _load(self, i: int) -> dict[str, Any]:
        s = load_points(self.files[i], columns="xyznxnynz")
        out = {"xyz": s["xyz"], "normals": s["normals"], "label": int(self._labels[i])}
        if self.swap_yz:
            out = {k: (v[:, [0, 2, 1]] if k != "label" else v) for k, v in out.items()}
        return out


@register_dataset("modelnet40_normal", takes=())
def _build_modelnet40_normal(
    split: str, root: Any, transforms: Compose, seed: int, up_axis: str = "y"
) -> PointDataset:
    """modelnet40_normal_resampled: 10k points + normals per shape as 'x,y,z,nx,ny,nz' text."""
    if split not in ("train", "test"):
        raise ValueError(f"modelnet40_normal: split must be 'train' or 'test', got {split!r}")
    folder = resolve_root(root, "modelnet40_normal_resampled")
    names_file = folder / "modelnet40_shape_names.txt"
    classes = names_file.read_text().split() if names_file.exists() else load_class_names("modelnet40")
    listing = folder / f"modelnet40_{split}.txt"
    if not listing.exists():
        raise FileNotFoundError(f"{listing}: split list not found")
    files, labels = [], []
    for sid in listing.read_text().split():
        cls = sid.rsplit("_", 1)[0]
        if cls not in classes:
            raise ValueError(f"{listing}: shape id {sid!r} has unknown class {cls!r}")
        files.append(folder / cls / f"{sid}.txt")
        labels.append(classes.index(cls))
    return _FileListDataset(
        files, labels, classes, split, transforms, seed, swap_yz(up_axis), "modelnet40_normal"
    )
