"""Static-image datasets, image augmentations and the image batch, for 2D spiking transformers.

Why a module of its own: the 2D student (Spikformer) is distilled from image/text teachers on
plain pictures, which share nothing with the point pipeline but the conventions: datasets are
built by name from a registry (`IMAGE_DATASETS`, entry-point group ``svl.image_datasets``),
samples are dicts, augmentation randomness comes only from a generator derived from
(seed, epoch, index) so it is deterministic and resumable whatever the number of workers.
Everything is torch + numpy + PIL; torchvision is never imported.

Import it directly (``import svl.data.images``); ``import svl.data`` does not load it.

Datasets:

- ``digits``: scikit-learn's bundled 8x8 digits (1797 images, 10 classes), stratified train/test.
- ``image_folder``: ``root/<split>/<class>/*.png|jpg|jpeg`` (torchvision "ImageFolder" layout,
  searched recursively inside each class folder). When ``root/<split>`` does not exist, ``split`` is
  ``"train"`` and ``root`` itself holds class folders with images, ``root`` is the train split.
- ``modelnet40_views``: RGB views of the shared ModelNet40 clouds rendered by
  `svl.data.render.render_views`, cached as uint8 under the svl cache.

Augmentations are callables ``t(image (C, H, W), g: torch.Generator) -> image`` built by
`build_image_transforms` from names or ``{"name": ..., **kwargs}`` dicts, like
`svl.data.transforms.build_transforms` for points.
"""

from __future__ import annotations

import inspect
import math
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from svl.data.base import resolve_root
from svl.registry import Registry

__all__ = [
    "DigitsDataset",
    "IMAGE_DATASETS",
    "IMAGE_SUFFIXES",
    "IMAGE_TRANSFORMS",
    "ImageBatch",
    "ImageCompose",
    "ImageDataset",
    "ImageFolderDataset",
    "ModelNet40Views",
    "build_image_dataset",
    "list_image_files",
    "build_image_transforms",
    "collate_images",
    "digits_split",
    "list_image_datasets",
    "list_image_transforms",
    "read_image",
    "register_image_dataset",
    "register_image_transform",
    "render_modelnet40_views",
    "resize_image",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")  # compared lower-case
IMAGE_DATASETS: Registry[Callable[..., ImageDataset]] = Registry(
    "image dataset", group="svl.image_datasets", hint="svl.data.images.list_image_datasets()"
)
IMAGE_TRANSFORMS: Registry[Callable[..., Any]] = Registry(
    "image transform", group="svl.image_transforms", hint="svl.data.images.list_image_transforms()"
)
_CHANNEL_NAMES = {1: "grayscale", 3: "RGB"}
_GRAY_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"}
_RESERVED = {"image", "label", "index", "path"}  # sample keys that are not numeric extras


# ----------------------------------------------------------------------------- reading images
def _channels_text(c: int) -> str:
    name = _CHANNEL_NAMES.get(c)
    return f"{name} ({c} channel{'s' if c != 1 else ''})" if name else f"{c} channels"


def read_image(path: str | os.PathLike[str], channels: int | None = None) -> Tensor:
    """A PNG/JPEG file as a (C, H, W) float32 tensor in [0, 1].

    channels=None keeps what is stored (grayscale -> 1; RGB, RGBA, palette -> 3, alpha dropped);
    1 or 3 demand that count, so a grayscale file among RGB ones is reported by name instead of
    breaking a batch later. Errors name the file: FileNotFoundError when missing, ValueError when
    it does not decode (truncated, not an image) or has the wrong number of channels.
    """
    from PIL import Image, UnidentifiedImageError

    if channels not in (None, 1, 3):
        raise ValueError(f"read_image: channels must be None, 1 or 3, got {channels!r}")
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"image file {p} does not exist")
    try:
        with Image.open(p) as im:
            im.load()
            arr = _pil_to_array(im)
    except (OSError, UnidentifiedImageError, SyntaxError, Image.DecompressionBombError) as e:
        raise ValueError(f"{p}: cannot read the image ({type(e).__name__}: {e})") from None
    have = arr.shape[2]
    if channels is not None and have != channels:
        raise ValueError(
            f"{p} is {_channels_text(have)} but the dataset is {_channels_text(channels)}; "
            "convert the file or build the dataset with the matching channels="
        )
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def _pil_to_array(im: Any) -> np.ndarray:
    """(H, W, C) float32 in [0, 1] of an opened PIL image; C is 1 (grey modes) or 3 (the rest)."""
    mode = im.mode
    if mode in _GRAY_MODES:
        if mode in ("LA", "La"):
            im = im.getchannel(0)
        arr = np.asarray(im)
        if arr.dtype == np.bool_:
            out = arr.astype(np.float32)
        elif arr.dtype == np.uint8:
            out = arr.astype(np.float32) / 255.0
        elif arr.dtype.kind in "ui":  # 16-bit PNGs open as I;16 or I (32-bit ints holding 16-bit values)
            out = np.clip(arr.astype(np.float32) / 65535.0, 0.0, 1.0)
        else:
            out = np.clip(arr.astype(np.float32), 0.0, 1.0)
        return out[:, :, None]
    if mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")  # PIL asks palette images with transparency to go through RGBA
    if im.mode != "RGB":
        im = im.convert("RGB")  # RGBA/PA: alpha dropped; CMYK, YCbCr...: colour converted
    return np.asarray(im, dtype=np.uint8).astype(np.float32) / 255.0


