"""Spike PointNet: a point-wise spiking PointNet (shared MLPs to 1024, max pooling), ~3.5 M with its head.

The backbone for event streams (docs/SPEC.md §8: a window of events becomes an (x, y, t) point cloud).
It follows PointNet with both T-Nets (input 3x3 and feature 64x64 transforms), every ReLU replaced
by an I-LIF neuron. Only spikes travel between layers: the feature transform is folded into the
next layer's weight (``x @ (A @ W2^T)``), so it stays one synaptic, addition-only op on spikes;
max pooling acts on spikes (max commutes with the binary expansion); residual-free throughout.
Layers are channel-last (``(..., N, C)``) so leading time / sub-step dims pass through untouched.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from svl.models._registry import default_contract, register_model, unpack_inputs
from svl.spiking import FeatureBatchNorm, SLinear, SpikeTrain, make_neuron, synaptic

__all__ = ["SpikePointNet", "spike_pointnet", "spike_pointnet_ann"]


def max_over(x: Tensor | SpikeTrain, dim: int) -> Tensor | SpikeTrain:
    """Max over ``dim`` of real values or spikes (on a SpikeTrain the max is taken per binary sub-step)."""
    if isinstance(x, SpikeTrain):
        return x.map(lambda b: b.amax(dim=dim if dim < 0 else dim + 1))
    return x.amax(dim=dim)


class LinearBN(nn.Module):
    """Linear -> BatchNorm (a membrane input for the next neuron); bias-free since BN follows."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.fc = SLinear(cin, cout, bias=False)
        self.bn = FeatureBatchNorm(cout)

    def forward(self, x: Tensor | SpikeTrain) -> Tensor:
        return self.bn(self.fc(x))


class SpikingMLP(nn.Module):
    """A stack of (Linear, BN, neuron) on channel-last inputs; the last neuron can be left out."""

    def __init__(self, dims: list[int], neuron: Any, last_neuron: bool = True) -> None:
        super().__init__()
        self.layers = nn.ModuleList(LinearBN(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.neurons = nn.ModuleList(neuron() for _ in range(len(dims) - 1 - (0 if last_neuron else 1)))

    def forward(self, x: Any) -> Any:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.neurons):
                x = self.neurons[i](x)
        return x


class TNet(nn.Module):
    """PointNet's T-Net: predicts a k x k transform (identity-initialised) from spikes or real points."""

    def __init__(self, cin: int, k: int, neuron: Any) -> None:
        super().__init__()
        self.k = k
        self.point_mlp = SpikingMLP([cin, 64, 128, 1024], neuron)
        self.fc = SpikingMLP([1024, 512, 256], neuron)
        self.out = SLinear(256, k * k)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: Any) -> Tensor:
        g = max_over(self.point_mlp(x), -2)
        m = self.out(self.fc(g))
        eye = torch.eye(self.k, dtype=m.dtype, device=m.device)
        return m.view(*m.shape[:-1], self.k, self.k) + eye


class SpikePointNet(nn.Module):
    """Spiking PointNet: per-point shared MLPs to 1024 with I-LIF neurons, max pooling, MLP head.

    ``forward(batch) -> (B, out_dim)`` (averaged over T); ``forward_features(batch)`` returns the
    per-point 1024-d spikes (``(B, N, 1024)``, or ``(T, B, N, 1024)``; a SpikeTrain in binary mode)
    aligned with the input points. ``.head`` is the last Linear (256 -> out_dim).
    """

    def __init__(
        self,
        in_channels: int = 6,
        out_dim: int = 40,
        T: int = 1,
        D: int = 4,
        neuron: str = "ilif",
        beta: float = 0.25,
        num_points: int | None = 1024,
        feature_transform: bool = True,
    ) -> None:
        super().__init__()
        if in_channels < 3:
            raise ValueError(f"SpikePointNet needs >= 3 input channels (xyz first), got {in_channels}")
        self.in_channels, self.out_dim, self.T, self.D = in_channels, out_dim, T, D
        self.neuron, self.num_points = neuron, num_points

        def nf() -> nn.Module:
            return make_neuron(neuron, D=D, T=T, beta=beta)

        self.stn = TNet(in_channels, 3, nf)
        self.conv1 = LinearBN(in_channels, 64)
        self.sn1 = nf()
        self.fstn = TNet(64, 64, nf) if feature_transform else None
        self.conv2 = LinearBN(64, 128)
        self.sn2 = nf()
        self.conv3 = LinearBN(128, 1024)
        self.sn3 = nf()
        self.fc = SpikingMLP([1024, 512, 256], nf)
        self.head = SLinear(256, out_dim)
        self.embed_dim_in = 256
        self.pretrained_cfg = default_contract(self).to_dict()

    def _inputs(self, batch: Any) -> Tensor:
        inp = unpack_inputs(batch, self.in_channels, self.T, self.head.weight.dtype)
        x = inp.feats
        if self.T > 1 and not inp.steps:
            x = x.unsqueeze(0).expand(self.T, *x.shape)
        return x

    def forward_features(self, batch: Any) -> Any:
        x = self._inputs(batch)
        trans = self.stn(x)  # (..., B, 3, 3): rotates xyz, leaves colour / normals alone
        xyz = torch.matmul(x[..., :3], trans)
        x = torch.cat([xyz, x[..., 3:]], -1)
        s = self.sn1(self.conv1(x))
        if self.fstn is not None:
            a = self.fstn(s)  # (..., B, 64, 64)
            # Fold the feature transform into conv2: spikes @ (A @ W2^T) is one synaptic op.
            w = torch.matmul(a, self.conv2.fc.weight.t())
            h = self.conv2.bn(synaptic(lambda t: torch.matmul(t, w), s))
        else:
            h = self.conv2(s)
        s = self.sn2(h)
        return self.sn3(self.conv3(s))

    def forward(self, batch: Any) -> Tensor:
        g = max_over(self.forward_features(batch), -2)
        out = self.head(self.fc(g))
        return out.mean(0) if self.T > 1 else out


def _pn(neuron: str, **kw: Any) -> SpikePointNet:
    return SpikePointNet(neuron=neuron, **kw)


@register_model(family="spike_pointnet")
def spike_pointnet(**kw: Any) -> SpikePointNet:
    """Spike PointNet (I-LIF), about 3.5 M parameters with a 40-class head."""
    return _pn("ilif", **kw)


@register_model(family="spike_pointnet")
def spike_pointnet_ann(**kw: Any) -> SpikePointNet:
    """The ANN twin of Spike PointNet (ReLU instead of I-LIF, same weights layout)."""
    return _pn("relu", **kw)
