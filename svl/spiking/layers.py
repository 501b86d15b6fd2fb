"""Synaptic layers that accept real values, integer spikes or binary SpikeTrains.

They exist so that a spiking network switched to spike-driven mode needs no other change: the
layer applies its weight to each binary sub-step and adds the bias once (see `synaptic`).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from svl.spiking.neuron import SpikeTrain, synaptic


class SLinear(nn.Linear):
    """nn.Linear over the last dim, for any leading dims (time, sub-steps, tokens)."""

    def forward(self, x: Tensor | SpikeTrain) -> Tensor:
        return synaptic(lambda t: F.linear(t, self.weight), x, self.bias)


def _fold(fn, trailing: int):
    """Run a conv on inputs with extra leading dims by folding them into the batch dim.

    ``trailing`` counts the per-sample dims (C, L) or (C, H, W); everything before them is batch.
    """

    def run(t: Tensor) -> Tensor:
        lead = t.shape[:-trailing]
        y = fn(t.reshape(-1, *t.shape[-trailing:]))
        return y.reshape(*lead, *y.shape[1:])

    return run


class SConv1d(nn.Conv1d):
    """nn.Conv1d on (..., C, L) inputs; leading dims (time, sub-steps) are folded into the batch."""

    def forward(self, x: Tensor | SpikeTrain) -> Tensor:
        bias = None if self.bias is None else self.bias.view(-1, 1)
        return synaptic(_fold(lambda t: self._conv_forward(t, self.weight, None), 2), x, bias)


class SConv2d(nn.Conv2d):
    """nn.Conv2d on (..., C, H, W) inputs; leading dims (time, sub-steps) are folded into the batch."""

    def forward(self, x: Tensor | SpikeTrain) -> Tensor:
        bias = None if self.bias is None else self.bias.view(-1, 1, 1)
        return synaptic(_fold(lambda t: self._conv_forward(t, self.weight, None), 3), x, bias)


class FeatureBatchNorm(nn.BatchNorm1d):
    """BatchNorm over the last (channel) dim of a channel-last tensor with any leading dims."""

    def forward(self, x: Tensor) -> Tensor:
        if isinstance(x, SpikeTrain):
            raise TypeError("BatchNorm takes membrane values, not spikes")
        shape = x.shape
        return super().forward(x.reshape(-1, shape[-1])).reshape(shape)


class StepBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d on (..., C, H, W) inputs with leading time dims folded into the batch."""

    def forward(self, x: Tensor) -> Tensor:
        shape = x.shape
        return super().forward(x.reshape(-1, *shape[-3:])).reshape(shape)