def resize_image(image: Tensor, size: int | Sequence[int]) -> Tensor:
    """(C, H, W) -> (C, h, w) with bilinear antialiased interpolation (no overshoot), in [0, 1] range kept."""
    h, w = _pair(size, "resize")
    if tuple(image.shape[-2:]) == (h, w):
        return image
    out = F.interpolate(
        image[None].float(), size=(h, w), mode="bilinear", antialias=True, align_corners=False
    )
    return out[0]


def _pair(size: int | Sequence[int], what: str) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)):
        h = w = int(size)
    else:
        try:
            h, w = (int(s) for s in size)
        except (TypeError, ValueError):
            raise ValueError(f"{what}: size must be an int or (height, width), got {size!r}") from None
    if h < 1 or w < 1:
        raise ValueError(f"{what}: size must be >= 1, got {size!r}")
    return h, w


# ----------------------------------------------------------------------------- batches
@dataclass
class ImageBatch:
    """A stacked batch of images; ``batch["labels"]`` works too, so dict-batch code keeps working."""

    images: Tensor
    labels: Tensor | None
    index: Tensor
    extras: dict[str, Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, key: str) -> Any:
        if key in ("images", "labels", "index", "extras"):
            return getattr(self, key)
        if key in self.extras:
            return self.extras[key]
        raise KeyError(f"ImageBatch has no {key!r} (has images, labels, index, extras {sorted(self.extras)})")

    def __contains__(self, key: object) -> bool:
        return key in ("images", "labels", "index", "extras") or key in self.extras

    def to(self, device: torch.device | str, non_blocking: bool = False) -> ImageBatch:
        """Every tensor moved to `device`."""

        def mv(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.to(device, non_blocking=non_blocking)

        return replace(
            self,
            images=mv(self.images),
            labels=mv(self.labels),
            index=mv(self.index),
            extras={k: mv(v) for k, v in self.extras.items()},
        )

    def pin_memory(self) -> ImageBatch:
        """DataLoader(pin_memory=True) support."""
        return replace(
            self,
            images=self.images.pin_memory(),
            labels=None if self.labels is None else self.labels.pin_memory(),
            index=self.index.pin_memory(),
            extras={k: v.pin_memory() for k, v in self.extras.items()},
        )


def _describe(s: dict[str, Any], i: int) -> str:
    parts = [f"sample {i}"]
    if "index" in s:
        parts.append(f"dataset index {int(s['index'])}")
    if isinstance(s.get("path"), str):
        parts.append(s["path"])
    return f"{parts[0]} ({', '.join(parts[1:])})" if len(parts) > 1 else parts[0]


def collate_images(samples: Sequence[dict[str, Any]]) -> ImageBatch:
    """Stack sample dicts ({"image", "label", "index", numeric extras}) into an ImageBatch.

    All images must share (C, H, W): a mismatch names both samples (and their files) so a stray
    grayscale or odd-sized picture is found without bisecting the dataset.
    """
    if not samples:
        raise ValueError("collate_images: empty list of samples")
    images: list[Tensor] = []
    for i, s in enumerate(samples):
        if not isinstance(s, dict) or "image" not in s:
            raise ValueError(f"collate_images: sample {i} is not a dict with 'image'")
        img = s["image"]
        img = img if isinstance(img, Tensor) else torch.as_tensor(np.asarray(img))
        if img.ndim != 3:
            raise ValueError(
                f"collate_images: {_describe(s, i)} image must be (C, H, W), got {tuple(img.shape)}"
            )
        if images and img.shape != images[0].shape:
            raise ValueError(
                f"collate_images: {_describe(s, i)} has image shape {tuple(img.shape)} but "
                f"{_describe(samples[0], 0)} has {tuple(images[0].shape)}; give the dataset an image_size= "
                "or add a resize/center_crop transform"
            )
        images.append(img.float())
    labels = [s.get("label") for s in samples]
    if all(v is not None for v in labels):
        label_t: Tensor | None = torch.as_tensor([int(v) for v in labels], dtype=torch.long)
    elif any(v is not None for v in labels):
        raise ValueError("collate_images: some samples have a label and some do not")
    else:
        label_t = None
    index = torch.as_tensor([int(s.get("index", i)) for i, s in enumerate(samples)], dtype=torch.long)
    return ImageBatch(images=torch.stack(images), labels=label_t, index=index, extras=_extras(samples))


def _extras(samples: Sequence[dict[str, Any]]) -> dict[str, Tensor]:
    """Numeric per-sample values other than image/label/index, stacked; text stays out."""
    out: dict[str, Tensor] = {}
    for key in samples[0]:
        if key in _RESERVED:
            continue
        vals = [s.get(key) for s in samples]
        if any(v is None for v in vals) or isinstance(vals[0], (str, bytes, list, dict)):
            continue
        try:
            t = torch.stack([v if isinstance(v, Tensor) else torch.as_tensor(np.asarray(v)) for v in vals])
        except (TypeError, ValueError, RuntimeError) as e:
            raise ValueError(f"collate_images: extra {key!r} cannot be stacked ({e})") from None
        if t.is_floating_point():
            t = t.float()
        elif t.dtype != torch.bool:
            t = t.long()
        out[key] = t
    return out


# ----------------------------------------------------------------------------- augmentations
def register_image_transform(name: str) -> Callable[[type], type]:
    """Class decorator: make an image transform buildable by name."""
    return IMAGE_TRANSFORMS.register_class(name)


def list_image_transforms() -> list[str]:
    return IMAGE_TRANSFORMS.names()


class ImageCompose:
    """Apply image transforms in order with one shared generator."""

    def __init__(self, transforms: Iterable[Callable[[Tensor, torch.Generator], Tensor]]) -> None:
        self.transforms = list(transforms)

    def __call__(self, image: Tensor, g: torch.Generator | None = None) -> Tensor:
        g = g if g is not None else torch.Generator().manual_seed(0)
        for t in self.transforms:
            image = t(image, g)
        return image

    def __len__(self) -> int:
        return len(self.transforms)

    def __repr__(self) -> str:
        return f"ImageCompose({self.transforms!r})"


def build_image_transforms(
    spec: Sequence[str | dict[str, Any] | Callable[..., Any]] | Callable[..., Any] | None,
) -> Callable[[Tensor, torch.Generator], Tensor] | None:
    """Names, {"name": ..., **kwargs} dicts or ready callables -> ImageCompose; None or [] -> None.

    A single callable (e.g. an ImageCompose) is returned as is. Unknown names raise ValueError
    listing the registered transforms; bad arguments raise ValueError naming the transform.
    """
    if spec is None:
        return None
    if callable(spec):
        return spec
    if isinstance(spec, (str, dict)):
        spec = [spec]
    out = []
    for item in spec:
        if callable(item):
            out.append(item)
            continue
        if isinstance(item, str):
            name, kwargs = item, {}
        elif isinstance(item, dict) and "name" in item:
            kwargs = dict(item)
            name = kwargs.pop("name")
        else:
            raise ValueError(
                f"image transform spec must be a name, a dict with 'name', or a callable: {item!r}"
            )
        builder = IMAGE_TRANSFORMS.get(name)
        try:
            out.append(builder(**kwargs))
        except TypeError as e:
            raise ValueError(f"image transform {name!r}: bad arguments {kwargs} ({e})") from None
    return ImageCompose(out) if out else None


def _uniform(g: torch.Generator, lo: float, hi: float) -> float:
    return float(lo + (hi - lo) * torch.rand(1, generator=g).item())


def _randint(g: torch.Generator, lo: int, hi: int) -> int:
    """Uniform integer in [lo, hi] (inclusive)."""
    return int(torch.randint(lo, hi + 1, (1,), generator=g).item())


def _check_image(image: Tensor, what: str) -> None:
    if not isinstance(image, Tensor) or image.ndim != 3:
        shape = tuple(image.shape) if hasattr(image, "shape") else type(image).__name__
        raise ValueError(f"{what}: expected a (C, H, W) tensor, got {shape}")


class _Base:
    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


@register_image_transform("resize")
class Resize(_Base):
    """Resize: an int sets the shorter side (aspect kept, as torchvision); (h, w) sets both."""

    def __init__(self, size: int | Sequence[int]) -> None:
        self.size = int(size) if isinstance(size, (int, np.integer)) else _pair(size, "resize")
        _pair(self.size, "resize")

    def __call__(self, image: Tensor, g: torch.Generator) -> Tensor:
        _check_image(image, "resize")
        if isinstance(self.size, tuple):
            return resize_image(image, self.size)
        H, W = image.shape[-2:]
        s = self.size
        hw = (s, max(1, round(W * s / H))) if H <= W else (max(1, round(H * s / W)), s)
        return resize_image(image, hw)


@register_image_transform("center_crop")
class CenterCrop(_Base):
    """Crop the centre (h, w); a smaller image is zero-padded first (as torchvision)."""

    def __init__(self, size: int | Sequence[int]) -> None:
        self.size = _pair(size, "center_crop")

    def __call__(self, image: Tensor, g: torch.Generator) -> Tensor:
        _check_image(image, "center_crop")
        h, w = self.size
        H, W = image.shape[-2:]
        if H < h or W < w:
            ph, pw = max(0, h - H), max(0, w - W)
            image = F.pad(image, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))
            H, W = image.shape[-2:]
        top, left = int(round((H - h) / 2)), int(round((W - w) / 2))
        return image[:, top : top + h, left : left + w]


