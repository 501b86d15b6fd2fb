"""3D object detection data: the `kitti` dataset and ground-truth databases for `gt_sample`.

`kitti` reads KITTI's object benchmark layout::

    root/training/{velodyne,label_2,calib}/<id>.{bin,txt,txt}   (optional image_2/<id>.png: its size)
    root/testing/{velodyne,calib}/<id>.{bin,txt}                 (split "test": no labels)
    root/ImageSets/{train,val,trainval,test}.txt                 (one frame id per line)

Splits: "train" / "val" / "trainval" / "test" are the frame lists in ``ImageSets`` (the standard
3,712 / 3,769 split of Chen et al. 2015, shipped with OpenPCDet and mmdetection3d); "all" is every
frame under ``training/velodyne``. A missing list is an error, not a split made up here: KITTI
frames are consecutive video frames, so a random or hashed split would put near copies of a
validation frame into training and inflate every validation number.

A sample (boxes in the LiDAR frame, `svl.boxes` convention; K = ``max_objects``):

- ``xyz (N, 3)`` float32: the scan, cropped to the camera's field of view (``fov``, default on:
  KITTI labels only what image_2 sees) and to ``point_cloud_range`` on all three axes (default
  OpenPCDet's [0, -39.68, -3, 69.12, 39.68, 1]; None keeps everything);
- ``feats (N, 1)`` float32 reflectance, with ``reflectance=True`` (`collate_points` then takes it
  as the whole feature vector; a model wanting xyz too reads ``batch.xyz``);
- ``boxes (K, 7)`` float32 and ``box_labels (K,)`` int64: objects of ``classes`` (index into them)
  whose centre lies inside the range in x and y; ``difficulty (K,)`` int64 KITTI level (0 easy,
  1 moderate, 2 hard, -1 none);
- ``ignore_boxes (K, 7)`` and ``ignore_labels (K,)`` (index into ``dataset.ignore_classes``, the
  8 KITTI types but DontCare): every other object with a 3D box (Van, Truck, Person_sitting, Tram,
  Misc, and objects of ``classes`` whose centre lies outside the range), so training and
  evaluation can leave detections on them alone (KITTI's evaluation ignores a Van for Car and a
  Person_sitting for Pedestrian);
- ``dontcare_bbox (K, 4)`` float32: DontCare regions, which are image_2 boxes (left, top, right,
  bottom) only (KITTI gives them no 3D box); they do not follow augmentations;
- ``frame_id`` (str, stays out of the batch) and ``index``.

Padding: every per-object array has K rows so samples stack in `collate_points` (they land in
``batch.extras``); rows past the real objects are zeros with label -1 (and difficulty -1), and
box-aware transforms leave them alone. A frame with more than K objects of one kind is an error
naming its label file; raise ``max_objects`` (``gt_sample`` fills padding rows, so leave room).
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from svl.boxes import points_in_boxes
from svl.data.base import PointDataset, register_dataset, resolve_root
from svl.data.readers.kitti import (
    KittiCalib,
    KittiLabels,
    camera_boxes_to_lidar,
    fov_mask,
    read_kitti_calib,
    read_kitti_labels,
    read_velodyne,
)
from svl.data.transforms import Compose
from svl.utils import cached_arrays, progress

__all__ = [
    "GT_DATABASE_VERSION",
    "KITTI_CLASSES",
    "KITTI_POINT_CLOUD_RANGE",
    "KITTI_TYPES",
    "KittiDetection",
    "build_gt_database",
]

KITTI_TYPES = ("Car", "Van", "Truck", "Pedestrian", "Person_sitting", "Cyclist", "Tram", "Misc", "DontCare")
KITTI_CLASSES = ("Car", "Pedestrian", "Cyclist")  # the three benchmark classes
# KITTI's evaluation protocol, declared by the dataset so that every run on it is scored this way
# whatever config it uses: the benchmark's IoU thresholds (3D and BEV) and the devkit's recall sampling.
KITTI_IOU_THRESHOLDS = {"Car": 0.7, "Van": 0.7, "Truck": 0.7, "Tram": 0.7, "Pedestrian": 0.5,
                        "Person_sitting": 0.5, "Cyclist": 0.5, "Misc": 0.5}  # fmt: skip
KITTI_POINT_CLOUD_RANGE = (0.0, -39.68, -3.0, 69.12, 39.68, 1.0)  # OpenPCDet's KITTI range (m)
DEFAULT_IMAGE_SHAPE = (375, 1242)  # (height, width) of most KITTI images, used when image_2 is absent
GT_DATABASE_VERSION = 1  # bump when build_gt_database changes what it stores: old caches then miss


def _png_size(path: Path) -> tuple[int, int] | None:
    """(height, width) from a PNG's IHDR header, or None when `path` is not a readable PNG."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(24)
    except OSError:
        return None
    if len(head) < 24 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        return None
    w, h = struct.unpack(">II", head[16:24])
    return int(h), int(w)


