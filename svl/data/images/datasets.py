"""The built-in image datasets: scikit-learn digits, class folders of image files, rendered ModelNet40 views.

- ``digits``: scikit-learn's bundled 8x8 digits (1797 images, 10 classes), stratified train/test.
- ``image_folder``: ``root/<split>/<class>/*.png|jpg|jpeg`` (torchvision "ImageFolder" layout,
  searched recursively inside each class folder). When ``root/<split>`` does not exist, ``split`` is
  ``"train"`` and ``root`` itself holds class folders with images, ``root`` is the train split.
- ``modelnet40_views``: RGB views of the shared ModelNet40 clouds rendered by
  `svl.data.render.render_views`, cached as uint8 under the svl cache.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from svl.data.base import resolve_root
from svl.data.images.base import ImageDataset, register_image_dataset
from svl.data.images.io import (
    IMAGE_SUFFIXES,
    _is_image_file,
    _pair,
    list_image_files,
    read_image,
    resize_image,
)
from svl.data.render import COLOR_MODES, render_views
from svl.utils import cached_arrays, progress

__all__ = [
    "DigitsDataset",
    "ImageFolderDataset",
    "ModelNet40Views",
    "digits_split",
    "render_modelnet40_views",
]


# --------------------------------------------------------------------- digits (scikit-learn)
class DigitsDataset(ImageDataset):
    """scikit-learn's 8x8 digits: 16 grey levels stored as uint8, turned into floats per sample."""

    name = "digits"

    def __init__(
        self, split: str, levels: np.ndarray, labels: np.ndarray, ids: np.ndarray, **kw: Any
    ) -> None:
        size = kw.pop("resize_to", None)
        super().__init__(split, [str(d) for d in range(10)], **kw)
        self._levels, self._labels, self.ids, self._resize = levels, labels, ids, size

    def __len__(self) -> int:
        return len(self._labels)

    def labels(self) -> np.ndarray:
        return self._labels.astype(np.int64)

    def _load(self, i: int) -> dict[str, Any]:
        img = torch.from_numpy(self._levels[i].astype(np.float32) / 16.0)[None]
        if self._resize is not None:
            img = resize_image(img, self._resize)
        if self.channels == 3:
            img = img.expand(3, -1, -1)
        return {"image": img, "label": int(self._labels[i]), "digit_id": int(self.ids[i])}


def digits_split(labels: np.ndarray, split: str, test_fraction: float = 0.2, seed: int = 0) -> np.ndarray:
    """Sorted indices of a stratified split: per class, a seeded round(test_fraction * n) go to test."""
    if split not in ("train", "test"):
        raise ValueError(f"digits: split must be 'train' or 'test', got {split!r}")
    if not 0.0 < float(test_fraction) < 1.0:
        raise ValueError(f"digits: test_fraction must be in (0, 1), got {test_fraction}")
    rng = np.random.default_rng(seed)
    test = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        k = int(round(test_fraction * len(idx)))
        test.append(rng.permutation(idx)[:k])
    test_idx = np.sort(np.concatenate(test))
    if split == "test":
        return test_idx
    return np.setdiff1d(np.arange(len(labels)), test_idx)


@register_image_dataset("digits", options=("test_fraction", "channels", "image_size", "split_seed"))
def _build_digits(
    split: str,
    root: Any = None,
    *,
    test_fraction: float = 0.2,
    channels: int = 1,
    image_size: int | None = None,
    split_seed: int = 0,
) -> ImageDataset:
    """scikit-learn's bundled digits (1797 8x8 images, values/16 in [0, 1]), stratified train/test.

    `root` is ignored (the data ships with scikit-learn); `channels=3` repeats the grey to RGB;
    `image_size` upsamples (bilinear, antialiased) for students whose patch is larger than 8.
    """
    from sklearn.datasets import load_digits

    if channels not in (1, 3):
        raise ValueError(f"digits: channels must be 1 or 3, got {channels!r}")
    d = load_digits()
    levels = np.asarray(d.images).round().astype(np.uint8)  # 0..16
    target = np.asarray(d.target, dtype=np.int64)
    idx = digits_split(target, split, test_fraction, split_seed)
    size = None if image_size is None else _pair(image_size, "digits image_size")
    return DigitsDataset(
        split, levels[idx], target[idx], idx, channels=channels, image_size=size or (8, 8), resize_to=size
    )


# ----------------------------------------------------------------------------- image folders
def _has_images(folder: Path) -> bool:
    return any(p.is_file() and _is_image_file(p.name) for p in folder.iterdir())