@register_image_transform("random_crop")
class RandomCrop(_Base):
    """CIFAR-style random crop: pad by `padding` (zeros, or reflect/replicate), cut a random (h, w)."""

    def __init__(self, size: int | Sequence[int], padding: int = 4, padding_mode: str = "constant") -> None:
        if padding_mode not in ("constant", "reflect", "replicate"):
            raise ValueError(
                f"random_crop: padding_mode must be constant|reflect|replicate, got {padding_mode!r}"
            )
        if int(padding) < 0:
            raise ValueError(f"random_crop: padding must be >= 0, got {padding}")
        self.size, self.padding, self.padding_mode = _pair(size, "random_crop"), int(padding), padding_mode

    def __call__(self, image: Tensor, g: torch.Generator) -> Tensor:
        _check_image(image, "random_crop")
        p = self.padding
        if p:
            if self.padding_mode == "constant":
                image = F.pad(image, (p, p, p, p))
            else:
                image = F.pad(image[None], (p, p, p, p), mode=self.padding_mode)[0]
        h, w = self.size
        H, W = image.shape[-2:]
        if H < h or W < w:
            raise ValueError(f"random_crop: padded image is {H}x{W}, smaller than the crop {h}x{w}")
        top, left = _randint(g, 0, H - h), _randint(g, 0, W - w)
        return image[:, top : top + h, left : left + w]


