"""E-3DSNN spiking sparse 3D encoder ("Spike Voxel Coding" + "Spike Sparse Convolution"): docs/SPEC.md §3.

Stem (the only layer that sees real values): SubM3(in->E), BN, SN, SubM3(E->E), BN, SN, SubM3(E->E), BN.
Four stages, each SN -> SparseConv(k2, s2) -> BN, then ``depth`` blocks
``y = BN(SubM3(SN(x))) + x``; ``out = BN(SubM3(SN(BN(SubM3(SN(y)))))) + y`` (residuals into
membranes, only spikes between layers). Head: SN -> 1x1 sparse conv with bias (``.head``, applied per
site) -> mean over each sample's sites. Because the head is linear and followed only by a mean,
Rep-VLI can fold class embeddings into it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

import svl.sparse as sp
from svl.models._registry import (
    Contract,
    default_contract,
    register_model,
    register_pretrained,
    unpack_inputs,
)
from svl.spiking import make_neuron

__all__ = ["E3DSNN", "VARIANTS", "e3dsnn_h", "e3dsnn_l", "e3dsnn_s", "e3dsnn_t"]

# name: (stem E, stage channels, blocks per stage)
VARIANTS: dict[str, tuple[int, tuple[int, int, int, int], int]] = {
    "t": (16, (16, 32, 64, 128), 1),
    "s": (24, (24, 48, 96, 160), 1),
    "l": (64, (64, 128, 128, 256), 2),
    "h": (64, (96, 192, 288, 384), 2),
}


def _sparse() -> Any:

    return sp


def _add(a: Any, b: Any) -> Any:
    """Membrane residual on SparseTensors with the same sites."""
    return a.replace(features=a.features + b.features)


class ConvBN(nn.Module):
    """Sparse conv (no bias) -> SparseBatchNorm(eps=1e-3, momentum=0.01)."""

    def __init__(self, conv: nn.Module, c: int) -> None:
        super().__init__()
        sp = _sparse()
        self.conv = conv
        self.bn = sp.SparseBatchNorm(c, eps=1e-3, momentum=0.01)

    def forward(self, x: Any) -> Any:
        return self.bn(self.conv(x))


class SpikeBlock(nn.Module):
    """``y = BN(SubM3(SN(x))) + x``; ``out = BN(SubM3(SN(BN(SubM3(SN(y)))))) + y``."""

    def __init__(self, c: int, nf: Any) -> None:
        super().__init__()
        sp = _sparse()
        self.sn1, self.conv1 = nf(), ConvBN(sp.SubMConv3d(c, c, 3), c)
        self.sn2, self.conv2 = nf(), ConvBN(sp.SubMConv3d(c, c, 3), c)
        self.sn3, self.conv3 = nf(), ConvBN(sp.SubMConv3d(c, c, 3), c)

    def forward(self, x: Any) -> Any:
        y = _add(self.conv1(self.sn1(x)), x)
        return _add(self.conv3(self.sn3(self.conv2(self.sn2(y)))), y)


class Stage(nn.Module):
    """SN -> SparseConv(k2, s2) -> BN, then ``depth`` SpikeBlocks."""

    def __init__(self, cin: int, cout: int, depth: int, nf: Any) -> None:
        super().__init__()
        sp = _sparse()
        self.sn = nf()
        self.down = ConvBN(sp.SparseConv3d(cin, cout, kernel_size=2, stride=2), cout)
        self.blocks = nn.ModuleList(SpikeBlock(cout, nf) for _ in range(depth))

    def forward(self, x: Any) -> Any:
        x = self.down(self.sn(x))
        for b in self.blocks:
            x = b(x)
        return x


class E3DSNN(nn.Module):
    """E-3DSNN encoder. ``forward(batch) -> (B, out_dim)`` (mean over sites, averaged over T).

    ``forward_features(batch)`` returns the SparseTensor of final-stage spikes (stride 16 sites,
    features ``(N, C4)`` or ``(T, N, C4)``, a SpikeTrain in binary mode) that ``.head`` consumes.
    Points are voxelized at ``voxel_size`` unless the batch already carries ``.sparse``.
    """

    def __init__(
        self,
        in_channels: int = 6,
        out_dim: int = 40,
        T: int = 1,
        D: int = 4,
        neuron: str = "ilif",
        beta: float = 0.25,
        voxel_size: float = 0.02,
        stem_channels: int = 16,
        channels: Sequence[int] = (16, 32, 64, 128),
        depth: int = 1,
        num_points: int | None = 1024,
    ) -> None:
        super().__init__()
        sp = _sparse()
        if len(channels) != 4:
            raise ValueError(f"E-3DSNN has 4 stages, got channels {list(channels)}")
        if not voxel_size > 0:
            raise ValueError(f"voxel_size must be > 0, got {voxel_size}")
        self.in_channels, self.out_dim, self.T, self.D = in_channels, out_dim, T, D
        self.neuron, self.voxel_size, self.num_points = neuron, float(voxel_size), num_points
        E = stem_channels

        def nf() -> nn.Module:
            return make_neuron(neuron, D=D, T=T, beta=beta)

        self.stem = nn.ModuleList(
            [
                ConvBN(sp.SubMConv3d(in_channels, E, 3), E),
                nf(),
                ConvBN(sp.SubMConv3d(E, E, 3), E),
                nf(),
                ConvBN(sp.SubMConv3d(E, E, 3), E),
            ]
        )
        cins = [E, *channels[:-1]]
        self.stages = nn.ModuleList(Stage(a, b, depth, nf) for a, b in zip(cins, channels))
        self.sn_out = nf()
        self.head = sp.SparseLinear(channels[-1], out_dim, bias=True)
        self.embed_dim_in = channels[-1]
        self.pretrained_cfg = default_contract(self).to_dict()

    def voxelize(self, batch: Any) -> Any:
        """The batch's SparseTensor at stride 1 with ``(N, C)`` or ``(T, N, C)`` features."""
        sp = _sparse()
        inp = unpack_inputs(batch, self.in_channels, self.T, self.head.weight.dtype)
        if inp.sparse is not None:
            st = inp.sparse
            f = st.features
            if f.shape[-1] != self.in_channels:
                raise ValueError(f"batch.sparse has {f.shape[-1]} channels, model expects {self.in_channels}")
            if self.T > 1 and f.dim() == 2:
                st = st.replace(features=f.unsqueeze(0).expand(self.T, *f.shape).contiguous())
            return st
        xyz, feats = inp.xyz, inp.feats
        b, n = xyz.shape[:2]
        idx = torch.arange(b, device=xyz.device).repeat_interleave(n)
        if inp.steps:  # (T, B, N, C): every step on the sites of all steps' points (see _step_voxels)
            return self._step_voxels(xyz, feats, inp.step_mask, idx)
        st, _ = sp.voxelize(xyz.reshape(-1, 3), feats.reshape(b * n, -1), idx, self.voxel_size, batch_size=b)
        if self.T > 1:
            f = st.features
            st = st.replace(features=f.unsqueeze(0).expand(self.T, *f.shape).contiguous())
        return st

    def _step_voxels(self, xyz: Tensor, feats: Tensor, mask: Tensor | None, idx: Tensor) -> Any:
        """Per-step features on shared sites: the union of the voxels of every step's points.

        A step's input at a site is the mean over *its own* points there and zero where only other
        steps have points (a pixel that did not fire), so each step is its own sparse input while the
        neurons keep one membrane per site across steps. Without a mask every point counts at
        every step (the features then differ per step, the points do not).
        """
        sp = _sparse()
        t, b, n, c = feats.shape
        m = torch.ones(t, b, n, dtype=feats.dtype, device=feats.device) if mask is None else mask.to(feats)
        cols = torch.cat([feats * m[..., None], m[..., None]], -1)  # (T, B, N, C + 1)
        flat = cols.reshape(t, b * n, c + 1).permute(1, 0, 2).reshape(b * n, t * (c + 1))
        st, _ = sp.voxelize(xyz.reshape(-1, 3), flat, idx, self.voxel_size, batch_size=b)
        f = st.features.view(-1, t, c + 1).permute(1, 0, 2)  # (T, V, C + 1): means of f*m and of m
        share = f[..., c:]
        f = torch.where(share > 0, f[..., :c] / share.clamp_min(1e-12), torch.zeros_like(f[..., :c]))
        return st.replace(features=f.contiguous())

    def forward_features(self, batch: Any) -> Any:
        x = self.voxelize(batch)
        for m in self.stem:
            x = m(x)
        for s in self.stages:
            x = s(x)
        return self.sn_out(x)

    def forward_head(self, st: Any) -> Tensor:
        """Final-stage spikes (`forward_features`) -> (B, out_dim): the head, mean over sites and T."""
        out = _sparse().global_mean_pool(self.head(st))
        return out.mean(0) if self.T > 1 else out

    def forward(self, batch: Any) -> Tensor:
        return self.forward_head(self.forward_features(batch))


