"""Spike-driven PointFormer-L: a spiking Point-BERT with spike-driven (addition-only) self-attention.

Pipeline (docs/SPEC.md §3): farthest point sampling of ``num_groups`` centres, kNN ``group_size`` neighbours,
a spiking mini-PointNet tokenizer, a spiking positional embedding of the centres, a cls token,
``depth`` blocks with BatchNorm only (no LayerNorm, no softmax), then ``[cls ; max over tokens]``
-> ``.head`` projection.

Why the attention needs only additions: Q, K, V are spike tensors. ``K^T V`` sums, over tokens,
products of two spike counts; with binary spikes each product is an AND of two bits, so the sum is a
count of coincidences (accumulate-only; computing it from the counts gives the same integers).
``Q (K^T V)`` then adds, for every binary spike of Q, one row of that integer matrix (a synaptic
layer whose weights are ``K^T V``). The scale is a constant (a power of two, a shift) absorbed into
the attention neuron. Every value is an integer below 2^24, so integer and binary mode agree exactly.
Residuals go into membranes; only spikes travel between layers.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from svl.models._registry import default_contract, register_model, unpack_inputs
from svl.models.pointnet import LinearBN, SpikingMLP, max_over
from svl.spiking import FeatureBatchNorm, SLinear, SpikeTrain, make_neuron, synaptic

__all__ = ["SpikePointFormer", "farthest_point_sample", "spike_pointformer_l", "spike_pointformer_l_ann"]


# ----------------------------------------------------------------------------- grouping
def _fps_torch(xyz: Tensor, n: int) -> Tensor:
    """Plain FPS (start at point 0), the reference used when fpsample is not installed."""
    b, p, _ = xyz.shape
    idx = torch.zeros(b, n, dtype=torch.long, device=xyz.device)
    dist = torch.full((b, p), float("inf"), dtype=xyz.dtype, device=xyz.device)
    far = torch.zeros(b, dtype=torch.long, device=xyz.device)
    ar = torch.arange(b, device=xyz.device)
    for i in range(n):
        idx[:, i] = far
        d = ((xyz - xyz[ar, far].unsqueeze(1)) ** 2).sum(-1)
        dist = torch.minimum(dist, d)
        far = dist.argmax(-1)
    return idx


def farthest_point_sample(xyz: Tensor, n: int, backend: str = "auto") -> Tensor:
    """Indices (B, n) of ``n`` farthest points per cloud, starting from point 0 (deterministic).

    ``backend``: "fpsample" (C++, CPU), "torch" (device-agnostic loop) or "auto" (fpsample if it is
    installed and the points are on the CPU).
    """
    if xyz.dim() != 3 or xyz.shape[-1] != 3:
        raise ValueError(f"farthest_point_sample expects (B, P, 3) points, got {tuple(xyz.shape)}")
    if n > xyz.shape[1]:
        raise ValueError(f"cannot sample {n} centres from clouds of {xyz.shape[1]} points")
    if backend not in ("auto", "fpsample", "torch"):
        raise ValueError(f"unknown FPS backend {backend!r}")
    use_fp = backend == "fpsample" or (backend == "auto" and xyz.device.type == "cpu")
    if use_fp:
        try:
            import fpsample
        except ImportError:
            if backend == "fpsample":
                raise
            use_fp = False
    if not use_fp:
        return _fps_torch(xyz.detach(), n)
    pts = xyz.detach().float().cpu().numpy()
    out = [torch.from_numpy(fpsample.fps_sampling(c, n, start_idx=0).astype("int64")) for c in pts]
    return torch.stack(out).to(xyz.device)


def group_points(
    xyz: Tensor, feats: Tensor, num_groups: int, group_size: int, step_mask: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """FPS centres (B, G, 3) and neighbourhoods (B, G, K, C): kNN points with xyz made centre-relative.

    Per-step features (T, B, N, C) give (T, B, G, K, C) groups; with `step_mask` (T, B, N) a point is
    all zeros at the steps it does not belong to (its relative position too), so a step sees only
    its own points.
    """
    if xyz.shape[1] < group_size:
        raise ValueError(f"kNN of {group_size} needs at least that many points, got {xyz.shape[1]}")
    idx = farthest_point_sample(xyz, num_groups)
    b = torch.arange(xyz.shape[0], device=xyz.device).unsqueeze(1)
    centres = xyz[b, idx]  # (B, G, 3)
    knn = (
        torch.cdist(centres, xyz, compute_mode="donot_use_mm_for_euclid_dist")
        .topk(group_size, dim=-1, largest=False)
        .indices
    )  # (B, G, K)
    bk = b.unsqueeze(-1)
    nb_xyz = xyz[bk, knn] - centres.unsqueeze(2)
    if feats.dim() == 4:  # per-step features (T, B, N, C)
        nb_feat = feats[:, bk, knn]
        nb_xyz = nb_xyz.expand(feats.shape[0], *nb_xyz.shape)
        if step_mask is not None:
            nb_xyz = nb_xyz * step_mask[:, bk, knn].unsqueeze(-1).to(nb_xyz)
    else:
        nb_feat = feats[bk, knn]
    return centres, torch.cat([nb_xyz, nb_feat[..., 3:]], -1)


# ----------------------------------------------------------------------------- spike helpers
def _cat(a: Any, b: Any) -> Any:
    if isinstance(a, SpikeTrain):
        return SpikeTrain(torch.cat([a.bits, b.bits], -1))
    return torch.cat([a, b], -1)


def _spikes_map(x: Any, fn: Any) -> Any:
    return x.map(fn) if isinstance(x, SpikeTrain) else fn(x)


def _counts(x: Any) -> Tensor:
    return x.count() if isinstance(x, SpikeTrain) else x


class Tokenizer(nn.Module):
    """Spiking mini-PointNet: (6 -> 128 -> 256, group max, concat -> 512 -> 256, group max) -> 384."""

    def __init__(self, in_channels: int, dim: int, nf: Any) -> None:
        super().__init__()
        self.first = SpikingMLP([in_channels, 128, 256], nf)
        self.second = SpikingMLP([512, 512, 256], nf)
        self.reduce = LinearBN(256, dim)

    def forward(self, groups: Tensor) -> Tensor:
        f = self.first(groups)  # (..., B, G, K, 256) spikes
        k = groups.shape[-2]
        g = max_over(f, -2)
        g = _spikes_map(g, lambda t: t.unsqueeze(-2).expand(*t.shape[:-1], k, t.shape[-1]))
        f = self.second(_cat(g, f))
        return self.reduce(max_over(f, -2))  # token membranes (..., B, G, dim)


class SpikeDrivenAttention(nn.Module):
    """``SN(Q (K^T V) * scale)`` over spike tensors, multi-head, then Linear + BN into the membrane."""

    def __init__(self, dim: int, num_heads: int, nf: Any, scale: float = 0.125) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"width {dim} is not divisible by {num_heads} heads")
        self.h, self.scale = num_heads, scale
        self.sn_in = nf()
        self.q, self.k, self.v = LinearBN(dim, dim), LinearBN(dim, dim), LinearBN(dim, dim)
        self.sn_q, self.sn_k, self.sn_v = nf(), nf(), nf()
        self.sn_attn = nf()
        self.proj = LinearBN(dim, dim)

    def _heads(self, x: Any) -> Any:
        return _spikes_map(x, lambda t: t.unflatten(-1, (self.h, -1)).transpose(-3, -2))

    def forward(self, x: Tensor) -> Tensor:
        s = self.sn_in(x)
        q = self._heads(self.sn_q(self.q(s)))
        k = self._heads(self.sn_k(self.k(s)))
        v = self._heads(self.sn_v(self.v(s)))
        # K^T V: coincidence counts of K and V spikes (exact integers from the counts).
        kv = torch.matmul(_counts(k).transpose(-2, -1), _counts(v))
        # Q (K^T V): every binary spike of Q adds one row of kv (a synaptic op with weights kv).
        a = synaptic(lambda t: torch.matmul(t, kv), q) * self.scale
        a = a.transpose(-3, -2).flatten(-2)
        return self.proj(self.sn_attn(a))


class Block(nn.Module):
    """Membrane-residual block: x += Attn(SN(x)); x += BN(W2 SN(BN(W1 SN(x))))."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, nf: Any) -> None:
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.attn = SpikeDrivenAttention(dim, num_heads, nf)
        self.mlp = nn.Sequential(nf(), LinearBN(dim, hidden), nf(), LinearBN(hidden, dim))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(x)
        return x + self.mlp(x)


