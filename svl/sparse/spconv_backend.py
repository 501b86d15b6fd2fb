"""Optional spconv 2.x backend with the same module API and weight layout as ``svl.sparse.conv``.

Measured on this project's CPU machines, spconv 2.3.8's CPU path has two defects this module works
around: (1) its backward calls ``torch.cuda.current_stream()`` and fails with "Torch not compiled
with CUDA enabled" (the stream is unused on CPU, so it is patched to 0 when CUDA is absent), and
(2) with more than one torch thread its CPU gather/scatter gives silently wrong outputs and input
gradients (off by up to 0.7 against a dense conv3d), while one thread is exact. Every spconv call
on CPU therefore runs with ``torch.set_num_threads(1)``, forward *and* backward (autograd guards
switch the thread count around the spconv backward node), and the previous count is restored.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import Tensor

from svl.sparse.conv import SparseConv3d, SparseInverseConv3d, SubMConv3d
from svl.sparse.tensor import SparseTensor, feature_values, is_spike_train

_INT32_MAX = (1 << 31) - 1


def spconv_available() -> bool:
    """Whether ``spconv.pytorch`` imports."""
    try:
        import spconv.pytorch  # noqa: F401
    except Exception:
        return False
    return True


@functools.cache
def _spconv() -> Any:
    try:
        import spconv.pytorch as sp
        import spconv.pytorch.ops as ops
    except Exception as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the spconv backend needs spconv 2.x: pip install 'svl[spconv]' (or use svl.sparse's own convs)"
        ) from e
    if not torch.cuda.is_available():
        # spconv's CPU backward asks for a CUDA stream it never uses; give it a dummy one.
        ops.get_current_stream = lambda: 0
    return sp


def to_spconv_weight(weight: Tensor) -> Tensor:
    """(K**3, cin, cout) -> spconv's (cout, K, K, K, cin); differentiable (a permuted view)."""
    k = round(weight.shape[0] ** (1 / 3))
    if k**3 != weight.shape[0]:
        raise ValueError(f"weight dim 0 must be K**3, got {weight.shape[0]}")
    return weight.view(k, k, k, weight.shape[1], weight.shape[2]).permute(4, 0, 1, 2, 3)


def from_spconv_weight(weight: Tensor) -> Tensor:
    """spconv's (cout, K, K, K, cin) -> (K**3, cin, cout)."""
    if weight.dim() != 5:
        raise ValueError(f"spconv weight must be (cout, K, K, K, cin), got {tuple(weight.shape)}")
    k = weight.shape[1]
    return weight.permute(1, 2, 3, 4, 0).reshape(k**3, weight.shape[4], weight.shape[0])


class _ThreadState:
    __slots__ = ("prev",)

    def __init__(self) -> None:
        self.prev: int | None = None


class _BackwardSingleThreadBegin(torch.autograd.Function):
    """Identity; its backward (which runs just before spconv's) switches torch to one thread."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, state: _ThreadState) -> Tensor:
        ctx.state = state
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        if ctx.state.prev is None:
            ctx.state.prev = torch.get_num_threads()
            torch.set_num_threads(1)
        return grad, None


class _BackwardSingleThreadEnd(torch.autograd.Function):
    """Identity on spconv's inputs; its backward (just after spconv's) restores the thread count."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, state: _ThreadState) -> Tensor:
        ctx.state = state
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        if ctx.state.prev is not None:
            torch.set_num_threads(ctx.state.prev)
            ctx.state.prev = None
        return grad, None


def _single_threaded(fn: Any, feats: Tensor, weight: Tensor) -> Tensor:
    """Run ``fn(feats, weight)`` with one torch thread on CPU, in forward and in backward."""
    if feats.is_cuda:
        return fn(feats, weight)
    state = _ThreadState()
    feats = _BackwardSingleThreadEnd.apply(feats, state) if feats.requires_grad else feats
    weight = _BackwardSingleThreadEnd.apply(weight, state) if weight.requires_grad else weight
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = fn(feats, weight)
    finally:
        torch.set_num_threads(prev)
    return _BackwardSingleThreadBegin.apply(out, state) if out.requires_grad else out


def _state(st: SparseTensor) -> dict:
    """Per-input spconv state (its indice_dict and our coord bookkeeping) kept in the kmaps cache."""
    return st.kmaps.setdefault("spconv", {"indice_dict": {}, "coords": {}, "up": {}})


def _grid(coords: Tensor, align: int, margin: int) -> tuple[Tensor, list[int], list[int]]:
    """Shift coords to spconv's non-negative int32 grid; the shift is a multiple of ``align``."""
    if coords.shape[0] == 0:
        return coords.int(), [0, 0, 0], [1, 1, 1]
    lo = coords[:, 1:].min(0).values - margin
    lo = torch.div(lo, align, rounding_mode="floor") * align
    local = coords[:, 1:] - lo
    shape = (local.max(0).values + margin + align + 1).tolist()
    if max(shape) > _INT32_MAX:
        raise ValueError(
            f"spconv uses int32 indices: coordinate extent {shape} is too large; use svl.sparse convs"
        )
    idx = torch.cat([coords[:, :1], local], 1).int().contiguous()
    return idx, lo.tolist(), [int(s) for s in shape]