ENCODER_PREFIXES = ("stem.", "stages.")  # the encoder part every E-3DSNN-based model shares, by name


def build_e3dsnn(
    cls: type[nn.Module], variant: str, neuron: str, extra: Mapping[str, Any] | None = None, **kw: Any
) -> Any:
    """The one builder behind the E-3DSNN encoder, U-Net and detector: the variant's stem, stage
    channels and depth (`VARIANTS`), then the model's own defaults (`extra`), then the caller's `kw`."""
    E, ch, depth = VARIANTS[variant]
    cfg: dict[str, Any] = {"stem_channels": E, "channels": ch, "depth": depth, **dict(extra or {})}
    cfg.update(kw)
    return cls(neuron=neuron, **cfg)


def _build(variant: str, neuron: str, **kw: Any) -> E3DSNN:
    return build_e3dsnn(E3DSNN, variant, neuron, **kw)


@register_model(family="e3dsnn", voxel=True)
def e3dsnn_t(**kw: Any) -> E3DSNN:
    """E-3DSNN-T: stem 16, [16, 32, 64, 128], 1 block per stage (1.87 M with a 40-class head)."""
    return _build("t", "ilif", **kw)


@register_model(family="e3dsnn", voxel=True)
def e3dsnn_s(**kw: Any) -> E3DSNN:
    """E-3DSNN-S: stem 24, [24, 48, 96, 160], 1 block per stage (3.27 M with a 40-class head)."""
    return _build("s", "ilif", **kw)


