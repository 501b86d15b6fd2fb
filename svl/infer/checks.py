"""Is an input like what the checkpoint was trained on? The checks every inference command runs on a
file before its model sees it, against what the checkpoint records (the detector's point-cloud range,
the segmenter's voxel size, the classifier's point count, sensor size and its training files' up axis).

Each check returns a warning line naming the file and the figure ("scan.bin: 12 of 800 points inside
the detector's range ...") or None, and raises ValueError where nothing meaningful can come out (no
point inside a detector's range). The commands print the warnings as `svl: warning:` lines; the
library functions return them in each file's result under "warnings".
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "DETECT_MIN_INSIDE",
    "MIN_VOXELS",
    "detector_range_check",
    "event_warning",
    "format_range",
    "point_count_warning",
    "up_axis_warning",
    "voxel_warning",
]

# Below this share of a scan's points inside the range, a detector sees little of it. A full 360-degree
# KITTI scan has 50-55% of its points in the front-camera range the KITTI detectors use (the three
# shared frames: 54.5, 51.2, 50.2%), so a scan like the training ones never warns; under 20% is under
# half of that, e.g. another sensor's frame or a scan in other units.
DETECT_MIN_INSIDE = 0.2
MIN_VOXELS = 8  # a cloud in fewer voxels of the model's size holds no scene to label
_SIZE_FROM = {
    "format": "the format's sensor",
    "header": "from the file header",
    "argument": "as given",
    "data": "guessed from the largest x and y; state it with --sensor-size W H",
    "dataset": "the dataset's",
}


def format_range(r: Sequence[float]) -> str:
    """(x0, y0, z0, x1, y1, z1) -> "x [0, 70.4], y [-40, 40], z [-3, 1] m"."""
    return ", ".join(f"{a} [{float(r[i]):g}, {float(r[i + 3]):g}]" for i, a in enumerate("xyz")) + " m"


def detector_range_check(
    xyz: np.ndarray, point_cloud_range: Sequence[float] | None, where: str
) -> str | None:
    """Refuse a scan with no point inside the detector's range (its boxes would come from nothing);
    a warning when under DETECT_MIN_INSIDE of its points are inside."""
    if point_cloud_range is None:
        return None
    r = [float(v) for v in point_cloud_range]
    xyz = np.asarray(xyz)
    lo, hi = np.asarray(r[:3]), np.asarray(r[3:])
    inside = int(((xyz >= lo) & (xyz <= hi)).all(1).sum())
    n = len(xyz)
    figure = f"{inside} of {n} points inside the detector's range {format_range(r)}"
    if inside == 0:
        ext = f"x [{xyz[:, 0].min():.3g}, {xyz[:, 0].max():.3g}], y [{xyz[:, 1].min():.3g}, " \
              f"{xyz[:, 1].max():.3g}], z [{xyz[:, 2].min():.3g}, {xyz[:, 2].max():.3g}]"  # fmt: skip
        raise ValueError(
            f"{where}: {figure} (the scan spans {ext}); nothing to detect: is it in metres, z up, in the "
            "frame the detector was trained on?"
        )
    if inside < DETECT_MIN_INSIDE * n:
        return f"{where}: only {figure}; boxes come from those alone"
    return None


def voxel_warning(xyz: np.ndarray, voxel_size: float | None, where: str) -> str | None:
    """A warning when a cloud fills fewer than MIN_VOXELS voxels of the model's size (coordinates in
    other units than the training data's, e.g. a unit-sphere object for a model of metre scans)."""
    if not voxel_size or voxel_size <= 0:
        return None
    cells = np.floor(np.asarray(xyz, np.float64) / float(voxel_size)).astype(np.int64)
    filled = len(np.unique(cells, axis=0))
    if filled >= MIN_VOXELS:
        return None
    span = float((np.asarray(xyz).max(0) - np.asarray(xyz).min(0)).max())
    return (
        f"{where}: its {len(xyz)} points fill {filled} voxel(s) of the model's {voxel_size:g} m (the cloud "
        f"spans {span:.3g}); are its coordinates in the units the model was trained on?"
    )


def point_count_warning(points_in: int, trained: int | None, where: str, what: str = "points") -> str | None:
    """A warning when a file holds under half the points (events) the model was trained on: they are
    repeated to make up the count, so the model sees a sparser input than it learned from."""
    if not trained or points_in * 2 >= int(trained):
        return None
    return (
        f"{where}: {points_in} {what}, under half the {int(trained)} the model was trained on; "
        f"{what} repeated to make up the count"
    )


def up_axis_warning(prepared: dict[str, Any], files_up: str | None, where: str) -> str | None:
    """A warning when a file's up axis was assumed (z) but the checkpoint's training files stood
    otherwise on disk (ModelNet40 and OpenShape are y-up): an object lying on its side scores as
    another class, and nothing in the cloud itself says which way is up."""
    if not files_up or files_up.lstrip("+") == "z" or prepared.get("up_axis_source") != "assumed":
        return None
    return (
        f"{where}: read as z-up (no --up-axis given), but the files this checkpoint was trained on were "
        f"stored {files_up}-up; pass --up-axis {files_up} if this file is stored like them"
    )


def event_warning(rec: Any, trained: Sequence[int], num_points: int | None = None) -> str | None:
    """One warning for an event recording (an `EventFile`) unlike the training data: another sensor
    size (rescaled to the trained one: the encodings scale coordinates by the sensor), else fewer
    than half the trained event count."""
    w, h = (int(v) for v in rec.sensor_size)
    if trained and (w, h) != tuple(int(v) for v in trained):
        src = _SIZE_FROM.get(rec.sensor_size_from, rec.sensor_size_from)
        return (
            f"{rec.path}: sensor {w}x{h} ({src}) but the classifier was trained on "
            f"{int(trained[0])}x{int(trained[1])}; coordinates rescaled to it, objects keep their share "
            "of the frame"
        )
    return point_count_warning(len(rec.events), num_points, str(rec.path), "events")
