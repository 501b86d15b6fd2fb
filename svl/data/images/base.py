"""The image-dataset registry, `build_image_dataset` and `ImageDataset`, the base of every image dataset.

`ImageDataset` is a `svl.data.base.SeededDataset` like the point and event datasets: split, classes,
seed and epoch, and one random stream per (seed, epoch, index). Its transforms take a
`torch.Generator` seeded from that triple (`SeededDataset.sample_seed`), so the same sample gets
the same augmentation in any worker, and a resumed run at epoch e replays epoch e exactly.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from svl.data.base import SeededDataset
from svl.data.images.transforms import apply_with_geometry, build_image_transforms, source_grid
from svl.registry import Registry

__all__ = [
    "IMAGE_DATASETS",
    "ImageDataset",
    "build_image_dataset",
    "image_dataset_options",
    "list_image_datasets",
    "register_image_dataset",
]


def _options_from_signature(builder: Any) -> dict[str, Any]:
    """The options an undeclared builder (a plugin) takes, read once from its signature when registered.

    None when it takes ``**kwargs`` (any option goes through to it).
    """
    params = inspect.signature(builder).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return {"options": None}
    return {"options": tuple(k for k in params if k not in ("split", "root"))}


IMAGE_DATASETS: Registry[Callable[..., ImageDataset]] = Registry(
    "image dataset",
    group="svl.image_datasets",
    hint="svl.data.images.list_image_datasets()",
    default_meta=_options_from_signature,
)


def register_image_dataset(
    name: str, *, options: Sequence[str] | None = None
) -> Callable[[Callable[..., ImageDataset]], Callable[..., ImageDataset]]:
    """Decorator: make a builder ``fn(split, root=None, **options) -> ImageDataset`` buildable by name.

    options: the keyword options the builder takes (`build_image_dataset` refuses others by name);
    None reads them from the builder's signature (what plugins registered without declarations get).
    """
    if options is None:
        return IMAGE_DATASETS.register(name)
    return IMAGE_DATASETS.register(name, meta={"options": tuple(options)})


def list_image_datasets() -> list[str]:
    return IMAGE_DATASETS.names()


def image_dataset_options(name: str) -> tuple[str, ...] | None:
    """The options the image dataset `name` declared (None: it takes any)."""
    return IMAGE_DATASETS.meta(name).get("options")


def build_image_dataset(
    name: str,
    split: str,
    root: str | os.PathLike[str] | None = None,
    transforms: Sequence[Any] | Callable[..., Any] | None = None,
    *,
    seed: int = 0,
    **options: Any,
) -> ImageDataset:
    """Build a registered image dataset split; `transforms` is a spec list (see
    `build_image_transforms`) or a callable, `seed` the augmentation seed; other options go to the
    builder (an option it does not declare is a ValueError listing those it does)."""
    builder = IMAGE_DATASETS.get(name)
    known = image_dataset_options(name)
    if known is not None:
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise ValueError(f"image dataset {name!r}: unknown option(s) {unknown}; it takes {list(known)}")
    ds = builder(split, root=root, **options)
    ds.transforms = build_image_transforms(transforms)
    ds.seed = int(seed)
    return ds


class ImageDataset(SeededDataset):
    """Map-style image dataset; subclasses implement `__len__`, `_load(i) -> sample` and `labels()`.

    `__getitem__` adds ``index`` and applies `transforms` with a generator seeded from
    (seed, epoch, index).
    """

    name = "images"

    def __init__(
        self,
        split: str,
        classes: Sequence[str],
        *,
        channels: int,
        image_size: tuple[int, int] | None,
        transforms: Callable[[Tensor, torch.Generator], Tensor] | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(split, classes, transforms, seed)
        self.channels = int(channels)
        self.image_size = image_size
        # When True each sample also carries ``source_uv`` (3, H, W): the source coordinates of every
        # pixel after the augmentation (see apply_with_geometry), for targets that must follow it.
        self.track_geometry = False

    def labels(self) -> np.ndarray:
        """All labels in dataset order, int64, without loading images (samplers, per-class metrics)."""
        raise NotImplementedError

    def _finish(self, sample: dict[str, Any], i: int) -> dict[str, Any]:
        if self.transforms is not None:
            g = torch.Generator().manual_seed(self.sample_seed(i))
            if self.track_geometry:  # the same image, plus where its pixels came from
                image, sample["source_uv"] = apply_with_geometry(self.transforms, sample["image"], g)
                sample["image"] = image
            else:
                sample["image"] = self.transforms(sample["image"], g)
        elif self.track_geometry:
            sample["source_uv"] = source_grid(*sample["image"].shape[-2:])
        sample["image"] = sample["image"].float().contiguous()
        return sample

    def _repr_extra(self) -> str:
        return f", channels={self.channels}, image_size={self.image_size}"
