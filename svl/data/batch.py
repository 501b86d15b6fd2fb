"""The batch every encoder eats (DESIGN.md "Batches"): `PointBatch` and `collate_points`.

A sample is a dict: ``xyz (N, 3)``, optional ``rgb (N, 3)`` in [0, 1], ``normals (N, 3)``, ``label``,
``index`` and optional extras (numeric arrays, stacked into ``extras``). Features are
``xyz + rgb`` (missing colour = `MISSING_COLOR`, docs/SPEC.md §3), ``+ normals`` when asked. A sample may
carry its own ``feats (N, C)`` (event streams: xyz + polarity), which then wins. Multi-step event
inputs (``steps (T, N, C)``: each point's features at its own timestep, zeros elsewhere, and
``step_mask (T, N)``) are collated time-major to ``extras["steps"] (T, B, N, C)`` and
``extras["step_mask"] (T, B, N)``, the layout models read; the points of every step share ``xyz``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from svl.conventions import MISSING_COLOR  # re-exported: svl.data.batch.MISSING_COLOR keeps working
from svl.sparse import voxelize

if TYPE_CHECKING:  # torch is imported where tensors are made, so `import svl.data` stays cheap
    import torch
    from torch import Tensor

__all__ = ["MISSING_COLOR", "Collate", "PointBatch", "collate_points"]

_TIME_MAJOR = ("steps", "step_mask")  # per-sample (T, N, ...) -> batch (T, B, N, ...)
_RESERVED = {"xyz", "rgb", "normals", "label", "index", "feats", "meta", "voxel_size"}


@dataclass
class PointBatch:
    """Fixed-N batch of clouds; `sparse`/`point2voxel` are filled when the pipeline voxelized."""

    xyz: Tensor
    feats: Tensor
    labels: Tensor | None
    index: Tensor
    sparse: Any = None
    point2voxel: Tensor | None = None
    extras: dict[str, Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.xyz.shape[0])

    def to(self, device: torch.device | str, non_blocking: bool = False) -> PointBatch:
        """Move every tensor (and the sparse tensor, if it can move) to `device`."""

        def mv(t: Any) -> Any:
            return t.to(device, non_blocking=non_blocking) if hasattr(t, "to") else t

        return replace(
            self,
            xyz=mv(self.xyz),
            feats=mv(self.feats),
            labels=mv(self.labels),
            index=mv(self.index),
            sparse=mv(self.sparse),
            point2voxel=mv(self.point2voxel),
            extras={k: mv(v) for k, v in self.extras.items()},
        )

    def pin_memory(self) -> PointBatch:
        """DataLoader(pin_memory=True) support."""
        import torch

        pin = lambda t: t.pin_memory() if isinstance(t, torch.Tensor) else t  # noqa: E731
        return replace(
            self,
            xyz=pin(self.xyz),
            feats=pin(self.feats),
            labels=pin(self.labels),
            index=pin(self.index),
            extras={k: pin(v) for k, v in self.extras.items()},
        )


def _tensor(x: Any, where: str, dtype: torch.dtype | None = None) -> Tensor:
    import torch

    try:
        t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    except (TypeError, ValueError, RuntimeError) as e:
        raise ValueError(f"collate_points: {where} is not numeric ({e})") from None
    return t.to(torch.float32 if dtype is None else dtype)


def collate_points(
    samples: Sequence[dict[str, Any]],
    *,
    normals: bool = False,
    voxel_size: float | None = None,
) -> PointBatch:
    """Stack sample dicts into a PointBatch (all samples must have the same number of points).

    normals: append normals to feats (every sample must have them). voxel_size: also build
    ``sparse`` with ``svl.sparse.voxelize``; defaults to a ``voxel_size`` the Voxelize transform
    put in the samples.
    """
    import torch

    if not samples:
        raise ValueError("collate_points: empty list of samples")
    xs: list[Tensor] = []
    fs: list[Tensor] = []
    for i, s in enumerate(samples):
        xyz = _sample_xyz(s, i, xs[0].shape[0] if xs else None)
        xs.append(xyz)
        fs.append(_sample_feats(s, i, xyz, normals))
    if len({f.shape[1] for f in fs}) != 1:
        raise ValueError(f"collate_points: samples have different feature widths {[f.shape[1] for f in fs]}")
    batch = PointBatch(
        xyz=torch.stack(xs),
        feats=torch.stack(fs),
        labels=_labels(samples),
        index=torch.as_tensor([int(s.get("index", i)) for i, s in enumerate(samples)]),
        extras=_extras(samples),
    )
    size = _voxel_size(samples, voxel_size)
    if size is not None:
        _voxelize(batch, size)
    return batch


def _sample_xyz(s: Any, i: int, n0: int | None) -> Tensor:
    """Sample i's (N, 3) coordinates, with N equal to sample 0's."""
    if not isinstance(s, dict) or "xyz" not in s:
        raise ValueError(f"collate_points: sample {i} is not a dict with 'xyz'")
    xyz = _tensor(s["xyz"], f"sample {i} xyz")
    if xyz.ndim != 2 or xyz.shape[1] != 3:
        raise ValueError(f"collate_points: sample {i} xyz must be (N, 3), got {tuple(xyz.shape)}")
    if n0 is not None and xyz.shape[0] != n0:
        raise ValueError(
            f"collate_points: sample {i} has {xyz.shape[0]} points, sample 0 has {n0}; "
            "resample to a fixed N (e.g. the 'random_sample' or 'fps' transform)"
        )
    return xyz


def _sample_feats(s: dict[str, Any], i: int, xyz: Tensor, normals: bool) -> Tensor:
    """The sample's own ``feats``, else xyz + rgb (or MISSING_COLOR) [+ normals]."""
    import torch

    n = xyz.shape[0]
    if s.get("feats") is not None:
        f = _tensor(s["feats"], f"sample {i} feats")
        if f.ndim != 2 or f.shape[0] != n:
            raise ValueError(f"collate_points: sample {i} feats must be (N={n}, C), got {tuple(f.shape)}")
        return f
    parts = [xyz]
    if s.get("rgb") is not None:
        rgb = _tensor(s["rgb"], f"sample {i} rgb")
        if rgb.shape != xyz.shape:
            raise ValueError(f"collate_points: sample {i} rgb shape {tuple(rgb.shape)} != xyz")
        parts.append(rgb)
    else:
        parts.append(torch.full_like(xyz, MISSING_COLOR))
    if normals:
        if s.get("normals") is None:
            raise ValueError(f"collate_points: normals=True but sample {i} has no normals")
        parts.append(_tensor(s["normals"], f"sample {i} normals"))
    return torch.cat(parts, 1)


