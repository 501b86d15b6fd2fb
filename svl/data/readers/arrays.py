"""Numpy files (.npy, .npz): tables, stacked clouds, structured arrays and OpenShape-style dicts."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from svl.data.readers._common import BadFile, ReadOptions
from svl.data.readers.text import assign_columns, parse_columns

__all__ = ["read_npy", "read_npz"]


def _from_mapping(d: Any, columns: str | None, where: str) -> dict[str, Any]:
    """OpenShape-style dicts / npz: xyz|points|pos, rgb|colors, normals|normal."""

    def pick(*keys: str) -> Any:
        for k in keys:
            if k in d:
                return np.asarray(d[k])
        return None

    xyz = pick("xyz", "points", "pos", "point_cloud", "pc", "data")
    if xyz is None:
        raise BadFile(f"{where} has no xyz/points array (keys: {sorted(map(str, d.keys()))[:12]})")
    raw: dict[str, Any] = {}
    if xyz.ndim == 2 and xyz.shape[-1] != 3:
        info: dict[str, Any] = {}
        raw = assign_columns(xyz, parse_columns(columns) if columns else None, info)
        raw["_info"] = info
    else:
        raw["xyz"] = xyz
    rgb = pick("rgb", "colors", "colours", "color", "colour")
    if rgb is not None:
        raw["rgb"] = rgb
    nrm = pick("normals", "normal", "norm")
    if nrm is not None:
        raw["normals"] = nrm
    return raw


def _select(raw: dict[str, Any], index: int | None) -> dict[str, Any]:
    """Pick one cloud out of stacked (S, N, 3) arrays."""
    xyz = raw["xyz"]
    if xyz.ndim == 3:
        if index is None:
            raise BadFile(
                f"holds {xyz.shape[0]} clouds of shape {tuple(xyz.shape[1:])}; pass index= to pick one"
            )
        if not -xyz.shape[0] <= index < xyz.shape[0]:
            raise BadFile(f"index {index} out of range for {xyz.shape[0]} clouds")
        return {k: (v[index] if isinstance(v, np.ndarray) and v.ndim == 3 else v) for k, v in raw.items()}
    if index not in (None, 0):
        raise BadFile(f"holds a single cloud; index={index} is out of range")
    return raw


def read_npy(path: Path, opts: ReadOptions) -> dict[str, Any]:
    """(N, 3+) tables, stacked (S, N, 3+) clouds, structured arrays and OpenShape object dicts."""
    p, columns, index, allow_pickle = path, opts.columns, opts.index, opts.allow_pickle
    try:
        arr = np.load(p, allow_pickle=allow_pickle)
    except ValueError as e:
        if "allow_pickle" in str(e):
            raise BadFile(
                "holds Python objects (pickle); pass allow_pickle=True for trusted files only"
            ) from None
        raise
    if arr.dtype == object:
        obj = arr.item() if arr.ndim == 0 else None
        if not isinstance(obj, dict):
            raise BadFile(
                "object array is not a dict of arrays (expected an OpenShape-style {'xyz': ...} dict)"
            )
        return _select(_from_mapping(obj, columns, "dict"), index)
    if arr.dtype.names:
        names = list(arr.dtype.names)
        table = np.stack([arr[n].astype(np.float64) for n in names], -1)
        info: dict[str, Any] = {}
        raw = assign_columns(table.reshape(-1, len(names)), names, info)
        raw["_info"] = info
        return raw
    if not np.issubdtype(arr.dtype, np.number):
        raise BadFile(f"array dtype {arr.dtype} is not numeric")
    if arr.ndim == 3:
        return (
            _select({"xyz": arr[..., :3]}, index)
            if arr.shape[-1] == 3
            else _select_table(arr, index, columns)
        )
    if arr.ndim != 2:
        raise BadFile(f"expected an (N, 3+) array, got shape {tuple(arr.shape)}")
    info = {}
    raw = assign_columns(arr, parse_columns(columns) if columns else None, info)
    raw["_info"] = info
    return _select(raw, index)


def _select_table(arr: np.ndarray, index: int | None, columns: str | None) -> dict[str, Any]:
    if index is None:
        raise BadFile(f"holds {arr.shape[0]} clouds of shape {tuple(arr.shape[1:])}; pass index= to pick one")
    if not -arr.shape[0] <= index < arr.shape[0]:
        raise BadFile(f"index {index} out of range for {arr.shape[0]} clouds")
    info: dict[str, Any] = {}
    raw = assign_columns(arr[index], parse_columns(columns) if columns else None, info)
    raw["_info"] = info
    return raw


_NPZ_KEYS = (
    "xyz", "points", "pos", "point_cloud", "pc", "data",
    "rgb", "colors", "colours", "color", "colour", "normals", "normal", "norm",
)  # fmt: skip


def read_npz(path: Path, opts: ReadOptions) -> dict[str, Any]:
    """npz archives with xyz|points|pos and optional rgb|colors and normals arrays."""
    p, columns, index = path, opts.columns, opts.index
    try:
        z = np.load(p, allow_pickle=False)
    except zipfile.BadZipFile as e:
        raise BadFile(f"not a valid npz archive ({e})") from None
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise BadFile("not an npz archive")
    with z:
        keys = sorted(z.files)
        d = {k: z[k] for k in keys if k in _NPZ_KEYS}
    raw = _from_mapping(d, columns, f"npz (keys {keys[:12]})")
    return _select(raw, index)