@register_image_transform("random_resized_crop")
class RandomResizedCrop(_Base):
    """Inception-style crop (torchvision's algorithm): random area fraction in `scale` and aspect
    ratio in `ratio` (log-uniform), resized to `size`; centre crop after 10 failed draws."""

    def __init__(
        self,
        size: int | Sequence[int],
        scale: Sequence[float] = (0.35, 1.0),
        ratio: Sequence[float] = (3 / 4, 4 / 3),
    ) -> None:
        s0, s1 = (float(v) for v in scale)
        r0, r1 = (float(v) for v in ratio)
        if not (0 < s0 <= s1 <= 1) or not (0 < r0 <= r1):
            raise ValueError(f"random_resized_crop: need 0 < scale[0] <= scale[1] <= 1 and 0 < ratio[0] <= "
                             f"ratio[1], got scale={scale}, ratio={ratio}")  # fmt: skip
        self.size, self.scale, self.ratio = _pair(size, "random_resized_crop"), (s0, s1), (r0, r1)

    def _box(self, H: int, W: int, g: torch.Generator) -> tuple[int, int, int, int]:
        area = H * W
        log_r = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            target = area * _uniform(g, *self.scale)
            aspect = math.exp(_uniform(g, *log_r))
            w = int(round(math.sqrt(target * aspect)))
            h = int(round(math.sqrt(target / aspect)))
            if 0 < w <= W and 0 < h <= H:
                return _randint(g, 0, H - h), _randint(g, 0, W - w), h, w
        in_ratio = W / H
        if in_ratio < self.ratio[0]:
            w, h = W, int(round(W / self.ratio[0]))
        elif in_ratio > self.ratio[1]:
            h, w = H, int(round(H * self.ratio[1]))
        else:
            h, w = H, W
        h, w = max(1, min(h, H)), max(1, min(w, W))
        return (H - h) // 2, (W - w) // 2, h, w

    def __call__(self, image: Tensor, g: torch.Generator) -> Tensor:
        _check_image(image, "random_resized_crop")
        top, left, h, w = self._box(int(image.shape[-2]), int(image.shape[-1]), g)
        return resize_image(image[:, top : top + h, left : left + w], self.size)