class ImageFolderDataset(ImageDataset):
    """Files listed once at construction; decoded (and checked) lazily in `_load`."""

    name = "image_folder"

    def __init__(
        self,
        split: str,
        folder: Path,
        classes: list[str],
        files: list[Path],
        targets: np.ndarray,
        *,
        channels: int,
        resize_to: tuple[int, int] | None,
        min_size: int,
    ) -> None:
        super().__init__(split, classes, channels=channels, image_size=resize_to)
        self.folder, self.files, self._targets = folder, files, targets
        self.min_size = int(min_size)

    def __len__(self) -> int:
        return len(self.files)

    def labels(self) -> np.ndarray:
        return self._targets.astype(np.int64)

    def _load(self, i: int) -> dict[str, Any]:
        path = self.files[i]
        img = read_image(path, channels=self.channels)
        H, W = img.shape[-2:]
        if self.image_size is None and min(H, W) < self.min_size:
            raise ValueError(
                f"{path} is {H}x{W} pixels, smaller than the minimum {self.min_size} (min_size, e.g. the "
                "student's patch size); remove it or build the dataset with image_size="
            )
        if self.image_size is not None:
            img = resize_image(img, self.image_size).clamp(0.0, 1.0)
        return {"image": img, "label": int(self._targets[i]), "path": str(path)}


@register_image_dataset("image_folder", options=("channels", "image_size", "min_size"))
def _build_image_folder(
    split: str,
    root: str | os.PathLike[str] | None = None,
    *,
    channels: int | None = None,
    image_size: int | Sequence[int] | None = None,
    min_size: int = 1,
) -> ImageDataset:
    """Class-per-folder images: ``root/<split>/<class>/**/*.png|jpg|jpeg``, classes sorted by name.

    If ``root/<split>`` is missing, split is "train" and root itself holds class folders with
    images, root is used directly (a folder of classes without a split level is a training set).
    channels: None = the first image's; every image must then match (checked when loaded).
    image_size: resize every image on load to (s, s) (or (h, w)) so batches stack; without it
    images keep their size and ``image_size`` is None. min_size: images smaller than this in
    height or width are refused by name (pass the student's patch size); with image_size the
    resized size is checked instead, once.
    """
    if root is None:
        raise ValueError("image_folder: pass root= (a folder with <split>/<class>/ image folders)")
    base = Path(root).expanduser()
    if not base.is_dir():
        raise FileNotFoundError(f"image_folder: root folder {base} does not exist")
    if channels not in (None, 1, 3):
        raise ValueError(f"image_folder: channels must be None, 1 or 3, got {channels!r}")
    if int(min_size) < 1:
        raise ValueError(f"image_folder: min_size must be >= 1, got {min_size}")
    size = None if image_size is None else _pair(image_size, "image_folder image_size")
    if size is not None and min(size) < int(min_size):
        raise ValueError(f"image_folder: image_size {size} is smaller than min_size {min_size}")
    folder = base / split
    subdirs = sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folder.is_dir():
        flat = any(_has_images(p) for p in subdirs)
        if split == "train" and flat:
            folder = base
        else:
            hint = (
                f" ({base} holds class folders directly, which serve as the 'train' split only)"
                if flat
                else f" (it has: {', '.join(p.name for p in subdirs) or 'no folders'})"
            )
            raise FileNotFoundError(f"image_folder: split folder {folder} does not exist{hint}")
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise ValueError(f"image_folder: no class folders in {folder} (expected {folder}/<class>/*.png)")
    files: list[Path] = []
    targets: list[int] = []
    for c, name in enumerate(classes):
        found = list_image_files(folder / name)
        if not found:
            raise ValueError(
                f"image_folder: class folder {folder / name} holds no image files "
                f"({', '.join(IMAGE_SUFFIXES)})"
            )
        files.extend(found)
        targets.extend([c] * len(found))
    if channels is None:
        channels = int(read_image(files[0]).shape[0])
    ds = ImageFolderDataset(
        split, folder, classes, files, np.asarray(targets, np.int64),
        channels=channels, resize_to=size, min_size=int(min_size),
    )  # fmt: skip
    return ds


# ----------------------------------------------------------------------------- ModelNet40 views
_VIEWS_VERSION = 1  # bump when the rendering changes, so old caches are rebuilt


class ModelNet40Views(ImageDataset):
    """(shape, view) pairs over a uint8 (S, V, H, W, 3) array of rendered views."""

    name = "modelnet40_views"

    def __init__(
        self,
        split: str,
        classes: list[str],
        views: np.ndarray,
        shape_ids: np.ndarray,
        shape_labels: np.ndarray,
        names: np.ndarray,
    ) -> None:
        size = (int(views.shape[2]), int(views.shape[3]))
        super().__init__(split, classes, channels=3, image_size=size)
        self.views, self.shape_ids, self.shape_labels, self.names = views, shape_ids, shape_labels, names
        self.num_views = int(views.shape[1])

    def __len__(self) -> int:
        return len(self.shape_ids) * self.num_views

    def labels(self) -> np.ndarray:
        return np.repeat(self.shape_labels.astype(np.int64), self.num_views)

    def retrieval_ids(self) -> tuple[np.ndarray, np.ndarray]:
        """(shape id, view) of every sample without loading images: the groups of view retrieval."""
        n = len(self.shape_ids)
        return np.repeat(self.shape_ids, self.num_views), np.tile(np.arange(self.num_views), n)

    def _load(self, i: int) -> dict[str, Any]:
        s, v = divmod(i, self.num_views)
        img = torch.from_numpy(np.ascontiguousarray(self.views[s, v])).permute(2, 0, 1).float() / 255.0
        return {
            "image": img,
            "label": int(self.shape_labels[s]),
            "shape_id": int(self.shape_ids[s]),
            "view": v,
            "name": str(self.names[s]),
        }


