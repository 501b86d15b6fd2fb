"""ScanObjectNN (h5, 2048 points, y-up on disk) in the variant the user names.

``variant`` (OBJ_ONLY | OBJ_BG | PB_T50_RS) is required: results differ a lot between them, so svl
does not guess. OpenShape's copy of the test set is ``openshape_scanobjectnn`` (openshape.py).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from svl.data.axes import swap_yz
from svl.data.base import ArrayDataset, PointDataset, register_dataset, resolve_root
from svl.data.transforms import Compose
from svl.vocab import load_class_names

__all__ = ["SCANOBJECTNN_VARIANTS"]

SCANOBJECTNN_VARIANTS = {
    # variant -> (folder, file suffix)
    "OBJ_ONLY": ("main_split_nobg", ""),
    "OBJ_BG": ("main_split", ""),
    "PB_T50_RS": ("main_split", "_augmentedrot_scale75"),
}


@register_dataset("scanobjectnn", takes=())
def _build_scanobjectnn(
    split: str, root: Any, transforms: Compose, seed: int, variant: str | None = None, up_axis: str = "y"
) -> PointDataset:
    """ScanObjectNN h5 (2048 points). The variant must be named: OBJ_ONLY, OBJ_BG or PB_T50_RS."""
    import h5py

    if variant is None or str(variant).upper() not in SCANOBJECTNN_VARIANTS:
        raise ValueError(
            f"scanobjectnn: name the variant explicitly (variant= one of {sorted(SCANOBJECTNN_VARIANTS)}), "
            f"got {variant!r}; results differ a lot between them, so svl does not guess"
        )
    if split not in ("train", "test"):
        raise ValueError(f"scanobjectnn: split must be 'train' or 'test', got {split!r}")
    sub, suffix = SCANOBJECTNN_VARIANTS[str(variant).upper()]
    base = resolve_root(root, "scanobjectnn")
    stem = f"{'training' if split == 'train' else 'test'}_objectdataset{suffix}.h5"
    cands = [base / sub / stem, base / "h5_files" / sub / stem]
    path = next((c for c in cands if c.exists()), None)
    if path is None:
        raise FileNotFoundError(f"scanobjectnn {variant}: none of {[str(c) for c in cands]} exists")
    try:
        with h5py.File(path, "r") as h:
            pts = np.asarray(h["data"], dtype=np.float32)
            lab = np.asarray(h["label"]).reshape(-1).astype(np.int64)
    except (OSError, KeyError) as e:
        raise ValueError(f"{path}: not a ScanObjectNN h5 file with 'data' and 'label' ({e})") from None
    classes = load_class_names("scanobjectnn")
    ds = ArrayDataset(pts, lab, classes, split, transforms, seed, swap_yz=swap_yz(up_axis),
                      name=f"scanobjectnn_{str(variant).upper()}")  # fmt: skip
    return ds