def _labels(samples: Sequence[dict[str, Any]]) -> Tensor | None:
    """(B,) long labels when every sample has one, None when none has."""
    import torch

    labels = [s.get("label") for s in samples]
    if all(v is not None for v in labels):
        return torch.as_tensor([int(v) for v in labels], dtype=torch.long)
    if any(v is not None for v in labels):
        raise ValueError("collate_points: some samples have a label and some do not")
    return None


def _extras(samples: Sequence[dict[str, Any]]) -> dict[str, Tensor]:
    """Stack every other numeric key of sample 0 present in all samples; text and ragged data stay out."""
    import torch

    extras: dict[str, Tensor] = {}
    for key in samples[0]:
        if key in _RESERVED:
            continue
        vals = [s.get(key) for s in samples]
        if any(v is None for v in vals) or isinstance(vals[0], (str, bytes, list, dict)):
            continue  # text and ragged metadata stay out of the tensor batch
        try:
            t = torch.stack(
                [torch.as_tensor(np.asarray(v) if not isinstance(v, torch.Tensor) else v) for v in vals]
            )
        except (TypeError, ValueError, RuntimeError) as e:
            raise ValueError(f"collate_points: extra {key!r} cannot be stacked ({e})") from None
        if t.is_floating_point():
            t = t.float()
        extras[key] = t.transpose(0, 1).contiguous() if key in _TIME_MAJOR else t
    return extras


def _voxel_size(samples: Sequence[dict[str, Any]], voxel_size: float | None) -> float | None:
    """The explicit size, else the one size the samples' Voxelize transform asked for (or None)."""
    if voxel_size is not None:
        return voxel_size
    sizes = {s.get("voxel_size") for s in samples}
    if len(sizes) > 1:
        raise ValueError(f"collate_points: samples ask for different voxel sizes {sizes}")
    return sizes.pop()


def _voxelize(batch: PointBatch, voxel_size: float) -> None:
    """Fill ``batch.sparse`` and ``batch.point2voxel`` (voxel sites need the batch index)."""
    import torch

    b, n, c = batch.feats.shape
    bidx = torch.arange(b).repeat_interleave(n)
    batch.sparse, batch.point2voxel = voxelize(
        batch.xyz.reshape(-1, 3), batch.feats.reshape(-1, c), bidx, float(voxel_size), batch_size=b
    )


class Collate:
    """Picklable collate_fn for DataLoader workers, e.g. ``collate_fn=Collate(voxel_size=0.02)``."""

    def __init__(self, *, normals: bool = False, voxel_size: float | None = None) -> None:
        self.normals = normals
        self.voxel_size = voxel_size

    def __call__(self, samples: Sequence[dict[str, Any]]) -> PointBatch:
        return collate_points(samples, normals=self.normals, voxel_size=self.voxel_size)