def render_modelnet40_views(
    points: np.ndarray,
    *,
    views: int,
    size: int,
    color_mode: str,
    elevation: float,
    chunk: int = 64,
    device: str | torch.device = "cpu",
    desc: str = "rendering views",
) -> np.ndarray:
    """(S, N, 3) z-up clouds -> (S, V, size, size, 3) uint8 views, rendered `chunk` shapes at a time."""

    out = np.empty((len(points), views, size, size, 3), np.uint8)
    starts = range(0, len(points), chunk)
    for s in progress(starts, desc=desc, total=len(starts), unit="chunk"):
        xyz = torch.from_numpy(np.ascontiguousarray(points[s : s + chunk], dtype=np.float32)).to(device)
        with torch.no_grad():
            img = render_views(xyz, num_views=views, size=size, color_mode=color_mode, elevation=elevation)
        u8 = (img.permute(0, 1, 3, 4, 2) * 255.0).round().clamp(0, 255).to(torch.uint8).cpu().numpy()
        out[s : s + len(u8)] = u8
    return out


@register_image_dataset(
    "modelnet40_views",
    options=("views", "size", "color_mode", "elevation", "per_class", "cache", "device"),
)
def _build_modelnet40_views(
    split: str,
    root: str | os.PathLike[str] | None = None,
    *,
    views: int = 1,
    size: int = 64,
    color_mode: str = "shaded",
    elevation: float = 20.0,
    per_class: int | None = None,
    cache: bool = True,
    device: str | None = None,
) -> ImageDataset:
    """Rendered RGB views of the shared ModelNet40 clouds (``modelnet40/modelnet40_pcd1024_<split>.npz``).

    Sample i is view ``i % views`` of shape ``i // views``; cameras are spaced 360/views degrees
    around +z (render_views' azimuths), so the views of a shape differ. per_class keeps the first N
    shapes of each class (quick runs). The uint8 views are cached under the svl cache
    (``modelnet40_views/``) keyed by every setting; device: where to render (default cpu).
    """

    if split not in ("train", "test"):
        raise ValueError(f"modelnet40_views: split must be 'train' or 'test', got {split!r}")
    if color_mode not in COLOR_MODES:
        raise ValueError(f"modelnet40_views: color_mode must be one of {COLOR_MODES}, got {color_mode!r}")
    if int(views) < 1 or int(size) < 8:
        raise ValueError(f"modelnet40_views: need views >= 1 and size >= 8, got views={views}, size={size}")
    if per_class is not None and int(per_class) < 1:
        raise ValueError(f"modelnet40_views: per_class must be >= 1 or None, got {per_class}")
    path = resolve_root(root, "modelnet40") / f"modelnet40_pcd1024_{split}.npz"
    if not path.is_file():
        raise FileNotFoundError(f"modelnet40_views: {path} does not exist (see the shared data README)")
    with np.load(path, allow_pickle=False) as z:
        missing = [k for k in ("points", "labels", "names", "classes") if k not in z.files]
        if missing:
            raise ValueError(f"{path}: missing array(s) {missing} (has {z.files})")
        labels = np.asarray(z["labels"], np.int64)
        names, classes = np.asarray(z["names"]), [str(c) for c in z["classes"]]
    if per_class is None:
        ids = np.arange(len(labels))
    else:
        ids = np.sort(
            np.concatenate([np.flatnonzero(labels == c)[: int(per_class)] for c in range(len(classes))])
        )
    settings = {
        "split": split,
        "size": int(size),
        "views": int(views),
        "color_mode": color_mode,
        "elevation": float(elevation),
        "per_class": None if per_class is None else int(per_class),
        "source": [path.name, path.stat().st_size],
        "version": _VIEWS_VERSION,
    }
    shape = (len(ids), int(views), int(size), int(size), 3)

    def make() -> dict[str, np.ndarray]:
        with np.load(path, allow_pickle=False) as z:
            points = z["points"][ids]
        imgs = render_modelnet40_views(
            points, views=int(views), size=int(size), color_mode=color_mode, elevation=float(elevation),
            device=device or "cpu", desc=f"rendering modelnet40/{split} views",
        )  # fmt: skip
        return {"views": imgs, "shape_ids": ids.astype(np.int64)}

    def valid(d: dict[str, np.ndarray]) -> bool:
        return (
            d["views"].shape == shape and d["views"].dtype == np.uint8 and np.array_equal(d["shape_ids"], ids)
        )

    data = cached_arrays(name="modelnet40_views", settings=settings, make=make, valid=valid, enabled=cache)
    return ModelNet40Views(split, classes, data["views"], ids, labels[ids], names[ids])
