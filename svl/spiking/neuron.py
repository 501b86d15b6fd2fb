"""The I-LIF neuron (docs/SPEC.md §2): integer spikes for training, binary spikes for spike-driven inference.

Training emits integer spikes in {0..D} (one spike count per neuron and step); inference can expand
each integer spike into binary spikes over D virtual sub-steps so that every synaptic layer only adds
weights. Both modes must give the same network output, which is why the expansion lives in a value
type (`SpikeTrain`) that synaptic layers understand rather than in the layers themselves.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor, nn

MODES = ("integer", "binary")


class SpikeTrain:
    """Binary spikes over D virtual sub-steps: ``bits`` has shape (D, *shape) with values in {0, 1}.

    ``bits[d] = 1[s > d]`` for the integer spike ``s``; it is monotone in ``s``, so max pooling over
    sites commutes with the expansion and ``bits.sum(0)`` recovers ``s`` exactly.
    """

    __slots__ = ("bits",)

    def __init__(self, bits: Tensor) -> None:
        self.bits = bits

    @classmethod
    def from_counts(cls, spikes: Tensor, D: int) -> SpikeTrain:
        steps = torch.arange(D, device=spikes.device, dtype=spikes.dtype).view(-1, *([1] * spikes.dim()))
        # clamp(s - d, 0, 1) is exactly 1[s > d] for integer s and keeps a (straight-through) gradient.
        return cls((spikes.unsqueeze(0) - steps).clamp(0.0, 1.0))

    @property
    def D(self) -> int:
        return self.bits.shape[0]

    @property
    def shape(self) -> torch.Size:
        return self.bits.shape[1:]

    @property
    def device(self) -> torch.device:
        return self.bits.device

    @property
    def dtype(self) -> torch.dtype:
        return self.bits.dtype

    def count(self) -> Tensor:
        """The integer spike counts these binary spikes encode."""
        return self.bits.sum(0)

    def map(self, fn: Callable[[Tensor], Tensor]) -> SpikeTrain:
        """Apply a per-sub-step op that keeps spikes binary (indexing, max pooling, reshapes)."""
        return SpikeTrain(fn(self.bits))

    def __repr__(self) -> str:
        return f"SpikeTrain(D={self.D}, shape={tuple(self.shape)})"


def as_tensor(x: Tensor | SpikeTrain) -> Tensor:
    """Integer spike counts of a SpikeTrain, or the tensor itself."""
    return x.count() if isinstance(x, SpikeTrain) else x


def synaptic(fn: Callable[[Tensor], Tensor], x: Tensor | SpikeTrain, bias: Tensor | None = None) -> Tensor:
    """Apply a linear synaptic op ``fn`` (no bias) to real values, integer spikes or binary spikes.

    For a SpikeTrain, ``fn`` sees the binary sub-steps as an extra leading dim; the partial results are
    summed (accumulate-only work) and the bias is added once, which equals ``fn(counts) + bias``.
    """
    if isinstance(x, SpikeTrain):
        y = fn(x.bits).sum(0)
    else:
        y = fn(x)
    return y if bias is None else y + bias


class _STEQuantize(torch.autograd.Function):
    """s = round(clamp(u, 0, D)) with the straight-through gradient 1[0 < u < D]."""

    @staticmethod
    def forward(ctx: Any, u: Tensor, D: int) -> Tensor:
        ctx.save_for_backward(u)
        ctx.D = D
        return torch.floor(u.clamp(0.0, float(D)) + 0.5)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        (u,) = ctx.saved_tensors
        return grad * ((u > 0) & (u < ctx.D)).to(grad.dtype), None


def quantize(u: Tensor, D: int) -> Tensor:
    """Integer spike of membrane ``u`` (docs/SPEC.md §2), differentiable by straight-through estimation."""
    return _STEQuantize.apply(u, D)


def _features(x: Any) -> tuple[Tensor, Callable[[Any], Any]]:
    """Split a tensor or a SparseTensor-like object into (values, rebuild)."""
    if isinstance(x, Tensor):
        return x, lambda v: v
    if hasattr(x, "features") and hasattr(x, "replace"):
        return x.features, lambda v: x.replace(features=v)
    raise TypeError(f"a neuron takes a Tensor or a SparseTensor, got {type(x).__name__}")


class ILIF(nn.Module):
    """Integer leaky integrate-and-fire neuron with reset by subtraction.

    With ``T > 1`` the first dim of the input is time and the membrane carries over steps:
    ``u[t] = beta * (u[t-1] - s[t-1]) + x[t]`` with the reset term detached.
    """

    def __init__(self, D: int = 4, T: int = 1, beta: float = 0.25) -> None:
        super().__init__()
        if D < 1 or T < 1:
            raise ValueError(f"I-LIF needs D >= 1 and T >= 1, got D={D}, T={T}")
        self.D, self.T, self.beta = int(D), int(T), float(beta)
        self.mode = "integer"
        self.record = False
        self.spike_count: Tensor | None = None
        self.neuron_count = 0

    def extra_repr(self) -> str:
        return f"D={self.D}, T={self.T}, beta={self.beta}, mode={self.mode}"

    def spikes(self, u: Tensor) -> Tensor:
        """Integer spikes of the input currents ``u`` (time-major when T > 1)."""
        if self.T == 1:
            return quantize(u, self.D)
        if u.shape[0] != self.T:
            raise ValueError(f"I-LIF with T={self.T} expects time as the first dim, got {tuple(u.shape)}")
        out = []
        mem = torch.zeros_like(u[0])
        prev = torch.zeros_like(u[0])
        for t in range(self.T):
            mem = self.beta * (mem - prev.detach()) + u[t] if t else u[t]
            prev = quantize(mem, self.D)
            out.append(prev)
        return torch.stack(out)

    def forward(self, x: Any) -> Any:
        if isinstance(x, SpikeTrain) or isinstance(getattr(x, "features", None), SpikeTrain):
            raise TypeError("an I-LIF neuron takes membrane inputs, not spikes: add a synaptic layer first")
        u, rebuild = _features(x)
        s = self.spikes(u)
        if self.record:
            self.spike_count = s.detach().sum()
            self.neuron_count = s.numel()
        if self.mode == "binary":
            return rebuild(SpikeTrain.from_counts(s, self.D))
        return rebuild(s)


class ReLUNeuron(nn.Module):
    """The ANN twin's activation: ReLU on tensors and SparseTensor features, same call sites as ILIF."""

    def __init__(self, **_: Any) -> None:
        super().__init__()

    def forward(self, x: Any) -> Any:
        u, rebuild = _features(x)
        return rebuild(torch.relu(u))


