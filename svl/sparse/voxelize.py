"""Points -> one sparse site per occupied voxel per sample, with averaged features (docs/SPEC.md §3).

The point-to-voxel index is returned too, so dense per-site outputs (segmentation) can be
scattered back to the original points with ``site_values[point2voxel]``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from svl.sparse.kmap import _pack, _rank_rows, _spans
from svl.sparse.tensor import SparseTensor

_MAX_COORD = float(1 << 60)


def _voxel_sizes(voxel_size: float | Sequence[float] | Tensor) -> list[float]:
    vs = voxel_size.tolist() if isinstance(voxel_size, Tensor) else voxel_size
    vs = [float(v) for v in vs] if isinstance(vs, (list, tuple)) else [float(vs)] * 3
    if len(vs) != 3 or not all(math.isfinite(v) and v > 0 for v in vs):
        raise ValueError(f"voxel_size must be a positive finite number or 3 of them, got {voxel_size}")
    return vs


def voxelize(
    xyz: Tensor,
    feats: Tensor,
    batch: Tensor,
    voxel_size: float | Sequence[float] | Tensor,
    batch_size: int | None = None,
) -> tuple[SparseTensor, Tensor]:
    """Voxelize ``xyz (P, 3)``, ``feats (P, C)``, sample index ``batch (P,)`` -> (SparseTensor, point2voxel).

    Voxel coords are ``floor(xyz / voxel_size)`` (may be negative). Sites come sorted by
    (b, x, y, z); features are the mean over the points of each voxel (differentiable).
    """
    if not isinstance(xyz, Tensor) or xyz.dim() != 2 or xyz.shape[1] != 3:
        raise ValueError(f"voxelize: xyz must be (P, 3), got {getattr(xyz, 'shape', type(xyz))}")
    p = xyz.shape[0]
    if not isinstance(feats, Tensor) or feats.dim() != 2 or feats.shape[0] != p:
        raise ValueError(f"voxelize: feats must be (P={p}, C), got {getattr(feats, 'shape', type(feats))}")
    if not isinstance(batch, Tensor) or batch.shape != (p,):
        raise ValueError(f"voxelize: batch must be ({p},), got {getattr(batch, 'shape', type(batch))}")
    if batch.dtype.is_floating_point or batch.dtype == torch.bool:
        raise ValueError(f"voxelize: batch must be an integer tensor, got {batch.dtype}")
    vs = _voxel_sizes(voxel_size)
    if not bool(torch.isfinite(xyz).all()):
        raise ValueError("voxelize: xyz contains NaN or inf coordinates")
    batch = batch.long()
    nb = int(batch.max()) + 1 if p else 0
    if p and int(batch.min()) < 0:
        raise ValueError(f"voxelize: negative batch index {int(batch.min())}")
    if batch_size is None:
        batch_size = nb
    elif batch_size < nb:
        raise ValueError(f"voxelize: batch_size={batch_size} but the batch index reaches {nb - 1}")
    scaled = xyz.detach().double() / torch.tensor(vs, dtype=torch.float64, device=xyz.device)
    scaled = torch.floor(scaled)
    if p and float(scaled.abs().max()) >= _MAX_COORD:
        raise ValueError(
            f"voxelize: voxel coordinates exceed +-2^60 (voxel_size {vs} too small for these points)"
        )
    grid = torch.cat([batch.view(-1, 1), scaled.long()], 1)
    if p == 0:
        st = SparseTensor(feats.new_zeros((0, feats.shape[1])), grid, batch_size, 1, check=False)
        return st, batch.new_zeros(0)
    lo, span, fits = _spans(grid.min(0).values, grid.max(0).values)
    keys = _pack(grid, lo, span) if fits else _rank_rows(grid)[0]
    uniq, inv = torch.unique(keys, sorted=True, return_inverse=True)
    m = uniq.numel()
    coords = grid.new_empty((m, 4))
    coords[inv] = grid
    counts = torch.zeros(m, dtype=feats.dtype, device=feats.device).index_add_(
        0, inv, torch.ones(p, dtype=feats.dtype, device=feats.device)
    )
    sums = feats.new_zeros((m, feats.shape[1])).index_add(0, inv, feats)
    st = SparseTensor(sums / counts.unsqueeze(1), coords, batch_size, 1, check=False)
    return st, inv
