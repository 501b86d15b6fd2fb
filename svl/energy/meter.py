"""Energy meter: per-layer FLOPs, synaptic operations and energy from one real forward pass (docs/SPEC.md §7).

(One room of ~600 lines on purpose: the hooks, the per-layer counting rules and their SPEC
conventions must be read together to check one number.)

Published SNN energy figures are hard to reproduce because counters guess: they assume dense layers,
a fixed firing rate or random inputs. This meter instead hooks every synaptic layer of a network,
reads what actually flowed into it (spike counts per site and channel, the real sparse kernel map)
and counts, per layer:

- MACs (one step's ANN-equivalent multiply-accumulates): ``pairs * C_in * C_out``, where ``pairs`` are
  the active (input site, output site) pairs of the kernel map for sparse convs, the rows for a linear
  layer and output positions x kernel taps for a dense conv (``C_in`` per group); FLOPs
  ``2 * MACs - N_out`` (a multiply and an add per MAC, one add fewer per output).
- Synaptic events (accumulates actually triggered by spikes, ACs): every integer spike ``s`` at input
  (site, channel) adds the ``C_out`` weights it is wired to once per (input, output) pair it takes part
  in, ``s`` times (an integer spike = ``s`` binary spikes over D sub-steps). In spike-driven (binary)
  mode the meter counts the binary events themselves, which gives the same number.

Which inputs are spikes is decided by provenance, never by value: the outputs of I-LIF neurons (and
SpikeTrains) are tagged during the forward pass, and so is whatever is derived from them by ops that
only move, select or max-pool values (reshapes, indexing, concatenation of spikes, max pooling, the
sum of a SpikeTrain's binary sub-steps). An identity matrix or integer voxel features are not spikes.

Both sides are priced in one unit (``unit``):

- ``"flops"`` (default, docs/SPEC.md §7, the E-3DSNN / Spike-driven Transformer convention): the ANN
  pays ``E_MAC * FLOPs``; the SNN pays ``E_MAC * FLOPs`` (every step) for layers whose input is real
  valued and ``E_AC * SOPs`` for spiking layers, with ``SOP = rate x FLOPs x T`` and the rate measured
  as synaptic events / (MACs x T), i.e. ``SOPs = events * FLOPs / MACs``.
- ``"macs"`` (per synaptic event): the ANN pays ``E_MAC * MACs``, the SNN ``E_MAC * MACs`` for real-valued
  input and ``E_AC`` per synaptic event. Every figure is about half the ``"flops"`` one.

At the same firing rate both units give the same SNN / ANN ratio. (Until issue 13 the default charged
the ANN per FLOP but the SNN per synaptic event, which flattered the SNN about 2x.)

Membrane-side work (BatchNorm, residual additions to membranes, pooling) is not counted, as in the
E-3DSNN / Spike-driven Transformer convention: BN folds into the weights at inference.

The time axis is declared, not guessed: with T > 1 a layer's input leads with T (the I-LIF
convention) unless the model lists the layer in ``untimed_inputs`` (svl.spiking.untimed_modules); an
input that should lead with T and does not is an error. (Until issue 27 a leading size equal to T
was taken for time, so a batch of T images was split as T steps.) Layers fed real values are charged
once per step they run, which makes two stem conventions: Spikformer's encoding conv reads the image
once and its output is repeated over T (charged once, as Spikformer's energy model does), while
E-3DSNN repeats the voxelized cloud over T before its stem (charged T times; event input differs per
step, so there it must run every step). The report's notes say which layers were charged which way.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode
from torch.utils.weak import WeakIdKeyDictionary

from svl.energy.report import UNITS, EnergyReport, EnergyTable, LayerEnergy
from svl.spiking.neuron import ILIF, SpikeTrain, untimed_modules

__all__ = ["CONVENTIONS", "UNITS", "measure_energy"]

# How layers are counted: our exact count, or the E-3DSNN release script's (as printed / as described).
CONVENTIONS = ("exact", "e3dsnn-release", "e3dsnn-release-intended")

# Ops that only move, select or max-pool values: applied to spikes (every floating-point tensor
# argument tagged), their floating-point outputs are spikes of the same kind.
_KEEPS_SPIKES = frozenset(
    {
        "view", "reshape", "flatten", "unflatten", "transpose", "swapaxes", "swapdims", "permute",
        "movedim", "moveaxis", "t", "unsqueeze", "squeeze", "expand", "contiguous", "clone", "detach",
        "to", "float", "double", "__getitem__", "index_select", "gather", "take_along_dim", "narrow",
        "select", "repeat", "repeat_interleave", "tile", "flip", "roll", "split", "chunk", "unbind",
        "tensor_split", "cat", "concat", "concatenate", "stack", "amax", "max", "maximum",
        "max_pool1d", "max_pool2d", "max_pool3d", "adaptive_max_pool1d", "adaptive_max_pool2d",
        "adaptive_max_pool3d", "max_pool1d_with_indices", "max_pool2d_with_indices",
        "max_pool3d_with_indices",
    }
)  # fmt: skip
_KEEPS_SPIKES_PROPS = {Tensor.T.__get__, Tensor.mT.__get__}
_MATMULS = {torch.matmul, torch.bmm, torch.mm, Tensor.matmul, Tensor.__matmul__, Tensor.bmm, Tensor.mm}


# ----------------------------------------------------------------------------- input inspection
def _is_spike_train(x: Any) -> bool:
    return isinstance(x, SpikeTrain) or (not isinstance(x, Tensor) and hasattr(x, "bits"))


def _values(x: Any) -> Tensor:
    return x.bits if _is_spike_train(x) else x


def _counts(x: Any) -> Tensor:
    """Spike counts per neuron: a SpikeTrain's binary events summed over its D sub-steps, else the tensor."""
    return x.bits.sum(0) if _is_spike_train(x) else x


