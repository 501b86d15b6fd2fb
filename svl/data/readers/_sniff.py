""".bin is two unrelated formats: N-MNIST events (5-byte records) and KITTI LiDAR scans (16-byte float32
records). Both the event readers and the point reader need to tell them apart by content, so the tests
live here, below both (readers/events.py and readers/kitti.py import this module, never each other).

Each ``*_problem(data)`` returns None when the bytes fit the format, else why they do not; `sniff_bin`
combines them and names every rejected format in its error.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

__all__ = ["KITTI_MAX_RANGE_M", "kitti_problem", "nmnist_problem", "nmnist_timestamps", "sniff_bin"]

NMNIST_RECORD = 5  # bytes: x, y, polarity bit + 23-bit timestamp (big-endian)
KITTI_RECORD = 16  # bytes: float32 x, y, z, reflectance
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
    if len(data) == 0:
        return "empty (0 bytes)"
    if len(data) % KITTI_RECORD:
        return (
            f"size {len(data)} bytes is not a multiple of the {KITTI_RECORD}-byte point record "
            f"(float32 x, y, z, reflectance; {len(data) % KITTI_RECORD} bytes left over)"
        )
    pts = np.frombuffer(data, "<f4").reshape(-1, 4)
    finite = np.isfinite(pts).all(1)
    if not finite.all():
        return f"{int((~finite).sum())} of {len(pts)} points hold NaN or inf"
    reach = np.abs(pts[:, :3]).max(1)
    far = int((reach > KITTI_MAX_RANGE_M).sum())
    if far:
        top = reach.max()
        return f"{far} of {len(pts)} points lie beyond {KITTI_MAX_RANGE_M:g} m (max |coordinate| {top:.3g})"
    if reach.max() < 0.5:
        return f"every point lies within 0.5 m of the sensor (max |coordinate| {reach.max():.3g}): not a scan"
    r = pts[:, 3]
    if r.min() < 0 or r.max() > 255:
        return f"reflectance outside [0, 1] and [0, 255] (min {r.min():.3g}, max {r.max():.3g})"
    return None


def sniff_bin(path: str | os.PathLike[str]) -> str:
    """Which format a .bin file holds, "nmnist" or "kitti", decided by its bytes (see module docstring).

    Raises ValueError naming the file and every format tried with why it was rejected when none fits
    (or when both do, which only tiny files can).
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such file")
    data = p.read_bytes()
    if not data:
        raise ValueError(f"{p}: empty file (0 bytes); expected N-MNIST events or a KITTI LiDAR scan")
    why = {"nmnist": nmnist_problem(data), "kitti": kitti_problem(data)}
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
