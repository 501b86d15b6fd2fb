"""Point-cloud and mesh file readers behind one table and one entry point, `load_points`.

Every reader returns the same sample dict so the rest of svl never cares where a cloud came from:

- ``xyz``: (N, 3) float32, finite. Axis convention: svl works z-up (gravity = +z). Files carry no
  reliable up axis, so coordinates are returned as stored unless ``up_axis`` names the file's up
  axis ("y" is common for ShapeNet/ModelNet-h5/OpenShape data), in which case they are rotated to
  z-up (a proper rotation, normals rotated too).
- ``rgb``: optional (N, 3) float32 in [0, 1]. Integer colours (PLY uchar, PCD packed rgb, OFF/XYZ
  values above 1) are divided by 255; missing colour stays missing (svl uses
  ``svl.conventions.MISSING_COLOR`` downstream).
- ``normals``: optional (N, 3) float32 unit vectors.
- ``meta``: dict with the source path, format, up axis found/applied, colour range, point counts,
  and per-point extras a format carries (KITTI ``reflectance``), subsampled with the points.

``.bin`` is a LiDAR scan of float32 records: KITTI's (x, y, z, reflectance), nuScenes' 5 per point or
Waymo's 6 (in KITTI layout), the width told by the file's size and value ranges, or forced with
``format="kitti" | "nuscenes" | "waymo"``. N-MNIST event recordings share the extension and are
refused with a pointer to `svl.data.readers.events.read_events`.

Meshes (OBJ, OFF, STL and PLY files with faces) are sampled on their surface with area-weighted
triangle sampling (seeded), with face normals and barycentric vertex colours when present.
Bad input of any kind raises ``ValueError`` naming the file and the problem (``FileNotFoundError``
for a missing file).

A new format is one function ``read(path, opts: ReadOptions) -> dict`` (keys ``xyz``, optional
``rgb``, ``normals``, ``faces``; raise `BadFile` on bad content) plus one `register_reader` call,
or an entry point in the group ``svl.readers`` named by the extension (e.g. ``".e57"``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from svl.data.axes import parse_axis, rotate_up_to_z
from svl.data.readers import arrays, kitti, mesh, pcd, ply, text
from svl.data.readers._common import BadFile, ReadOptions, check_arrays
from svl.data.readers.mesh import DEFAULT_MESH_POINTS, sample_mesh_surface
from svl.data.readers.pcd import lzf_decompress
from svl.registry import Registry

__all__ = [
    "READERS",
    "BadFile",
    "ReadOptions",
    "Reader",
    "list_readers",
    "load_points",
    "lzf_decompress",
    "register_reader",
    "sample_mesh_surface",
]

ReadFn = Callable[[Path, ReadOptions], dict[str, Any]]


@dataclass(frozen=True)
class Reader:
    """One table entry: the read function and the format family named in error messages."""

    read: ReadFn
    format: str


READERS: Registry[Reader | ReadFn] = Registry(
    "point-cloud reader", group="svl.readers", hint="svl.data.readers.list_readers()"
)


def register_reader(
    ext: str, read: ReadFn | None = None, *, format: str | None = None, override: bool = False
) -> Any:
    """Read files ending in `ext` (".ply") with `read(path, opts)`; without `read`, a decorator.

    format: the family named in error messages ("invalid <format> file"); default: `ext` without
    the dot.
    """
    key = "." + str(ext).strip().lower().lstrip(".")
    if key == ".":
        raise ValueError(f"register_reader: empty extension {ext!r}")

    def add(fn: ReadFn) -> ReadFn:
        READERS.register(key, Reader(fn, format or key[1:]), override=override)
        return fn

    return add(read) if read is not None else add


def list_readers() -> list[str]:
    """The supported file extensions, sorted (".csv", ".npy", ...)."""
    return READERS.names()


# the table: extension -> reader (text tables share one parser)
for _ext, _read, _fmt in (
    (".ply", ply.read_ply, "ply"),
    (".obj", mesh.read_obj, "obj"),
    (".off", mesh.read_off, "off"),
    (".stl", mesh.read_stl, "stl"),
    (".xyz", text.read_text, "text"),
    (".txt", text.read_text, "text"),
    (".csv", text.read_text, "text"),
    (".pts", text.read_text, "text"),
    (".npy", arrays.read_npy, "npy"),
    (".npz", arrays.read_npz, "npz"),
    (".pcd", pcd.read_pcd, "pcd"),
    (".bin", kitti.read_lidar_bin, "kitti"),  # N-MNIST events share .bin: the reader tells them apart
):
    register_reader(_ext, _read, format=_fmt)

# LiDAR .bin layouts a forced format names (the .bin reader itself tells them apart by content)
_LIDAR_READERS = {
    "kitti": Reader(kitti.read_kitti, "kitti"),
    "nuscenes": Reader(kitti.read_nuscenes, "nuscenes"),
    "waymo": Reader(kitti.read_waymo, "waymo"),
}


def _reader_for(p: Path, format: str | None = None) -> Reader:
    """The reader for `p`'s extension, or for a forced `format` (an extension like "ply" or a family
    like "kitti" or "text")."""
    if format is not None:
        key = "." + format.strip().lower().lstrip(".")
        if key[1:] in _LIDAR_READERS:
            return _LIDAR_READERS[key[1:]]
        if key in READERS:
            entry = READERS.get(key)
            return entry if isinstance(entry, Reader) else Reader(entry, key[1:])
        for name in READERS.names():
            entry = READERS.get(name)
            if isinstance(entry, Reader) and entry.format == key[1:]:
                return entry
        from svl.data.readers.events import EVENT_FORMATS

        families = sorted(
            {e.format for n in READERS.names() if isinstance(e := READERS.get(n), Reader)}
            | set(_LIDAR_READERS)
        )
        raise ValueError(
            f"{p}: unknown format {format!r}; point-cloud formats: {', '.join(families)}; "
            f"event formats: {', '.join(EVENT_FORMATS)}"
        )
    ext = p.suffix.lower()
    if ext not in READERS:
        from svl.data.readers.events import detect_event_format

        if p.is_file() and detect_event_format(p) is not None:
            raise ValueError(
                f"{p} is an event file ({detect_event_format(p)}), not a point cloud; this command reads "
                "point clouds (events: svl classify with an event classifier, svl data info / show)"
            )
        raise ValueError(f"{p}: unknown extension {p.suffix!r}; supported: {', '.join(list_readers())}")
    entry = READERS.get(ext)
    # an entry point "module:function" registers the bare function
    return entry if isinstance(entry, Reader) else Reader(entry, ext[1:])


# ----------------------------------------------------------------------------- public entry point
def load_points(
    path: str | os.PathLike[str],
    num_points: int | None = None,
    *,
    up_axis: str = "z",
    as_mesh: bool | None = None,
    columns: str | None = None,
    index: int | None = None,
    allow_pickle: bool = False,
    seed: int = 0,
    format: str | None = None,
) -> dict[str, Any]:
    """Read a point cloud or mesh file into svl's common sample dict (see module docstring).

    num_points: for meshes the number of surface samples (default 10000); for point files a
        seeded random subset (or repetition when the file has fewer points); None keeps all.
    up_axis: the file's up axis ("x", "y", "z", or "-y" etc.); rotated to svl's z-up.
    as_mesh: PLY only: force (True) or forbid (False) surface sampling; None = sample iff faces.
    columns: text/npy column layout, e.g. "xyzrgb", "xyznxnynz", "xyz_rgb" ("_" skips a column);
        default: by header names, else 3 = xyz, 6/9 = xyz + rgb and/or normals (unit-length triple).
    index: which cloud of a multi-cloud .npz/.npy (arrays shaped (S, N, 3)).
    allow_pickle: allow object .npy files (OpenShape per-shape dicts); only for trusted files.
    format: read with this format's reader whatever the extension ("kitti", "ply", "text", ...);
        errors then say the forced format did not fit. Per-point extras a reader finds (KITTI
        reflectance) land in ``meta`` under their own names, subsampled with the points.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file")
    if p.is_dir():
        raise ValueError(f"{p}: is a directory, expected a point-cloud or mesh file")
    reader = _reader_for(p, format)
    kind = reader.format
    bad = f"format {kind!r} (forced) does not fit" if format is not None else f"invalid {kind} file"
    if num_points is not None and (isinstance(num_points, bool) or int(num_points) < 1):
        raise ValueError(f"{p}: num_points must be a positive integer, got {num_points!r}")
    rng = np.random.default_rng(seed)
    try:
        raw = reader.read(p, ReadOptions(columns=columns, index=index, allow_pickle=allow_pickle))
        out, is_mesh, meta_counts, info = _points_from_raw(raw, num_points, as_mesh, rng)
    except BadFile as e:
        raise ValueError(f"{p}: {bad}: {e}" if format is not None else f"{p}: {e}") from None
    except ValueError as e:
        if str(p) in str(e):
            raise
        raise ValueError(f"{p}: {bad}: {e}") from e
    except (MemoryError, RecursionError) as e:
        raise ValueError(f"{p}: corrupt {kind} file ({type(e).__name__})") from e
    except Exception as e:  # noqa: BLE001 - any parser failure on untrusted bytes is bad input
        raise ValueError(f"{p}: corrupt or unreadable {kind} file ({type(e).__name__}: {e})") from e
    up = parse_axis(up_axis, p)
    if up != (2, 1):
        out["xyz"] = rotate_up_to_z(out["xyz"], up_axis)
        if "normals" in out:
            out["normals"] = rotate_up_to_z(out["normals"], up_axis)
    sample: dict[str, Any] = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in out.items()}
    sample["meta"] = {
        "path": str(p),
        "format": info.get("format") or (kind if format is not None else p.suffix.lower().lstrip(".")),
        "mesh": bool(is_mesh),
        "up_axis_in_file": up_axis,
        "axis_convention": "z-up" if up != (2, 1) or up_axis in ("z", "+z") else "as stored (z-up assumed)",
        "rgb_range": "[0, 1]" if "rgb" in sample else None,
        "rgb_source_scale": info.get("rgb_scale"),
        "columns": info.get("columns"),
        "num_points": len(sample["xyz"]),
        **meta_counts,
        **{k: info[k] for k in ("reflectance_range",) if k in info},
        **info.get("per_point", {}),
    }
    return sample