class KittiDetection(PointDataset):
    """KITTI object frames; see the module docstring for the layout, the splits and a sample's keys."""

    name = "kitti"
    up_axis_on_disk = "z"
    iou_thresholds = KITTI_IOU_THRESHOLDS  # the evaluation protocol (svl.tasks.detect reads these)
    recall_sampling = "devkit"

    def __init__(
        self,
        folder: Path,
        frame_ids: Sequence[str],
        split: str,
        transforms: Compose,
        seed: int = 0,
        *,
        classes: Sequence[str] = KITTI_CLASSES,
        fov: bool = True,
        point_cloud_range: Sequence[float] | None = KITTI_POINT_CLOUD_RANGE,
        reflectance: bool = False,
        max_objects: int = 100,
        image_shape: tuple[int, int] = DEFAULT_IMAGE_SHAPE,
        labelled: bool = True,
    ) -> None:
        super().__init__(split, classes, transforms, seed)
        self.folder, self.frame_ids = Path(folder), list(frame_ids)
        self.fov, self.reflectance, self.labelled = bool(fov), bool(reflectance), bool(labelled)
        self.point_cloud_range = None if point_cloud_range is None else tuple(map(float, point_cloud_range))
        self.max_objects = int(max_objects)
        self.image_shape = (int(image_shape[0]), int(image_shape[1]))
        self.ignore_classes = [t for t in KITTI_TYPES if t != "DontCare"]  # what ignore_labels index
        self.settings = {  # what a sample depends on (build_gt_database caches by it)
            "folder": str(self.folder.resolve()),
            "split": split,
            "frames": hashlib.sha256("\n".join(self.frame_ids).encode()).hexdigest()[:16],
            "classes": list(self.classes),
            "fov": self.fov,
            "point_cloud_range": self.point_cloud_range,
            "reflectance": self.reflectance,
            "max_objects": self.max_objects,
            "image_shape": list(self.image_shape),
        }

    def __len__(self) -> int:
        return len(self.frame_ids)

    def labels(self) -> np.ndarray:
        return np.zeros(len(self), np.int64)  # frames carry no frame-level class

    def path(self, i: int, kind: str) -> Path:
        """The file of frame i: kind "velodyne", "calib", "label_2" or "image_2"."""
        ext = {"velodyne": ".bin", "image_2": ".png"}.get(kind, ".txt")
        return self.folder / kind / f"{self.frame_ids[i]}{ext}"

    def calib(self, i: int) -> KittiCalib:
        return read_kitti_calib(self.path(i, "calib"))

    def annotations(self, i: int) -> KittiLabels:
        """Frame i's label file as stored (camera frame, every object): what KITTI's evaluation reads."""
        return read_kitti_labels(self.path(i, "label_2"))

    def image_shape_of(self, i: int) -> tuple[int, int]:
        """(height, width) of frame i's image_2, from its PNG header when present, else `image_shape`."""
        return _png_size(self.path(i, "image_2")) or self.image_shape

    def _load(self, i: int) -> dict[str, Any]:
        calib = self.calib(i)
        pts = read_velodyne(self.path(i, "velodyne"))
        keep = np.ones(len(pts), bool)
        if self.fov:
            keep &= fov_mask(pts[:, :3], calib, self.image_shape_of(i))
        lim = self.point_cloud_range
        if lim is not None:
            keep &= ((pts[:, :3] >= lim[:3]) & (pts[:, :3] <= lim[3:])).all(1)
        pts = pts[keep]
        sample: dict[str, Any] = {"xyz": np.ascontiguousarray(pts[:, :3]), "frame_id": self.frame_ids[i]}
        if self.reflectance:
            sample["feats"] = np.ascontiguousarray(pts[:, 3:4])
        labels = self.annotations(i) if self.labelled else None
        sample.update(self._objects(labels, calib))
        return sample

    def _objects(self, ann: KittiLabels | None, calib: KittiCalib) -> dict[str, np.ndarray]:
        """The padded per-object arrays of a frame (all padding for an unlabelled test frame)."""
        K = self.max_objects
        out = {
            "boxes": np.zeros((K, 7), np.float32),
            "box_labels": np.full(K, -1, np.int64),
            "difficulty": np.full(K, -1, np.int64),
            "ignore_boxes": np.zeros((K, 7), np.float32),
            "ignore_labels": np.full(K, -1, np.int64),
            "dontcare_bbox": np.zeros((K, 4), np.float32),
        }
        if ann is None or len(ann) == 0:
            return out
        unknown = sorted(set(ann.names.tolist()) - set(KITTI_TYPES))
        if unknown:
            raise ValueError(f"{ann.path}: unknown object types {unknown}; KITTI's are {list(KITTI_TYPES)}")
        care = ann.names != "DontCare"
        boxes = camera_boxes_to_lidar(ann.loc[care], ann.dims[care], ann.rotation_y[care], calib)
        names, level = ann.names[care], ann.difficulty()[care]
        target = np.isin(names, self.classes)
        if self.point_cloud_range is not None:
            r = self.point_cloud_range
            target &= ((boxes[:, :2] >= r[:2]) & (boxes[:, :2] <= r[3:5])).all(1)
        dontcare = ann.bbox[~care]
        for what, n in (("objects of the classes", target.sum()), ("ignored objects", (~target).sum()),
                        ("DontCare regions", len(dontcare))):  # fmt: skip
            if n > K:
                raise ValueError(f"{ann.path}: {n} {what}, more than max_objects={K}; raise max_objects")
        k = int(target.sum())
        out["boxes"][:k] = boxes[target]
        out["box_labels"][:k] = [self.classes.index(c) for c in names[target]]
        out["difficulty"][:k] = level[target]
        m = int((~target).sum())
        out["ignore_boxes"][:m] = boxes[~target]
        out["ignore_labels"][:m] = [self.ignore_classes.index(c) for c in names[~target]]
        out["dontcare_bbox"][: len(dontcare)] = dontcare
        return out


