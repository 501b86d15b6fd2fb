"""The dataset registry and the base class every dataset module builds on.

Both svl/data/datasets.py (shape datasets) and svl/data/events.py (event streams) import this
module, never each other. Built-in datasets register when ``svl.data`` is imported (its
``__init__`` imports both files); other packages register through the entry-point group
``svl.datasets`` or by calling `register_dataset` themselves.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from svl.data.transforms import Compose, build_transforms
from svl.registry import Registry

__all__ = [
    "DATASETS",
    "PointDataset",
    "build_dataset",
    "list_datasets",
    "register_dataset",
    "resolve_root",
]

DATASETS: Registry[Callable[..., PointDataset]] = Registry(
    "dataset", group="svl.datasets", hint="svl data info / svl.data.list_datasets()"
)


def register_dataset(name: str) -> Callable[[Callable[..., PointDataset]], Callable[..., PointDataset]]:
    """Decorator: make a builder ``fn(split, root, transforms, seed, **kwargs)`` buildable by name."""
    return DATASETS.register(name)


def list_datasets() -> list[str]:
    return DATASETS.names()


def resolve_root(root: str | os.PathLike[str] | None, sub: str = "") -> Path:
    """`root` if given, else svl.utils.data_root() ($SVL_DATA or ../shared/data), joined with `sub`."""
    if root is None:
        from svl.utils import data_root

        base = data_root(required=True)
        assert base is not None
        path = base / sub if sub else base
    else:
        path = Path(root).expanduser()
        if sub and (path / sub).is_dir():
            path = path / sub
    if not path.exists():
        raise FileNotFoundError(f"dataset folder {path} does not exist")
    return path


def build_dataset(
    name: str,
    split: str,
    root: str | os.PathLike[str] | None = None,
    transforms: Sequence[Any] | Compose | None = None,
    *,
    num_points: int | None = None,
    augment: bool = False,
    seed: int = 0,
    **kwargs: Any,
) -> PointDataset:
    """Build a registered dataset split.

    transforms: a Compose / spec list (see svl.data.transforms); None = the default pipeline:
    resample to `num_points` (random when augmenting, farthest-point otherwise) and, with
    `augment`, the OpenShape augmentations. Extra kwargs go to the dataset (e.g. variant=).
    """
    builder = DATASETS.get(name)
    if num_points is not None and "num_points" in inspect.signature(builder).parameters:
        kwargs["num_points"], num_points = num_points, None  # the dataset samples itself (events)
    if transforms is None:
        spec: list[Any] = []
        if num_points is not None:
            spec.append({"name": "random_sample" if augment else "fps", "num_points": int(num_points)})
        if augment:
            spec.append("openshape_augment")
        transforms = spec
    tf = transforms if isinstance(transforms, Compose) else build_transforms(transforms)
    return builder(split=split, root=root, transforms=tf, seed=seed, **kwargs)


class PointDataset:
    """Map-style dataset over an index of shapes; subclasses implement `_load(i) -> sample`."""

    name = "points"
    up_axis_on_disk = "z"

    def __init__(self, split: str, classes: Sequence[str], transforms: Compose, seed: int = 0) -> None:
        self.split = split
        self.classes = list(classes)
        self.transforms = transforms
        self.seed = int(seed)
        self.epoch = 0

    def __len__(self) -> int:
        raise NotImplementedError

    def _load(self, i: int) -> dict[str, Any]:
        raise NotImplementedError

    def labels(self) -> np.ndarray:
        """All labels in dataset order (for samplers and per-class metrics)."""
        return np.asarray([self._load(i)["label"] for i in range(len(self))], dtype=np.int64)

    def set_epoch(self, epoch: int) -> None:
        """Change the augmentation stream (deterministically) for a new epoch."""
        self.epoch = int(epoch)

    def __getitem__(self, i: int) -> dict[str, Any]:
        n = len(self)
        if not -n <= int(i) < n:
            raise IndexError(f"{self.name}/{self.split}: index {i} out of range for {n} samples")
        i = int(i) % n
        sample = self._load(i)
        sample["index"] = i
        rng = np.random.default_rng([self.seed, self.epoch, i])
        sample = self.transforms(sample, rng)
        for k in ("xyz", "rgb", "normals"):
            if sample.get(k) is not None:
                sample[k] = np.ascontiguousarray(sample[k], dtype=np.float32)
        return sample

    def __repr__(self) -> str:
        n, k = len(self), len(self.classes)
        return f"{type(self).__name__}({self.name!r}, split={self.split!r}, n={n}, classes={k})"
