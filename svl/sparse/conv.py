"""Sparse 3D convolutions, BatchNorm and global pooling written in device-agnostic torch ops.

A conv is, per kernel offset, gather input rows -> matmul with ``weight[k]`` -> ``index_add_`` into
the output rows. A custom autograd Function keeps only the input features and weights for backward
(gathered copies are recomputed), and the submanifold centre offset skips the gather entirely.
Accumulation uses ``index_add_``: within one offset the pairs form a matching (no output row twice),
so it is deterministic, and in torch 2.13 on CPU it runs in parallel where
``index_put_(accumulate=True)`` is serial (benchmarks/sparse_conv.py (a): 1.7x faster fwd+bwd).
Weights are ``(K**3, cin, cout)`` with offsets in ``itertools.product(range(K), repeat=3)`` order, so
``weight[k]`` equals dense ``conv3d.weight[:, :, kx, ky, kz].T`` (and, for the inverse conv, dense
``conv_transpose3d.weight[:, :, kx, ky, kz]``).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from svl.sparse.kmap import (
    KernelMap,
    cached_inverse_map,
    cached_strided_map,
    cached_submanifold_map,
)
from svl.sparse.tensor import SparseTensor, feature_values, is_spike_train


class _GatherMatmulScatter(torch.autograd.Function):
    """out[o] += x[i] @ W[k] for every pair (i, o) of offset k; x is (N, L*cin), out is (M, L*cout)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, kmap: KernelMap) -> Tensor:
        cin, cout = weight.shape[1], weight.shape[2]
        lanes = x.shape[1] // cin
        out = None
        ident = kmap.identity_offset
        if ident is not None and kmap.counts[ident]:
            out = torch.mm(x.view(-1, cin), weight[ident]).view(kmap.n_out, lanes * cout)
        if out is None:
            out = x.new_zeros((kmap.n_out, lanes * cout))
        for k, cnt in enumerate(kmap.counts):
            if cnt == 0 or k == ident:
                continue
            g = x.index_select(0, kmap.in_idx[k]).view(-1, cin)
            out.index_add_(0, kmap.out_idx[k], torch.mm(g, weight[k]).view(cnt, lanes * cout))
        ctx.save_for_backward(x, weight)
        ctx.kmap = kmap
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None]:
        x, weight = ctx.saved_tensors
        kmap: KernelMap = ctx.kmap
        cin, cout = weight.shape[1], weight.shape[2]
        need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad = grad.contiguous()
        gx = torch.zeros_like(x) if need_x else None
        gw = torch.zeros_like(weight) if need_w else None
        ident = kmap.identity_offset
        for k, cnt in enumerate(kmap.counts):
            if cnt == 0:
                continue
            if k == ident:
                go = grad.view(-1, cout)
                if need_w:
                    gw[k] = torch.mm(x.view(-1, cin).t(), go)
                if need_x:
                    gx.view(-1, cin).add_(torch.mm(go, weight[k].t()))
                continue
            go = grad.index_select(0, kmap.out_idx[k]).view(-1, cout)
            if need_w:
                gw[k] = torch.mm(x.index_select(0, kmap.in_idx[k]).view(-1, cin).t(), go)
            if need_x:
                gx.index_add_(0, kmap.in_idx[k], torch.mm(go, weight[k].t()).view(cnt, -1))
        return gx, gw, None


def sparse_conv_features(
    features: Any, weight: Tensor, kmap: KernelMap, bias: Tensor | None = None
) -> Tensor:
    """Apply a sparse conv to features (N, C), (*lead, N, C) or a SpikeTrain -> (*lead, M, cout).

    For a SpikeTrain the weight sees every binary sub-step (an extra leading dim), the sub-step
    results are summed and the bias is added once, equal to running on ``bits.sum(0)``.
    """
    spikes = is_spike_train(features)
    vals = feature_values(features)
    if vals.dim() < 2 or vals.shape[-2] != kmap.n_in:
        raise ValueError(
            f"sparse conv expects {kmap.n_in} input sites at dim -2, got shape {tuple(vals.shape)}"
        )
    cin, cout = weight.shape[1], weight.shape[2]
    if vals.shape[-1] != cin:
        raise ValueError(f"sparse conv expects {cin} input channels, got {vals.shape[-1]}")
    if vals.dtype != weight.dtype:
        vals = vals.to(weight.dtype)
    lead = tuple(vals.shape[:-2])
    n = vals.shape[-2]
    lanes = math.prod(lead)
    x = vals.contiguous() if not lead else vals.reshape(lanes, n, cin).transpose(0, 1).reshape(n, lanes * cin)
    out = _GatherMatmulScatter.apply(x, weight, kmap)
    if lead:
        out = out.view(kmap.n_out, lanes, cout).transpose(0, 1).reshape(*lead, kmap.n_out, cout)
    if spikes:
        out = out.sum(0)
    return out if bias is None else out + bias


class _SparseConvBase(nn.Module):
    """Holds the (K**3, cin, cout) weight and optional bias, initialised like torch's Conv3d."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bias: bool) -> None:
        super().__init__()
        if in_channels < 1 or out_channels < 1 or kernel_size < 1:
            raise ValueError(f"bad conv shape: cin={in_channels}, cout={out_channels}, kernel={kernel_size}")
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        self.weight = nn.Parameter(torch.empty(kernel_size**3, in_channels, out_channels))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.in_channels * self.kernel_size**3)
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    def extra_repr(self) -> str:
        bias = self.bias is not None
        return f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, bias={bias}"

    def kernel_map(self, st: SparseTensor) -> KernelMap:
        raise NotImplementedError


class SubMConv3d(_SparseConvBase):
    """Submanifold conv: output sites = input sites, centred odd kernel (docs/SPEC.md §3 SubM3)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, bias: bool = False) -> None:
        if kernel_size % 2 == 0:
            raise ValueError(f"SubMConv3d needs an odd kernel size, got {kernel_size}")
        super().__init__(in_channels, out_channels, kernel_size, bias)

    def kernel_map(self, st: SparseTensor) -> KernelMap:
        return cached_submanifold_map(st, self.kernel_size)

    def forward(self, st: SparseTensor) -> SparseTensor:
        feats = sparse_conv_features(st.features, self.weight, self.kernel_map(st), self.bias)
        return st.replace(features=feats)