@register_image_transform("hflip")
class HorizontalFlip(_Base):
    """Mirror left-right with probability `p`."""

    def __init__(self, p: float = 0.5) -> None:
        if not 0.0 <= float(p) <= 1.0:
            raise ValueError(f"hflip: p must be in [0, 1], got {p}")
        self.p = float(p)

    def __call__(self, image: Tensor, g: torch.Generator) -> Tensor:
        _check_image(image, "hflip")
        return image.flip(-1) if torch.rand(1, generator=g).item() < self.p else image


def _gray(image: Tensor) -> Tensor:
    """(1, H, W) luma (ITU-R 601, as torchvision) of a 1- or 3-channel image."""
    if image.shape[0] == 1:
        return image
    r, gr, b = image[0], image[1], image[2]
    return (0.299 * r + 0.587 * gr + 0.114 * b)[None]


@register_image_transform("color_jitter")
class ColorJitter(_Base):
    """Random brightness / contrast / saturation factors in [1 - x, 1 + x], applied in random order.

    Saturation only changes 3-channel images (a grayscale image has none). Output clamped to [0, 1].
    """

    def __init__(self, brightness: float = 0.2, contrast: float = 0.2, saturation: float = 0.2) -> None:
        for k, v in (("brightness", brightness), ("contrast", contrast), ("saturation", saturation)):
            if float(v) < 0:
                raise ValueError(f"color_jitter: {k} must be >= 0, got {v}")
        self.brightness, self.contrast, self.saturation = (
            float(brightness),
            float(contrast),
            float(saturation),
        )

    def __call__(self, image: Tensor, g: torch.Generator) -> Tensor:
        _check_image(image, "color_jitter")
        if image.shape[0] not in (1, 3):
            raise ValueError(f"color_jitter: expected 1 or 3 channels, got {image.shape[0]}")
        image = image.float()
        for op in torch.randperm(3, generator=g).tolist():
            amount = (self.brightness, self.contrast, self.saturation)[op]
            f = _uniform(g, max(0.0, 1.0 - amount), 1.0 + amount)  # drawn always: a fixed stream
            if amount == 0 or (op == 2 and image.shape[0] != 3):
                continue
            if op == 0:
                image = image * f
            elif op == 1:
                m = _gray(image).mean()
                image = (image - m) * f + m
            else:
                gray = _gray(image)
                image = (image - gray) * f + gray
            image = image.clamp(0.0, 1.0)
        return image


@register_image_transform("grayscale_to_rgb")
class GrayscaleToRGB(_Base):
    """Repeat a 1-channel image to 3 channels (RGB images pass), for RGB teachers on grey data."""

    def __call__(self, image: Tensor, g: torch.Generator) -> Tensor:
        _check_image(image, "grayscale_to_rgb")
        if image.shape[0] == 3:
            return image
        if image.shape[0] != 1:
            raise ValueError(f"grayscale_to_rgb: expected 1 or 3 channels, got {image.shape[0]}")
        return image.expand(3, -1, -1).contiguous()


