"""Text tables (.xyz, .txt, .csv, .pts) and the column layout rules shared with the numpy readers."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from svl.data.readers._common import BadFile, ReadOptions, floats, text_lines

__all__ = ["assign_columns", "parse_columns", "read_text"]

_COLUMN_ALIASES = {
    "x": "x", "y": "y", "z": "z",
    "r": "r", "red": "r", "g": "g", "green": "g", "b": "b", "blue": "b",
    "nx": "nx", "ny": "ny", "nz": "nz", "normal_x": "nx", "normal_y": "ny", "normal_z": "nz",
}  # fmt: skip


def parse_columns(spec: str) -> list[str]:
    """'xyzrgb' / 'xyz_nxnynz' / 'x,y,z,r,g,b' -> per-column roles ('_' = ignore)."""
    s = spec.strip().lower()
    if "," in s or " " in s:
        return [c.strip() for c in re.split(r"[,\s]+", s) if c.strip()]
    out, i = [], 0
    while i < len(s):
        if s[i] == "n" and i + 1 < len(s) and s[i + 1] in "xyz":
            out.append(s[i : i + 2])
            i += 2
        elif s[i] in "xyzrgb_":
            out.append(s[i])
            i += 1
        else:
            raise ValueError(f"bad columns spec {spec!r}: unknown letter {s[i]!r}")
    return out


def assign_columns(arr: np.ndarray, names: list[str] | None, info: dict[str, Any]) -> dict[str, Any]:
    """Map a (N, C) numeric table to xyz/rgb/normals by names or by the column-count rule."""
    if arr.ndim != 2:
        raise BadFile(f"expected a 2-D table (N, C), got shape {tuple(arr.shape)}")
    c = arr.shape[1]
    if names is None:
        if c < 3:
            raise BadFile(f"table has {c} columns; need at least x, y, z")
        roles = ["x", "y", "z"]
        for k in range(3, c - 2, 3):
            trip = arr[:, k : k + 3].astype(np.float64)
            unit = np.abs(np.linalg.norm(trip, axis=1) - 1) < 1e-2
            roles += ["nx", "ny", "nz"] if len(trip) and unit.mean() > 0.99 else ["r", "g", "b"]
        if c not in (3, 6, 9):
            if c == 4:
                roles.append("_")  # x y z intensity
            else:
                raise BadFile(
                    f"cannot infer the layout of {c} columns; pass columns=, e.g. 'xyz_rgb' or 'xyznxnynz'"
                )
    else:
        roles = [_COLUMN_ALIASES.get(nm.strip().lower(), "_") for nm in names]
        if len(roles) != c:
            raise BadFile(f"{len(roles)} column names for {c} columns")
    info["columns"] = "".join(r if r != "_" else "_" for r in roles)
    out: dict[str, Any] = {}
    for key, trip in (("xyz", ("x", "y", "z")), ("rgb", ("r", "g", "b")), ("normals", ("nx", "ny", "nz"))):
        if all(t in roles for t in trip):
            out[key] = arr[:, [roles.index(t) for t in trip]]
        elif key == "xyz":
            raise BadFile(f"columns {roles} lack x, y and z")
    return out


def read_text(path: Path, opts: ReadOptions) -> dict[str, Any]:
    """Whitespace, comma or semicolon separated numbers, with an optional header line of names."""
    data, columns = path.read_bytes(), opts.columns
    lines = [ln.strip() for ln in text_lines(data)]
    lines = [ln for ln in lines if ln and not ln.startswith((b"#", b"//", b"%"))]
    if not lines:
        raise BadFile("empty cloud: no data lines")
    names = None
    first = lines[0].replace(b",", b" ").replace(b";", b" ").split()
    try:
        [float(t) for t in first]
    except ValueError:
        names = [t.decode("utf-8", "replace") for t in first]
        lines = lines[1:]
        if not lines:
            raise BadFile("empty cloud: header line only") from None
    if columns is not None:
        names = parse_columns(columns)
    rows = [ln.replace(b",", b" ").replace(b";", b" ").split() for ln in lines]
    width = len(rows[0])
    for i, r in enumerate(rows):
        if len(r) != width:
            raise BadFile(f"data line {i + 1} has {len(r)} values, the first has {width} (truncated?)")
    flat = floats([t for r in rows for t in r], "text data")
    arr = np.asarray(flat, dtype=np.float64).reshape(len(rows), width)
    info: dict[str, Any] = {}
    raw = assign_columns(arr, names, info)
    raw["_info"] = info
    return raw
