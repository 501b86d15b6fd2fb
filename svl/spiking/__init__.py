"""Spiking primitives: the I-LIF neuron, spike-driven (binary) mode, synaptic layers, spike accounting."""

from svl.spiking.layers import FeatureBatchNorm, SConv1d, SConv2d, SLinear, StepBatchNorm2d
from svl.spiking.neuron import (
    ILIF,
    ReLUNeuron,
    SpikeTrain,
    as_tensor,
    make_neuron,
    neurons,
    quantize,
    record_spikes,
    set_spike_mode,
    spike_stats,
    synaptic,
    untimed_modules,
)

__all__ = [
    "ILIF",
    "FeatureBatchNorm",
    "ReLUNeuron",
    "SConv1d",
    "SConv2d",
    "SLinear",
    "SpikeTrain",
    "StepBatchNorm2d",
    "as_tensor",
    "make_neuron",
    "neurons",
    "quantize",
    "record_spikes",
    "set_spike_mode",
    "spike_stats",
    "synaptic",
    "untimed_modules",
]
