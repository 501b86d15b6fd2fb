"""The frozen-teacher interface, the `TEACHERS` registry and `create_teacher`.

A teacher maps texts and/or images into one embedding space. SVL only ever needs two calls
(`embed_texts`, `embed_images`) plus a stable `id` (used as a cache key) and `dim`, so every
backend (MiniLM, EfficientNet-Lite0, OpenCLIP, HF CLIP) is wrapped behind this small class.
Each backend file registers its class in `TEACHERS`; this module never imports them (the package
``__init__`` does), so the backends can import this one without a circle.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from svl.registry import Registry
from svl.utils import quiet_hf_progress, set_offline  # noqa: F401  (re-exported: the teachers' names)

__all__ = [
    "TEACHERS",
    "Teacher",
    "create_teacher",
    "list_teachers",
    "register_aliases",
    "resolve_device",
    "quiet_hf_progress",
    "set_offline",
]


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
    has_tokens: bool = False  # spatial (token-level) image features, for token-level distillation
    takes_path: bool = False  # built from a local file: spec "name:PATH", the path as first argument
    description: str = ""  # one line for list_teachers()

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

    def embed_images_with_tokens(self, images: torch.Tensor, grid: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Pooled embeddings (N, dim) and a `grid` x `grid` map of token features (N, grid^2, dim), both
        L2-normalised, from one pass: the targets of token-level distillation (VL2Spike SVS)."""
        if not self.has_tokens:
            raise ValueError(
                f"teacher {self.id!r} gives pooled image features only; use pooled-level alignment "
                "or a teacher with spatial features such as 'efficientnet-lite0'"
            )
        if grid < 1:
            raise ValueError(f"teacher {self.id}: token grid must be >= 1, got {grid}")
        images = _check_images(images, self.id)
        pooled, tokens = [], []
        with torch.inference_mode():
            for i in range(0, images.shape[0], self.batch_size):
                chunk = images[i : i + self.batch_size].to(self.device, torch.float32)
                p, t = self._embed_image_tokens(chunk, grid)
                pooled.append(p.float().cpu())
                tokens.append(t.float().cpu())
        if not pooled:
            return torch.zeros(0, self.dim), torch.zeros(0, grid * grid, self.dim)
        return F.normalize(torch.cat(pooled), dim=-1), F.normalize(torch.cat(tokens), dim=-1)

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

    def _embed_image_tokens(
        self, images: torch.Tensor, grid: int
    ) -> tuple[torch.Tensor, torch.Tensor]:  # pragma: no cover - abstract
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
    if not isinstance(images, torch.Tensor):  # a read-only array (a memory map) is copied, not warned about
        arr = np.asarray(images)
        images = torch.as_tensor(arr if arr.flags.writeable else arr.copy())
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"teacher {who}: images must be (N, 3, H, W), got {tuple(images.shape)}")
    if images.is_floating_point() and images.numel():
        lo, hi = float(images.min()), float(images.max())
        if lo < -1e-3 or hi > 1 + 1e-3:
            raise ValueError(f"teacher {who}: image values must lie in [0, 1], got [{lo:.3g}, {hi:.3g}]")
    elif not images.is_floating_point():
        images = images.float() / 255.0
    return images


TEACHERS: Registry[Callable[..., Teacher]] = Registry(
    "teacher",
    group="svl.teachers",
    hint="see svl.teachers.list_teachers(); teachers that load local files take 'NAME:PATH'",
)
_ALIASES: dict[str, str] = {}  # alias -> the name list_teachers() shows


def register_aliases(name: str, *aliases: str) -> None:
    """Register other spellings of the teacher registered as `name` (list_teachers shows `name` only)."""
    target = TEACHERS.get(name)
    for alias in aliases:
        TEACHERS.register(alias, target)
        _ALIASES[alias] = name


def list_teachers() -> dict[str, str]:
    """Teacher specs accepted by `create_teacher`, with a one-line description each."""
    out = {}
    for name in TEACHERS.names():
        builder = TEACHERS.get(name)
        target = _ALIASES.get(name)
        if target is not None and target in TEACHERS and TEACHERS.get(target) is builder:
            continue
        spec = f"{name}:PATH" if getattr(builder, "takes_path", False) else name
        doc = getattr(builder, "description", "") or (builder.__doc__ or "").strip().split("\n")[0]
        out[spec] = doc
    return out


def create_teacher(spec: str, device: str | torch.device | None = None, **kwargs: Any) -> Teacher:
    """Build a frozen teacher from a spec string: a registered name, then ':PATH' for file-based ones.

    "minilm" | "efficientnet-lite0" | "openclip:PATH" | "hf-clip:PATH". CLIP teachers load only
    from local files; nothing is ever downloaded.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"teacher spec must be a non-empty string, got {spec!r}")
    spec = spec.strip()
    name, _, arg = spec.partition(":")
    key = name if name in TEACHERS else name.lower()
    builder = TEACHERS.get(key)  # unknown -> ValueError listing the registered names
    if getattr(builder, "takes_path", False):
        if not arg:
            raise ValueError(f"teacher spec {spec!r} needs a local path: '{key}:PATH'")
        return builder(arg, device=device, **kwargs)
    if arg:
        raise ValueError(f"teacher {key!r} takes no path, got {spec!r}")
    return builder(device=device, **kwargs)