def _call(
    inner: Any, x: Tensor, w: Tensor, idx: Tensor, shape: list[int], st: SparseTensor, training: bool
) -> Any:
    """One spconv conv call that reads and records indice pairs in the input's shared indice_dict."""
    sp = _spconv()
    shared = _state(st)["indice_dict"]
    t = sp.SparseConvTensor(x, idx, shape, st.batch_size, indice_dict=shared)
    out = inner._conv_forward(training, t, to_spconv_weight(w).contiguous(), None)
    shared.update(out.indice_dict)  # spconv copies the dict; keep new pairs for later layers
    return out


class _SpconvMixin:
    """Runs the parent module's weight through an unregistered spconv module of the same shape."""

    def _inner(self, kind: str, key: str) -> Any:
        cache = self.__dict__.setdefault("_spconv_modules", {})
        if key not in cache:
            sp = _spconv()
            cls = {"subm": sp.SubMConv3d, "down": sp.SparseConv3d, "inv": sp.SparseInverseConv3d}[kind]
            kw: dict[str, Any] = {"bias": False, "indice_key": key}
            if kind == "down":
                kw["stride"] = self.stride
            cache[key] = cls(self.in_channels, self.out_channels, self.kernel_size, **kw)
        return cache[key]

    def _run_spconv(self, fn: Any, st: SparseTensor) -> Tensor:
        f = st.features
        vals = feature_values(f)
        if vals.shape[-1] != self.in_channels:
            raise ValueError(f"spconv conv expects {self.in_channels} input channels, got {vals.shape[-1]}")
        lead = tuple(vals.shape[:-2])
        n = vals.shape[-2]
        flat = vals.reshape(-1, n, vals.shape[-1]).to(self.weight.dtype)
        outs = [_single_threaded(fn, flat[i], self.weight) for i in range(flat.shape[0])]
        out = torch.stack(outs).view(*lead, -1, self.out_channels) if lead else outs[0]
        if is_spike_train(f):
            out = out.sum(0)
        return out if self.bias is None else out + self.bias


class SpconvSubMConv3d(_SpconvMixin, SubMConv3d):
    """``SubMConv3d`` computed by spconv (same weight layout and state dict)."""

    def forward(self, st: SparseTensor) -> SparseTensor:
        key = f"subm_s{st.stride}_k{self.kernel_size}"
        inner = self._inner("subm", key)
        idx, _, shape = _grid(st.coords, 1, self.kernel_size)

        def fn(x: Tensor, w: Tensor) -> Tensor:
            return _call(inner, x, w, idx, shape, st, self.training).features

        return st.replace(features=self._run_spconv(fn, st))


class SpconvSparseConv3d(_SpconvMixin, SparseConv3d):
    """``SparseConv3d`` computed by spconv; output sites equal ours (possibly in another order)."""

    def forward(self, st: SparseTensor) -> SparseTensor:
        key = f"down_s{st.stride}_k{self.kernel_size}_S{self.stride}"
        inner, state = self._inner("down", key), _state(st)
        # Shift by a multiple of the stride and leave K-1 cells of margin so no output index is negative.
        idx, lo, shape = _grid(st.coords, self.stride, self.kernel_size)
        res: dict[str, Any] = {}

        def fn(x: Tensor, w: Tensor) -> Tensor:
            state["indice_dict"].pop(key, None)  # spconv only reuses submanifold pairs: rebuild these
            out = _call(inner, x, w, idx, shape, st, self.training)
            res["indices"], res["shape"] = out.indices, list(out.spatial_shape)
            return out.features

        feats = self._run_spconv(fn, st)
        hit = state["coords"].get(key)
        shift = torch.tensor([0] + [v // self.stride for v in lo], device=st.device)
        if hit is not None and hit[0] is st.coords and torch.equal(hit[1], res["indices"].long() + shift):
            out_coords = hit[1]  # same sites as last time: keep the coords object so later caches hit
        else:
            out_coords = res["indices"].long() + shift
            state["coords"][key] = (st.coords, out_coords)
            state["up"][(st.stride * self.stride, self.kernel_size, self.stride)] = (
                out_coords,
                st.coords,
                key,
                res["indices"],
                res["shape"],
            )
        return st.replace(features=feats, coords=out_coords, stride=st.stride * self.stride)


class SpconvInverseConv3d(_SpconvMixin, SparseInverseConv3d):
    """``SparseInverseConv3d`` computed by spconv from the indices of the matching spconv strided conv."""

    def forward(self, st: SparseTensor) -> SparseTensor:
        state = _state(st)
        hit = state["up"].get((st.stride, self.kernel_size, self.stride))
        if hit is None or hit[0] is not st.coords:
            raise ValueError(
                f"no SpconvSparseConv3d (kernel {self.kernel_size}, stride {self.stride}) produced this "
                f"tensor "
                f"at stride {st.stride}: the spconv inverse conv needs its indices"
            )
        _, fine_coords, down_key, coarse_idx, coarse_shape = hit
        inner = self._inner("inv", down_key)

        def fn(x: Tensor, w: Tensor) -> Tensor:
            return _call(inner, x, w, coarse_idx, coarse_shape, st, self.training).features

        feats = self._run_spconv(fn, st)
        return st.replace(features=feats, coords=fine_coords, stride=st.stride // self.stride)
