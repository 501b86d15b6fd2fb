"""Spikformer: a 2D spiking vision transformer for images, the student of VL2Spike distillation.

Spikformer (Zhou et al., ICLR 2023) in its spike-driven form, built from the same parts as the 3D
models so one energy meter and one spike-mode switch serve both:

- SPS (spiking patch splitting): four ``SConv2d 3x3 -> BN -> [max-pool 3x3/2] -> neuron`` stages with
  widths ``embed_dim / 8, / 4, / 2, embed_dim``; ``log2(patch_size)`` pools sit at the last stages.
  The first conv reads the real-valued image (direct encoding: it runs once and its output is
  repeated over T, the one layer paid as MACs); every later conv reads spikes. Pooling acts on
  membranes (before the neuron), so it is membrane-side work and lets the last stage, which ends in
  a membrane, pool like the others.
  A relative position embedding ``BN(conv3x3(SN(x)))`` is added to that membrane.
- ``depth`` membrane-residual blocks with softmax-free spike-driven attention ``SN(Q (K^T V) s)``,
  reused from svl.models.pointformer (no LayerNorm, only BatchNorm).
- ``FeatureBatchNorm -> neuron`` gives output token spikes; their mean over tokens (a firing rate per
  channel, global average pooling), averaged over T, feeds ``.head``: a linear classifier or a
  :class:`PrototypeHead` (cosine logits against learnable class prototypes, what distillation aligns
  with the teacher's text embeddings).

Tensors are time-major ``(T, B, ...)`` when T > 1 (the I-LIF convention); the feature dict always
keeps a leading T dim so callers need no special case for T = 1.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from svl.models._registry import default_contract, register_model
from svl.models.pointformer import Block
from svl.spiking import FeatureBatchNorm, SConv2d, SLinear, SpikeTrain, StepBatchNorm2d, make_neuron

__all__ = ["PATCH_SIZES", "PrototypeHead", "Spikformer", "SpikingPatchSplit"]

PATCH_SIZES = (1, 2, 4, 8, 16)


def _max_pool(x: Tensor) -> Tensor:
    """3x3 / stride-2 max pooling of a membrane (..., C, H, W), leading time dims folded into the batch."""
    y = F.max_pool2d(x.reshape(-1, *x.shape[-3:]), 3, stride=2, padding=1)
    return y.reshape(*x.shape[:-3], *y.shape[-3:])


class _ConvBN(nn.Module):
    """SConv2d 3x3 (no bias: BN follows) -> BN [-> max-pool]: spikes (or the image) in, a membrane out."""

    def __init__(self, cin: int, cout: int, pool: bool) -> None:
        super().__init__()
        self.conv = SConv2d(cin, cout, 3, padding=1, bias=False)
        self.bn = StepBatchNorm2d(cout)
        self.pool = pool

    def extra_repr(self) -> str:
        return f"pool={self.pool}"

    def forward(self, x: Any) -> Tensor:
        y = self.bn(self.conv(x))
        return _max_pool(y) if self.pool else y


class SpikingPatchSplit(nn.Module):
    """Spikformer's SPS: a 4-stage spiking conv stem that downsamples by ``patch_size``, plus the RPE.

    Returns the token membranes as a map ``(..., embed_dim, H / patch, W / patch)``.
    """

    def __init__(self, in_channels: int, embed_dim: int, patch_size: int, nf: Any, T: int = 1) -> None:
        super().__init__()
        self.T = int(T)
        if patch_size not in PATCH_SIZES:
            raise ValueError(f"patch_size must be one of {PATCH_SIZES}, got {patch_size}")
        widths = [in_channels, embed_dim // 8, embed_dim // 4, embed_dim // 2, embed_dim]
        first_pool = 4 - int(math.log2(patch_size))  # the pools sit at the last stages
        self.stages = nn.ModuleList(_ConvBN(widths[i], widths[i + 1], pool=i >= first_pool) for i in range(4))
        # Neurons between stages only: the last stage's output stays a membrane (the RPE adds to it).
        self.neurons = nn.ModuleList(nf() for _ in range(3))
        self.rpe_sn = nf()
        self.rpe = _ConvBN(embed_dim, embed_dim, pool=False)

    def forward(self, x: Tensor) -> Tensor:
        # Direct encoding: the image is the same at every timestep, so the encoding conv (the one
        # layer that multiplies real values) runs once and its membrane input is repeated over T,
        # as Spikformer's energy model charges it (once, not T times).
        x = self.stages[0](x)
        if self.T > 1:
            x = x.unsqueeze(0).expand(self.T, *x.shape)
        for i, stage in enumerate(self.stages):
            if i:
                x = stage(x)
            if i < len(self.neurons):
                x = self.neurons[i](x)
        return x + self.rpe(self.rpe_sn(x))


class PrototypeHead(nn.Module):
    """Cosine classifier: ``exp(logit_scale) * normalize(W f) @ normalize(P)^T`` (CLIP-style logits).

    Class prototypes ``P`` (K, proto_dim) live in the projected space, so distillation can pull them
    towards the teacher's class text embeddings (through its own projection) while ``W`` maps the
    student's pooled spike rates into that space. The scale starts at 1 / 0.07 and is capped at 100.
    """

    def __init__(
        self, embed_dim: int, out_dim: int, proto_dim: int | None = None, max_scale: float = 100.0
    ) -> None:
        super().__init__()
        proto_dim = proto_dim or embed_dim
        self.in_features, self.out_features, self.proto_dim = embed_dim, out_dim, proto_dim
        self.max_scale = float(max_scale)
        self.proj = SLinear(embed_dim, proto_dim, bias=False)
        self.protos = nn.Parameter(torch.randn(out_dim, proto_dim) * proto_dim**-0.5)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    @property
    def prototypes(self) -> nn.Parameter:
        """The class prototypes P (K, proto_dim), unnormalised."""
        return self.protos

    def scale(self) -> Tensor:
        return self.logit_scale.exp().clamp(max=self.max_scale)

    def embed(self, f: Tensor) -> Tensor:
        """The unit-norm projection ``normalize(W f)`` (..., proto_dim) of pooled features ``f``."""
        return F.normalize(self.proj(f), dim=-1)

    def forward(self, f: Tensor) -> Tensor:
        return self.scale() * torch.matmul(self.embed(f), F.normalize(self.protos, dim=-1).t())


class Spikformer(nn.Module):
    """Spike-driven Spikformer for images; see the module docstring.

    ``forward(x) -> (B, out_dim)`` logits, equal to ``head(forward_features(x)["pooled"])``. ``x`` is a
    ``(B, C, H, W)`` float Tensor or an object with such an ``.images`` attribute; H and W must be
    multiples of ``patch_size`` (``img_size`` is the nominal size; other multiples work too).
    ``forward_features(x)`` returns a dict: ``spikes`` (T, B, N, C) output token spike counts,
    ``membranes`` (list of (T, B, N, C), the residual stream after each block), ``pooled`` (B, C),
    ``pooled_steps`` (T, B, C) and ``grid`` (H / patch, W / patch), with N = H W / patch^2.
    """

    # Inputs without a time axis when T > 1 (svl.spiking.untimed_modules): the encoding conv reads the
    # image once (direct encoding), the head reads features averaged over T.
    untimed_inputs = ("sps.stages.0", "head")

    def __init__(
        self,
        in_channels: int = 3,
        out_dim: int = 10,
        img_size: int = 32,
        patch_size: int = 4,
        embed_dim: int = 256,
        depth: int = 4,
        num_heads: int = 8,
        mlp_ratio: float = 4.0,
        T: int = 4,
        D: int = 4,
        beta: float = 0.25,
        neuron: str = "ilif",
        head: str = "linear",
        proto_dim: int | None = None,
    ) -> None:
        super().__init__()
        if embed_dim % 8 or embed_dim % num_heads:
            raise ValueError(
                f"embed_dim {embed_dim} must be divisible by 8 (SPS widths) and by num_heads {num_heads}"
            )
        if patch_size not in PATCH_SIZES:
            raise ValueError(f"patch_size must be one of {PATCH_SIZES}, got {patch_size}")
        if img_size < patch_size or img_size % patch_size:
            raise ValueError(
                f"image size {img_size} is not a positive multiple of the patch size {patch_size}"
            )
        if head not in ("linear", "prototype"):
            raise ValueError(f"unknown head {head!r}: use 'linear' or 'prototype'")
        self.in_channels, self.out_dim, self.T, self.D = in_channels, out_dim, T, D
        self.img_size, self.patch_size, self.dim, self.neuron = img_size, patch_size, embed_dim, neuron
        self.embed_dim = embed_dim

        def nf() -> nn.Module:
            return make_neuron(neuron, D=D, T=T, beta=beta)

        self.sps = SpikingPatchSplit(in_channels, embed_dim, patch_size, nf, T=T)
        self.blocks = nn.ModuleList(Block(embed_dim, num_heads, mlp_ratio, nf) for _ in range(depth))
        self.norm = FeatureBatchNorm(embed_dim)
        self.sn_out = nf()
        self.head: nn.Module = (
            SLinear(embed_dim, out_dim) if head == "linear" else PrototypeHead(embed_dim, out_dim, proto_dim)
        )
        self.embed_dim_in = embed_dim
        self.pretrained_cfg = default_contract(self).to_dict()

    def _images(self, x: Any) -> Tensor:
        """The checked image tensor (B, C, H, W), cast to the model's dtype."""
        img = getattr(x, "images", x)
        if not isinstance(img, Tensor) or img.dim() != 4:
            got = tuple(img.shape) if isinstance(img, Tensor) else type(img).__name__
            raise ValueError(f"Spikformer expects images (B, C, H, W) or an object with .images, got {got}")
        _, c, h, w = img.shape
        if c != self.in_channels:
            raise ValueError(
                f"Spikformer expects {self.in_channels} input channels, got {c} (input {tuple(img.shape)})"
            )
        p = self.patch_size
        if h < p or w < p or h % p or w % p:
            raise ValueError(
                f"image size {h}x{w} (input {tuple(img.shape)}) is not a multiple of the patch size {p}"
            )
        return img.to(self.sps.stages[0].conv.weight.dtype)  # repeated over T inside the stem

    def _steps(self, t: Tensor) -> Tensor:
        """A leading T dim, also for T = 1, for a uniform feature API."""
        return t if self.T > 1 else t.unsqueeze(0)

    def forward_features(self, x: Any) -> dict[str, Any]:
        fmap = self.sps(self._images(x))  # (..., C, H', W') membranes
        grid = (int(fmap.shape[-2]), int(fmap.shape[-1]))
        tokens = fmap.flatten(-2).transpose(-1, -2)  # (..., N, C)
        membranes = []
        for blk in self.blocks:
            tokens = blk(tokens)
            membranes.append(self._steps(tokens))
        s = self.sn_out(self.norm(tokens))
        spikes = self._steps(s.count() if isinstance(s, SpikeTrain) else s)
        pooled_steps = spikes.mean(-2)  # firing rate per channel: global average pooling over tokens
        return {
            "spikes": spikes,
            "membranes": membranes,
            "pooled": pooled_steps.mean(0),
            "pooled_steps": pooled_steps,
            "grid": grid,
        }

    def forward(self, x: Any) -> Tensor:
        return self.head(self.forward_features(x)["pooled"])