def _read_split(base: Path, split: str) -> list[str]:
    listing = base / "ImageSets" / f"{split}.txt"
    if not listing.is_file():
        raise FileNotFoundError(
            f"kitti/{split}: no frame list {listing}; put the standard ImageSets lists there (train 3,712 / "
            "val 3,769 frames, as shipped with OpenPCDet), or use split='all' for every training frame"
        )
    ids = [line.strip() for line in listing.read_text().splitlines() if line.strip()]
    bad = [s for s in ids if not s.isdigit()]
    if bad:
        raise ValueError(f"{listing}: frame ids must be digits, got {bad[:3]}")
    if not ids:
        raise ValueError(f"{listing}: empty frame list")
    return ids


@register_dataset("kitti", takes=())
def _build_kitti(
    split: str,
    root: Any,
    transforms: Compose,
    seed: int,
    classes: Sequence[str] = KITTI_CLASSES,
    fov: bool = True,
    point_cloud_range: Sequence[float] | None = KITTI_POINT_CLOUD_RANGE,
    reflectance: bool = False,
    max_objects: int = 100,
    image_shape: Sequence[int] = DEFAULT_IMAGE_SHAPE,
) -> KittiDetection:
    """KITTI 3D object detection (root/training, root/ImageSets; default root $SVL_DATA/kitti).

    classes: the detected classes (KITTI type names, not DontCare); the rest become ignore boxes.
    Other options: see the module docstring.
    """
    classes = list(classes)
    bad = [c for c in classes if c not in KITTI_TYPES or c == "DontCare"]
    if bad or not classes or len(set(classes)) != len(classes):
        raise ValueError(f"kitti: classes must be distinct KITTI types other than DontCare "
                         f"{list(KITTI_TYPES[:-1])}, got {classes}")  # fmt: skip
    if point_cloud_range is not None:
        r = [float(v) for v in point_cloud_range]
        if len(r) != 6 or not all(lo < hi for lo, hi in zip(r[:3], r[3:])):
            raise ValueError(
                f"kitti: point_cloud_range must be [xmin, ymin, zmin, xmax, ymax, zmax], got {r}"
            )
    if int(max_objects) < 1 or len(image_shape) != 2 or min(image_shape) < 1:
        raise ValueError(f"kitti: need max_objects >= 1 and image_shape (height, width), got "
                         f"{max_objects}, {image_shape}")  # fmt: skip
    base = resolve_root(root, "kitti")
    folder = base / ("testing" if split == "test" else "training")
    if split == "all":
        ids = sorted(p.stem for p in (folder / "velodyne").glob("*.bin"))
        if not ids:
            raise FileNotFoundError(f"kitti/all: no velodyne/*.bin under {folder}")
    else:
        ids = _read_split(base, split)
    labelled = split != "test" or (folder / "label_2").is_dir()
    kinds = ("velodyne", "calib", "label_2") if labelled else ("velodyne", "calib")
    for kind in kinds:
        ext = ".bin" if kind == "velodyne" else ".txt"
        missing = [s for s in ids if not (folder / kind / f"{s}{ext}").is_file()]
        if missing:
            raise FileNotFoundError(
                f"kitti/{split}: {len(missing)} of {len(ids)} frames have no {folder / kind}/<id>{ext} "
                f"(first: {missing[0]})"
            )
    return KittiDetection(
        folder, ids, split, transforms, seed, classes=classes, fov=fov, point_cloud_range=point_cloud_range,
        reflectance=reflectance, max_objects=int(max_objects), labelled=labelled,
        image_shape=(int(image_shape[0]), int(image_shape[1])),
    )  # fmt: skip