def _float_tensors(items: Iterable[Any]) -> list[Tensor]:
    """Floating-point tensors among op arguments (one level of lists / tuples): the data, not indices."""
    out = []
    for a in items:
        for t in a if isinstance(a, list | tuple) else (a,):
            if isinstance(t, Tensor) and t.is_floating_point():
                out.append(t)
    return out


def _sum_dim0(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """Whether a ``sum`` call reduces exactly dim 0 (the D sub-steps of a SpikeTrain's bits)."""
    dim = args[1] if len(args) > 1 else kwargs.get("dim")
    keep = (args[2] if len(args) > 2 else kwargs.get("keepdim")) or False
    return not keep and (dim == 0 or (isinstance(dim, tuple | list) and list(dim) == [0]))


def _sample_of_rows(body: tuple[int, ...], batch_size: int) -> Tensor | None:
    """Sample index per row of a batch-major ``body`` shape, or None when rows are not split by sample."""
    if not body or body[0] % batch_size:
        return None
    rows = math.prod(body)
    return (torch.arange(body[0]) // (body[0] // batch_size)).repeat_interleave(rows // body[0])


def _by_sample(values: Tensor, sample: Tensor | None, batch_size: int) -> list[float]:
    """Sum ``values`` (one per row) by sample; rows shared by all samples are split evenly."""
    v = values.detach().double().cpu()
    if sample is None:
        return [float(v.sum()) / batch_size] * batch_size
    return torch.zeros(batch_size, dtype=torch.float64).index_add_(0, sample.cpu(), v).tolist()


def _step_lanes(
    lead: tuple[int, ...], T: int, timed: bool = True, where: str = ""
) -> tuple[int, tuple[int, ...]]:
    """Split leading dims into (steps, per-step dims) by the declared layout, never by sizes: with
    T > 1 time leads unless the layer's input is declared untimed (svl.spiking.untimed_modules)."""
    if T <= 1 or not timed:
        return 1, lead
    if not lead or lead[0] != T:
        raise ValueError(
            f"{where or 'a layer'}: the network runs T={T} steps, so its input should lead with time, "
            f"got leading dims {lead}; a model whose layer reads an input without a time axis lists it "
            "in `untimed_inputs` (svl.spiking.untimed_modules)"
        )
    return T, lead[1:]


def _lead(x: Any, trailing: int) -> tuple[int, ...]:
    """Leading dims of an input before its ``trailing`` per-item dims, without a SpikeTrain's D."""
    vals = _values(x)
    lead = tuple(vals.shape[: vals.dim() - trailing])
    return lead[1:] if _is_spike_train(x) else lead


def _row(
    name: str, type_: str, kind: str, c_in: int, c_out: int, steps: int, spiking: bool, spikes: float,
    in_ps: list[float], out_ps: list[float], pairs_ps: list[float], macs_ps: list[float],
    events_ps: list[float], spikes_pt: list[float] | None = None, events_pt: list[float] | None = None,
) -> LayerEnergy:  # fmt: skip
    """A layer row from MACs and synaptic events: FLOPs = 2 MACs - outputs, SOPs = events x FLOPs / MACs."""
    flops_ps = [2.0 * m - n for m, n in zip(macs_ps, out_ps)]
    sops_ps = [e * f / m if m > 0 else 0.0 for e, f, m in zip(events_ps, flops_ps, macs_ps)]
    return LayerEnergy(
        name, type_, kind, c_in, c_out, steps, spiking, spikes, in_ps, out_ps, pairs_ps, flops_ps,
        sops_ps, macs_ps, events_ps,
        spikes_pt=spikes_pt or [0.0] * steps, events_pt=events_pt or [0.0] * steps,
    )  # fmt: skip


def _per_step(t: Tensor, steps: int) -> list[float]:
    """Sums of ``t`` per timestep (time leads when steps > 1)."""
    t = t.detach().double()
    if steps > 1 and (t.dim() == 0 or t.shape[0] != steps):
        return [float(t.sum()) / steps] * steps  # a broadcast operand: the same at every step
    return t.reshape(steps, -1).sum(1).tolist()


# ----------------------------------------------------------------------------- the meter
class _Meter:
    """Forward hooks that turn one forward pass into LayerEnergy rows, and the spike provenance tags."""

    def __init__(self, model: nn.Module, batch_size: int) -> None:
        self.model = model
        self.batch_size = batch_size
        self.neurons = [m for m in model.modules() if isinstance(m, ILIF)]
        self.T = max((m.T for m in self.neurons), default=1)
        self.untimed = untimed_modules(model)  # layers whose input has no time axis (declared)
        # Tensors known to be spikes: "spikes" (integer counts) or "bits" (a SpikeTrain's binary
        # sub-steps, D leading). Weak keys: a freed tensor's id can be reused without being mistaken.
        self.tags: WeakIdKeyDictionary = WeakIdKeyDictionary()
        self.rows: dict[str, LayerEnergy] = {}
        self.handles: list[Any] = []
        self.stack: list[list[Any]] = []  # [name, matmuls seen, id] of the modules now running
        self.synaptic: set[int] = set()

    def lanes(
        self, lead: tuple[int, ...], module: nn.Module | None, where: str
    ) -> tuple[int, tuple[int, ...]]:
        """(steps, per-step dims) of an input to ``module`` (None: a functional op of the running modules)."""
        ids = [e[2] for e in self.stack] + ([id(module)] if module is not None else [])
        return _step_lanes(lead, self.T, not any(i in self.untimed for i in ids), where)

    def in_synaptic(self) -> bool:
        """Whether a hooked synaptic layer is running (its own matmuls are already counted)."""
        return any(entry[2] in self.synaptic for entry in self.stack)

    # -- provenance
    def kind(self, x: Any) -> str | None:
        """``"spikes"``, ``"bits"`` or None (real values) for a tensor; SpikeTrains are spikes by type."""
        if _is_spike_train(x):
            return "spikes"
        return self.tags.get(x) if isinstance(x, Tensor) else None

    def is_spiking(self, x: Any) -> bool:
        """Whether a synaptic input is spikes: a SpikeTrain, a neuron's output, or derived from one."""
        return self.kind(x) is not None

    def tag(self, x: Any, kind: str) -> None:
        if isinstance(x, Tensor) and x.is_floating_point():
            self.tags[x] = kind
        elif isinstance(x, list | tuple):
            for t in x:
                self.tag(t, kind)

    def _on_neuron(self, module: nn.Module, args: Any, out: Any) -> None:
        feats = getattr(out, "features", out)
        if _is_spike_train(feats):
            self.tag(feats.bits, "bits")
        else:
            self.tag(feats, "spikes")

    def propagate(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> None:
        """Tag ``out`` as spikes when ``func`` only moves / max-pools spikes, or sums a SpikeTrain's bits."""
        name = getattr(func, "__name__", "")
        if name not in _KEEPS_SPIKES and name != "sum" and func not in _KEEPS_SPIKES_PROPS:
            return
        data = _float_tensors([*args, *kwargs.values()])
        kinds = {self.tags.get(t) for t in data}
        if len(kinds) != 1 or None in kinds:
            return
        (kind,) = kinds
        if name == "sum":
            if kind == "bits" and _sum_dim0(args, kwargs):
                self.tag(out, "spikes")  # SpikeTrain.count(): the integer spikes
            return
        self.tag(out, kind)

    def as_input(self, x: Any) -> Any:
        """A tensor of binary sub-steps reaching a layer is read as the SpikeTrain it came from."""
        return SpikeTrain(x) if isinstance(x, Tensor) and self.tags.get(x) == "bits" else x

    # -- rows
    def add(self, row: LayerEnergy) -> None:
        old = self.rows.get(row.name)
        if old is None:
            self.rows[row.name] = row
            return
        # A module called several times in one forward: accumulate.
        for f in (
            "in_sites_ps", "out_sites_ps", "pairs_ps", "flops_ps", "sops_ps", "macs_ps", "events_ps",
            "spikes_pt", "events_pt",
        ):  # fmt: skip
            setattr(old, f, [a + b for a, b in zip(getattr(old, f), getattr(row, f))])
        old.spikes += row.spikes
        old.spiking = old.spiking and row.spiking
        old.calls += 1

    def _on_sparse(self, name: str, module: nn.Module, args: Any, out: Any) -> None:
        st = args[0]
        kmap = module.kernel_map(st)
        feats = self.as_input(st.features)
        spiking = self.is_spiking(feats)
        steps, rest = self.lanes(_lead(feats, 2), module, name)
        lanes = math.prod(rest)  # non-time lanes repeat the same sites
        c_in, c_out = int(module.weight.shape[1]), int(module.weight.shape[2])
        B, n_in = self.batch_size, kmap.n_in
        b_in = st.coords[:, 0]
        b_out = out.coords[:, 0] if hasattr(out, "coords") else b_in
        # How many (input, output) pairs each input site takes part in, from the real kernel map.
        idx = [t for t in kmap.in_idx if t.numel()]
        mult = torch.bincount(torch.cat(idx), minlength=n_in) if idx else torch.zeros(n_in, dtype=torch.long)
        in_ps = [v * lanes for v in _by_sample(torch.ones(n_in), b_in, B)]
        out_ps = [v * lanes for v in _by_sample(torch.ones(b_out.numel()), b_out, B)]
        pairs_ps = [v * lanes for v in _by_sample(mult, b_in, B)]
        spikes, events_ps, spikes_pt, events_pt = 0.0, [0.0] * B, None, None
        if spiking:
            per_t = _counts(feats).detach().reshape(steps, -1, n_in, c_in).sum((1, 3)).double()  # (T, n_in)
            site = per_t.sum(0)
            spikes = float(site.sum())
            events_ps = [v * c_out for v in _by_sample(site * mult.double(), b_in, B)]
            spikes_pt = per_t.sum(1).tolist()
            events_pt = ((per_t * mult.double()).sum(1) * c_out).tolist()
        self.add(
            _row(name, type(module).__name__, "sparse", c_in, c_out, steps, spiking, spikes,
                 in_ps, out_ps, pairs_ps, [p * c_in * c_out for p in pairs_ps], events_ps,
                 spikes_pt, events_pt)
        )  # fmt: skip

    def _on_linear(self, name: str, module: nn.Linear, args: Any, out: Any) -> None:
        x = self.as_input(args[0])
        spiking = self.is_spiking(x)
        steps, body = self.lanes(_lead(x, 1), module, name)
        rows = math.prod(body)
        c_in, c_out, B = module.in_features, module.out_features, self.batch_size
        sample = _sample_of_rows(body, B)
        rows_ps = _by_sample(torch.ones(rows), sample, B)
        spikes, events_ps, spikes_pt, events_pt = 0.0, [0.0] * B, None, None
        if spiking:
            per_t = _counts(x).detach().reshape(steps, rows, c_in).sum(2).double()  # (T, rows)
            c = per_t.sum(0)
            spikes = float(c.sum())
            events_ps = [v * c_out for v in _by_sample(c, sample, B)]
            spikes_pt = per_t.sum(1).tolist()
            events_pt = [v * c_out for v in spikes_pt]
        self.add(
            _row(name, type(module).__name__, "linear", c_in, c_out, steps, spiking, spikes,
                 rows_ps, list(rows_ps), list(rows_ps), [r * c_in * c_out for r in rows_ps], events_ps,
                 spikes_pt, events_pt)
        )  # fmt: skip

    def _on_conv(self, name: str, module: nn.modules.conv._ConvNd, args: Any, out: Any) -> None:
        x = self.as_input(args[0])
        nd = len(module.kernel_size)
        if module.padding_mode != "zeros":
            raise ValueError(
                f"{name}: the energy meter supports zero padding only, got {module.padding_mode!r}"
            )
        spiking = self.is_spiking(x)
        vals = _values(x)
        steps, body = self.lanes(_lead(x, nd + 1), module, name)
        images = math.prod(body)
        c_in, c_out, g, B = module.in_channels, module.out_channels, module.groups, self.batch_size
        out_pos = math.prod(_values(out).shape[-nd:])
        in_pos = math.prod(vals.shape[-nd:])
        taps = math.prod(module.kernel_size)
        sample = _sample_of_rows(body, B)
        img_ps = _by_sample(torch.ones(images), sample, B)
        # Standard dense-conv count: every output position sees all taps (padding included).
        macs_ps = [out_pos * taps * (c_in // g) * c_out * n for n in img_ps]
        spikes, events_ps, spikes_pt, events_pt = 0.0, [0.0] * B, None, None
        if spiking:
            c = _counts(x).detach().reshape(steps * images, c_in, *vals.shape[-nd:]).double()
            spikes = float(c.sum())
            spikes_pt = c.reshape(steps, -1).sum(1).tolist()
            # A spike feeds C_out/g weights for every output position whose window covers it (padding
            # excluded): convolve the counts with an all-ones kernel and sum.
            conv = (F.conv1d, F.conv2d, F.conv3d)[nd - 1]
            ones = torch.ones(g, c_in // g, *module.kernel_size, dtype=torch.float64, device=c.device)
            occ = conv(c, ones, None, module.stride, module.padding, module.dilation, g)
            per_img = occ.reshape(steps, images, -1).sum((0, 2)) * (c_out // g)
            events_ps = _by_sample(per_img, sample, B)
            events_pt = (occ.reshape(steps, -1).sum(1) * (c_out // g)).tolist()
        self.add(
            _row(name, type(module).__name__, "conv", c_in, c_out, steps, spiking, spikes,
                 [in_pos * n for n in img_ps], [out_pos * n for n in img_ps],
                 [out_pos * taps * n for n in img_ps], macs_ps, events_ps, spikes_pt, events_pt)
        )  # fmt: skip

    def on_matmul(self, a: Tensor, b: Tensor, out: Tensor) -> None:
        """A functional matmul between activations (e.g. spike-driven attention ``Q (K^T V)``).

        Counted like a linear layer whose weight is the other operand: per product ``m k n`` MACs;
        synaptic events = spikes x fan-out, or the coincident spike pairs when both are spikes. An
        operand holding a SpikeTrain's binary sub-steps (D leading) is counted as the spikes they add
        up to, so binary and integer mode give the same counts.
        """
        top = self.stack[-1] if self.stack else [type(self.model).__name__, 0, 0]
        top[1] += 1
        name = f"{top[0] or type(self.model).__name__}.matmul{top[1]}"
        if a.dim() < 2 or b.dim() < 2:
            return
        a_kind, b_kind = self.tags.get(a), self.tags.get(b)
        if "bits" in (a_kind, b_kind):  # sum the D sub-steps (they lead the product's shape)
            a = a.sum(0) if a_kind == "bits" else a
            b = b.sum(0) if b_kind == "bits" else b
            out = out.sum(0)
        m, k, n = a.shape[-2], a.shape[-1], b.shape[-1]
        B = self.batch_size
        lead = tuple(out.shape[:-2])
        steps, body = self.lanes(lead, None, name)
        sdim = len(lead) - len(body)  # dim of ``out`` holding samples, when it is batch-major

        def by_sample(t: Tensor) -> list[float]:
            t = t.detach().double()
            if body and body[0] == B and t.dim() == out.dim() and t.shape[sdim] == B:
                return t.transpose(0, sdim).reshape(B, -1).sum(1).tolist()
            return [float(t.sum()) / B] * B

        mats_ps = [v / steps for v in by_sample(torch.ones(*lead, 1, 1))]  # products per sample, per step
        a_sp, b_sp = a_kind is not None, b_kind is not None
        spikes, events_ps, spikes_pt, events_pt = 0.0, [0.0] * B, None, None
        rows, c_in = m, k
        if a_sp and b_sp:  # one accumulate per coincident spike pair (as SpikingJelly counts it)
            events_ps, spikes = by_sample(out), float(a.sum())
            spikes_pt, events_pt = _per_step(a, steps), _per_step(out, steps)
        elif a_sp:
            events_ps, spikes = [v * n for v in by_sample(a)], float(a.sum())
            spikes_pt = _per_step(a, steps)
            events_pt = [v * n for v in spikes_pt]
        elif b_sp:  # the spikes are the right operand: k rows of n neurons, each feeding m outputs
            events_ps, spikes = [v * m for v in by_sample(b)], float(b.sum())
            spikes_pt = _per_step(b, steps)
            events_pt = [v * m for v in spikes_pt]
            rows, c_in = k, n
        in_ps = [rows * v for v in mats_ps]
        self.add(
            _row(name, "matmul", "attention", c_in, n, steps, a_sp or b_sp, spikes, in_ps,
                 [m * v for v in mats_ps], list(in_ps), [m * k * n * v for v in mats_ps], events_ps,
                 spikes_pt, events_pt)
        )  # fmt: skip

    def _push(self, name: str) -> Callable[..., None]:
        def pre(module: nn.Module, args: Any) -> None:
            self.stack.append([name, 0, id(module)])

        return pre

    def _pop(self, module: nn.Module, args: Any, out: Any) -> None:
        if self.stack:
            self.stack.pop()

    def attach(self) -> None:
        for m in self.neurons:
            self.handles.append(m.register_forward_hook(self._on_neuron))
        for name, m in self.model.named_modules():
            self.handles.append(m.register_forward_pre_hook(self._push(name)))
            self.handles.append(m.register_forward_hook(self._pop))
            if hasattr(m, "kernel_map") and isinstance(getattr(m, "weight", None), Tensor):
                hook = self._on_sparse
            elif isinstance(m, nn.Linear):
                hook = self._on_linear
            elif isinstance(m, nn.modules.conv._ConvNd) and not isinstance(
                m, nn.modules.conv._ConvTransposeNd
            ):
                hook = self._on_conv
            else:
                continue
            self.synaptic.add(id(m))
            self.handles.append(m.register_forward_hook(_bind(hook, name or type(m).__name__)))

    def detach(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()
        self.tags = WeakIdKeyDictionary()


class _Watch(TorchFunctionMode):
    """Sees every torch call of the forward: tags spikes moved around by shape / pooling ops, and counts
    functional matmuls between activations that no synaptic module accounts for."""

    def __init__(self, meter: _Meter) -> None:
        super().__init__()
        self.meter = meter

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        self.meter.propagate(func, args, kwargs, out)
        if func in _MATMULS and len(args) >= 2 and not self.meter.in_synaptic():
            a, b = args[0], args[1]
            if (
                isinstance(a, Tensor)
                and isinstance(b, Tensor)
                and not isinstance(a, nn.Parameter)
                and not isinstance(b, nn.Parameter)
                and isinstance(out, Tensor)
            ):
                self.meter.on_matmul(a, b, out)
        return out


def _bind(hook: Callable[..., None], name: str) -> Callable[..., None]:
    def run(module: nn.Module, args: Any, out: Any) -> None:
        hook(name, module, args, out)

    return run


def _batch_info(batch: Any) -> tuple[int, float]:
    """(batch size, points per sample) of a Tensor (B, N, C), images (B, C, H, W), a PointBatch, an
    object with ``.images`` (an ImageBatch: counted as its image tensor) or a SparseTensor."""
    if isinstance(getattr(batch, "images", None), Tensor):
        batch = batch.images
    if isinstance(batch, Tensor):
        if batch.dim() < 2:
            raise ValueError(f"the energy meter needs a batched input, got shape {tuple(batch.shape)}")
        return int(batch.shape[0]), float(batch.shape[1]) if batch.dim() == 3 else float("nan")
    xyz = getattr(batch, "xyz", None)
    if isinstance(xyz, Tensor) and xyz.dim() == 3 and xyz.shape[1] > 0:
        return int(xyz.shape[0]), float(xyz.shape[1])
    sparse = (
        batch if hasattr(batch, "coords") and hasattr(batch, "batch_size") else getattr(batch, "sparse", None)
    )
    if sparse is not None:
        b = int(sparse.batch_size)
        return b, sparse.num_sites / max(b, 1)
    raise ValueError(f"the energy meter cannot tell the batch size of a {type(batch).__name__}")


def _charge(rows: list[LayerEnergy], table: EnergyTable, unit: str) -> None:
    """Real-valued input is paid as MACs (every step), spikes as accumulates, both in ``unit``."""
    for r in rows:
        if r.spiking:
            r.energy_ps = [table.e_ac * s for s in (r.sops_ps if unit == "flops" else r.events_ps)]
        else:
            work = r.flops_ps if unit == "flops" else r.macs_ps
            r.energy_ps = [table.e_mac * f * r.steps for f in work]


# ----------------------------------------------------------------------------- E-3DSNN release convention
def _release_rows(rows: list[LayerEnergy], intended: bool) -> tuple[list[LayerEnergy], list[str]]:
    """Recount an E-3DSNN the way the E-3DSNN release's ``energy_calculate.py`` does.

    Per counted layer: FLOPs ``2 * pairs * C_in * C_out - N_in``, SOPs = input firing rate x FLOPs.
    The script means to count the stem as three E->E convs (the first is really in->E), each stage's
    strided conv, two of each block's three SubM convs and the final 1x1 conv. But it looks each
    stage's kernel maps up in the shared ``indice_dict`` *before* the stage has built them, so those
    terms are 0 and only the stem is counted. ``intended=False`` reproduces the printed numbers,
    ``intended=True`` counts what the script describes.
    """
    sparse = [r for r in rows if r.kind == "sparse"]
    strided = [i for i, r in enumerate(sparse) if r.type == "SparseConv3d"]
    if not strided or strided[0] < 1 or any(r.type != "SubMConv3d" for r in sparse[: strided[0]]):
        raise ValueError(
            "the e3dsnn-release conventions apply only to E-3DSNN models (SubM stem + strided stages)"
        )
    E = sparse[0].c_out
    counted: dict[int, LayerEnergy] = {}

    def recount(r: LayerEnergy, c_in: int, c_out: int, first: bool = False) -> None:
        macs_ps = [p * c_in * c_out for p in r.pairs_ps]
        flops_ps = [2.0 * m - n for m, n in zip(macs_ps, r.in_sites_ps)]
        rate = 0.0 if first else (r.rate or 0.0) if r.spiking else 1.0
        counted[id(r)] = LayerEnergy(
            r.name, r.type, r.kind, c_in, c_out, r.steps, r.spiking and not first, r.spikes,
            list(r.in_sites_ps), list(r.out_sites_ps), list(r.pairs_ps), flops_ps,
            [rate * f * r.steps for f in flops_ps], macs_ps, [rate * m * r.steps for m in macs_ps],
            calls=r.calls,
        )  # fmt: skip

    for i, r in enumerate(sparse[: strided[0]]):
        recount(r, E, E, first=i == 0)
    if intended:
        bounds = [*strided, len(sparse)]
        for s, start in enumerate(strided):
            recount(sparse[start], sparse[start].c_in, sparse[start].c_out)
            stage = sparse[start + 1 : bounds[s + 1]]
            for j, r in enumerate([r for r in stage if r.type == "SubMConv3d"]):
                if j % 3 != 2:  # two of each block's three SubM convs
                    recount(r, r.c_in, r.c_out)
        last = sparse[-1]
        if last.type == "SparseLinear":
            recount(last, last.c_in, last.c_out)
    out = []
    for r in rows:
        if id(r) in counted:
            out.append(counted[id(r)])
        else:
            skipped = LayerEnergy(**{k: v for k, v in r.__dict__.items()})
            skipped.counted = False
            out.append(skipped)
    notes = [
        f"convention {'e3dsnn-release-intended' if intended else 'e3dsnn-release'}: FLOPs = "
        "2 x pairs x C_in x C_out - N_in per counted layer, stem counted as 3 x E->E, SOPs = rate x FLOPs"
    ]
    if not intended:
        notes.append(
            "the release script reads each stage's kernel maps before the stage builds them, so only "
            "the stem is counted; --convention e3dsnn-release-intended counts what it describes"
        )
    return out, notes


def _stem_notes(rows: list[LayerEnergy], T: int) -> list[str]:
    """With T > 1, say how each layer that multiplies real values was charged: once (its input has no
    time axis: Spikformer's direct encoding, computed once and repeated) or at every step (an input
    repeated over T before the layer, as E-3DSNN's voxel stem): the two conventions differ."""
    if T <= 1:
        return []
    real = [r for r in rows if not r.spiking and r.counted]
    once = [r.name for r in real if r.steps == 1]
    each = [r.name for r in real if r.steps > 1]
    out = []
    if once:
        out.append(f"real-valued input charged once, not x T={T} (no time axis): {', '.join(once)}")
    if each:
        out.append(f"real-valued input charged at each of T={T} steps (repeated over T): {', '.join(each)}")
    return out


# ----------------------------------------------------------------------------- public entry point
def measure_energy(
    model: nn.Module,
    batch: Any,
    convention: str = "exact",
    energy: EnergyTable | None = None,
    forward: Callable[[nn.Module, Any], Any] | None = None,
    name: str | None = None,
    unit: str = "flops",
) -> EnergyReport:
    """Run ``model`` once on ``batch`` (no grad) and count FLOPs, MACs, SOPs and energy per synaptic layer.

    ``forward(model, batch)`` replaces the call ``model(batch)``. The model's spike mode (integer or
    binary) is kept; both give the same counts. ``convention``: ``"exact"`` (our count from the real
    kernel maps and spikes), ``"e3dsnn-release"`` (what the E-3DSNN release script computes) or
    ``"e3dsnn-release-intended"`` (what that script describes). ``unit``: ``"flops"`` (docs/SPEC.md §7:
    ANN in FLOPs, SOP = rate x FLOPs x T) or ``"macs"`` (ANN in MACs, SNN in synaptic events); the
    release conventions are defined in FLOPs only.
    """
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown energy convention {convention!r}: use one of {CONVENTIONS}")
    if unit not in UNITS:
        raise ValueError(f"unknown energy unit {unit!r}: use one of {UNITS}")
    if unit != "flops" and convention != "exact":
        raise ValueError(f"the {convention} convention counts FLOPs: use unit='flops' with it")
    table = energy or EnergyTable()
    batch_size, points = _batch_info(batch)
    meter = _Meter(model, batch_size)
    meter.attach()
    try:
        with torch.no_grad(), _Watch(meter):
            (forward or (lambda m, b: m(b)))(model, batch)
    finally:
        meter.detach()
    rows = list(meter.rows.values())
    if not rows:
        raise ValueError(f"no synaptic layer ran in {type(model).__name__}: nothing to count")
    exact_flops = sum(r.flops for r in rows) / batch_size
    notes: list[str] = _stem_notes(rows, meter.T)
    if convention != "exact":
        rows, notes = _release_rows(rows, convention.endswith("intended"))
    _charge(rows, table, unit)
    return EnergyReport(
        model=name or type(model).__name__,
        layers=rows,
        batch_size=batch_size,
        points=points,
        energy=table,
        convention=convention,
        exact_ann_flops=exact_flops,
        notes=notes,
        unit=unit,
    )
