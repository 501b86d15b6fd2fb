"""What every reader shares: the bad-file exception, read options, validation and small parsers.

Readers raise `BadFile` with a message about the content; `load_points` prefixes the path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["BadFile", "ReadOptions", "check_arrays", "floats", "scale_rgb", "text_lines", "triangulate"]


class BadFile(ValueError):
    """A reader found a problem in the file; load_points turns it into a ValueError naming the path."""


@dataclass(frozen=True)
class ReadOptions:
    """The `load_points` options a reader may use (see its docstring); readers ignore the rest."""

    columns: str | None = None
    index: int | None = None
    allow_pickle: bool = False


def check_arrays(raw: dict[str, Any], what: str) -> dict[str, np.ndarray]:
    """Validate shapes/finiteness and scale colours to [0, 1]."""
    xyz = raw.get("xyz")
    if xyz is None:
        raise BadFile(f"no {what} coordinates (x, y, z) found")
    xyz = np.asarray(xyz)
    if xyz.ndim != 2 or xyz.shape[1] != 3:
        raise BadFile(f"coordinates must have shape (N, 3), got {tuple(xyz.shape)}")
    if len(xyz) == 0:
        raise BadFile(f"empty cloud: 0 {what}s")
    if not np.issubdtype(xyz.dtype, np.number):
        raise BadFile(f"coordinates are not numeric (dtype {xyz.dtype})")
    xyz = xyz.astype(np.float64)
    bad = ~np.isfinite(xyz).all(1)
    if bad.any():
        raise BadFile(f"{int(bad.sum())} of {len(xyz)} {what}s have NaN or inf coordinates")
    out: dict[str, np.ndarray] = {"xyz": xyz}
    for key in ("rgb", "normals"):
        v = raw.get(key)
        if v is None:
            continue
        v = np.asarray(v)
        if v.shape != xyz.shape:
            raise BadFile(f"{key} shape {tuple(v.shape)} does not match coordinates {tuple(xyz.shape)}")
        if not np.issubdtype(v.dtype, np.number) and v.dtype != np.bool_:
            raise BadFile(f"{key} is not numeric (dtype {v.dtype})")
        if not np.isfinite(v.astype(np.float64)).all():
            raise BadFile(f"{key} contains NaN or inf")
        if key == "rgb":
            v, scale = scale_rgb(v)
            raw.setdefault("_info", {})["rgb_scale"] = scale
        out[key] = v.astype(np.float64)
    return out


def scale_rgb(v: np.ndarray) -> tuple[np.ndarray, str]:
    """Colours to [0, 1]: integer or >1 values are 0-255 (uint16 0-65535)."""
    if v.dtype == np.uint16:
        return v / 65535.0, "0-65535"
    if np.issubdtype(v.dtype, np.integer):
        if v.min() < 0 or v.max() > 255:
            raise BadFile(f"integer colours outside 0-255 (min {v.min()}, max {v.max()})")
        return v / 255.0, "0-255"
    v = v.astype(np.float64)
    if v.min() < 0 or v.max() > 255:
        raise BadFile(f"colours outside [0, 1] and [0, 255] (min {v.min():g}, max {v.max():g})")
    if v.max() > 1.0:
        return v / 255.0, "0-255"
    return v, "0-1"


def triangulate(polys: list[list[int]], n_vertices: int) -> np.ndarray:
    """Fan-triangulate polygons (lists of vertex indices) -> (F, 3) int64, checking index range."""
    tris: list[tuple[int, int, int]] = []
    for poly in polys:
        if len(poly) < 3:
            raise BadFile(f"face with {len(poly)} vertices (need at least 3)")
        for k in range(1, len(poly) - 1):
            tris.append((poly[0], poly[k], poly[k + 1]))
    faces = np.asarray(tris, dtype=np.int64).reshape(-1, 3)
    if len(faces) and (faces.min() < 0 or faces.max() >= n_vertices):
        raise BadFile(f"face index out of range (0..{n_vertices - 1}): min {faces.min()}, max {faces.max()}")
    return faces


def floats(tokens: list[bytes] | list[str], what: str) -> list[float]:
    try:
        return [float(t) for t in tokens]
    except ValueError:
        raise BadFile(f"non-numeric value in {what}: {b' '.join(map(_b, tokens))[:80]!r}") from None


def _b(t: bytes | str) -> bytes:
    return t if isinstance(t, bytes) else t.encode()


def text_lines(data: bytes) -> list[bytes]:
    if b"\x00" in data:
        raise BadFile("binary data (NUL bytes) in a text format")
    return data.splitlines()
