"""Up-axis conventions: parse an axis name and rotate clouds between up axes.

svl works z-up (gravity = +z); ShapeNet, ModelNet-h5, OpenShape and Objaverse files are y-up. The
readers, the transforms and `svl.data.prepare` all rotate through these helpers, so a y-up file
lands the same way whichever path it takes. Numpy only, importing nothing of svl.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["parse_axis", "rotate_axis", "rotate_up_to_z", "swap_yz"]


def parse_axis(axis: str, where: Any = "") -> tuple[int, int]:
    """'y' / '+y' / '-y' -> (axis index, sign); ValueError naming `where` for anything else."""
    a = str(axis).strip().lower()
    sign = -1 if a.startswith("-") else 1
    a = a.lstrip("+-")
    if a not in ("x", "y", "z"):
        raise ValueError(f"{where}: up_axis must be one of x, y, z (optionally signed), got {axis!r}")
    return "xyz".index(a), sign


def rotate_up_to_z(xyz: np.ndarray, up_axis: str) -> np.ndarray:
    """Rotate (N, 3) vectors so that the given up axis becomes +z (a proper rotation, det = +1).

    y-up -> z-up maps (x, y, z) to (x, -z, y); x-up maps (x, y, z) to (-z, y, x).
    """
    ax, sign = parse_axis(up_axis)
    xyz = np.asarray(xyz, dtype=np.float32)
    if (ax, sign) == (2, 1):
        return xyz.copy()
    if (ax, sign) == (2, -1):  # flip upside down: rotate 180 deg about x
        return np.stack([xyz[:, 0], -xyz[:, 1], -xyz[:, 2]], 1)
    if ax == 1:
        out = np.stack([xyz[:, 0], -xyz[:, 2], xyz[:, 1]], 1)
    else:
        out = np.stack([-xyz[:, 2], xyz[:, 1], xyz[:, 0]], 1)
    if sign < 0:
        out = np.stack([out[:, 0], -out[:, 1], -out[:, 2]], 1)
    return out


def rotate_axis(xyz: np.ndarray, up_axis: str, to_axis: str = "z") -> np.ndarray:
    """Rotate (N, 3) vectors so that `up_axis` becomes `to_axis` (proper rotation, exact).

    Goes through z-up: `rotate_up_to_z` and then the inverse of the rotation that takes `to_axis`
    to +z. Both are signed permutations, so coordinates move without rounding.
    """
    if parse_axis(up_axis) == parse_axis(to_axis):
        return np.asarray(xyz, dtype=np.float32).copy()
    z = rotate_up_to_z(xyz, up_axis)
    if parse_axis(to_axis) == (2, 1):
        return z
    # z-up -> to_axis is the transpose of to_axis -> z-up; row i of `a` has one signed 1 in column c_i
    a = rotate_up_to_z(np.eye(3, dtype=np.float32), to_axis)
    cols = [int(np.flatnonzero(a[i])[0]) for i in range(3)]
    return np.stack([z[:, c] if a[i, c] > 0 else -z[:, c] for i, c in enumerate(cols)], 1)


def swap_yz(up_axis: str) -> bool:
    """Whether an array dataset stored `up_axis`-up exchanges its y and z columns to land z-up.

    'y' swaps, 'z' keeps. The swap (a mirror, unlike `rotate_up_to_z`) is what OpenShape does to its
    y-up data, so the published numbers were measured on it.
    """
    if up_axis not in ("y", "z"):
        raise ValueError(f"up_axis must be 'y' (swap to z-up) or 'z' (keep), got {up_axis!r}")
    return up_axis == "y"