class SpikePointFormer(nn.Module):
    """Spike-driven PointFormer (spiking Point-BERT); see the module docstring.

    ``forward(batch) -> (B, out_dim)``; ``forward_features(batch) -> (tokens, centres)`` with token
    spikes ``(B, 1 + G, dim)`` (``(T, B, 1 + G, dim)`` for T > 1, a SpikeTrain in binary mode; token 0
    is cls) and the FPS centres ``(B, G, 3)``. ``.head`` is the Linear(2 * dim -> out_dim).
    """

    def __init__(
        self,
        in_channels: int = 6,
        out_dim: int = 40,
        T: int = 1,
        D: int = 4,
        neuron: str = "ilif",
        beta: float = 0.25,
        embed_dim: int = 384,
        depth: int = 12,
        num_heads: int = 6,
        mlp_ratio: float = 4.0,
        num_groups: int = 512,
        group_size: int = 32,
        num_points: int | None = 8192,
    ) -> None:
        super().__init__()
        if in_channels < 3:
            raise ValueError(f"SpikePointFormer needs >= 3 input channels (xyz first), got {in_channels}")
        self.in_channels, self.out_dim, self.T, self.D = in_channels, out_dim, T, D
        self.neuron, self.num_points = neuron, num_points
        self.num_groups, self.group_size, self.dim = num_groups, group_size, embed_dim

        def nf() -> nn.Module:
            return make_neuron(neuron, D=D, T=T, beta=beta)

        self.tokenizer = Tokenizer(in_channels, embed_dim, nf)
        self.pos_embed = nn.Sequential(LinearBN(3, 128), nf(), LinearBN(128, embed_dim))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.cls_pos = nn.Parameter(torch.randn(1, 1, embed_dim) * 0.02)
        self.blocks = nn.ModuleList(Block(embed_dim, num_heads, mlp_ratio, nf) for _ in range(depth))
        self.norm = FeatureBatchNorm(embed_dim)
        self.sn_out = nf()
        self.head = SLinear(2 * embed_dim, out_dim)
        self.embed_dim_in = 2 * embed_dim
        self.pretrained_cfg = default_contract(self).to_dict()

    def forward_features(self, batch: Any) -> tuple[Any, Tensor]:
        inp = unpack_inputs(batch, self.in_channels, self.T, self.head.weight.dtype)
        g = min(self.num_groups, inp.xyz.shape[1])
        centres, groups = group_points(inp.xyz, inp.feats, g, self.group_size, inp.step_mask)
        if self.T > 1 and not inp.steps:
            groups = groups.unsqueeze(0).expand(self.T, *groups.shape)
        tokens = self.tokenizer(groups)
        pos = self.pos_embed(centres.unsqueeze(0).expand(self.T, *centres.shape) if self.T > 1 else centres)
        lead = tokens.shape[:-2]
        cls = self.cls_token.expand(*lead, 1, self.dim)
        cls_pos = self.cls_pos.expand(*lead, 1, self.dim)
        x = torch.cat([cls, tokens], -2) + torch.cat([cls_pos, pos], -2)
        for blk in self.blocks:
            x = blk(x)
        return self.sn_out(self.norm(x)), centres

    def forward(self, batch: Any) -> Tensor:
        s, _ = self.forward_features(batch)
        cls = _spikes_map(s, lambda t: t[..., 0, :])
        mx = max_over(_spikes_map(s, lambda t: t[..., 1:, :]), -2)
        out = self.head(_cat(cls, mx))
        return out.mean(0) if self.T > 1 else out


@register_model(family="pointformer")
def spike_pointformer_l(**kw: Any) -> SpikePointFormer:
    """Spike-driven PointFormer-L: 512 x 32 groups, 12 blocks of width 384, 6 heads (~21.9 M, 40-way head)."""
    return SpikePointFormer(neuron="ilif", **kw)


@register_model(family="pointformer")
def spike_pointformer_l_ann(**kw: Any) -> SpikePointFormer:
    """The ANN twin of PointFormer-L (ReLU instead of I-LIF)."""
    return SpikePointFormer(neuron="relu", **kw)