def _points_from_raw(
    raw: dict[str, Any], num_points: int | None, as_mesh: bool | None, rng: np.random.Generator
) -> tuple[dict[str, np.ndarray], bool, dict[str, int], dict[str, Any]]:
    """Validated points of a reader's output: surface samples of a mesh, else a seeded subset.

    Also returns what the reader found out (colour scale, column layout) for the meta record;
    for meshes that stays empty, as it always has.
    """
    faces = raw.pop("faces", None)
    is_mesh = faces is not None and len(faces) > 0 if as_mesh is None else bool(as_mesh)
    if is_mesh:
        if faces is None or len(faces) == 0:
            raise BadFile("as_mesh=True but the file has no faces")
        raw = check_arrays(raw, what="vertex")
        n = DEFAULT_MESH_POINTS if num_points is None else int(num_points)
        out = sample_mesh_surface(raw["xyz"], faces, n, rng=rng, vertex_rgb=raw.get("rgb"))
        return out, True, {"vertices": len(raw["xyz"]), "faces": len(faces), "sampled": n}, {}
    out = check_arrays(raw, what="point")
    counts = {"points_in_file": len(out["xyz"])}
    info = dict(raw.get("_info", {}))
    extras = {k: np.asarray(v) for k, v in info.get("per_point", {}).items()}
    for k, v in extras.items():
        if v.shape != (len(out["xyz"]),):
            raise BadFile(f"{k} holds {v.shape} values for {len(out['xyz'])} points")
    if num_points is not None and int(num_points) != len(out["xyz"]):
        n_all, n = len(out["xyz"]), int(num_points)
        idx = rng.choice(n_all, n, replace=n > n_all)
        out = {k: v[idx] for k, v in out.items()}
        extras = {k: v[idx] for k, v in extras.items()}
    if extras:
        info["per_point"] = extras
    return out, False, counts, info
