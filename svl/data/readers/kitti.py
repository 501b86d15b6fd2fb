"""KITTI Velodyne scans (.bin): float32 (x, y, z, reflectance) records, no header.

The same extension holds N-MNIST event recordings, so the reader checks the bytes first and sends
event files to the event readers with an error that says how to read them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from svl.data.readers._common import BadFile, ReadOptions
from svl.data.readers._sniff import kitti_problem, nmnist_problem

__all__ = ["read_kitti"]


def read_kitti(path: Path, opts: ReadOptions) -> dict[str, Any]:
    """xyz (N, 3) in metres (sensor frame: x forward, y left, z up); reflectance as stored, in the meta."""
    data = path.read_bytes()
    problem = kitti_problem(data)
    if problem is not None:
        if nmnist_problem(data) is None:
            raise BadFile(
                "this is an N-MNIST event recording (5-byte event records), not a point cloud; read it "
                "with svl.data.readers.events.read_events(path) (or `svl data info|render --format nmnist`)"
            )
        raise BadFile(f"not a KITTI LiDAR scan: {problem}")
    pts = np.frombuffer(data, "<f4").reshape(-1, 4)
    refl = pts[:, 3].copy()
    return {
        "xyz": pts[:, :3],
        "_info": {
            "format": "kitti",
            "per_point": {"reflectance": refl},
            "reflectance_range": "0-1" if refl.max() <= 1.0 else "0-255",
        },
    }