# ----------------------------------------------------------------------------- registered sizes
_IMAGENET = {"depth": 8, "img_size": 224, "patch_size": 16, "out_dim": 1000}
_SIZES: dict[str, dict[str, Any]] = {
    "t": {"embed_dim": 256, "depth": 4, "num_heads": 8, "img_size": 32, "patch_size": 4},
    "tiny": {"embed_dim": 128, "depth": 2, "num_heads": 4, "img_size": 8, "patch_size": 2},
    "s": {"embed_dim": 128, "depth": 2, "num_heads": 4, "img_size": 32, "patch_size": 4},
    "4_384": {"embed_dim": 384, "depth": 4, "num_heads": 12, "img_size": 32, "patch_size": 4},
    "8_384": {**_IMAGENET, "embed_dim": 384, "num_heads": 6},  # head width 64, as the paper's code
    "8_512": {**_IMAGENET, "embed_dim": 512, "num_heads": 8},
    "8_768": {**_IMAGENET, "embed_dim": 768, "num_heads": 12},
}


def _build(size: str, neuron: str, kw: dict[str, Any]) -> Spikformer:
    return Spikformer(neuron=neuron, **{**_SIZES[size], **kw})


@register_model(family="spikformer", inputs="images")
def spikformer_t(**kw: Any) -> Spikformer:
    """Spikformer-T (CPU size): 4 blocks x 256, 8 heads, 32 px, patch 4, T=4 (4.15 M, 10-way head)."""
    return _build("t", "ilif", kw)


