"""The dataset registry and the base classes every dataset module builds on.

`SeededDataset` is what point, event and image datasets share: split, classes, seed, epoch and one
random stream per (seed, epoch, index), so a sample gets the same augmentation in any DataLoader
worker and a resumed run replays its epoch exactly. `PointDataset` adds the point transforms and
`ArrayDataset` the clouds held in arrays; image datasets (svl/data/images/) derive from
`SeededDataset` too. The dataset modules (modelnet.py, scanobjectnn.py, openshape.py, folders.py,
events.py, ...) import this module, never each other; ``svl.data`` imports them all, which registers
the built-ins. Other packages register through the entry-point group ``svl.datasets`` or by calling
`register_dataset` themselves.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from svl.data.transforms import Compose, build_transforms
from svl.registry import Registry

__all__ = [
    "ArrayDataset",
    "DATASETS",
    "DATASET_OPTIONS",
    "PointDataset",
    "SeededDataset",
    "build_dataset",
    "dataset_abilities",
    "dataset_takes",
    "files_up_axis",
    "list_datasets",
    "register_dataset",
    "resolve_root",
]

# The build options callers probe a dataset for (`takes=` of `register_dataset`): `build_dataset` hands
# num_points to a dataset that samples its own points, and event tasks need the encoding options.
DATASET_OPTIONS = ("num_points", "T", "encoding", "event_augment")


def _abilities_from_signature(builder: Any) -> dict[str, Any]:
    """What an undeclared builder (a plugin) takes, read once from its signature when registered."""
    try:
        params = inspect.signature(builder).parameters
    except (TypeError, ValueError):  # builtins and some C callables have no signature
        params = {}  # type: ignore[assignment]
    return {"takes": tuple(k for k in DATASET_OPTIONS if k in params)}


DATASETS: Registry[Callable[..., PointDataset]] = Registry(
    "dataset",
    group="svl.datasets",
    hint="svl data info / svl.data.list_datasets()",
    default_meta=_abilities_from_signature,
)


def register_dataset(
    name: str, *, takes: Sequence[str] | None = None
) -> Callable[[Callable[..., PointDataset]], Callable[..., PointDataset]]:
    """Decorator: make a builder ``fn(split, root, transforms, seed, **kwargs)`` buildable by name.

    takes: which of `DATASET_OPTIONS` the builder handles itself, e.g. ``("num_points",)`` for a
    dataset that samples its own points; None reads them from the builder's signature (what plugins
    registered without declarations get).
    """
    if takes is None:
        return DATASETS.register(name)
    if isinstance(takes, str):
        takes = (takes,)
    bad = sorted(set(takes) - set(DATASET_OPTIONS))
    if bad:
        raise ValueError(f"dataset {name!r}: takes= names unknown option(s) {bad}; use {DATASET_OPTIONS}")
    return DATASETS.register(name, meta={"takes": tuple(k for k in DATASET_OPTIONS if k in takes)})


def list_datasets() -> list[str]:
    return DATASETS.names()


def dataset_abilities(name: str) -> Mapping[str, Any]:
    """What the dataset `name` declared when it was registered (``{"takes": (...)}``)."""
    return DATASETS.meta(name)


def dataset_takes(name: str, option: str) -> bool:
    """Whether the dataset `name` handles the build option `option` (one of `DATASET_OPTIONS`) itself."""
    if option not in DATASET_OPTIONS:
        raise ValueError(f"dataset_takes: {option!r} is not a build option; use one of {DATASET_OPTIONS}")
    return option in dataset_abilities(name).get("takes", ())


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


def files_up_axis(ds: Any) -> str | None:
    """The up axis of the files under a dataset or a view of one (`Subset.base`), or None (events,
    images, features). Checkpoints record it so inference can say when a file is read otherwise."""
    for _ in range(8):
        if ds is None:
            return None
        up = getattr(ds, "up_axis_on_disk", None)
        if isinstance(up, str):
            return up
        ds = getattr(ds, "base", None)
    return None


def build_dataset(
    name: str,
    split: str,
    root: str | os.PathLike[str] | None = None,
    transforms: Sequence[Any] | Compose | None = None,
    *,
    num_points: int | None = None,
    augment: bool = False,
    extra_augment: Sequence[Any] = (),
    seed: int = 0,
    all_points: bool = False,
    **kwargs: Any,
) -> PointDataset:
    """Build a registered dataset split.

    transforms: a Compose / spec list (see svl.data.transforms); None = the default pipeline:
    resample to `num_points` (random when augmenting, farthest-point otherwise) and, with
    `augment`, the OpenShape augmentations, then `extra_augment` (transform specs). A dataset that
    takes num_points (events, per-point labels, users' files) samples itself instead. Extra kwargs go
    to the dataset (e.g. variant=).
    all_points: every sample holds every point as stored (a dataset that samples itself gets
    num_points=None, not its own default), for scoring each original point (`num_points` unused).
    """
    builder = DATASETS.get(name)
    if extra_augment and (transforms is not None or not augment):
        raise ValueError(
            f"{name}: extra augmentations add to the augmenting default pipeline; give augment=True "
            "and no explicit transforms"
        )
    if all_points:
        num_points = None
        if dataset_takes(name, "num_points"):
            kwargs["num_points"] = None
    if num_points is not None and dataset_takes(name, "num_points"):
        kwargs["num_points"], num_points = num_points, None  # the dataset samples itself
    if transforms is None:
        spec: list[Any] = []
        if num_points is not None:
            spec.append({"name": "random_sample" if augment else "fps", "num_points": int(num_points)})
        if augment:
            spec += ["openshape_augment", *extra_augment]
        transforms = spec
    tf = transforms if isinstance(transforms, Compose) else build_transforms(transforms)
    return builder(split=split, root=root, transforms=tf, seed=seed, **kwargs)


# ----------------------------------------------------------------------------- base classes
class SeededDataset:
    """Map-style dataset whose randomness comes only from (seed, epoch, index).

    Subclasses implement `__len__` and `_load(i) -> sample dict`; `__getitem__` adds ``index`` and
    hands the sample to `_finish` (the transforms, with the sample's own random stream).
    """

    name = "samples"

    def __init__(self, split: str, classes: Sequence[str], transforms: Any = None, seed: int = 0) -> None:
        self.split = split
        self.classes = list(classes)
        self.transforms = transforms
        self.seed = int(seed)
        self.epoch = 0

    def __len__(self) -> int:
        raise NotImplementedError

    def _load(self, i: int) -> dict[str, Any]:
        raise NotImplementedError

    def _finish(self, sample: dict[str, Any], i: int) -> dict[str, Any]:
        """Apply the transforms to a loaded sample (with `index` set); subclasses say how."""
        return sample

    def labels(self) -> np.ndarray:
        """All labels in dataset order (for samplers and per-class metrics)."""
        return np.asarray([self._load(i)["label"] for i in range(len(self))], dtype=np.int64)

    def set_epoch(self, epoch: int) -> None:
        """Change the augmentation stream (deterministically) for a new epoch."""
        self.epoch = int(epoch)

    def sample_rng(self, i: int, *stream: int) -> np.random.Generator:
        """Sample i's numpy generator at this epoch; a `stream` number keeps separate draws apart."""
        return np.random.default_rng([self.seed, self.epoch, i, *stream])

    def sample_seed(self, i: int) -> int:
        """A 63-bit seed for sample i at this epoch (torch generators), mixed by numpy's SeedSequence."""
        a, b = np.random.SeedSequence(
            [int(self.seed) & 0xFFFFFFFF, int(self.epoch) & 0xFFFFFFFF, int(i)]
        ).generate_state(2)
        return (int(a) << 31) ^ int(b)

    def __getitem__(self, i: int) -> dict[str, Any]:
        n = len(self)
        if not -n <= int(i) < n:
            raise IndexError(f"{self.name}/{self.split}: index {i} out of range for {n} samples")
        i = int(i) % n
        sample = self._load(i)
        sample["index"] = i
        return self._finish(sample, i)

    def _repr_extra(self) -> str:
        return ""

    def __repr__(self) -> str:
        n, k, extra = len(self), len(self.classes), self._repr_extra()
        return f"{type(self).__name__}({self.name!r}, split={self.split!r}, n={n}, classes={k}{extra})"


class PointDataset(SeededDataset):
    """Map-style dataset over an index of shapes; subclasses implement `_load(i) -> sample`.

    The transforms are point transforms (svl.data.transforms) drawing from `sample_rng(i)`.
    """

    name = "points"
    up_axis_on_disk = "z"

    def __init__(self, split: str, classes: Sequence[str], transforms: Compose, seed: int = 0) -> None:
        super().__init__(split, classes, transforms, seed)

    def _finish(self, sample: dict[str, Any], i: int) -> dict[str, Any]:
        sample = self.transforms(sample, self.sample_rng(i))
        for k in ("xyz", "rgb", "normals"):
            if sample.get(k) is not None:
                sample[k] = np.ascontiguousarray(sample[k], dtype=np.float32)
        return sample


class ArrayDataset(PointDataset):
    """Clouds held in (S, N, 3) arrays (mmapped when possible) with integer labels."""

    def __init__(
        self,
        points: np.ndarray,
        labels: np.ndarray,
        classes: Sequence[str],
        split: str,
        transforms: Compose,
        seed: int = 0,
        indices: np.ndarray | None = None,
        rgb: np.ndarray | None = None,
        normals: np.ndarray | None = None,
        swap_yz: bool = False,
        name: str = "points",
        shape_ids: np.ndarray | None = None,
    ) -> None:
        super().__init__(split, classes, transforms, seed)
        self.points, self._labels, self.rgb, self.normals = (
            points,
            np.asarray(labels).reshape(-1),
            rgb,
            normals,
        )
        self.indices = np.arange(len(points)) if indices is None else np.asarray(indices, dtype=np.int64)
        self.swap_yz = swap_yz
        self.up_axis_on_disk = "y" if swap_yz else "z"
        self.name = name
        self.shape_ids = shape_ids

    def __len__(self) -> int:
        return len(self.indices)

    def labels(self) -> np.ndarray:
        return self._labels[self.indices].astype(np.int64)

    def _load(self, i: int) -> dict[str, Any]:
        j = int(self.indices[i])
        xyz = np.array(self.points[j, :, :3], dtype=np.float32)
        s: dict[str, Any] = {"xyz": xyz, "label": int(self._labels[j])}
        if self.rgb is not None:
            s["rgb"] = np.array(self.rgb[j], dtype=np.float32)
        if self.normals is not None:
            s["normals"] = np.array(self.normals[j], dtype=np.float32)
        if self.swap_yz:
            for k in ("xyz", "normals"):
                if k in s:
                    s[k] = s[k][:, [0, 2, 1]]
        return s
