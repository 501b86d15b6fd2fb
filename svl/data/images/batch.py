"""The image batch (`ImageBatch`) and `collate_images`, the image counterpart of svl/data/batch.py.

Point datasets and image datasets do not share a batch: an image sample is
``{"image": (C, H, W) float in [0, 1], "label", "index", extras}``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["ImageBatch", "collate_images"]

_RESERVED = {"image", "label", "index", "path"}  # sample keys that are not numeric extras


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
