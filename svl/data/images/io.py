"""Image files as tensors: the one place they are decoded (`read_image`), listed and resized.

A missing, unreadable or truncated file, or one with the wrong channel count, is an error that names
it, so a bad picture is found when it is read, not as a shape mismatch in a batch later. Inference
reads with `convert=True` instead: a grey file for an RGB model, or an RGB file for a grey one, is
converted as PIL's `Image.convert` does it (grey replicated to R, G, B; RGB to the ITU-R 601-2 luma
L = R * 299/1000 + G * 587/1000 + B * 114/1000), with one `ImageChannelsWarning` naming the file.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["IMAGE_SUFFIXES", "ImageChannelsWarning", "list_image_files", "read_image", "resize_image"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")  # compared lower-case
_CHANNEL_NAMES = {1: "grayscale", 3: "RGB"}
_GRAY_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"}


class ImageChannelsWarning(UserWarning):
    """An image was converted between grey and RGB to match what a model reads."""


def _channels_text(c: int) -> str:
    name = _CHANNEL_NAMES.get(c)
    return f"{name} ({c} channel{'s' if c != 1 else ''})" if name else f"{c} channels"


def read_image(path: str | os.PathLike[str], channels: int | None = None, *, convert: bool = False) -> Tensor:
    """A PNG/JPEG file as a (C, H, W) float32 tensor in [0, 1].

    channels=None keeps what is stored (grayscale -> 1; RGB, RGBA, palette -> 3, alpha dropped);
    1 or 3 demand that count, so a grayscale file among RGB ones is reported by name instead of
    breaking a batch later. With `convert`, a file of the other count is converted instead (module
    docstring) with an `ImageChannelsWarning`; refused only where the conversion would lose the
    picture: an RGB file whose colours all have one luma (a grey model would see a blank image).
    Errors name the file: FileNotFoundError when missing, ValueError when it does not decode
    (truncated, not an image) or has the wrong number of channels.
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
            if convert and channels == 1 and arr.shape[2] == 3:
                arr = _to_grey(im, arr, p)
    except (OSError, UnidentifiedImageError, SyntaxError, Image.DecompressionBombError) as e:
        raise ValueError(f"{p}: cannot read the image ({type(e).__name__}: {e})") from None
    have = arr.shape[2]
    if convert and channels == 3 and have == 1:
        warnings.warn(
            f"{p}: grayscale image, the model reads RGB; grey replicated to R, G and B",
            ImageChannelsWarning,
            stacklevel=2,
        )
        arr = np.repeat(arr, 3, axis=2)
        have = 3
    if channels is not None and have != channels:
        raise ValueError(
            f"{p} is {_channels_text(have)} but the dataset is {_channels_text(channels)}; "
            "convert the file or give the dataset the matching channels (data.channels=N in a config)"
        )
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def _to_grey(im: Any, rgb: np.ndarray, p: Path) -> np.ndarray:
    """An RGB picture (`rgb`, what `_pil_to_array` made of `im`) as PIL's "L": the ITU-R 601-2 luma."""
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")  # as `_pil_to_array` reads it
    if im.mode != "RGB":
        im = im.convert("RGB")
    grey = np.asarray(im.convert("L"), dtype=np.uint8).astype(np.float32)[:, :, None] / 255.0
    coloured = bool((rgb != rgb[:, :, :1]).any())
    if coloured and grey.min() == grey.max() and (rgb != rgb[:1, :1]).any():
        raise ValueError(
            f"{p}: RGB image whose colours all have the same luma ({int(grey.flat[0] * 255)}); as grey "
            "(ITU-R 601-2, what the grey model reads) every pixel is the same and the picture is lost"
        )
    what = "colours dropped" if coloured else "a grey picture stored as RGB, nothing lost"
    warnings.warn(
        f"{p}: RGB image, the model reads grayscale; converted to luma "
        f"L = R*299/1000 + G*587/1000 + B*114/1000 ({what})",
        ImageChannelsWarning,
        stacklevel=3,
    )
    return grey


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


def _is_image_file(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(IMAGE_SUFFIXES)


def list_image_files(folder: Path) -> list[Path]:
    """Image files under `folder` (recursively, sorted, hidden files and folders skipped)."""
    out: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        out.extend(Path(dirpath) / f for f in sorted(filenames) if _is_image_file(f))
    return out