class _StridedConvBase(_SparseConvBase):
    """Adds the stride shared by the strided conv and its inverse."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int = 2, stride: int = 2, bias: bool = False
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size, bias)
        if stride < 1:
            raise ValueError(f"stride must be >= 1, got {stride}")
        self.stride = stride

    def extra_repr(self) -> str:
        return super().extra_repr() + f", stride={self.stride}"


class SparseConv3d(_StridedConvBase):
    """Strided sparse conv (no padding): output ``o`` reads inputs ``o*stride + [0, K)^3``."""

    def kernel_map(self, st: SparseTensor) -> KernelMap:
        return cached_strided_map(st, self.kernel_size, self.stride)[0]

    def forward(self, st: SparseTensor) -> SparseTensor:
        kmap, out_coords = cached_strided_map(st, self.kernel_size, self.stride)
        feats = sparse_conv_features(st.features, self.weight, kmap, self.bias)
        return st.replace(features=feats, coords=out_coords, stride=st.stride * self.stride)


class SparseInverseConv3d(_StridedConvBase):
    """Transposed conv that restores the finer sites of the matching ``SparseConv3d`` (same K, stride)."""

    def kernel_map(self, st: SparseTensor) -> KernelMap:
        return cached_inverse_map(st, self.kernel_size, self.stride)[0]

    def forward(self, st: SparseTensor) -> SparseTensor:
        kmap, fine_coords, fine_stride = cached_inverse_map(st, self.kernel_size, self.stride)
        feats = sparse_conv_features(st.features, self.weight, kmap, self.bias)
        return st.replace(features=feats, coords=fine_coords, stride=fine_stride)


class SparseLinear(_SparseConvBase):
    """1x1 sparse conv (a per-site linear layer); weight is (1, cin, cout) like every sparse conv."""

    def __init__(self, in_channels: int, out_channels: int, bias: bool = True) -> None:
        super().__init__(in_channels, out_channels, 1, bias)

    def kernel_map(self, st: SparseTensor) -> KernelMap:
        hit = st.kmaps.get(("linear", st.stride))
        if hit is not None and hit[0] is st.coords:
            return hit[1]
        ar = torch.arange(st.num_sites, device=st.device)
        kmap = KernelMap([ar], [ar], st.num_sites, st.num_sites, 1, 1, [st.num_sites], identity_offset=0)
        st.kmaps[("linear", st.stride)] = (st.coords, kmap)
        return kmap

    def forward(self, st: SparseTensor) -> SparseTensor:
        f = st.features
        vals = feature_values(f)
        if vals.shape[-1] != self.in_channels:
            raise ValueError(f"SparseLinear expects {self.in_channels} input channels, got {vals.shape[-1]}")
        out = torch.matmul(vals.to(self.weight.dtype), self.weight[0])
        if is_spike_train(f):
            out = out.sum(0)
        if self.bias is not None:
            out = out + self.bias
        return st.replace(features=out)


def _counts(features: Any) -> Tensor:
    """Integer spike counts of a SpikeTrain (BN and pooling act on counts), else the tensor."""
    return features.bits.sum(0) if is_spike_train(features) else features


class SparseBatchNorm(nn.Module):
    """BatchNorm1d over all sites (and leading step dims) of a SparseTensor's features.

    Wraps an inner ``nn.BatchNorm1d`` so ``SyncBatchNorm.convert_sync_batchnorm`` can swap it.
    """

    def __init__(self, num_features: int, eps: float = 1e-3, momentum: float = 0.01) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(num_features, eps=eps, momentum=momentum)

    def forward(self, st: SparseTensor) -> SparseTensor:
        vals = _counts(st.features)
        c = vals.shape[-1]
        if c != self.bn.num_features:
            raise ValueError(f"SparseBatchNorm expects {self.bn.num_features} channels, got {c}")
        if vals.numel() == 0:
            return st.replace(features=vals)
        return st.replace(features=self.bn(vals.reshape(-1, c)).view(vals.shape))


def _pool_inputs(st: SparseTensor) -> tuple[Tensor, Tensor]:
    vals = _counts(st.features)
    return vals, st.coords[:, 0]


def global_mean_pool(st: SparseTensor) -> Tensor:
    """Per-sample mean over sites -> (B, C) or (L, B, C); samples without sites give 0."""
    vals, b = _pool_inputs(st)
    dim = vals.dim() - 2
    shape = (*vals.shape[:-2], st.batch_size, vals.shape[-1])
    sums = vals.new_zeros(shape).index_add(dim, b, vals)
    cnt = torch.bincount(b, minlength=st.batch_size).clamp_(min=1).to(vals.dtype)
    return sums / cnt.unsqueeze(1)


def global_max_pool(st: SparseTensor) -> Tensor:
    """Per-sample max over sites -> (B, C) or (L, B, C); samples without sites give 0."""
    vals, b = _pool_inputs(st)
    dim = vals.dim() - 2
    shape = (*vals.shape[:-2], st.batch_size, vals.shape[-1])
    idx = b.view(*([1] * dim), -1, 1).expand_as(vals)
    return vals.new_zeros(shape).scatter_reduce(dim, idx, vals, "amax", include_self=False)