@register_model(family="spikformer", inputs="images")
def spikformer_t_ann(**kw: Any) -> Spikformer:
    """The ANN twin of Spikformer-T (ReLU instead of I-LIF, same weight layout)."""
    return _build("t", "relu", kw)


@register_model(family="spikformer", inputs="images")
def spikformer_tiny(**kw: Any) -> Spikformer:
    """Spikformer-tiny for 8x8 digits and tests: 2 blocks x 128, 4 heads, patch 2, T=4 (0.64 M, 10-way)."""
    return _build("tiny", "ilif", kw)


@register_model(family="spikformer", inputs="images")
def spikformer_tiny_ann(**kw: Any) -> Spikformer:
    """The ANN twin of Spikformer-tiny."""
    return _build("tiny", "relu", kw)


@register_model(family="spikformer", inputs="images")
def spikformer_s(**kw: Any) -> Spikformer:
    """Spikformer-S, the benchmark student on 2 CPU cores: 2 blocks x 128, 4 heads, 32 px, patch 4, T=4."""
    return _build("s", "ilif", kw)


@register_model(family="spikformer", inputs="images")
def spikformer_s_ann(**kw: Any) -> Spikformer:
    """The ANN twin of Spikformer-S."""
    return _build("s", "relu", kw)


@register_model(family="spikformer", inputs="images")
def spikformer_4_384(**kw: Any) -> Spikformer:
    """Spikformer-4-384 (CIFAR size of the paper): 4 x 384, 12 heads, 32 px, patch 4 (9.31 M, 10-way)."""
    return _build("4_384", "ilif", kw)


