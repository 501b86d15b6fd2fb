"""Composable, registered per-sample transforms.

A transform is ``t(sample: dict, rng: np.random.Generator) -> dict`` working on numpy arrays.
Randomness comes only from ``rng``, which datasets derive from (seed, epoch, index): the same
sample gets the same augmentation whatever the number of DataLoader workers (deterministic).
Build pipelines by name: ``build_transforms(["normalize", {"name": "fps", "num_points": 1024}])``.

The OpenShape training augmentations (docs/SPEC.md §4) are ``point_dropout`` (max ratio 0.875, dropped
points replaced by the first point), ``random_scale`` U(0.8, 1.25), ``random_shift`` U(-0.1, 0.1),
``rotation_jitter`` (angles N(0, 0.06) clipped to 0.18 rad per axis), ``rotate_gravity`` (uniform
rotation about z, the gravity axis) and ``color_drop`` (rgb := MISSING_COLOR with p = 0.5);
``openshape_augment`` chains them in that order.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from svl.data.axes import rotate_up_to_z
from svl.data.batch import MISSING_COLOR
from svl.registry import Registry

__all__ = [
    "TRANSFORMS",
    "Compose",
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


def register_transform(name: str) -> Callable[[type], type]:
    """Class decorator: make a transform buildable by name."""

    def deco(cls: type) -> type:
        TRANSFORMS.register(name, cls)
        cls.registered_name = name
        return cls

    return deco


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


def build_transforms(spec: Sequence[str | dict[str, Any] | Callable] | None) -> Compose:
    """Names, {"name": ..., **kwargs} dicts or ready callables -> Compose."""
    out = []
    for item in spec or []:
        if callable(item):
            out.append(item)
            continue
        if isinstance(item, str):
            name, kwargs = item, {}
        elif isinstance(item, dict) and "name" in item:
            kwargs = dict(item)
            name = kwargs.pop("name")
        else:
            raise ValueError(f"transform spec must be a name, a dict with 'name', or a callable: {item!r}")
        builder = TRANSFORMS.get(name)
        try:
            out.append(builder(**kwargs))
        except TypeError as e:
            raise ValueError(f"transform {name!r}: bad arguments {kwargs} ({e})") from None
    return Compose(out)


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
        return {**sample, "xyz": unit_sphere(sample["xyz"], self.center)[0]}


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
        d2 = ((xyz - centre) ** 2).sum(1)
        idx = np.sort(np.argpartition(d2, self.max_points - 1)[: self.max_points])
        return _take(sample, idx)


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
        s = rng.uniform(self.low, self.high, 3) if self.anisotropic else rng.uniform(self.low, self.high)
        return {**sample, "xyz": (np.asarray(sample["xyz"], np.float32) * s).astype(np.float32)}


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
        return {**sample, "xyz": (np.asarray(sample["xyz"], np.float32) + t).astype(np.float32)}


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


def _apply_rot(sample: Sample, r: np.ndarray) -> Sample:
    out = {**sample, "xyz": (np.asarray(sample["xyz"], np.float64) @ r.T).astype(np.float32)}
    if sample.get("normals") is not None:
        out["normals"] = (np.asarray(sample["normals"], np.float64) @ r.T).astype(np.float32)
    return out


@register_transform("rotation_jitter")
class RotationJitter(_Base):
    """Small rotation: per-axis angles N(0, sigma) clipped to +-clip (radians)."""

    def __init__(self, sigma: float = 0.06, clip: float = 0.18) -> None:
        self.sigma, self.clip = float(sigma), float(clip)

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        a = np.clip(self.sigma * rng.standard_normal(3), -self.clip, self.clip)
        return _apply_rot(sample, _rot(*a))


@register_transform("rotate_gravity")
class RandomRotateGravity(_Base):
    """Uniform random rotation about the gravity axis (+z in svl)."""

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        return _apply_rot(sample, _rot(0.0, 0.0, rng.uniform(0, 2 * math.pi)))


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