# ----------------------------------------------------------------------------- ground-truth database
def build_gt_database(
    dataset: PointDataset, *, cache: bool = True, name: str = "gt_database"
) -> dict[str, np.ndarray]:
    """Every labelled object of `dataset` with the points inside its box: the `gt_sample` database.

    Works on any dataset whose samples carry ``boxes``/``box_labels`` (kitti, modelnet40_scenes).
    Objects come from the untransformed frames (`_load`, the same crop the scenes get), each
    object's points in its own box frame (centre at 0, x along l) so they can be put back at the
    box's pose. Returns ``points (P, 3)`` float32, ``offsets (O+1,)``, ``boxes (O, 7)``,
    ``labels (O,)``, ``num_points (O,)``, ``frame (O,)`` (dataset index), ``classes`` and, when the
    samples have them, ``feats (P, C)`` and ``difficulty (O,)`` (see `svl.data.transforms.GTSample`).
    Cached under cache_dir(name) when the dataset describes itself with a ``settings`` dict
    (kitti, modelnet40_scenes); build it from the training split only, or validation objects
    leak into training.
    """

    def make() -> dict[str, np.ndarray]:
        pts: list[np.ndarray] = []
        feats: list[np.ndarray] = []
        boxes, labels, level, frame, counts = [], [], [], [], []
        has_feats = has_level = None
        for i in progress(
            range(len(dataset)), desc=f"gt database {dataset.name}/{dataset.split}", unit="frame"
        ):
            s = dataset._load(i)  # before transforms: the database holds objects as recorded
            if s.get("boxes") is None or s.get("box_labels") is None:
                raise ValueError(f"build_gt_database: {dataset.name} samples carry no boxes / box_labels")
            lab = np.asarray(s["box_labels"]).reshape(-1)
            real = np.flatnonzero(lab >= 0)
            b = np.asarray(s["boxes"], np.float64).reshape(-1, 7)[real]
            xyz = np.asarray(s["xyz"], np.float64)
            has_feats = s.get("feats") is not None if has_feats is None else has_feats
            has_level = s.get("difficulty") is not None if has_level is None else has_level
            inside = points_in_boxes(xyz, b)
            for j in range(len(real)):
                m = inside[:, j]
                c, sn = np.cos(b[j, 6]), np.sin(b[j, 6])
                d = xyz[m] - b[j, :3]
                local = np.stack([d[:, 0] * c + d[:, 1] * sn, -d[:, 0] * sn + d[:, 1] * c, d[:, 2]], 1)
                pts.append(local.astype(np.float32))
                if has_feats:
                    feats.append(np.asarray(s["feats"], np.float32)[m])
                counts.append(int(m.sum()))
                boxes.append(b[j])
                labels.append(int(lab[real[j]]))
                level.append(int(np.asarray(s["difficulty"])[real[j]]) if has_level else -1)
                frame.append(i)
        out = {
            "points": np.concatenate([np.zeros((0, 3), np.float32), *pts]),
            "offsets": np.concatenate([[0], np.cumsum(counts, dtype=np.int64)]).astype(np.int64),
            "boxes": np.asarray(boxes, np.float32).reshape(-1, 7),
            "labels": np.asarray(labels, np.int64),
            "num_points": np.asarray(counts, np.int64),
            "frame": np.asarray(frame, np.int64),
            "classes": np.asarray(dataset.classes, dtype=str),
        }
        if has_feats:
            out["feats"] = np.concatenate(feats) if feats else np.zeros((0, 1), np.float32)
        if has_level:
            out["difficulty"] = np.asarray(level, np.int64)
        return out

    settings = getattr(dataset, "settings", None)
    if not isinstance(settings, dict):
        return make()
    key = {"version": GT_DATABASE_VERSION, "dataset": dataset.name, "split": dataset.split, "data": settings,
           "frames": _frame_stamp(dataset)}  # fmt: skip
    return cached_arrays(name, key, make, lambda d: "offsets" in d and "points" in d, enabled=cache)


def _frame_stamp(dataset: PointDataset) -> str:
    """A digest of the label files' sizes and times (kitti), so an edited label rebuilds the cache."""
    if not isinstance(dataset, KittiDetection) or not dataset.labelled:
        return ""
    h = hashlib.sha256()
    for i in range(len(dataset)):
        st = os.stat(dataset.path(i, "label_2"))
        h.update(f"{dataset.frame_ids[i]}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]
