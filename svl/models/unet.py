"""Spiking sparse U-Net for per-point semantic segmentation on the E-3DSNN encoder.

The encoder is E-3DSNN's stem and four stages under the same names (``stem.*``, ``stages.*``), so
a pretrained E-3DSNN checkpoint's encoder loads by name. The decoder mirrors it: from the deepest
stage up, SN -> SparseInverseConv3d(k2, s2) -> BN back onto the finer stage's own sites, the
encoder's membrane there added (membrane addition keeps only spikes between layers and no channel
growth, unlike concatenation), then one SpikeBlock. A per-site linear classifier on the stride-1
spikes gives voxel logits, which the point->voxel index of voxelization hands to every input point.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

import svl.sparse as sp
from svl.models._registry import default_contract, register_model, unpack_inputs
from svl.models.e3dsnn import E3DSNN, ENCODER_PREFIXES, ConvBN, SpikeBlock, _add, build_e3dsnn
from svl.spiking import make_neuron

__all__ = [
    "E3DSNNUNet",
    "UpStage",
    "e3dsnn_unet_l",
    "e3dsnn_unet_l_ann",
    "e3dsnn_unet_s",
    "e3dsnn_unet_s_ann",
    "e3dsnn_unet_t",
    "e3dsnn_unet_t_ann",
]


class UpStage(nn.Module):
    """SN -> SparseInverseConv3d(k2, s2) -> BN, + the encoder membrane at that scale, then a SpikeBlock."""

    def __init__(self, cin: int, cout: int, nf: Any) -> None:
        super().__init__()

        self.sn = nf()
        self.up = ConvBN(sp.SparseInverseConv3d(cin, cout, kernel_size=2, stride=2), cout)
        self.block = SpikeBlock(cout, nf)

    def forward(self, x: Any, skip: Any) -> Any:
        return self.block(_add(self.up(self.sn(x)), skip))


class E3DSNNUNet(nn.Module):
    """E-3DSNN encoder + spiking inverse-conv decoder. ``forward(batch) -> (B, N, num_classes)``.

    ``batch`` is a PointBatch or a (B, N, C) tensor; the points are always voxelized here at
    ``voxel_size`` (a precomputed ``batch.sparse`` is ignored: its point->voxel index is not kept).
    With T > 1 the logits are averaged over time.
    """

    def __init__(
        self,
        in_channels: int = 6,
        num_classes: int = 13,
        T: int = 1,
        D: int = 4,
        neuron: str = "ilif",
        beta: float = 0.25,
        voxel_size: float = 0.02,
        stem_channels: int = 16,
        channels: Sequence[int] = (16, 32, 64, 128),
        depth: int = 1,
        num_points: int | None = None,
    ) -> None:
        super().__init__()

        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        enc = E3DSNN(
            in_channels=in_channels, out_dim=1, T=T, D=D, neuron=neuron, beta=beta, voxel_size=voxel_size,
            stem_channels=stem_channels, channels=channels, depth=depth, num_points=num_points,
        )  # fmt: skip
        self.in_channels, self.num_classes, self.out_dim = in_channels, num_classes, num_classes
        self.T, self.D, self.neuron = T, D, neuron
        self.voxel_size, self.num_points = float(voxel_size), num_points
        # Same attribute names as E3DSNN so its checkpoints' stem.* / stages.* load by name.
        self.stem, self.stages = enc.stem, enc.stages

        def nf() -> nn.Module:
            return make_neuron(neuron, D=D, T=T, beta=beta)

        finer = [stem_channels, *channels[:-1]]  # channels of each stage's input (the skip)
        # ups[i] undoes stages[i]: channels[i] -> finer[i]; run deepest first.
        self.ups = nn.ModuleList(UpStage(c, f, nf) for c, f in zip(channels, finer))
        self.sn_out = nf()
        self.head = sp.SparseLinear(stem_channels, num_classes, bias=True)
        self.pretrained_cfg = default_contract(self).to_dict()

    def voxelize(self, batch: Any) -> tuple[Any, Tensor]:
        """(SparseTensor at stride 1 with (N, C) or (T, N, C) features, point2voxel (B * N,))."""

        inp = unpack_inputs(batch, self.in_channels, self.T, self.head.weight.dtype)
        xyz, feats = inp.xyz, inp.feats
        b, n = xyz.shape[:2]
        idx = torch.arange(b, device=xyz.device).repeat_interleave(n)
        if inp.steps:  # (T, B, N, C): per-step means on the union of all steps' voxels (as E3DSNN)
            t, c = feats.shape[0], feats.shape[-1]
            m = torch.ones(t, b, n, dtype=feats.dtype, device=feats.device)
            if inp.step_mask is not None:
                m = inp.step_mask.to(feats)
            cols = torch.cat([feats * m[..., None], m[..., None]], -1)
            flat = cols.reshape(t, b * n, c + 1).permute(1, 0, 2).reshape(b * n, t * (c + 1))
            st, p2v = sp.voxelize(xyz.reshape(-1, 3), flat, idx, self.voxel_size, batch_size=b)
            f = st.features.view(-1, t, c + 1).permute(1, 0, 2)
            share = f[..., c:]
            f = torch.where(share > 0, f[..., :c] / share.clamp_min(1e-12), torch.zeros_like(f[..., :c]))
            return st.replace(features=f.contiguous()), p2v
        st, p2v = sp.voxelize(
            xyz.reshape(-1, 3), feats.reshape(b * n, -1), idx, self.voxel_size, batch_size=b
        )
        if self.T > 1:
            f = st.features
            st = st.replace(features=f.unsqueeze(0).expand(self.T, *f.shape).contiguous())
        return st, p2v

    def forward_voxels(self, st: Any) -> Any:
        """Per-site logits (SparseTensor at stride 1, features (V, K) or (T, V, K)) of a stride-1 input."""
        x = st
        for m in self.stem:
            x = m(x)
        skips = []
        for s in self.stages:
            skips.append(x)
            x = s(x)
        for up, skip in zip(reversed(self.ups), reversed(skips)):
            x = up(x, skip)
        return self.head(self.sn_out(x))

    def forward(self, batch: Any) -> Tensor:
        st, p2v = self.voxelize(batch)
        logits = self.forward_voxels(st).features
        if logits.dim() == 3:  # (T, V, K): rate-coded output, average over time
            logits = logits.mean(0)
        b = st.batch_size
        return logits[p2v].view(b, -1, self.num_classes)


def _build(variant: str, neuron: str, **kw: Any) -> E3DSNNUNet:
    return build_e3dsnn(E3DSNNUNet, variant, neuron, **kw)


@register_model(family="e3dsnn_unet", voxel=True, encoder="e3dsnn_t", encoder_prefixes=ENCODER_PREFIXES)
def e3dsnn_unet_t(**kw: Any) -> E3DSNNUNet:
    """Spiking U-Net on E-3DSNN-T (stem 16, [16, 32, 64, 128], 1 block per stage)."""
    return _build("t", "ilif", **kw)


@register_model(family="e3dsnn_unet", voxel=True, encoder="e3dsnn_s", encoder_prefixes=ENCODER_PREFIXES)
def e3dsnn_unet_s(**kw: Any) -> E3DSNNUNet:
    """Spiking U-Net on E-3DSNN-S (stem 24, [24, 48, 96, 160], 1 block per stage)."""
    return _build("s", "ilif", **kw)


@register_model(family="e3dsnn_unet", voxel=True, encoder="e3dsnn_l", encoder_prefixes=ENCODER_PREFIXES)
def e3dsnn_unet_l(**kw: Any) -> E3DSNNUNet:
    """Spiking U-Net on E-3DSNN-L (stem 64, [64, 128, 128, 256], 2 blocks per stage)."""
    return _build("l", "ilif", **kw)


@register_model(family="e3dsnn_unet", voxel=True, encoder="e3dsnn_t_ann", encoder_prefixes=ENCODER_PREFIXES)
def e3dsnn_unet_t_ann(**kw: Any) -> E3DSNNUNet:
    """ANN twin of e3dsnn_unet_t (ReLU instead of I-LIF), for energy and accuracy baselines."""
    return _build("t", "relu", **kw)


@register_model(family="e3dsnn_unet", voxel=True, encoder="e3dsnn_s_ann", encoder_prefixes=ENCODER_PREFIXES)
def e3dsnn_unet_s_ann(**kw: Any) -> E3DSNNUNet:
    """ANN twin of e3dsnn_unet_s."""
    return _build("s", "relu", **kw)


@register_model(family="e3dsnn_unet", voxel=True, encoder="e3dsnn_l_ann", encoder_prefixes=ENCODER_PREFIXES)
def e3dsnn_unet_l_ann(**kw: Any) -> E3DSNNUNet:
    """ANN twin of e3dsnn_unet_l."""
    return _build("l", "relu", **kw)
