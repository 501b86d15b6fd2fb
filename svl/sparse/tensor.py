"""SparseTensor: the value that flows through sparse stacks (features + integer coords + cache).

Features may be (N, C), (L, N, C) with leading step dims (e.g. time T), or a SpikeTrain whose
``bits`` are (D, N, C) / (D, L, N, C); the site dim is always second to last. Coords are on the
tensor's own integer grid; ``stride`` records how many base voxels one cell spans. The ``kmaps``
dict is shared by every tensor derived from one input so kernel maps are built once per stride.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

_UNSET: Any = object()


def is_spike_train(x: Any) -> bool:
    """Duck-typed SpikeTrain check (binary spikes with a leading sub-step dim in ``.bits``)."""
    return not isinstance(x, Tensor) and hasattr(x, "bits")


def feature_values(x: Any) -> Tensor:
    """The tensor behind features: ``bits`` of a SpikeTrain, else the tensor itself."""
    return x.bits if is_spike_train(x) else x


class SparseTensor:
    """Sparse voxel features with (b, x, y, z) coords, batch size, stride and a shared kernel-map cache."""

    __slots__ = ("features", "coords", "batch_size", "stride", "kmaps")

    def __init__(
        self,
        features: Any,
        coords: Tensor,
        batch_size: int,
        stride: int = 1,
        kmaps: dict | None = None,
        *,
        check: bool = True,
    ) -> None:
        self.features = features
        self.coords = coords
        self.batch_size = int(batch_size)
        self.stride = int(stride)
        self.kmaps = {} if kmaps is None else kmaps
        if check:
            self.validate()

    def validate(self) -> None:
        """Raise ValueError on malformed coords/features or sites that fall outside the batch."""
        c = self.coords
        if not isinstance(c, Tensor) or c.dim() != 2 or c.shape[1] != 4:
            raise ValueError(
                f"SparseTensor coords must be an (N, 4) tensor, got {getattr(c, 'shape', type(c))}"
            )
        if c.dtype != torch.long:
            raise ValueError(f"SparseTensor coords must be int64, got {c.dtype}")
        f = feature_values(self.features)
        if not isinstance(f, Tensor) or f.dim() < 2:
            raise ValueError("SparseTensor features must be (N, C), (L, N, C) or a SpikeTrain of those")
        if f.shape[-2] != c.shape[0]:
            raise ValueError(f"features have {f.shape[-2]} sites (dim -2) but coords have {c.shape[0]} rows")
        if self.batch_size < 0 or self.stride < 1:
            raise ValueError(f"bad batch_size {self.batch_size} or stride {self.stride}")
        if c.shape[0]:
            b = c[:, 0]
            lo, hi = int(b.min()), int(b.max())
            if lo < 0 or hi >= self.batch_size:
                raise ValueError(f"coords batch index spans [{lo}, {hi}] but batch_size is {self.batch_size}")

    def replace(self, features: Any = _UNSET, coords: Any = _UNSET, stride: Any = _UNSET) -> SparseTensor:
        """A new tensor with some fields swapped; batch_size and the kmaps cache are kept."""
        return SparseTensor(
            self.features if features is _UNSET else features,
            self.coords if coords is _UNSET else coords,
            self.batch_size,
            self.stride if stride is _UNSET else stride,
            self.kmaps,
            check=False,
        )

    @property
    def num_sites(self) -> int:
        return int(self.coords.shape[0])

    @property
    def num_channels(self) -> int:
        return int(feature_values(self.features).shape[-1])

    @property
    def device(self) -> torch.device:
        return self.coords.device

    def to(self, device: torch.device | str) -> SparseTensor:
        """Move to ``device``; the kernel-map cache starts afresh there."""
        f = self.features
        f = type(f)(f.bits.to(device)) if is_spike_train(f) else f.to(device)
        return SparseTensor(f, self.coords.to(device), self.batch_size, self.stride, None, check=False)

    def __repr__(self) -> str:
        f = self.features
        shape = f"SpikeTrain{tuple(f.bits.shape)}" if is_spike_train(f) else tuple(f.shape)
        return (
            f"SparseTensor(features={shape}, sites={self.num_sites}, "
            f"batch_size={self.batch_size}, stride={self.stride})"
        )
