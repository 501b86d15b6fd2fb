"""Composable, registered per-sample transforms.

(Over 600 lines: one registry of ~30 small transforms that share the label-carrying `_take` and the
rng protocol; `object_noise` and `gt_sample` are the candidates to move out when it grows.)

A transform is ``t(sample: dict, rng: np.random.Generator) -> dict`` working on numpy arrays.
Randomness comes only from ``rng``, which datasets derive from (seed, epoch, index): the same
sample gets the same augmentation whatever the number of DataLoader workers (deterministic).
Build pipelines by name: ``build_transforms(["normalize", {"name": "fps", "num_points": 1024}])``.

The OpenShape training augmentations (docs/SPEC.md §4) are ``point_dropout`` (max ratio 0.875, dropped
points replaced by the first point), ``random_scale`` U(0.8, 1.25), ``random_shift`` U(-0.1, 0.1),
``rotation_jitter`` (angles N(0, 0.06) clipped to 0.18 rad per axis), ``rotate_gravity`` (uniform
rotation about z, the gravity axis) and ``color_drop`` (rgb := MISSING_COLOR with p = 0.5);
``openshape_augment`` chains them in that order.

Boxes (detection, `svl.boxes` convention): a sample may carry ``boxes (K, 7)`` with ``box_labels (K,)``
and ``ignore_boxes (M, 7)`` with ``ignore_labels (M,)``, padded with label -1 (zero rows) so samples
stack. Every transform that moves points moves the real rows of these boxes with them
(``normalize``, ``rotate_gravity``, isotropic ``random_scale``, ``random_shift``, ``random_flip``)
and leaves padding rows untouched; one that cannot keep a z-up box aligned (``rotation_jitter``,
anisotropic ``random_scale``, ``swap_axes``) refuses such a sample instead of silently misaligning
it. ``object_noise`` and ``gt_sample`` are detection-only augmentations (SECOND, OpenPCDet). Without
boxes every transform draws from ``rng`` exactly as before, so existing pipelines are unchanged.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from svl.boxes import bev_overlap, points_in_boxes, wrap_angle
from svl.conventions import MISSING_COLOR
from svl.data.axes import rotate_up_to_z
from svl.registry import Registry

__all__ = [
    "AUGMENT_RECIPES",
    "TRANSFORMS",
    "Compose",
    "augment_recipe",
    "build_transforms",
    "farthest_point_sample",
    "list_transforms",
    "register_transform",
    "unit_sphere",
    "voxel_vote",
]

Sample = dict[str, Any]
TRANSFORMS: Registry[Callable[..., Any]] = Registry(
    "transform", group="svl.transforms", hint="svl.data.list_transforms()"
)
_PER_POINT = ("xyz", "rgb", "normals", "feats", "segment", "instance")  # resampled together
_BOX_SETS = (("boxes", "box_labels"), ("ignore_boxes", "ignore_labels"))  # (K, 7) boxes, their labels
_BOX_ROWS = ("box_labels", "difficulty")  # per-row companions of "boxes" that gt_sample fills


def register_transform(name: str) -> Callable[[type], type]:
    """Class decorator: make a transform buildable by name."""
    return TRANSFORMS.register_class(name)


def list_transforms() -> list[str]:
    return TRANSFORMS.names()


class Compose:
    """Apply transforms in order with one shared generator."""

    def __init__(self, transforms: Iterable[Callable[[Sample, np.random.Generator], Sample]]) -> None:
        self.transforms = list(transforms)

    def __call__(self, sample: Sample, rng: np.random.Generator | None = None) -> Sample:
        rng = rng if rng is not None else np.random.default_rng(0)
        for t in self.transforms:
            sample = t(sample, rng)
        return sample

    def __repr__(self) -> str:
        return f"Compose({self.transforms!r})"


# Named training augmentations for classification fine-tuning (`data.augment_recipe`); an explicit
# `data.augment` list replaces the recipe.
AUGMENT_RECIPES: dict[str, list[dict[str, Any]]] = {
    # The E-3DSNN release's ModelNet40 config: isotropic RandomScale([0.9, 1.1]) and RandomShift(0.2),
    # no jitter, no rotation (ModelNet40 shapes are aligned).
    "e3dsnn_release": [
        {"name": "random_scale", "low": 0.9, "high": 1.1, "anisotropic": False},
        {"name": "random_shift", "shift": 0.2},
    ],
    # What svl used before issue 27: Pointcept's sparse-conv ModelNet40 scale (anisotropic
    # [0.67, 1.5]) and shift, plus PointNet's jitter.
    "pointcept_anisotropic": [
        {"name": "random_scale", "low": 0.67, "high": 1.5, "anisotropic": True},
        {"name": "random_shift", "shift": 0.2},
        {"name": "jitter", "sigma": 0.01, "clip": 0.05},
    ],
    "none": [],
}


def augment_recipe(name: str) -> list[dict[str, Any]]:
    """A copy of the named recipe; an unknown name lists the known ones."""
    if name not in AUGMENT_RECIPES:
        known = sorted(AUGMENT_RECIPES)
        raise ValueError(f"data.augment_recipe={name!r} is not a recipe; choose one of {known}")
    return [dict(t) for t in AUGMENT_RECIPES[name]]


def build_transforms(spec: Sequence[str | dict[str, Any] | Callable] | None) -> Compose:
    """Names, {"name": ..., **kwargs} dicts (`Registry.build`) or ready callables -> Compose."""
    return Compose(item if callable(item) else TRANSFORMS.build(item) for item in spec or [])


def _take(sample: Sample, idx: np.ndarray) -> Sample:
    """Index every per-point array of a sample."""
    out = dict(sample)
    n = len(sample["xyz"])
    for k in _PER_POINT:
        v = sample.get(k)
        if v is not None and len(v) == n:
            out[k] = np.asarray(v)[idx]
    for k in ("steps", "step_mask"):  # per-step points of the same cloud (time leads)
        v = sample.get(k)
        if v is not None and np.shape(v)[1] == n:
            out[k] = np.asarray(v)[:, idx]
    return out


class _Base:
    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


@register_transform("normalize")
class NormalizeUnitSphere(_Base):
    """Centre at the bounding-box centre (or mean) and scale to max radius 1 (docs/SPEC.md §3 convention)."""

    def __init__(self, center: str = "mean") -> None:
        if center not in ("mean", "bbox"):
            raise ValueError(f"normalize: center must be 'mean' or 'bbox', got {center!r}")
        self.center = center

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        xyz, c, r = unit_sphere(sample["xyz"], self.center)
        scale = 1.0 / r if r > 0 else 1.0
        return _map_boxes({**sample, "xyz": xyz}, lambda b: _affine_boxes(b, scale=scale, shift=-c * scale))


def unit_sphere(xyz: np.ndarray, center: str = "mean") -> tuple[np.ndarray, np.ndarray, float]:
    """(centred and scaled float32 cloud, the centre, the radius divided by): the `normalize` step.

    Returned apart so `svl.data.prepare` can report the scale it removed without recomputing it.
    """
    xyz = np.asarray(xyz, dtype=np.float32)
    c = xyz.mean(0) if center == "mean" else (xyz.min(0) + xyz.max(0)) / 2
    xyz = xyz - c
    r = float(np.linalg.norm(xyz, axis=1).max()) if len(xyz) else 0.0
    return (xyz / r if r > 0 else xyz).astype(np.float32), c, r


@register_transform("swap_axes")
class SwapAxes(_Base):
    """Make data z-up. mode "rotate": proper rotation of up_axis to +z; mode "swap": exchange the
    two columns (the OpenShape/ULIP y<->z swap, a mirror), applied to xyz and normals."""

    def __init__(self, up_axis: str = "y", mode: str = "rotate") -> None:
        if mode not in ("rotate", "swap"):
            raise ValueError(f"swap_axes: mode must be 'rotate' or 'swap', got {mode!r}")
        self.up_axis, self.mode = up_axis, mode
        rotate_up_to_z(np.zeros((1, 3), np.float32), up_axis)  # validates the axis name

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        _refuse_boxes(sample, "swap_axes", "it changes which axis is up, and a box turns about z only")
        out = dict(sample)
        for k in ("xyz", "normals"):
            if sample.get(k) is None:
                continue
            v = np.asarray(sample[k], dtype=np.float32)
            if self.mode == "rotate":
                out[k] = rotate_up_to_z(v, self.up_axis)
            else:
                ax = "xyz".index(self.up_axis.lstrip("+-").lower())
                cols = [0, 1, 2]
                cols[ax], cols[2] = 2, ax
                out[k] = v[:, cols].copy()
        return out


@register_transform("random_sample")
class RandomSample(_Base):
    """Random subset of `num_points` (with repetition only when the cloud is smaller)."""

    def __init__(self, num_points: int) -> None:
        if int(num_points) < 1:
            raise ValueError(f"random_sample: num_points must be >= 1, got {num_points}")
        self.num_points = int(num_points)

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        n = len(sample["xyz"])
        if n == self.num_points:
            return sample
        idx = rng.choice(n, self.num_points, replace=n < self.num_points)
        return _take(sample, idx)


def farthest_point_sample(
    xyz: np.ndarray, num_points: int, start: int = 0, backend: str = "auto"
) -> np.ndarray:
    """Indices of `num_points` farthest points (greedy FPS from `start`). fpsample, else torch."""
    xyz = np.ascontiguousarray(xyz, dtype=np.float32)
    n = len(xyz)
    if num_points > n:
        raise ValueError(f"fps: asked for {num_points} points from a cloud of {n}")
    if backend in ("auto", "fpsample"):
        try:
            import fpsample

            return np.asarray(fpsample.fps_sampling(xyz, num_points, start_idx=int(start)), dtype=np.int64)
        except ImportError:
            if backend == "fpsample":
                raise
    import torch

    pts = torch.from_numpy(xyz).double()
    idx = torch.empty(num_points, dtype=torch.long)
    dist = torch.full((n,), float("inf"), dtype=torch.float64)
    cur = int(start)
    for i in range(num_points):
        idx[i] = cur
        dist = torch.minimum(dist, ((pts - pts[cur]) ** 2).sum(1))
        cur = int(torch.argmax(dist))
    return idx.numpy()


@register_transform("fps")
class FarthestPointSample(_Base):
    """Deterministic farthest-point subset (evaluation); repeats points when the cloud is smaller."""

    def __init__(self, num_points: int, backend: str = "auto") -> None:
        if int(num_points) < 1:
            raise ValueError(f"fps: num_points must be >= 1, got {num_points}")
        self.num_points, self.backend = int(num_points), backend

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        n = len(sample["xyz"])
        if n == self.num_points:
            return sample
        if n < self.num_points:
            idx = np.concatenate([np.arange(n), rng.choice(n, self.num_points - n)])
        else:
            idx = farthest_point_sample(sample["xyz"], self.num_points, backend=self.backend)
        return _take(sample, idx)


def voxel_vote(voxel: np.ndarray, labels: np.ndarray, ignore: int = -1) -> np.ndarray:
    """Majority label of each voxel id in ``0..V-1`` (ties: the smaller label); ``ignore`` only when a
    voxel holds no labelled point. Why: a voxel straddling two objects should take the label most of
    its points carry, not whichever point the sampler happened to keep."""
    voxel, labels = np.asarray(voxel, np.int64), np.asarray(labels, np.int64)
    n_vox = int(voxel.max()) + 1 if len(voxel) else 0
    ok = labels != ignore
    out = np.full(n_vox, ignore, np.int64)
    if not ok.any():
        return out
    if labels[ok].min() < 0:
        raise ValueError(f"voxel_vote: labels must be >= 0 or the ignore index {ignore}")
    n_cls = int(labels[ok].max()) + 1
    counts = np.bincount(voxel[ok] * n_cls + labels[ok], minlength=n_vox * n_cls).reshape(n_vox, n_cls)
    has = counts.sum(1) > 0
    out[has] = counts[has].argmax(1)
    return out


@register_transform("voxel_sample")
class VoxelSample(_Base):
    """Keep one random point per voxel of `voxel_size` (Pointcept's GridSample, train mode); with
    `vote`, the kept point's ``segment`` becomes its voxel's majority label (`voxel_vote`).

    Dense scans (LiDAR near the sensor, S3DIS rooms) hold far more points than voxels: sampling per
    voxel evens the density out before `random_sample`/`sphere_crop` caps the count.
    """

    def __init__(self, voxel_size: float, vote: bool = True) -> None:
        if not (float(voxel_size) > 0 and math.isfinite(float(voxel_size))):
            raise ValueError(f"voxel_sample: voxel_size must be positive, got {voxel_size}")
        self.voxel_size, self.vote = float(voxel_size), bool(vote)

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        xyz = np.asarray(sample["xyz"])
        if len(xyz) == 0:
            return sample
        perm = rng.permutation(len(xyz))
        keys = np.floor(xyz[perm] / self.voxel_size).astype(np.int64)
        _, first, inv = np.unique(keys, axis=0, return_index=True, return_inverse=True)
        out = _take(sample, perm[first])
        seg = sample.get("segment")
        if self.vote and seg is not None and len(seg) == len(xyz):
            out["segment"] = voxel_vote(inv.reshape(-1), np.asarray(seg)[perm])
        return out


@register_transform("sphere_crop")
class SphereCrop(_Base):
    """Keep the `max_points` points nearest a centre (Pointcept's SphereCrop): a random point of the
    cloud (``mode="random"``, training) or the bounding-box centre (``"center"``). Smaller clouds pass."""

    def __init__(self, max_points: int, mode: str = "random") -> None:
        if int(max_points) < 1 or mode not in ("random", "center"):
            raise ValueError(f"sphere_crop: need max_points >= 1 and mode random|center, got "
                             f"{max_points}, {mode!r}")  # fmt: skip
        self.max_points, self.mode = int(max_points), mode

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        xyz = np.asarray(sample["xyz"])
        if len(xyz) <= self.max_points:
            return sample
        if self.mode == "random":
            centre = xyz[rng.integers(len(xyz))]
        else:
            centre = (xyz.min(0) + xyz.max(0)) / 2
        return _take(sample, _nearest(xyz, centre, self.max_points))


def _nearest(xyz: np.ndarray, centre: np.ndarray, k: int) -> np.ndarray:
    """Sorted indices of the k points of `xyz` nearest `centre` (a sphere crop)."""
    d2 = ((xyz - centre) ** 2).sum(1)
    return np.sort(np.argpartition(d2, k - 1)[:k])


@register_transform("scene_context")
class SceneContext(_Base):
    """Show a single object as a scene shows it: a partial view standing on a floor patch.

    Why: pretraining clouds are whole, isolated shapes, while in a scene (modelnet40_scenes, a room
    scan) most voxels a stem sees are floor and objects are cut by the crop or by other objects
    (issue 30, segmentation). With probability `crop_p` the points nearest a random point of the cloud
    are kept (a fraction from U(crop) of its distinct points); then a square floor patch of uniform
    points is laid at the cloud's lowest z (z-up frame), centred under it, its half-size U(extent)
    times the cloud's x-y radius, holding a share U(floor_share) of the points. The point count is
    unchanged (the object is subsampled to make room), so batches keep their shape. Per-point
    extras of floor points are zero (rgb, feats), up (normals), or -1 (segment, instance). Clouds
    only: boxes are refused.
    """

    def __init__(
        self,
        floor_share: Sequence[float] = (0.3, 0.6),
        extent: Sequence[float] = (1.5, 4.0),
        crop: Sequence[float] = (0.5, 1.0),
        crop_p: float = 0.5,
    ) -> None:
        fs, ex, cr = (tuple(float(v) for v in x) for x in (floor_share, extent, crop))
        ok = (
            len(fs) == len(ex) == len(cr) == 2
            and 0 <= fs[0] <= fs[1] < 1
            and 0 < ex[0] <= ex[1]
            and 0 < cr[0] <= cr[1] <= 1
            and 0 <= float(crop_p) <= 1
        )
        if not ok:
            raise ValueError(
                "scene_context: need floor_share [lo, hi] in [0, 1), extent [lo, hi] > 0, crop [lo, hi] "
                f"in (0, 1] and crop_p in [0, 1]; got {floor_share}, {extent}, {crop}, {crop_p}"
            )
        self.floor_share, self.extent, self.crop, self.crop_p = fs, ex, cr, float(crop_p)

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        _refuse_boxes(sample, "scene_context", "it adds floor points to a single object's cloud")
        xyz = np.asarray(sample["xyz"], np.float32)
        n = len(xyz)
        if n < 2:
            return sample
        obj = np.arange(n)
        if rng.random() < self.crop_p:
            # over distinct points: point_dropout's copies of one point would otherwise fill a crop
            # centred on them, leaving a one-point object (7% of samples with the OpenShape chain)
            pool = np.sort(np.unique(xyz, axis=0, return_index=True)[1])
            keep = max(1, int(round(rng.uniform(*self.crop) * len(pool))))
            obj = pool[_nearest(xyz[pool], xyz[pool[rng.integers(len(pool))]], keep)]
        n_floor = min(int(round(rng.uniform(*self.floor_share) * n)), n - 1)
        n_obj = n - n_floor
        if len(obj) >= n_obj:
            obj = np.sort(rng.choice(obj, n_obj, replace=False))
        else:  # every point of the view, some twice
            obj = np.concatenate([obj, rng.choice(obj, n_obj - len(obj))])
        out = _take(sample, obj)
        p = xyz[obj]
        centre = (p[:, :2].min(0) + p[:, :2].max(0)) / 2
        radius = max(float(np.linalg.norm(p[:, :2] - centre, axis=1).max()), 1e-3)
        half = rng.uniform(*self.extent) * radius
        floor = np.empty((n_floor, 3), np.float32)
        floor[:, :2] = centre + rng.uniform(-half, half, size=(n_floor, 2))
        floor[:, 2] = p[:, 2].min()
        out["xyz"] = np.concatenate([p, floor]).astype(np.float32)
        for k in _PER_POINT[1:]:
            v = out.get(k)
            if v is None or len(v) != n_obj:
                continue
            v = np.asarray(v)
            pad = np.zeros((n_floor, *v.shape[1:]), v.dtype)
            if k == "normals":
                pad[:, 2] = 1
            elif k in ("segment", "instance"):
                pad[:] = -1
            out[k] = np.concatenate([v, pad])
        return out


@register_transform("point_dropout")
class RandomPointDropout(_Base):
    """Drop a random fraction (U(0, max_ratio)) of points, replacing them by the first point."""

    def __init__(self, max_ratio: float = 0.875) -> None:
        self.max_ratio = float(max_ratio)

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        n = len(sample["xyz"])
        ratio = rng.random() * self.max_ratio
        drop = np.flatnonzero(rng.random(n) <= ratio)
        if len(drop) == 0:
            return sample
        idx = np.arange(n)
        idx[drop] = 0
        return _take(sample, idx)


@register_transform("random_scale")
class RandomScale(_Base):
    """Scale the cloud by one factor from U(low, high), or one per axis (`anisotropic`)."""

    def __init__(self, low: float = 0.8, high: float = 1.25, anisotropic: bool = False) -> None:
        self.low, self.high, self.anisotropic = float(low), float(high), bool(anisotropic)

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        if self.anisotropic:
            _refuse_boxes(sample, "random_scale(anisotropic=True)", "a box turned by yaw stays a box only "
                          "under the same scale on every axis; use anisotropic=False")  # fmt: skip
        s = rng.uniform(self.low, self.high, 3) if self.anisotropic else rng.uniform(self.low, self.high)
        out = {**sample, "xyz": (np.asarray(sample["xyz"], np.float32) * s).astype(np.float32)}
        return _map_boxes(out, lambda b: _affine_boxes(b, scale=float(s)))


@register_transform("jitter")
class Jitter(_Base):
    """Per-point Gaussian noise N(0, sigma) clipped to +-clip (PointNet's jitter)."""

    def __init__(self, sigma: float = 0.01, clip: float = 0.05) -> None:
        self.sigma, self.clip = float(sigma), float(clip)

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        xyz = np.asarray(sample["xyz"], np.float32)
        noise = np.clip(self.sigma * rng.standard_normal(xyz.shape), -self.clip, self.clip)
        return {**sample, "xyz": (xyz + noise).astype(np.float32)}


@register_transform("random_shift")
class RandomShift(_Base):
    """Translate by a per-axis offset from U(-shift, shift)."""

    def __init__(self, shift: float = 0.1) -> None:
        self.shift = float(shift)

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        t = rng.uniform(-self.shift, self.shift, 3)
        out = {**sample, "xyz": (np.asarray(sample["xyz"], np.float32) + t).astype(np.float32)}
        return _map_boxes(out, lambda b: _affine_boxes(b, shift=t))


def _rot(ax: float, ay: float, az: float) -> np.ndarray:
    cx, sx, cy, sy, cz, sz = (
        math.cos(ax),
        math.sin(ax),
        math.cos(ay),
        math.sin(ay),
        math.cos(az),
        math.sin(az),
    )
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def _apply_rot(sample: Sample, r: np.ndarray, yaw: float = 0.0) -> Sample:
    """Rotate points and normals by `r`; boxes too, when `r` is the turn by `yaw` about z."""
    out = {**sample, "xyz": (np.asarray(sample["xyz"], np.float64) @ r.T).astype(np.float32)}
    if sample.get("normals") is not None:
        out["normals"] = (np.asarray(sample["normals"], np.float64) @ r.T).astype(np.float32)
    return _map_boxes(out, lambda b: _affine_boxes(b, yaw=yaw))


@register_transform("rotation_jitter")
class RotationJitter(_Base):
    """Small rotation: per-axis angles N(0, sigma) clipped to +-clip (radians)."""

    def __init__(self, sigma: float = 0.06, clip: float = 0.18) -> None:
        self.sigma, self.clip = float(sigma), float(clip)

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        _refuse_boxes(sample, "rotation_jitter", "it tilts the scene about x and y, and a box turns about "
                      "z only; use rotate_gravity")  # fmt: skip
        a = np.clip(self.sigma * rng.standard_normal(3), -self.clip, self.clip)
        return _apply_rot(sample, _rot(*a))


@register_transform("rotate_gravity")
class RandomRotateGravity(_Base):
    """Random rotation about the gravity axis (+z in svl): uniform over the circle, or U(-max_angle,
    max_angle) radians when given (OpenPCDet's KITTI recipe turns scenes by at most pi/4)."""

    def __init__(self, max_angle: float | None = None) -> None:
        if max_angle is not None and not (0 < float(max_angle) <= math.pi):
            raise ValueError(f"rotate_gravity: max_angle must be in (0, pi], got {max_angle}")
        self.max_angle = None if max_angle is None else float(max_angle)

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        if self.max_angle is None:
            a = rng.uniform(0, 2 * math.pi)
        else:
            a = rng.uniform(-self.max_angle, self.max_angle)
        return _apply_rot(sample, _rot(0.0, 0.0, a), yaw=a)


@register_transform("random_flip")
class RandomFlip(_Base):
    """Mirror the scene, each enabled axis with probability p: ``y`` negates y (the x-z plane is the
    mirror: a street scene driven on the other side; OpenPCDet's flip "along x"), ``x`` negates x.
    Boxes follow: yaw -> -yaw for y, pi - yaw for x. Front-camera KITTI data wants y only: an x
    mirror would put the scene behind the car."""

    def __init__(self, p: float = 0.5, y: bool = True, x: bool = False) -> None:
        if not 0 <= float(p) <= 1 or not (y or x):
            raise ValueError(
                f"random_flip: need 0 <= p <= 1 and at least one of x, y; got p={p}, x={x}, y={y}"
            )
        self.p, self.y, self.x = float(p), bool(y), bool(x)

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        u = rng.random(2)  # always two draws: the stream does not depend on the outcome
        axes = [ax for ax, on, ui in ((1, self.y, u[0]), (0, self.x, u[1])) if on and ui < self.p]
        if not axes:
            return sample
        out = dict(sample)
        for k in ("xyz", "normals"):
            if sample.get(k) is not None:
                v = np.array(sample[k], np.float32)
                v[:, axes] *= -1
                out[k] = v
        return _map_boxes(out, lambda b: _mirror_boxes(b, axes))


@register_transform("color_drop")
class ColorDrop(_Base):
    """With probability p, replace colour by the 'no colour' constant MISSING_COLOR."""

    def __init__(self, p: float = 0.5, value: float = MISSING_COLOR) -> None:
        self.p, self.value = float(p), float(value)

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        if rng.random() >= self.p:
            return sample
        rgb = sample.get("rgb")
        shape = np.shape(rgb) if rgb is not None else (len(sample["xyz"]), 3)
        return {**sample, "rgb": np.full(shape, self.value, dtype=np.float32)}


@register_transform("openshape_augment")
class OpenShapeAugment(Compose):
    """docs/SPEC.md §4 training augmentation: dropout, scale, shift, jitter, gravity rotation, colour drop."""

    def __init__(self, color_drop: float = 0.5) -> None:
        super().__init__(
            [
                RandomPointDropout(),
                RandomScale(),
                RandomShift(),
                RotationJitter(),
                RandomRotateGravity(),
                ColorDrop(p=color_drop),
            ]
        )


@register_transform("voxelize")
class Voxelize(_Base):
    """Ask the collate step to voxelize at `voxel_size` with the sparse engine (svl.sparse.voxelize).

    Voxelization happens per batch (sites need the batch index), so this only records the size
    in the sample; `collate_points` then fills ``PointBatch.sparse`` and ``point2voxel``.
    """

    def __init__(self, voxel_size: float = 0.02) -> None:
        if not (float(voxel_size) > 0 and math.isfinite(float(voxel_size))):
            raise ValueError(f"voxelize: voxel_size must be positive, got {voxel_size}")
        self.voxel_size = float(voxel_size)

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        return {**sample, "voxel_size": self.voxel_size}


# ----------------------------------------------------------------------------- boxes (detection)
def _real_rows(sample: Sample, key: str, label_key: str) -> np.ndarray:
    """Indices of the real rows of sample[key]: label >= 0, or non-zero rows when there are no labels."""
    boxes = np.asarray(sample[key]).reshape(-1, 7)
    labels = sample.get(label_key)
    if labels is not None:
        labels = np.asarray(labels).reshape(-1)
        if len(labels) != len(boxes):
            raise ValueError(f"{key} has {len(boxes)} rows but {label_key} has {len(labels)}")
        return np.flatnonzero(labels >= 0)
    return np.flatnonzero(np.any(boxes != 0, axis=1))


def _map_boxes(sample: Sample, fn: Callable[[np.ndarray], np.ndarray]) -> Sample:
    """Apply `fn` ((k, 7) float64 -> (k, 7)) to the real rows of every box set; padding stays as it is."""
    out = sample
    for key, label_key in _BOX_SETS:
        if sample.get(key) is None:
            continue
        rows = _real_rows(sample, key, label_key)
        if not len(rows):
            continue
        src = np.asarray(sample[key])
        b = src.astype(np.float64).reshape(-1, 7)
        b[rows] = fn(b[rows].copy())
        out = {**out, key: b.reshape(src.shape).astype(src.dtype if src.dtype.kind == "f" else np.float32)}
    return out


def _refuse_boxes(sample: Sample, name: str, why: str) -> None:
    """A transform that cannot move boxes with the points stops here (even on a frame with no objects,
    so a pipeline fails on its first sample rather than on the first busy one)."""
    found = [k for k, _ in _BOX_SETS if sample.get(k) is not None]
    if found:
        raise ValueError(f"{name}: the sample carries 3D boxes ({', '.join(found)}) and {why}")


def _affine_boxes(
    b: np.ndarray, *, scale: float = 1.0, yaw: float = 0.0, shift: np.ndarray | None = None
) -> np.ndarray:
    """Boxes under p -> scale * Rz(yaw) @ p + shift, the map the points went through."""
    if yaw:
        c, s = math.cos(yaw), math.sin(yaw)
        b[:, :2] = b[:, :2] @ np.array([[c, s], [-s, c]])  # rows @ Rz.T
        b[:, 6] = wrap_angle(b[:, 6] + yaw)
    b[:, :6] *= scale
    if shift is not None:
        b[:, :3] += np.asarray(shift, np.float64)
    return b


def _mirror_boxes(b: np.ndarray, axes: list[int]) -> np.ndarray:
    """Boxes under negated coordinate `axes` (0 = x, 1 = y)."""
    for ax in axes:
        b[:, ax] *= -1
        b[:, 6] = wrap_angle(-b[:, 6] if ax == 1 else math.pi - b[:, 6])
    return b


def _obstacles(sample: Sample, skip: str | None = None) -> np.ndarray:
    """(m, 7) float64: the real rows of every box set except `skip`."""
    out = [np.zeros((0, 7))]
    for key, label_key in _BOX_SETS:
        if key != skip and sample.get(key) is not None:
            out.append(np.asarray(sample[key], np.float64).reshape(-1, 7)[_real_rows(sample, key, label_key)])
    return np.concatenate(out)


def _turn_points(p: np.ndarray, a: float) -> np.ndarray:
    """(n, 3) points turned by `a` about z (through the origin)."""
    c, s = math.cos(a), math.sin(a)
    return p @ np.array([[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]])


@register_transform("object_noise")
class ObjectNoise(_Base):
    """Move each object a little on its own (SECOND's per-object noise): its box and the points inside
    it turn by U(-rotation, rotation) about the box centre and shift by N(0, translation_std) per axis.

    Why: detectors otherwise learn where cars usually stand in the few thousand KITTI frames. Each
    box gets up to `tries` random poses; the first whose bird's-eye footprint meets no other box
    (including ``ignore_boxes``, in their current places) is taken, else the object stays. Boxes that
    share points with another box or an ignore box never move (the shared points cannot follow
    both), so every point inside box k before is inside box k after. Padding rows (label -1) are untouched.
    """

    def __init__(
        self,
        translation_std: float | Sequence[float] = 0.25,
        rotation: float = math.pi / 20,
        tries: int = 100,
    ) -> None:
        std = np.broadcast_to(np.asarray(translation_std, np.float64), (3,))
        if (std < 0).any() or not 0 <= float(rotation) <= math.pi or int(tries) < 1:
            raise ValueError(f"object_noise: need translation_std >= 0, 0 <= rotation <= pi, tries >= 1; got "
                             f"{translation_std}, {rotation}, {tries}")  # fmt: skip
        self.translation_std, self.rotation, self.tries = tuple(map(float, std)), float(rotation), int(tries)

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        if sample.get("boxes") is None:
            raise ValueError("object_noise: the sample has no 'boxes' (a detection dataset's samples do)")
        rows = _real_rows(sample, "boxes", "box_labels")
        k = len(rows)
        shifts = rng.standard_normal((k, self.tries, 3)) * np.asarray(self.translation_std)
        turns = rng.uniform(-self.rotation, self.rotation, (k, self.tries))
        if k == 0:
            return sample
        xyz = np.asarray(sample["xyz"], np.float64)
        normals = sample.get("normals")
        normals = None if normals is None else np.asarray(normals, np.float64).copy()
        boxes = np.asarray(sample["boxes"], np.float64).reshape(-1, 7)[rows].copy()
        still = _obstacles(sample, skip="boxes")
        inside = points_in_boxes(xyz, np.concatenate([boxes, still]))  # before any move
        frozen = inside[inside.sum(1) > 1, :k].any(0)  # shares points with another box (or ignore box)
        inside = inside[:, :k]
        xyz, moved = xyz.copy(), False
        for j in np.flatnonzero(~frozen):
            cand = np.repeat(boxes[j : j + 1], self.tries, 0)
            cand[:, :3] += shifts[j]
            cand[:, 6] = wrap_angle(cand[:, 6] + turns[j])
            others = np.concatenate([np.delete(boxes, j, 0), still])
            free = ~bev_overlap(cand, others).any(1) if len(others) else np.ones(self.tries, bool)
            if not free.any():
                continue
            t = int(np.argmax(free))
            pts = inside[:, j]
            c = boxes[j, :3]
            xyz[pts] = _turn_points(xyz[pts] - c, turns[j, t]) + c + shifts[j, t]
            if normals is not None:
                normals[pts] = _turn_points(normals[pts], turns[j, t])
            boxes[j] = cand[t]
            moved = True
        if not moved:
            return sample
        src = np.asarray(sample["boxes"])
        out_boxes = src.astype(np.float64).reshape(-1, 7)
        out_boxes[rows] = boxes
        out = {
            **sample,
            "xyz": xyz.astype(np.float32),
            "boxes": out_boxes.reshape(src.shape).astype(np.float32),
        }
        if normals is not None:
            out["normals"] = normals.astype(np.float32)
        return out


GT_DATABASE_KEYS = ("points", "offsets", "boxes", "labels")  # required; optional: feats, difficulty, classes


@register_transform("gt_sample")
class GTSample(_Base):
    """Paste ground-truth objects from a database into the scene (SECOND's GT sampling).

    Why: a KITTI frame holds a handful of cars and hardly any cyclists; pasting real objects from
    other frames multiplies the positives a detector sees. For each class the scene is filled up to
    ``per_class[c]`` objects of that class (OpenPCDet's sample groups, limit_whole_scene), with
    random database objects holding at least `min_points` points, skipping any whose bird's-eye
    footprint meets a box already there (``boxes`` and ``ignore_boxes``) or one pasted before it.
    Scene points inside a pasted box are removed and the object's own points added, at the pose it
    had in its frame; pasted boxes fill padding rows of ``boxes`` (with ``box_labels`` and
    ``difficulty``), so the count never exceeds the padded size. The point count changes: put
    gt_sample before the resampling to a fixed N. Samples with per-point arrays it cannot fill for
    the pasted points (``rgb``, ``normals``, ``segment``, ``instance``) are refused.

    database: a dict or the path of an .npz with ``points (P, 3)`` (each object's points in its own
    box frame: centre at 0, x along l), ``offsets (O+1,)`` (object o owns points[offsets[o]:
    offsets[o+1]]), ``boxes (O, 7)``, ``labels (O,)`` and optionally ``feats (P, C)``,
    ``difficulty (O,)`` and ``classes`` (names of the labels);
    `svl.data.detection.build_gt_database` makes one. per_class: {class name or index: count}, or
    one count for every class of the database. exclude_difficulty: database objects of these
    levels are never pasted (KITTI's -1: too small, occluded or truncated to be rated).
    """

    def __init__(
        self,
        database: dict[str, Any] | str | os.PathLike[str],
        per_class: dict[str | int, int] | int = 15,
        min_points: int = 5,
        exclude_difficulty: Sequence[int] = (-1,),
    ) -> None:
        self._db: dict[str, np.ndarray] | None
        if isinstance(database, (str, os.PathLike)):
            self._from_file, self.source, self._db = True, str(database), None
        else:
            self._from_file, self.source, self._db = False, "<in memory>", dict(database)
        self.per_class, self.min_points = per_class, int(min_points)
        self.exclude_difficulty = tuple(int(d) for d in exclude_difficulty)
        self._pools: list[tuple[int, int, np.ndarray]] | None = None  # (class, target count, eligible ids)
        if self._db is not None:
            self._prepare()

    def __repr__(self) -> str:
        return (f"GTSample(database={self.source!r}, per_class={self.per_class!r}, "
                f"min_points={self.min_points}, exclude_difficulty={self.exclude_difficulty})")  # fmt: skip

    def __getstate__(self) -> dict[str, Any]:  # a file-backed database is reloaded in each worker
        state = dict(vars(self))
        if self._from_file:
            state["_db"], state["_pools"] = None, None
        return state

    def _prepare(self) -> None:
        """Load (once per process) and check the database, then index the eligible objects per class."""
        if self._db is None:
            path = Path(self.source)
            if not path.is_file():
                raise FileNotFoundError(f"gt_sample: {path}: no such database file")
            with np.load(path, allow_pickle=False) as z:
                self._db = {k: z[k] for k in z.files}
        db, where = self._db, f"gt_sample database {self.source}"
        missing = [k for k in GT_DATABASE_KEYS if k not in db]
        if missing:
            raise ValueError(f"{where}: missing {missing} (needs {list(GT_DATABASE_KEYS)})")
        n_obj, off = len(db["boxes"]), np.asarray(db["offsets"])
        if (
            off.shape != (n_obj + 1,)
            or off[0] != 0
            or off[-1] != len(db["points"])
            or (np.diff(off) < 0).any()
        ):
            raise ValueError(f"{where}: offsets must run from 0 to {len(db['points'])} over {n_obj} objects")
        labels = np.asarray(db["labels"], np.int64)
        classes = [str(c) for c in db.get("classes", [])]
        if isinstance(self.per_class, dict):
            targets = {}
            for c, n in self.per_class.items():
                if isinstance(c, str):
                    if c not in classes:
                        raise ValueError(f"gt_sample: class {c!r} is not in the database (it has {classes})")
                    c = classes.index(c)
                targets[int(c)] = int(n)
        else:
            targets = {int(c): int(self.per_class) for c in np.unique(labels)}
        ok = np.diff(off) >= self.min_points
        if "difficulty" in db and self.exclude_difficulty:
            ok &= ~np.isin(np.asarray(db["difficulty"]), self.exclude_difficulty)
        self._pools = [(c, n, np.flatnonzero(ok & (labels == c))) for c, n in sorted(targets.items())]

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        if self._pools is None:
            self._prepare()
        db = self._db
        assert db is not None and self._pools is not None
        if sample.get("boxes") is None or sample.get("box_labels") is None:
            raise ValueError("gt_sample: the sample has no 'boxes' and 'box_labels' to paste objects into")
        unfillable = [k for k in _PER_POINT if k not in ("xyz", "feats") and sample.get(k) is not None]
        if unfillable:
            raise ValueError(f"gt_sample: the sample carries per-point {unfillable}, which pasted objects "
                             "have no values for")  # fmt: skip
        if sample.get("feats") is not None and "feats" not in db:
            raise ValueError(f"gt_sample: the sample has feats but database {self.source} holds none")
        if sample.get("difficulty") is not None and "difficulty" not in db:
            raise ValueError(f"gt_sample: the sample has difficulty but database {self.source} holds none")
        labels = np.asarray(sample["box_labels"]).reshape(-1)
        free = np.flatnonzero(labels < 0)
        occupied = _obstacles(sample)
        chosen: list[int] = []
        for cls, target, pool in self._pools:
            want = min(target - int((labels == cls).sum()), len(free) - len(chosen), len(pool))
            if want <= 0:
                continue
            cand = rng.choice(pool, size=want, replace=False)
            hit = bev_overlap(db["boxes"][cand], occupied).any(1) if len(occupied) else np.zeros(want, bool)
            for o in cand[~hit]:
                box = np.asarray(db["boxes"][o], np.float64)[None]
                if chosen and bev_overlap(box, db["boxes"][chosen]).any():
                    continue
                chosen.append(int(o))
            if chosen:
                occupied = np.concatenate([occupied, np.asarray(db["boxes"][chosen], np.float64)])
        if not chosen:
            return sample
        new = np.asarray(db["boxes"][chosen], np.float64)
        keep = np.flatnonzero(~points_in_boxes(sample["xyz"], new).any(1))
        out = _take(sample, keep)
        off = np.asarray(db["offsets"])
        parts = [np.arange(off[o], off[o + 1]) for o in chosen]
        world = [
            _turn_points(np.asarray(db["points"][p], np.float64), b[6]) + b[:3] for p, b in zip(parts, new)
        ]
        out["xyz"] = np.concatenate([np.asarray(out["xyz"], np.float32), *world]).astype(np.float32)
        if sample.get("feats") is not None:
            f = np.asarray(out["feats"], np.float32)
            pasted = [np.asarray(db["feats"][p], np.float32).reshape(len(p), -1) for p in parts]
            if pasted[0].shape[1] != f.shape[1]:
                raise ValueError(f"gt_sample: database feats have {pasted[0].shape[1]} channels, the "
                                 f"sample's {f.shape[1]}")  # fmt: skip
            out["feats"] = np.concatenate([f, *pasted])
        rows = free[: len(chosen)]
        boxes = np.array(sample["boxes"], np.float32)
        boxes.reshape(-1, 7)[rows] = new
        out["boxes"] = boxes
        fill = {"box_labels": db["labels"], "difficulty": db.get("difficulty")}
        for key in _BOX_ROWS:
            if sample.get(key) is not None:
                v = np.array(sample[key])
                v[rows] = np.asarray(fill[key])[chosen]
                out[key] = v
        return out