def make_neuron(kind: str = "ilif", D: int = 4, T: int = 1, beta: float = 0.25) -> nn.Module:
    """Neuron factory so every model has an ANN twin: ``"ilif"`` (spiking) or ``"relu"`` (ANN)."""
    if kind == "ilif":
        return ILIF(D=D, T=T, beta=beta)
    if kind == "relu":
        return ReLUNeuron()
    raise ValueError(f"unknown neuron kind {kind!r}: use 'ilif' or 'relu'")


# The time axis, declared rather than guessed: with T > 1 every activation of a spiking network is
# time-major (T, B, ...) (the I-LIF convention) except where a model says otherwise. A model lists in
# ``untimed_inputs`` the submodules (names relative to itself) whose inputs carry no time axis: a
# direct-encoding stem run once before the repeat over T, a head on features averaged over T. Readers
# of activations (the energy meter) take the layout from here, never from a size that happens to
# equal T (a batch of T samples looks like T steps).
UNTIMED_INPUTS = "untimed_inputs"


def untimed_modules(model: nn.Module) -> set[int]:
    """ids of the modules (and everything inside them) that every ``untimed_inputs`` declaration in
    ``model``'s tree names; a name that does not resolve is an error, so a renamed layer is noticed."""
    out: set[int] = set()
    for owner in model.modules():
        for name in getattr(owner, UNTIMED_INPUTS, ()) or ():
            try:
                sub = owner.get_submodule(name)
            except AttributeError:
                raise ValueError(
                    f"{type(owner).__name__}.{UNTIMED_INPUTS} names {name!r}, which it does not have"
                ) from None
            out.update(id(m) for m in sub.modules())
    return out


def neurons(model: nn.Module) -> Iterator[tuple[str, ILIF]]:
    for name, m in model.named_modules():
        if isinstance(m, ILIF):
            yield name, m


def set_spike_mode(model: nn.Module, mode: str) -> nn.Module:
    """Switch every I-LIF neuron of a network between integer and spike-driven (binary) mode."""
    if mode not in MODES:
        raise ValueError(f"unknown spike mode {mode!r}: use one of {MODES}")
    for _, m in neurons(model):
        m.mode = mode
    return model


def record_spikes(model: nn.Module, on: bool = True) -> nn.Module:
    """Turn per-neuron spike accounting on or off (off by default; one sum per layer when on)."""
    for _, m in neurons(model):
        m.record = on
        if not on:
            m.spike_count, m.neuron_count = None, 0
    return model


def spike_stats(model: nn.Module) -> dict[str, dict[str, float]]:
    """Spikes, neurons x steps and firing rate (mean integer spike per neuron per step) per layer."""
    stats = {}
    for name, m in neurons(model):
        if m.spike_count is None:
            continue
        spikes = float(m.spike_count)
        stats[name] = {
            "spikes": spikes,
            "neurons": float(m.neuron_count),
            "rate": spikes / max(m.neuron_count, 1),
        }
    return stats
