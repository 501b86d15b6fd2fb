""".bin is two unrelated formats: N-MNIST events (5-byte records) and LiDAR scans of float32 records:
KITTI's 4 per point (x, y, z, reflectance), nuScenes' `.pcd.bin` 5 (x, y, z, intensity, ring) and
Waymo scans in KITTI layout 6 (x, y, z, intensity, elongation, an index). Both the event readers
and the point reader need to tell them apart by content, so the tests live here, below both
(readers/events.py and readers/kitti.py import this module, never each other).

Each ``*_problem(data)`` returns None when the bytes fit the format, else why they do not; `sniff_bin`
combines them and names every rejected format in its error.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

__all__ = [
    "KITTI_MAX_RANGE_M",
    "LIDAR_LAYOUTS",
    "kitti_problem",
    "lidar_problem",
    "lidar_width",
    "nmnist_problem",
    "nmnist_timestamps",
    "sniff_bin",
]

NMNIST_RECORD = 5  # bytes: x, y, polarity bit + 23-bit timestamp (big-endian)
KITTI_RECORD = 16  # bytes: float32 x, y, z, reflectance
# layout -> float32 per point; the values past x, y, z are intensities, elongations, ring numbers or
# indices, never negative (which is what tells the widths apart: read with a wrong width, those
# columns take x, y or z values of a 360-degree scan, half of them negative)
LIDAR_LAYOUTS = {"kitti": 4, "nuscenes": 5, "waymo": 6}
KITTI_MAX_RANGE_M = 200.0  # no Velodyne return lies further out; random floats do
NMNIST_OVERFLOW_Y = 240  # the authors' timestamp-overflow marker event
NMNIST_OVERFLOW_US = 1 << 13  # what the authors' reader (and tonic's) adds per marker
_MAX_BACKWARDS = 0.05  # real recordings are time-ordered; reinterpreted floats go backwards ~half the time


def nmnist_timestamps(records: np.ndarray) -> np.ndarray:
    """(N, 5) uint8 records -> int64 timestamps (us), overflow markers applied (markers kept)."""
    b = records.astype(np.int64)
    t = ((b[:, 2] & 0x7F) << 16) | (b[:, 3] << 8) | b[:, 4]
    overflow = records[:, 1] == NMNIST_OVERFLOW_Y
    if overflow.any():
        t = t + np.cumsum(overflow) * NMNIST_OVERFLOW_US
    return t


def nmnist_problem(data: bytes) -> str | None:
    """None if `data` reads as N-MNIST events: whole 5-byte records, timestamps (nearly) in order."""
    if len(data) == 0:
        return "empty (0 bytes)"
    if len(data) % NMNIST_RECORD:
        return (
            f"size {len(data)} bytes is not a multiple of the {NMNIST_RECORD}-byte event record "
            f"({len(data) % NMNIST_RECORD} bytes left over)"
        )
    rec = np.frombuffer(data, np.uint8).reshape(-1, NMNIST_RECORD)
    t = nmnist_timestamps(rec)[rec[:, 1] != NMNIST_OVERFLOW_Y]
    if len(t) > 1:
        back = int((np.diff(t) < 0).sum())
        if back > _MAX_BACKWARDS * (len(t) - 1):
            return f"timestamps are not in time order ({back} of {len(t) - 1} steps go backwards)"
    return None


def kitti_problem(data: bytes) -> str | None:
    """None if `data` reads as a KITTI scan: float32 (x, y, z, r), finite, within range, r in [0, 255]."""
    return lidar_problem(data, 4)


def lidar_problem(data: bytes, width: int | None = None) -> str | None:
    """None if `data` reads as a LiDAR scan of `width` float32 per point (None: any of LIDAR_LAYOUTS'
    widths); else why not (with every width, what each one found)."""
    if width is None:
        why = {w: lidar_problem(data, w) for w in sorted(set(LIDAR_LAYOUTS.values()))}
        if any(v is None for v in why.values()):
            return None
        layout = {w: k for k, w in LIDAR_LAYOUTS.items()}
        return "; ".join(f"{w} floats per point ({layout[w]}): {v}" for w, v in why.items())
    rec = 4 * int(width)
    names = "x, y, z, reflectance" if width == 4 else f"x, y, z + {width - 3} values"
    if len(data) == 0:
        return "empty (0 bytes)"
    if len(data) % rec:
        return (
            f"size {len(data)} bytes is not a multiple of the {rec}-byte point record "
            f"(float32 {names}; {len(data) % rec} bytes left over)"
        )
    pts = np.frombuffer(data, "<f4").reshape(-1, width)
    finite = np.isfinite(pts).all(1)
    if not finite.all():
        return f"{int((~finite).sum())} of {len(pts)} points hold NaN or inf"
    extra = pts[:, 3:]
    if extra.min() < 0:  # checked before the range: a wrong width puts coordinates here
        return (
            f"{int((extra < 0).any(1).sum())} of {len(pts)} points hold negative values past x, y, z "
            f"(min {extra.min():.3g}; intensities and indices are never negative)"
        )
    reach = np.abs(pts[:, :3]).max(1)
    far = int((reach > KITTI_MAX_RANGE_M).sum())
    if far:
        top = reach.max()
        return f"{far} of {len(pts)} points lie beyond {KITTI_MAX_RANGE_M:g} m (max |coordinate| {top:.3g})"
    if reach.max() < 0.5:
        return f"every point lies within 0.5 m of the sensor (max |coordinate| {reach.max():.3g}): not a scan"
    r = pts[:, 3]
    if r.max() > 255:
        return f"reflectance outside [0, 1] and [0, 255] (min {r.min():.3g}, max {r.max():.3g})"
    if width == 5 and (pts[:, 4] != np.round(pts[:, 4])).any():
        return "the 5th value (nuScenes' ring number) is not a whole number"
    return None


def lidar_width(data: bytes, where: object = "scan") -> int:
    """The float32 count per point of a LiDAR scan, by its size and value ranges (`lidar_problem`).

    Raises ValueError naming every width tried and why it was rejected when none fits, or which ones
    fit when several do (pass the layout then: format="kitti" | "nuscenes" | "waymo").
    """
    why = {w: lidar_problem(data, w) for w in sorted(set(LIDAR_LAYOUTS.values()))}
    fits = [w for w, v in why.items() if v is None]
    layout = {w: k for k, w in LIDAR_LAYOUTS.items()}
    if len(fits) == 1:
        return fits[0]
    if not fits:
        tried = "; ".join(f"{w} floats per point ({layout[w]}): {v}" for w, v in why.items())
        raise ValueError(f"{where}: not a LiDAR scan of 4, 5 or 6 float32 per point; tried {tried}")
    raise ValueError(
        f"{where}: {len(data)} bytes read as a LiDAR scan with "
        + " and with ".join(f"{w} ({layout[w]})" for w in fits)
        + " float32 per point; tried widths 4, 5 and 6 and cannot tell which, pass the layout "
        "(--format kitti|nuscenes|waymo, format= in the API)"
    )


def sniff_bin(path: str | os.PathLike[str]) -> str:
    """Which format a .bin file holds, "nmnist" or "kitti" (a LiDAR scan of 4, 5 or 6 float32 per
    point), decided by its bytes (see module docstring).

    Raises ValueError naming the file and every format tried with why it was rejected when none fits
    (or when both do, which only tiny files can).
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such file")
    data = p.read_bytes()
    if not data:
        raise ValueError(f"{p}: empty file (0 bytes); expected N-MNIST events or a KITTI LiDAR scan")
    why = {"nmnist": nmnist_problem(data), "kitti": lidar_problem(data)}
    fits = [k for k, v in why.items() if v is None]
    if len(fits) == 1:
        return fits[0]
    if not fits:
        tried = "; ".join(f"{k}: {v}" for k, v in why.items())
        raise ValueError(f"{p}: not a known .bin format ({len(data)} bytes); tried {tried}")
    raise ValueError(
        f"{p}: {len(data)} bytes fit both N-MNIST events and a KITTI LiDAR scan; "
        "pass the format (format='nmnist' or 'kitti', --format on the command line)"
    )
