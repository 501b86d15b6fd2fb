"""KITTI object data: Velodyne scans (.bin), calibration files and label files.

- Scans: float32 (x, y, z, reflectance) records, no header, in the LiDAR frame (x forward, y left,
  z up). The same extension holds N-MNIST event recordings, so `read_kitti` checks the bytes first
  and sends event files to the event readers with an error that says how to read them. Other
  datasets' `.bin` scans hold more per point (nuScenes `.pcd.bin`: 5 float32, x y z intensity
  ring; Waymo in KITTI layout: 6): `read_lidar_bin` reads 4, 5 or 6 by the file's size and value
  ranges (`svl.data.readers._sniff.lidar_width`), `read_nuscenes` / `read_waymo` force a width.
- Calibration (``calib/*.txt``): ``KEY: v v v ...`` lines; `KittiCalib` keeps the three matrices
  detection needs (P2, R0_rect, Tr_velo_to_cam) and maps points between the LiDAR frame, the
  rectified camera frame ("rect": x right, y down, z forward) and the left colour image.
- Labels (``label_2/*.txt``): one object per line, 15 fields (16 with a detection score); boxes
  are in the rectified camera frame with the location at the bottom centre and sizes h, w, l.
  `camera_boxes_to_lidar` turns them into svl's box convention (`svl.boxes`: centre, l, w, h,
  yaw about +z) the way OpenPCDet's ``boxes3d_kitti_camera_to_lidar`` does, and
  `lidar_boxes_to_camera` is its exact inverse (detections back to the KITTI submission format).

Every problem with a file raises ValueError naming the file (and the 1-based line of a text file).
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from svl.boxes import wrap_angle
from svl.data.readers._common import BadFile, ReadOptions
from svl.data.readers._sniff import LIDAR_LAYOUTS, lidar_problem, lidar_width, nmnist_problem

__all__ = [
    "KITTI_DIFFICULTY",
    "KittiCalib",
    "KittiLabels",
    "camera_boxes_to_lidar",
    "fov_mask",
    "lidar_boxes_to_camera",
    "read_kitti",
    "read_kitti_calib",
    "read_kitti_labels",
    "read_lidar_bin",
    "read_nuscenes",
    "read_waymo",
    "read_velodyne",
]

PathLike = str | os.PathLike[str]


# ----------------------------------------------------------------------------- Velodyne scans
def read_kitti(path: Path, opts: ReadOptions) -> dict[str, Any]:
    """xyz (N, 3) in metres (sensor frame: x forward, y left, z up); reflectance as stored, in the meta."""
    return _read_scan(path.read_bytes(), 4)


def read_nuscenes(path: Path, opts: ReadOptions) -> dict[str, Any]:
    """A nuScenes `.pcd.bin` scan: float32 (x, y, z, intensity 0-255, ring); intensity as reflectance."""
    return _read_scan(path.read_bytes(), 5)


def read_waymo(path: Path, opts: ReadOptions) -> dict[str, Any]:
    """A Waymo scan in KITTI layout: float32 (x, y, z, intensity, elongation, index); intensity kept."""
    return _read_scan(path.read_bytes(), 6)


def read_lidar_bin(path: Path, opts: ReadOptions) -> dict[str, Any]:
    """A `.bin` LiDAR scan of 4, 5 or 6 float32 per point, the width told by the file's size and value
    ranges; an N-MNIST recording is refused with a pointer to the event readers."""
    data = path.read_bytes()
    if lidar_problem(data) is not None:
        _refuse_events(data)
    try:
        width = lidar_width(data, "the file")
    except ValueError as e:
        raise BadFile(str(e).removeprefix("the file: ")) from None
    return _read_scan(data, width)


def _refuse_events(data: bytes) -> None:
    if nmnist_problem(data) is None:
        raise BadFile(
            "this is an N-MNIST event recording (5-byte event records), not a point cloud; read it "
            "with svl.data.readers.events.read_events(path) (or `svl data info|render --format nmnist`)"
        )


def _read_scan(data: bytes, width: int) -> dict[str, Any]:
    layout = {w: k for k, w in LIDAR_LAYOUTS.items()}[width]
    problem = lidar_problem(data, width)
    if problem is not None:
        _refuse_events(data)
        what = "a KITTI LiDAR scan" if width == 4 else f"a {layout} LiDAR scan ({width} float32 per point)"
        other = [k for k, w in LIDAR_LAYOUTS.items() if w != width and lidar_problem(data, w) is None]
        hint = (
            f"; it reads as a {other[0]} scan ({LIDAR_LAYOUTS[other[0]]} float32 per point)" if other else ""
        )
        raise BadFile(f"not {what}: {problem}{hint}")
    pts = np.frombuffer(data, "<f4").reshape(-1, width)
    refl = pts[:, 3].copy()
    return {
        "xyz": pts[:, :3],
        "_info": {
            "format": layout,
            "per_point": {"reflectance": refl},
            "reflectance_range": "0-1" if refl.max() <= 1.0 else "0-255",
        },
    }


def read_velodyne(path: PathLike) -> np.ndarray:
    """(N, 4) float32 (x, y, z, reflectance) of a scan (4, 5 or 6 float32 per point in the file), every
    point kept (datasets crop it themselves)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such file")
    try:
        raw = read_lidar_bin(p, ReadOptions())
    except BadFile as e:
        raise ValueError(f"{p}: {e}") from None
    pts = np.empty((len(raw["xyz"]), 4), np.float32)
    pts[:, :3] = raw["xyz"]
    pts[:, 3] = raw["_info"]["per_point"]["reflectance"]
    return pts