@register_image_transform("normalize")
class Normalize(_Base):
    """(image - mean) / std per channel (scalars apply to every channel)."""

    def __init__(self, mean: float | Sequence[float], std: float | Sequence[float]) -> None:
        self.mean = [float(mean)] if isinstance(mean, (int, float)) else [float(v) for v in mean]
        self.std = [float(std)] if isinstance(std, (int, float)) else [float(v) for v in std]
        if any(s <= 0 for s in self.std):
            raise ValueError(f"normalize: std must be > 0, got {std}")

    def __call__(self, image: Tensor, g: torch.Generator) -> Tensor:
        _check_image(image, "normalize")
        c = image.shape[0]
        for k, v in (("mean", self.mean), ("std", self.std)):
            if len(v) not in (1, c):
                raise ValueError(f"normalize: {len(v)} {k} values for a {c}-channel image")
        mean = torch.tensor(self.mean, dtype=image.dtype).view(-1, 1, 1)
        std = torch.tensor(self.std, dtype=image.dtype).view(-1, 1, 1)
        return (image - mean) / std


# ----------------------------------------------------------------------------- datasets
def register_image_dataset(name: str) -> Callable[[Callable[..., ImageDataset]], Callable[..., ImageDataset]]:
    """Decorator: make a builder ``fn(split, root=None, **options) -> ImageDataset`` buildable by name."""
    return IMAGE_DATASETS.register(name)


def list_image_datasets() -> list[str]:
    return IMAGE_DATASETS.names()


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
    builder (an option it does not take is a ValueError listing those it does)."""
    builder = IMAGE_DATASETS.get(name)
    params = inspect.signature(builder).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        known = [k for k in params if k not in ("split", "root")]
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise ValueError(f"image dataset {name!r}: unknown option(s) {unknown}; it takes {known}")
    ds = builder(split, root=root, **options)
    ds.transforms = build_image_transforms(transforms)
    ds.seed = int(seed)
    return ds


def _sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit generator seed mixed from (seed, epoch, index) by numpy's SeedSequence."""
    a, b = np.random.SeedSequence(
        [int(seed) & 0xFFFFFFFF, int(epoch) & 0xFFFFFFFF, int(index)]
    ).generate_state(2)
    return (int(a) << 31) ^ int(b)


class ImageDataset:
    """Map-style image dataset; subclasses implement `__len__`, `_load(i) -> sample` and `labels()`.

    `__getitem__` adds ``index`` and applies `transforms` with a generator seeded from
    (seed, epoch, index): the same sample gets the same augmentation in any worker, and a resumed
    run at epoch e replays epoch e exactly.
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
        self.split = split
        self.classes = list(classes)
        self.channels = int(channels)
        self.image_size = image_size
        self.transforms = transforms
        self.seed = int(seed)
        self.epoch = 0

    def __len__(self) -> int:
        raise NotImplementedError

    def _load(self, i: int) -> dict[str, Any]:
        raise NotImplementedError

    def labels(self) -> np.ndarray:
        """All labels in dataset order, int64, without loading images (samplers, per-class metrics)."""
        raise NotImplementedError

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
        if self.transforms is not None:
            g = torch.Generator().manual_seed(_sample_seed(self.seed, self.epoch, i))
            sample["image"] = self.transforms(sample["image"], g)
        sample["image"] = sample["image"].float().contiguous()
        return sample

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.name!r}, split={self.split!r}, n={len(self)}, "
            f"classes={len(self.classes)}, channels={self.channels}, image_size={self.image_size})"
        )


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


@register_image_dataset("digits")
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
def _is_image_file(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(IMAGE_SUFFIXES)


def list_image_files(folder: Path) -> list[Path]:
    """Image files under `folder` (recursively, sorted, hidden files and folders skipped)."""
    out: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        out.extend(Path(dirpath) / f for f in sorted(filenames) if _is_image_file(f))
    return out


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


@register_image_dataset("image_folder")
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
    from svl.data.render import render_views
    from svl.utils import progress

    out = np.empty((len(points), views, size, size, 3), np.uint8)
    starts = range(0, len(points), chunk)
    for s in progress(starts, desc=desc, total=len(starts), unit="chunk"):
        xyz = torch.from_numpy(np.ascontiguousarray(points[s : s + chunk], dtype=np.float32)).to(device)
        with torch.no_grad():
            img = render_views(xyz, num_views=views, size=size, color_mode=color_mode, elevation=elevation)
        u8 = (img.permute(0, 1, 3, 4, 2) * 255.0).round().clamp(0, 255).to(torch.uint8).cpu().numpy()
        out[s : s + len(u8)] = u8
    return out


@register_image_dataset("modelnet40_views")
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
    from svl.data.render import COLOR_MODES
    from svl.utils import cached_arrays

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
