"""`modelnet40_scenes`: synthetic indoor scenes built from real ModelNet40 shapes on a floor.

Why: scene-level tasks (semantic / instance segmentation, 3D detection) need clouds with several
labelled objects, and the real ModelNet40 shapes give them at no labelling cost. Each scene is a
floor plane (class 40, "floor") plus k shapes from the matching official split (train scenes use
only train shapes, test scenes only test shapes, so no shape leaks across the split), each scaled,
turned about z and set standing on the floor with no two x-y footprints overlapping.

- `generate_scene`: one scene from a generator -> raw points, labels, boxes and object poses.
- `visible_mask`: a spherical z-buffer from a virtual sensor (points behind a nearer one in the same
  angular bin are hidden) and a LiDAR-like keep probability falling with range (`visible_only=True`).
- `modelnet40_scenes`: every scene of a split generated once, deterministically from `scene_seed`,
  cached as one .npz per split and settings under ``svl.utils.cache_dir("modelnet40_scenes")``.

A sample: ``xyz (N, 3)``, ``segment (N,)`` (0-39 object class, 40 floor), ``instance (N,)`` (1..k,
floor 0), ``label`` (the class of the object with most points), ``boxes (K, 7)`` (x, y, z, l, w, h,
yaw per object, K = objects_max, zero rows after the k real ones) and ``box_labels (K,)`` (-1 for
padding): padded to K so samples stack in `collate_points`. Only numpy at import time.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from svl.data.base import PointDataset, register_dataset
from svl.data.event_sim import _from_dict
from svl.data.modelnet import modelnet40_arrays
from svl.data.transforms import Compose
from svl.utils import cached_arrays, progress
from svl.vocab import load_class_names

__all__ = [
    "FLOOR",
    "MIN_BOX",
    "SCENES_VERSION",
    "ModelNet40Scenes",
    "Scene",
    "SceneConfig",
    "generate_scene",
    "generate_split",
    "sensor_bins",
    "visible_mask",
]

SCENES_VERSION = 2  # bump when the generator changes what it outputs: old caches then miss
MIN_BOX = 0.01  # metres: a flat shape (some ModelNet40 clouds are planar) still gets a box with volume
FLOOR = 40  # class id of floor points (after the 40 ModelNet40 classes)
_SPLIT_ID = {"train": 0, "test": 1}


@dataclass(frozen=True)
class SceneConfig:
    """Scene geometry and sensor model (metres, degrees); defaults: a 6 x 6 m room, a head-high sensor."""

    floor_half: float = 3.0  # the floor is the square [-floor_half, floor_half]^2 at z = 0
    radius: tuple[float, float] = (0.3, 0.8)  # each shape's bounding-sphere radius, uniform in this range
    floor_share: float = 0.3  # the floor gets at least this share of points_per_scene
    max_tries: int = 50  # placements tried per object before the scene gets one object fewer
    sensor: tuple[float, float, float] = (0.0, -3.0, 1.7)  # visible_only: sensor position (side, 1.7 m)
    angular_res_deg: float = 1.0  # z-buffer bin size in azimuth and elevation
    depth_tolerance: float = 0.05  # a point within this of its bin's nearest point is still visible
    falloff_range: float = 5.0  # keep probability 1 / (1 + (range / falloff_range)^2)

    def __post_init__(self) -> None:
        lo, hi = self.radius
        if not (0 < lo <= hi < self.floor_half) or not 0 <= self.floor_share < 1 or self.max_tries < 1:
            raise ValueError(
                f"SceneConfig: need 0 < radius[0] <= radius[1] < floor_half, 0 <= floor_share < 1, "
                f"max_tries >= 1: {self}"
            )
        if self.angular_res_deg <= 0 or self.depth_tolerance < 0 or self.falloff_range <= 0:
            raise ValueError(
                f"SceneConfig: need angular_res_deg > 0, depth_tolerance >= 0, falloff_range > 0: {self}"
            )

    @classmethod
    def from_dict(cls, overrides: dict[str, Any] | None) -> SceneConfig:
        """Defaults updated by `overrides` (unknown keys are an error)."""

        return _from_dict(cls, overrides)


@dataclass
class Scene:
    """One raw scene (before visibility and resampling); per-object arrays have k rows."""

    xyz: np.ndarray  # (M, 3) float64
    segment: np.ndarray  # (M,) int64
    instance: np.ndarray  # (M,) int64
    boxes: np.ndarray  # (k, 7): centre x, y, z, size l, w, h (own yaw frame), yaw
    box_labels: np.ndarray  # (k,) int64
    shape_ids: np.ndarray  # (k,) index of each shape in its split file
    poses: np.ndarray  # (k, 5): scale, yaw, offset x, y, z; world = Rz(yaw) @ (scale * p) + offset


def _rot_z(yaw: float) -> np.ndarray:
    c, s = math.cos(yaw), math.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def generate_scene(
    points: np.ndarray,
    labels: np.ndarray,
    k: int,
    n_points: int,
    cfg: SceneConfig,
    rng: np.random.Generator,
) -> Scene:
    """k random shapes of `points` (S, P, 3, unit sphere, z-up) placed on a floor, footprints disjoint.

    Each shape gets a radius from cfg.radius and a yaw, then up to cfg.max_tries random x-y positions;
    one whose footprint circle (the farthest point from the box centre in x-y) would meet an earlier
    circle or leave the floor is dropped, so a crowded scene has fewer objects. Floor points fill the
    scene up to `n_points` (at least floor_share of it).
    """
    ids = rng.choice(len(points), size=min(int(k), len(points)), replace=False)
    F = cfg.floor_half
    xyz, seg, inst, boxes, box_labels, kept, poses = [], [], [], [], [], [], []
    placed: list[tuple[float, float, float]] = []  # x, y, footprint radius
    for j in ids.tolist():
        s = rng.uniform(*cfg.radius)
        yaw = rng.uniform(-math.pi, math.pi)
        local = s * np.asarray(points[j], np.float64)
        lo, hi = local.min(0), local.max(0)
        c = 0.5 * (lo + hi)
        rho = float(np.linalg.norm(local[:, :2] - c[:2], axis=1).max())
        for _ in range(cfg.max_tries):
            t = rng.uniform(-F + rho, F - rho, size=2)
            if all(math.hypot(t[0] - x, t[1] - y) >= rho + r for x, y, r in placed):
                break
        else:
            continue
        R = _rot_z(yaw)
        offset = np.array([t[0], t[1], -lo[2]]) - np.array([*(R @ c)[:2], 0.0])
        world = local @ R.T + offset
        label = int(labels[j])
        placed.append((float(t[0]), float(t[1]), rho))
        xyz.append(world)
        seg.append(np.full(len(world), label, np.int64))
        inst.append(np.full(len(world), len(placed), np.int64))
        boxes.append([t[0], t[1], 0.5 * (hi[2] - lo[2]), *np.maximum(hi - lo, MIN_BOX), yaw])
        box_labels.append(label)
        kept.append(j)
        poses.append([s, yaw, *offset])
    n_obj = sum(len(p) for p in xyz)
    n_floor = max(int(cfg.floor_share * n_points), int(n_points) - n_obj, 1)
    floor = np.zeros((n_floor, 3))
    floor[:, :2] = rng.uniform(-F, F, size=(n_floor, 2))
    return Scene(
        xyz=np.concatenate([floor, *xyz]),
        segment=np.concatenate([np.full(n_floor, FLOOR, np.int64), *seg]),
        instance=np.concatenate([np.zeros(n_floor, np.int64), *inst]),
        boxes=np.asarray(boxes, np.float64).reshape(-1, 7),
        box_labels=np.asarray(box_labels, np.int64),
        shape_ids=np.asarray(kept, np.int64),
        poses=np.asarray(poses, np.float64).reshape(-1, 5),
    )


def sensor_bins(xyz: np.ndarray, sensor: Any, angular_res_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """(bin id (M,), range (M,)) of points seen from `sensor`: azimuth x elevation bins of the given size."""
    d = np.asarray(xyz, np.float64) - np.asarray(sensor, np.float64)
    r = np.linalg.norm(d, axis=1)
    az = np.arctan2(d[:, 1], d[:, 0])
    el = np.arctan2(d[:, 2], np.hypot(d[:, 0], d[:, 1]))
    res = math.radians(angular_res_deg)
    ia = np.floor((az + math.pi) / res).astype(np.int64)
    ie = np.floor((el + math.pi / 2) / res).astype(np.int64)
    return ia * (int(math.ceil(math.pi / res)) + 2) + ie, r


def visible_mask(xyz: np.ndarray, cfg: SceneConfig, rng: np.random.Generator | None = None) -> np.ndarray:
    """Bool mask (M,) of points a LiDAR-like sensor at cfg.sensor returns.

    Occlusion: a spherical z-buffer; a point is hidden when another point in its angular bin is nearer
    by more than cfg.depth_tolerance. Density: each visible point then survives with probability
    1 / (1 + (range / falloff_range)^2) when `rng` is given (None: occlusion only).
    """
    key, r = sensor_bins(xyz, cfg.sensor, cfg.angular_res_deg)
    _, inv = np.unique(key, return_inverse=True)
    nearest = np.full(int(inv.max()) + 1 if len(inv) else 0, np.inf)
    np.minimum.at(nearest, inv, r)
    keep = r <= nearest[inv] + cfg.depth_tolerance
    if rng is not None:
        keep &= rng.random(len(r)) < 1.0 / (1.0 + (r / cfg.falloff_range) ** 2)
    return keep


def generate_split(
    points: np.ndarray,
    labels: np.ndarray,
    split: str,
    scenes: int,
    points_per_scene: int,
    objects_min: int,
    objects_max: int,
    visible_only: bool,
    scene_seed: int,
    cfg: SceneConfig,
) -> dict[str, np.ndarray]:
    """All `scenes` of a split as stacked arrays (per-object ones padded to objects_max).

    Scene i is drawn from default_rng([scene_seed, split, i]) (layout), [.., 1] (visibility) and
    [.., 2] (resampling), so a scene does not depend on how many are generated, nor on the training
    seed, and `visible_only` changes which points survive but not the layout. A scene with fewer
    surviving points than points_per_scene repeats some of them.
    """

    S, N, K = int(scenes), int(points_per_scene), int(objects_max)
    out = {
        "xyz": np.zeros((S, N, 3), np.float32),
        "segment": np.zeros((S, N), np.uint8),
        "instance": np.zeros((S, N), np.uint8),
        "boxes": np.zeros((S, K, 7), np.float32),
        "box_labels": np.full((S, K), -1, np.int64),
        "shape_ids": np.full((S, K), -1, np.int64),
        "poses": np.zeros((S, K, 5), np.float64),
        "num_raw": np.zeros(S, np.int64),
        "num_kept": np.zeros(S, np.int64),
    }
    sid = _SPLIT_ID[split]
    for i in progress(range(S), desc=f"generating modelnet40_scenes/{split}", unit="scene"):
        rng = np.random.default_rng([int(scene_seed), sid, i])
        k = int(rng.integers(objects_min, objects_max + 1))
        sc = generate_scene(points, labels, k, N, cfg, rng)
        keep = np.arange(len(sc.xyz))
        if visible_only:
            keep = np.flatnonzero(
                visible_mask(sc.xyz, cfg, np.random.default_rng([int(scene_seed), sid, i, 1]))
            )
            if len(keep) == 0:
                raise RuntimeError(f"modelnet40_scenes/{split}: scene {i} has no visible point")
        r2 = np.random.default_rng([int(scene_seed), sid, i, 2])
        if len(keep) >= N:
            idx = r2.choice(keep, N, replace=False)
        else:
            idx = np.concatenate([r2.permutation(keep), r2.choice(keep, N - len(keep), replace=True)])
        n = len(sc.box_labels)
        out["xyz"][i] = sc.xyz[idx]
        out["segment"][i] = sc.segment[idx]
        out["instance"][i] = sc.instance[idx]
        out["boxes"][i, :n] = sc.boxes
        out["box_labels"][i, :n] = sc.box_labels
        out["shape_ids"][i, :n] = sc.shape_ids
        out["poses"][i, :n] = sc.poses
        out["num_raw"][i], out["num_kept"][i] = len(sc.xyz), len(keep)
    return out


# ----------------------------------------------------------------------------- the dataset
class ModelNet40Scenes(PointDataset):
    """Generated scenes held in memory (from the cache); see the module docstring for a sample's keys."""

    name = "modelnet40_scenes"
    up_axis_on_disk = "z"

    def __init__(
        self,
        data: dict[str, np.ndarray],
        classes: list[str],
        split: str,
        transforms: Compose,
        seed: int,
        shape_names: np.ndarray | None = None,
        settings: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(split, classes, transforms, seed)
        self.data = data
        self.shape_names = shape_names  # names of the split file's shapes; data["shape_ids"] index them
        self.settings = dict(settings or {})
        self._labels = np.array([self._majority(i) for i in range(len(data["xyz"]))], np.int64)

    def _majority(self, i: int) -> int:
        inst = self.data["instance"][i].astype(np.int64)
        counts = np.bincount(inst, minlength=2)[1:]
        if counts.sum() == 0:
            return 0
        return int(self.data["box_labels"][i, int(np.argmax(counts))])

    def __len__(self) -> int:
        return len(self._labels)

    @property
    def box_classes(self) -> list[str]:
        """Classes a box can carry (the 40 shapes; the floor has no box)."""
        return self.classes[:FLOOR]

    @property
    def point_cloud_range(self) -> tuple[float, ...]:
        """(x_min, y_min, z_min, x_max, y_max, z_max) holding every scene: the floor square, up to
        the tallest shape (a bounding sphere's diameter) and 0.2 m of margin below and above."""
        layout = self.settings.get("layout") or asdict(SceneConfig())
        f, top = float(layout["floor_half"]), 2 * float(layout["radius"][1])
        return (-f, -f, -0.2, f, f, top + 0.2)

    def labels(self) -> np.ndarray:
        return self._labels

    def _load(self, i: int) -> dict[str, Any]:
        d = self.data
        return {
            "xyz": d["xyz"][i].copy(),
            "segment": d["segment"][i].astype(np.int64),
            "instance": d["instance"][i].astype(np.int64),
            "label": int(self._labels[i]),
            "boxes": d["boxes"][i].copy(),
            "box_labels": d["box_labels"][i].copy(),
        }


_KEYS = ("xyz", "segment", "instance", "boxes", "box_labels", "shape_ids", "poses", "num_raw", "num_kept")


@register_dataset("modelnet40_scenes", takes=())
def _build_modelnet40_scenes(
    split: str,
    root: Any,
    transforms: Compose,
    seed: int,
    scenes: int | None = None,
    points_per_scene: int = 8192,
    objects_min: int = 3,
    objects_max: int = 6,
    visible_only: bool = False,
    scene_seed: int = 0,
    layout: dict[str, Any] | None = None,
    cache: bool = True,
) -> PointDataset:
    """Scenes of real ModelNet40 shapes (official split) on a floor; 41 classes (the 40 + "floor").

    scenes: count (default 400 train / 100 test); `layout` overrides SceneConfig fields (room size,
    object radius, sensor...). The scenes depend only on the shapes, these settings and `scene_seed`
    (not the training `seed`), and are cached per split and settings (`cache=False`: in memory).
    """

    if split not in _SPLIT_ID:
        raise ValueError(f"modelnet40_scenes: split must be 'train' or 'test', got {split!r}")
    scenes = {"train": 400, "test": 100}[split] if scenes is None else int(scenes)
    if scenes < 1 or int(points_per_scene) < 1 or not 1 <= int(objects_min) <= int(objects_max):
        raise ValueError(
            f"modelnet40_scenes: need scenes >= 1, points_per_scene >= 1, 1 <= objects_min <= objects_max, "
            f"got {scenes}, {points_per_scene}, {objects_min}, {objects_max}"
        )
    cfg = SceneConfig.from_dict(layout)
    arrs, path = modelnet40_arrays(root, split)
    labels = np.asarray(arrs["labels"], np.int64).reshape(-1)
    names = np.asarray(arrs["names"])
    source = hashlib.sha256("\n".join(map(str, names.tolist())).encode() + labels.tobytes()).hexdigest()[:16]
    settings = {
        "version": SCENES_VERSION,
        "split": split,
        "source": f"{path.name}:{source}",
        "scenes": scenes,
        "points_per_scene": int(points_per_scene),
        "objects_min": int(objects_min),
        "objects_max": int(objects_max),
        "visible_only": bool(visible_only),
        "scene_seed": int(scene_seed),
        "layout": asdict(cfg),
    }

    def generate() -> dict[str, np.ndarray]:
        return generate_split(
            arrs["points"], labels, split, scenes, int(points_per_scene), int(objects_min),
            int(objects_max), bool(visible_only), int(scene_seed), cfg,
        )  # fmt: skip

    def complete(d: dict[str, np.ndarray]) -> bool:
        return all(k in d for k in _KEYS) and d["xyz"].shape == (scenes, int(points_per_scene), 3)

    data = cached_arrays("modelnet40_scenes", settings, generate, complete, enabled=cache)
    classes = [*load_class_names("modelnet40"), "floor"]
    return ModelNet40Scenes(data, classes, split, transforms, seed, shape_names=names, settings=settings)