@register_model(family="spikformer", inputs="images")
def spikformer_4_384_ann(**kw: Any) -> Spikformer:
    """The ANN twin of Spikformer-4-384."""
    return _build("4_384", "relu", kw)


@register_model(family="spikformer", inputs="images")
def spikformer_8_384(**kw: Any) -> Spikformer:
    """Spikformer-8-384 (ImageNet size): 8 x 384, 6 heads, 224 px, patch 16 (16.8 M, 1000-way)."""
    return _build("8_384", "ilif", kw)


@register_model(family="spikformer", inputs="images")
def spikformer_8_384_ann(**kw: Any) -> Spikformer:
    """The ANN twin of Spikformer-8-384."""
    return _build("8_384", "relu", kw)


@register_model(family="spikformer", inputs="images")
def spikformer_8_512(**kw: Any) -> Spikformer:
    """Spikformer-8-512 (ImageNet size): 8 x 512, 8 heads, 224 px, patch 16 (29.7 M, 1000-way)."""
    return _build("8_512", "ilif", kw)


@register_model(family="spikformer", inputs="images")
def spikformer_8_512_ann(**kw: Any) -> Spikformer:
    """The ANN twin of Spikformer-8-512."""
    return _build("8_512", "relu", kw)


@register_model(family="spikformer", inputs="images")
def spikformer_8_768(**kw: Any) -> Spikformer:
    """Spikformer-8-768 (ImageNet size): 8 x 768, 12 heads, 224 px, patch 16 (66.3 M, 1000-way)."""
    return _build("8_768", "ilif", kw)


@register_model(family="spikformer", inputs="images")
def spikformer_8_768_ann(**kw: Any) -> Spikformer:
    """The ANN twin of Spikformer-8-768."""
    return _build("8_768", "relu", kw)