# ----------------------------------------------------------------------------- calibration
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# matrix -> (shape, other names it goes by: KITTI tracking calib files say R_rect and Tr_velo_cam)
_CALIB_MATRICES: dict[str, tuple[tuple[int, int], tuple[str, ...]]] = {
    "P2": ((3, 4), ()),
    "R0_rect": ((3, 3), ("R_rect",)),
    "Tr_velo_to_cam": ((3, 4), ("Tr_velo_cam",)),
}


def _hom(m: np.ndarray) -> np.ndarray:
    """A 3x3 or 3x4 matrix as its 4x4 homogeneous form."""
    out = np.eye(4)
    out[: m.shape[0], : m.shape[1]] = m
    return out


def _apply(m4: np.ndarray, xyz: np.ndarray) -> np.ndarray:
    xyz = np.asarray(xyz, np.float64).reshape(-1, 3)
    return xyz @ m4[:3, :3].T + m4[:3, 3]


@dataclass(frozen=True, eq=False)
class KittiCalib:
    """The three KITTI calibration matrices detection needs, and the point maps built on them.

    P2 (3, 4): rectified camera -> left colour image (image_2); R0_rect (3, 3): camera 0 ->
    rectified camera; Tr_velo_to_cam (3, 4): LiDAR -> camera 0. Results are float64.
    """

    P2: np.ndarray
    R0_rect: np.ndarray
    Tr_velo_to_cam: np.ndarray
    path: str = ""

    @property
    def velo_to_rect(self) -> np.ndarray:
        """(4, 4) homogeneous LiDAR -> rectified camera transform, R0_rect @ Tr_velo_to_cam."""
        return _hom(self.R0_rect) @ _hom(self.Tr_velo_to_cam)

    def lidar_to_rect(self, xyz: np.ndarray) -> np.ndarray:
        """(N, 3) LiDAR points -> (N, 3) rectified camera coordinates."""
        return _apply(self.velo_to_rect, xyz)

    def rect_to_lidar(self, xyz: np.ndarray) -> np.ndarray:
        """(N, 3) rectified camera points -> LiDAR frame: the inverse of the 4x4 map, so round trips hold
        to float64 precision (R0_rect @ Tr is not exactly orthonormal: a transpose would not be exact)."""
        return _apply(np.linalg.inv(self.velo_to_rect), xyz)

    def rect_to_image(self, xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(u, v, depth), each (N,): pixel column and row in image_2 and the depth along the optical
        axis (rect z). u, v mean nothing where depth <= 0 (behind the camera)."""
        xyz = np.asarray(xyz, np.float64).reshape(-1, 3)
        h = xyz @ self.P2[:, :3].T + self.P2[:, 3]
        with np.errstate(divide="ignore", invalid="ignore"):
            return h[:, 0] / h[:, 2], h[:, 1] / h[:, 2], xyz[:, 2].copy()


def _read_text(p: Path, what: str) -> str:
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such file")
    try:
        return p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{p}: not a text {what} file ({e})") from None


def read_kitti_calib(path: PathLike) -> KittiCalib:
    """Parse a KITTI object calibration file (``KEY: v v v ...`` lines; P0-P3, R0_rect, Tr_velo_to_cam,
    Tr_imu_to_velo). Every line must parse; P2, R0_rect and Tr_velo_to_cam must be present with 12,
    9 and 12 finite values (the tracking names R_rect and Tr_velo_cam are accepted too)."""
    p = Path(path)
    text = _read_text(p, "calibration")
    found: dict[str, tuple[np.ndarray, int]] = {}  # key -> (values, line number)
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        key, sep, rest = line.partition(":")
        if not sep:  # tracking files write "R_rect v v v" without the colon
            key, _, rest = line.partition(" ")
        key = key.strip()
        if not _KEY.match(key):
            raise ValueError(f"{p}: line {n}: expected 'KEY: v v v ...', got {line[:60]!r}")
        try:
            vals = np.array([float(t) for t in rest.split()], np.float64)
        except ValueError:
            raise ValueError(f"{p}: line {n}: {key}: non-numeric value in {rest.strip()[:60]!r}") from None
        if not np.isfinite(vals).all():
            raise ValueError(f"{p}: line {n}: {key}: NaN or inf value")
        if key in found:
            raise ValueError(f"{p}: line {n}: {key} given twice (first on line {found[key][1]})")
        found[key] = (vals, n)
    mats: dict[str, np.ndarray] = {}
    for name, (shape, aliases) in _CALIB_MATRICES.items():
        key = next((k for k in (name, *aliases) if k in found), None)
        if key is None:
            raise ValueError(f"{p}: no {name} matrix (need P2, R0_rect and Tr_velo_to_cam)")
        vals, n = found[key]
        if vals.size != shape[0] * shape[1]:
            raise ValueError(
                f"{p}: line {n}: {key} holds {vals.size} values, a {shape[0]}x{shape[1]} matrix needs "
                f"{shape[0] * shape[1]}"
            )
        mats[name] = vals.reshape(shape)
        if name != "P2" and abs(np.linalg.det(mats[name][:, :3])) < 1e-6:
            raise ValueError(f"{p}: line {n}: {key} is singular (not a rotation)")
    return KittiCalib(mats["P2"], mats["R0_rect"], mats["Tr_velo_to_cam"], path=str(p))


def fov_mask(xyz: np.ndarray, calib: KittiCalib, image_shape: tuple[int, int] = (375, 1242)) -> np.ndarray:
    """(N,) bool: LiDAR points in front of the camera that project into image_2 of (height, width).

    KITTI labels only objects seen in image_2, so training on the whole 360-degree scan would teach a
    detector that unlabelled cars behind the car are background. (375, 1242) is the most common
    KITTI image size; frames vary by a few pixels, so pass the real size when the image is at hand.
    """
    h, w = image_shape
    u, v, depth = calib.rect_to_image(calib.lidar_to_rect(xyz))
    with np.errstate(invalid="ignore"):
        return (depth > 0) & (u >= 0) & (u < w) & (v >= 0) & (v < h)


# ----------------------------------------------------------------------------- labels
# KITTI's evaluation levels (devkit; kitti_eval.py's clean_data): a box is at least as easy as level d
# when its 2D height (pixels) exceeds MIN_HEIGHT[d] and occlusion / truncation stay within the limits.
KITTI_DIFFICULTY = {
    "names": ("easy", "moderate", "hard"),
    "min_height": (40.0, 25.0, 25.0),
    "max_occlusion": (0, 1, 2),
    "max_truncation": (0.15, 0.3, 0.5),
}
_LABEL_FIELDS = "type, truncated, occluded, alpha, bbox (4), h w l, x y z, rotation_y"


@dataclass(frozen=True, eq=False)
class KittiLabels:
    """The objects of one label file, one row each (K rows; float64 unless stated).

    names (K,) str; truncated (K,) in [0, 1]; occluded (K,) int64 (0 visible .. 3 unknown, -1
    DontCare); alpha (K,) observation angle; bbox (K, 4) image_2 box (left, top, right, bottom)
    in pixels; dims (K, 3) h, w, l in metres (KITTI's order); loc (K, 3) bottom centre in the
    rectified camera frame; rotation_y (K,) yaw about the camera's y axis; score (K,) or None
    (detection files carry a 16th column).
    """

    names: np.ndarray
    truncated: np.ndarray
    occluded: np.ndarray
    alpha: np.ndarray
    bbox: np.ndarray
    dims: np.ndarray
    loc: np.ndarray
    rotation_y: np.ndarray
    score: np.ndarray | None = None
    path: str = ""

    def __len__(self) -> int:
        return len(self.names)

    def difficulty(self) -> np.ndarray:
        """(K,) int64 KITTI level: 0 easy, 1 moderate, 2 hard, -1 none of them (too small, occluded or
        truncated: the benchmark ignores these boxes; DontCare too)."""
        height = np.abs(self.bbox[:, 3] - self.bbox[:, 1])
        out = np.full(len(self), -1, np.int64)
        lv = KITTI_DIFFICULTY
        for d in (2, 1, 0):  # hardest first, so the easiest level a box meets wins
            ok = (
                (height > lv["min_height"][d])
                & (self.occluded <= lv["max_occlusion"][d])
                & (self.truncated <= lv["max_truncation"][d])
            )
            out[ok] = d
        out[self.names == "DontCare"] = -1
        return out


def read_kitti_labels(path: PathLike) -> KittiLabels:
    """Parse a KITTI label (or detection result) file; see `KittiLabels`. An empty file has no objects.

    Refused, naming the file and line: a field count other than 15 (16 with a score; every line
    alike), a non-numeric or non-finite value, non-positive h, w or l on an object that is not
    DontCare (DontCare rows hold -1 placeholders).
    """
    p = Path(path)
    text = _read_text(p, "label")
    names: list[str] = []
    rows: list[list[float]] = []
    width: tuple[int, int] | None = None  # (field count, line) of the first object
    for n, raw in enumerate(text.splitlines(), 1):
        tok = raw.split()
        if not tok:
            continue
        if len(tok) not in (15, 16):
            raise ValueError(
                f"{p}: line {n}: {len(tok)} fields, a KITTI label line has 15 ({_LABEL_FIELDS}) "
                "or 16 (+ score)"
            )
        if width is not None and len(tok) != width[0]:
            raise ValueError(f"{p}: line {n}: {len(tok)} fields but line {width[1]} has {width[0]}")
        width = width or (len(tok), n)
        try:
            vals = [float(t) for t in tok[1:]]
        except ValueError:
            bad = next(t for t in tok[1:] if not _is_float(t))
            raise ValueError(f"{p}: line {n}: non-numeric value {bad!r} (object {tok[0]!r})") from None
        if not all(math.isfinite(v) for v in vals):
            raise ValueError(f"{p}: line {n}: NaN or inf value (object {tok[0]!r})")
        if tok[0] != "DontCare" and min(vals[7:10]) <= 0:
            raise ValueError(
                f"{p}: line {n}: {tok[0]} has non-positive size h w l = {vals[7]:g} {vals[8]:g} {vals[9]:g}"
            )
        if vals[1] != int(vals[1]):
            raise ValueError(f"{p}: line {n}: occluded must be an integer, got {tok[2]!r}")
        names.append(tok[0])
        rows.append(vals)
    a = np.asarray(rows, np.float64).reshape(-1, width[0] - 1 if width else 14)
    return KittiLabels(
        names=np.asarray(names, dtype=str),
        truncated=a[:, 0].copy(),
        occluded=a[:, 1].astype(np.int64),
        alpha=a[:, 2].copy(),
        bbox=a[:, 3:7].copy(),
        dims=a[:, 7:10].copy(),
        loc=a[:, 10:13].copy(),
        rotation_y=a[:, 13].copy(),
        score=a[:, 14].copy() if a.shape[1] == 15 else None,
        path=str(p),
    )


def _is_float(t: str) -> bool:
    try:
        float(t)
    except ValueError:
        return False
    return True


# ----------------------------------------------------------------------------- box conventions
def camera_boxes_to_lidar(
    loc: np.ndarray, dims_hwl: np.ndarray, ry: np.ndarray, calib: KittiCalib
) -> np.ndarray:
    """KITTI camera boxes -> (K, 7) svl boxes (x, y, z, l, w, h, yaw) in the LiDAR frame, float64.

    As OpenPCDet's ``boxes3d_kitti_camera_to_lidar``: the bottom centre is mapped to the LiDAR frame
    and raised by h/2 along LiDAR z; yaw = -ry - pi/2, wrapped to [-pi, pi) (ry = 0 heads along the
    camera's x axis, LiDAR -y, and ry turns about the camera's y axis, which points down).
    """
    loc = np.asarray(loc, np.float64).reshape(-1, 3)
    dims = np.asarray(dims_hwl, np.float64).reshape(-1, 3)
    ry = np.asarray(ry, np.float64).reshape(-1)
    if not len(loc) == len(dims) == len(ry):
        raise ValueError(f"camera_boxes_to_lidar: {len(loc)} locations, {len(dims)} sizes, {len(ry)} angles")
    h, w, l = dims[:, 0], dims[:, 1], dims[:, 2]  # noqa: E741 - KITTI's names
    xyz = calib.rect_to_lidar(loc)
    xyz[:, 2] += h / 2
    return np.column_stack([xyz, l, w, h, wrap_angle(-ry - np.pi / 2)])


def lidar_boxes_to_camera(boxes: np.ndarray, calib: KittiCalib) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(K, 7) svl LiDAR boxes -> (loc (K, 3) bottom centre in rect, dims (K, 3) h w l, rotation_y (K,)
    in [-pi, pi)): the exact inverse of `camera_boxes_to_lidar`, for writing KITTI result files."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 7)
    xyz = boxes[:, :3].copy()
    xyz[:, 2] -= boxes[:, 5] / 2
    dims = boxes[:, [5, 4, 3]].copy()
    return calib.lidar_to_rect(xyz), dims, wrap_angle(-boxes[:, 6] - np.pi / 2)
