"""`prepare`: make a loaded cloud look like the data a checkpoint was trained on, in one place.

Files come in any units, any up axis, with or without colour; a checkpoint's `Contract` says what
its weights expect (gravity axis, colour mode, number of points, normals). Feeding `load_points`
output straight to a model skips all of that and silently mispredicts on files in raw units, so
`svl classify`, `svl zeroshot` and the README example go through this function. It uses the same
seeded resampling and unit-sphere step as the datasets' test transforms, and records what it
assumed so commands can say which convention they used.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np

from svl.conventions import MISSING_COLOR
from svl.data.axes import parse_axis, rotate_axis
from svl.data.transforms import RandomSample, register_transform, unit_sphere

__all__ = ["MIN_DISTINCT_POINTS", "DegenerateCloudWarning", "PrepareForContract", "prepare"]

MIN_DISTINCT_POINTS = 8  # fewer distinct points than this hold no shape a label could describe
_COLOR_MODES = ("none", "rgb01", "rgb255")


class DegenerateCloudWarning(UserWarning):
    """A cloud with too few distinct points for its label to mean anything."""


def _contract_field(contract: Any, name: str) -> Any:
    """A Contract, any object with the same attributes, a dict, or None (everything unknown)."""
    if contract is None:
        return None
    if isinstance(contract, Mapping):
        return contract.get(name)
    return getattr(contract, name, None)


def prepare(
    sample: Mapping[str, Any],
    contract: Any,
    *,
    up_axis: str | None = None,
    num_points: int | None = None,
    seed: int = 0,
    where: str | None = None,
) -> dict[str, Any]:
    """A copy of `sample` (``xyz``, optional ``rgb`` in [0, 1] and ``normals``) prepared for `contract`.

    contract: a `svl.models.Contract`, an object with its attributes, or a dict with any of
        gravity_axis ('x'|'y'|'z'), color ('none'|'rgb01'|'rgb255'), num_points, normals (bool);
        None or missing fields = unknown (gravity z, colour and normals kept as they are).
    up_axis: the up axis of the sample's coordinates ('y' for OpenShape/Objaverse/ShapeNet files).
        None: z, unless `load_points(up_axis=...)` already rotated the file (read from ``meta``).
    num_points: resample to this many points (seeded; repetition only for smaller clouds);
        None = the contract's num_points; 0 or no value anywhere = keep every point.
    where: the file named in errors and warnings (default: ``sample["meta"]["path"]``).

    Steps, in the order the test pipeline applies them: rotate the up axis to the contract's
    gravity axis, resample, centre on the mean and scale to the unit sphere, then colour and
    normals per contract. For z-up input the xyz equals the dataset test pipeline's bit for bit
    (the `normalize` transform). Warns with `DegenerateCloudWarning` when the cloud has fewer than 8
    distinct points.

    ``out["prepared"]`` says what was assumed, for commands to report: up_axis (the file's),
    up_axis_source ("given" | "load_points" | "assumed"), gravity_axis, points_in, num_points,
    centered, center and scale (the mean and the radius removed, in file units after rotation),
    color (the contract's mode), rgb (where the colours came from), normals, distinct_points.
    """
    meta = sample.get("meta") if isinstance(sample.get("meta"), Mapping) else {}
    where = str(where or meta.get("path") or "point cloud")
    xyz = _checked_xyz(sample.get("xyz"), where)
    rgb = _checked_per_point(sample.get("rgb"), xyz, "rgb", where)
    nrm = _checked_per_point(sample.get("normals"), xyz, "normals", where)
    distinct = len(np.unique(xyz, axis=0))
    if distinct < MIN_DISTINCT_POINTS:
        warnings.warn(
            f"{where}: degenerate cloud, only {distinct} distinct point(s) of {len(xyz)}; "
            "a label for it means little",
            DegenerateCloudWarning,
            stacklevel=2,
        )

    file_up, now_up, up_source = _up_axes(meta, up_axis, where)
    gravity = _contract_field(contract, "gravity_axis") or "z"
    parse_axis(gravity, f"{where}: contract gravity_axis")
    if parse_axis(now_up) != parse_axis(gravity):
        xyz = rotate_axis(xyz, now_up, gravity)
        nrm = None if nrm is None else rotate_axis(nrm, now_up, gravity)

    pts: dict[str, Any] = {"xyz": xyz}
    pts.update({k: v for k, v in (("rgb", rgb), ("normals", nrm)) if v is not None})
    n = num_points if num_points is not None else _contract_field(contract, "num_points")
    if n is not None and int(n) > 0:
        pts = RandomSample(int(n))(pts, np.random.default_rng(seed))
    xyz, center, radius = unit_sphere(pts["xyz"], "mean")

    color = _contract_field(contract, "color")
    out_rgb, rgb_note = _colour(pts.get("rgb"), len(xyz), color, meta, where)
    want_normals = _contract_field(contract, "normals")
    out_nrm = pts.get("normals")
    if want_normals and out_nrm is None:
        raise ValueError(
            f"{where}: the model expects normals (contract normals=True) but the cloud has none; "
            "use a file with normals (e.g. nx ny nz columns) or a mesh, whose face normals are kept"
        )
    if want_normals is False:
        out_nrm = None

    out = {k: v for k, v in sample.items() if k not in ("xyz", "rgb", "normals", "feats", "prepared")}
    out["xyz"] = xyz
    out["rgb"] = out_rgb
    out["normals"] = None if out_nrm is None else np.ascontiguousarray(out_nrm, dtype=np.float32)
    out["prepared"] = {
        "up_axis": file_up,
        "up_axis_source": up_source,
        "gravity_axis": gravity,
        "points_in": int(len(sample["xyz"])),
        "num_points": int(len(xyz)),
        "centered": True,
        "center": [float(c) for c in center],
        "scale": radius,
        "color": color,
        "rgb": rgb_note,
        "normals": out["normals"] is not None,
        "distinct_points": int(distinct),
    }
    return out


@register_transform("prepare")
class PrepareForContract:
    """`prepare` as a dataset transform, so a dataset of raw files (any units, y-up, 0-255 colour)
    yields what a checkpoint expects: ``{"name": "prepare", "contract": {...}, "up_axis": "y"}``.

    The resampling seed is drawn from the transform's generator, which the datasets seed per
    (seed, epoch, index), so a run stays repeatable.
    """

    def __init__(
        self, contract: Any = None, up_axis: str | None = None, num_points: int | None = None
    ) -> None:
        self.contract, self.up_axis, self.num_points = contract, up_axis, num_points

    def __call__(self, sample: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        seed = int(rng.integers(2**31))
        return prepare(sample, self.contract, up_axis=self.up_axis, num_points=self.num_points, seed=seed)

    def __repr__(self) -> str:
        return f"PrepareForContract(contract={self.contract!r}, up_axis={self.up_axis!r})"


def _checked_xyz(xyz: Any, where: str) -> np.ndarray:
    if xyz is None:
        raise ValueError(f"{where}: the sample has no 'xyz' coordinates")
    x = np.asarray(xyz, dtype=np.float32)
    if x.ndim != 2 or x.shape[1] != 3 or x.shape[0] == 0:
        raise ValueError(f"{where}: a point cloud must be a non-empty (N, 3) array, got {tuple(x.shape)}")
    if not np.isfinite(x).all():
        raise ValueError(f"{where}: the point cloud contains NaN or inf coordinates")
    return x


def _checked_per_point(v: Any, xyz: np.ndarray, key: str, where: str) -> np.ndarray | None:
    if v is None:
        return None
    a = np.asarray(v, dtype=np.float32)
    if a.shape != xyz.shape:
        raise ValueError(f"{where}: {key} shape {tuple(a.shape)} does not match xyz {tuple(xyz.shape)}")
    if not np.isfinite(a).all():
        raise ValueError(f"{where}: {key} contains NaN or inf")
    return a


def _up_axes(meta: Mapping[str, Any], up_axis: str | None, where: str) -> tuple[str, str, str]:
    """(the file's up axis, the up axis of the coordinates now, who said so)."""
    loaded = meta.get("up_axis_in_file")
    rotated = loaded is not None and parse_axis(loaded, where) != (2, 1)
    if up_axis is not None:
        parse_axis(up_axis, where)
        if rotated:
            raise ValueError(
                f"{where}: load_points(up_axis={loaded!r}) already rotated this cloud to z-up; "
                f"passing up_axis={up_axis!r} again would rotate it twice"
            )
        return str(up_axis), str(up_axis), "given"
    if rotated:
        return str(loaded), "z", "load_points"
    return "z", "z", "assumed"


def _colour(
    rgb: np.ndarray | None, n: int, mode: str | None, meta: Mapping[str, Any], where: str
) -> tuple[np.ndarray | None, str]:
    """Colours per contract mode and a note on where they came from."""
    if mode is not None and mode not in _COLOR_MODES:
        raise ValueError(f"{where}: contract color must be one of {_COLOR_MODES}, got {mode!r}")
    if rgb is not None and meta.get("rgb_range") != "[0, 1]" and float(rgb.max()) > 1.0:
        rgb = rgb / np.float32(255.0)  # a sample not from load_points with 0-255 colours
    if mode == "none":
        note = "dropped (model takes no colour)" if rgb is not None else "none in file"
        return np.full((n, 3), MISSING_COLOR, dtype=np.float32), note
    if rgb is None:
        if mode is None:
            return None, "none in file"
        fill = MISSING_COLOR * (255.0 if mode == "rgb255" else 1.0)
        return np.full((n, 3), fill, dtype=np.float32), f"none in file (constant {fill:g})"
    rgb = np.clip(rgb, 0.0, 1.0).astype(np.float32)
    if mode == "rgb255":
        return (rgb * np.float32(255.0)).astype(np.float32), "from file, scaled to 0-255"
    return rgb, "from file, 0-1"
