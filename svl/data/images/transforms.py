"""Registered image augmentations, built by name like the point transforms (svl/data/transforms.py).

A transform is ``t(image (C, H, W), g: torch.Generator) -> image``; randomness comes only from `g`,
which image datasets seed from (seed, epoch, index), so a resumed run sees the same crops.
`build_image_transforms` takes names, ``{"name": ..., **kwargs}`` dicts or ready callables.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from svl.data.images.io import _pair, resize_image
from svl.registry import Registry

__all__ = [
    "IMAGE_TRANSFORMS",
    "ImageCompose",
    "apply_with_geometry",
    "build_image_transforms",
    "list_image_transforms",
    "register_image_transform",
    "source_grid",
]

IMAGE_TRANSFORMS: Registry[Callable[..., Any]] = Registry(
    "image transform", group="svl.image_transforms", hint="svl.data.images.list_image_transforms()"
)


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
    listing the registered transforms; bad arguments raise ValueError naming the transform
    (`Registry.build`).
    """
    if spec is None:
        return None
    if callable(spec):
        return spec
    if isinstance(spec, (str, dict)):
        spec = [spec]
    out = [item if callable(item) else IMAGE_TRANSFORMS.build(item) for item in spec]
    return ImageCompose(out) if out else None


def source_grid(height: int, width: int) -> Tensor:
    """(3, H, W) map of where each pixel comes from: (u, v, 1) with u, v the pixel centre in [0, 1]
    (premultiplied by the validity channel, so zero padding reads as "no source")."""
    v = (torch.arange(height, dtype=torch.float32) + 0.5) / height
    u = (torch.arange(width, dtype=torch.float32) + 0.5) / width
    return torch.stack([u.expand(height, width), v[:, None].expand(height, width), torch.ones(height, width)])


def apply_with_geometry(
    transforms: Callable[[Tensor, torch.Generator], Tensor], image: Tensor, g: torch.Generator
) -> tuple[Tensor, Tensor]:
    """The transformed image, exactly as ``transforms(image, g)``, and its source map: `source_grid` of
    the input carried through the same geometric transforms with the same draws.

    Why: targets defined on the un-augmented image (a teacher's token grid) can then follow the
    crop / flip / resize the image got. Each geometric transform (``geometric = True``) is replayed on
    the map from a copy of the generator's state, so the image's own random stream, and therefore a
    seeded run, is unchanged; photometric transforms touch the image only. Resampling the map is
    linear, so (u, v) stay premultiplied by the validity channel (0 where padding shows).
    """
    steps = transforms.transforms if isinstance(transforms, ImageCompose) else [transforms]
    geo = source_grid(int(image.shape[-2]), int(image.shape[-1]))
    for t in steps:
        if getattr(t, "geometric", False):
            replay = torch.Generator()
            replay.set_state(g.get_state())
            image = t(image, g)
            geo = t(geo, replay)
        else:
            image = t(image, g)
    return image, geo


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

    geometric = True  # moves pixels: apply_with_geometry replays it on the source coordinates

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

    geometric = True  # moves pixels: apply_with_geometry replays it on the source coordinates

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

    geometric = True  # moves pixels: apply_with_geometry replays it on the source coordinates

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

    geometric = True  # moves pixels: apply_with_geometry replays it on the source coordinates

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

    geometric = True  # moves pixels: apply_with_geometry replays it on the source coordinates

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