@register_model(family="e3dsnn", voxel=True)
def e3dsnn_l(**kw: Any) -> E3DSNN:
    """E-3DSNN-L: stem 64, [64, 128, 128, 256], 2 blocks per stage (17.33 M with a 40-class head)."""
    return _build("l", "ilif", **kw)


@register_model(family="e3dsnn", voxel=True)
def e3dsnn_h(**kw: Any) -> E3DSNN:
    """E-3DSNN-H: stem 64, [96, 192, 288, 384], 2 blocks per stage (46.57 M with a 40-class head)."""
    return _build("h", "ilif", **kw)


@register_model(family="e3dsnn", voxel=True)
def e3dsnn_t_ann(**kw: Any) -> E3DSNN:
    """ANN twin of E-3DSNN-T (ReLU instead of I-LIF)."""
    return _build("t", "relu", **kw)


@register_model(family="e3dsnn", voxel=True)
def e3dsnn_s_ann(**kw: Any) -> E3DSNN:
    """ANN twin of E-3DSNN-S."""
    return _build("s", "relu", **kw)


@register_model(family="e3dsnn", voxel=True)
def e3dsnn_l_ann(**kw: Any) -> E3DSNN:
    """ANN twin of E-3DSNN-L."""
    return _build("l", "relu", **kw)


@register_model(family="e3dsnn", voxel=True)
def e3dsnn_h_ann(**kw: Any) -> E3DSNN:
    """ANN twin of E-3DSNN-H."""
    return _build("h", "relu", **kw)


# Pretrained weight files (looked up under cache_dir("models"); svl never downloads). The embedded
# default pretraining (ModelNet40 clouds, MiniLM text + EfficientNet-Lite0 image teachers) writes them.
_MN40 = Contract(
    gravity_axis="z",
    color="none",
    num_points=1024,
    voxel_size=0.02,
    T=1,
    D=4,
    teacher="minilm+efficientnet-lite0",
    embed_dim=384,
    normals=False,
)
_OPENSHAPE = Contract(
    gravity_axis="z",
    color="rgb01",
    num_points=10000,
    voxel_size=0.02,
    T=1,
    D=4,
    teacher="openclip:ViT-bigG-14",
    embed_dim=1280,
    normals=False,
)
for _v in VARIANTS:
    register_pretrained(
        f"e3dsnn_{_v}",
        "mn40_zsl_minilm",
        _MN40,
        {"out_dim": 384},
        "MTA pretraining on ModelNet40 clouds (xyz, colour 0.4), MiniLM + EfficientNet-Lite0 teachers",
    )
for _v in ("l", "h"):
    register_pretrained(
        f"e3dsnn_{_v}",
        "openshape_bigg",
        _OPENSHAPE,
        {"out_dim": 1280},
        "MTA pretraining on the OpenShape triplets (xyz + rgb in [0, 1], 10k points), ViT-bigG-14 teacher",
    )
