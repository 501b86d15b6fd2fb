"""What the energy meter measured: the per-layer rows, the report over them, and its table (the chart
is `svl.plots.plot_energy`).

Data only: the hooks that fill these rows live in svl.energy.meter, which imports this module (never
the other way round). matplotlib is imported only when plotting.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from svl.plots import plot_energy

__all__ = [
    "ENERGY_PRESETS",
    "UNITS",
    "EnergyReport",
    "EnergyTable",
    "LayerEnergy",
    "energy_line",
    "format_table",
    "merge_reports",
    "si",
]

# Energy per operation in pJ at 45 nm, from M. Horowitz, "Computing's energy problem (and what we can
# do about it)", ISSCC 2014: fp32 add 0.9, fp32 mult 3.7 (MAC = 4.6); int8 add 0.03, int8 mult 0.2
# (MAC = 0.23); int32 add 0.1, int32 mult 3.1 (MAC = 3.2).
ENERGY_PRESETS: dict[str, tuple[float, float]] = {
    "fp32": (4.6, 0.9),
    "int8": (0.23, 0.03),
    "int32": (3.2, 0.1),
}

# The one unit both sides are counted in (see svl.energy.meter): "flops" (docs/SPEC.md §7: ANN FLOPs,
# SOP = rate x FLOPs x T) or "macs" (per synaptic event: ANN MACs, SNN accumulates).
UNITS = ("flops", "macs")


@dataclass(frozen=True)
class EnergyTable:
    """Energy per multiply-accumulate (``e_mac``) and per accumulate (``e_ac``), in picojoules."""

    e_mac: float = 4.6
    e_ac: float = 0.9
    name: str = "fp32"

    def __post_init__(self) -> None:
        if not (self.e_mac > 0 and self.e_ac > 0 and math.isfinite(self.e_mac) and math.isfinite(self.e_ac)):
            raise ValueError(f"energy table needs positive finite e_mac/e_ac, got {self.e_mac}, {self.e_ac}")

    @classmethod
    def preset(cls, name: str, e_mac: float | None = None, e_ac: float | None = None) -> EnergyTable:
        """A named 45 nm table: ``fp32`` (default, 4.6 / 0.9 pJ), ``int8`` or ``int32``.

        ``e_mac`` / ``e_ac`` override one figure of the preset; the table is then named ``custom``.
        """
        if name not in ENERGY_PRESETS:
            raise ValueError(f"unknown energy preset {name!r}: use one of {sorted(ENERGY_PRESETS)}")
        mac, ac = ENERGY_PRESETS[name]
        if e_mac is not None or e_ac is not None:
            return cls(e_mac or mac, e_ac or ac, "custom")
        return cls(mac, ac, name)


@dataclass
class LayerEnergy:
    """One synaptic layer's counts per sample (summed over calls of a module used twice in one forward).

    ``flops`` / ``macs`` are one step's ANN-equivalent work; ``steps`` the time steps it ran (T);
    ``events`` the accumulates spikes actually trigger over all steps (synaptic events, ACs); ``sops``
    the same in FLOP units (rate x FLOPs x T, docs/SPEC.md §7); ``energy`` what the layer costs the SNN
    under the chosen table and unit. Sites are input sites (sparse) or rows / positions (dense) of one
    step. Totals are batch sums.
    """

    name: str
    type: str
    kind: str  # "sparse" | "linear" | "conv" | "attention"
    c_in: int
    c_out: int
    steps: int
    spiking: bool  # input is spikes (charged as ACs) rather than real values (charged as MACs)
    spikes: float  # sum of integer spike counts over all input neurons and steps (batch)
    in_sites_ps: list[float]
    out_sites_ps: list[float]
    pairs_ps: list[float]  # active (input, output) pairs (sparse: from the real kernel map)
    flops_ps: list[float]
    sops_ps: list[float]  # FLOP units: events x FLOPs / MACs
    macs_ps: list[float]
    events_ps: list[float]  # synaptic events (accumulates), all steps
    energy_ps: list[float] = field(default_factory=list)  # pJ
    counted: bool = True  # False where a convention leaves the layer out
    calls: int = 1
    spikes_pt: list[float] = field(default_factory=list)  # integer spikes in, per timestep (batch)
    events_pt: list[float] = field(default_factory=list)  # synaptic events, per timestep (batch)

    @property
    def in_sites(self) -> float:
        return sum(self.in_sites_ps)

    @property
    def out_sites(self) -> float:
        return sum(self.out_sites_ps)

    @property
    def pairs(self) -> float:
        return sum(self.pairs_ps)

    @property
    def flops(self) -> float:
        return sum(self.flops_ps)

    @property
    def sops(self) -> float:
        return sum(self.sops_ps)

    @property
    def macs(self) -> float:
        return sum(self.macs_ps)

    @property
    def events(self) -> float:
        return sum(self.events_ps)

    def ops(self, unit: str) -> tuple[list[float], list[float]]:
        """(ANN work per step, SNN synaptic ops) per sample in ``unit``: FLOPs and SOPs, or MACs and ACs."""
        return (self.flops_ps, self.sops_ps) if unit == "flops" else (self.macs_ps, self.events_ps)

    @property
    def energy_pj(self) -> float:
        return sum(self.energy_ps)

    @property
    def in_neurons(self) -> float:
        return self.in_sites * self.c_in

    @property
    def rate(self) -> float | None:
        """Input firing rate: mean integer spike count per input neuron per step (None for real input)."""
        if not self.spiking:
            return None
        return self.spikes / max(self.in_neurons * self.steps, 1)


@dataclass
class EnergyReport:
    """Per-layer rows plus totals. Headline figures are per sample (the batch mean).

    ``unit`` says what ``ann_ops``, ``sops`` and both energies count: ``"flops"`` (ANN FLOPs, SOPs =
    rate x FLOPs x T) or ``"macs"`` (ANN MACs, SOPs = synaptic events). ``ann_flops``, ``ann_macs`` and
    ``synaptic_events`` are there in either unit.
    """

    model: str
    layers: list[LayerEnergy]
    batch_size: int
    points: float
    energy: EnergyTable
    convention: str = "exact"
    exact_ann_flops: float = 0.0  # per sample: our exact count, kept beside a non-exact convention
    notes: list[str] = field(default_factory=list)
    unit: str = "flops"

    def _counted(self) -> list[LayerEnergy]:
        return [r for r in self.layers if r.counted]

    def _total(self, pick: Any) -> float:
        return sum(pick(r) for r in self._counted()) / self.batch_size

    @property
    def ann_flops(self) -> float:
        return self._total(lambda r: r.flops)

    @property
    def ann_macs(self) -> float:
        return self._total(lambda r: r.macs)

    @property
    def ann_ops(self) -> float:
        """ANN-equivalent work in the report's unit (FLOPs or MACs), per sample."""
        return self.ann_flops if self.unit == "flops" else self.ann_macs

    @property
    def sops(self) -> float:
        """Synaptic operations in the report's unit (rate x FLOPs x T, or synaptic events), per sample."""
        return self._total(lambda r: r.sops if self.unit == "flops" else r.events)

    @property
    def synaptic_events(self) -> float:
        """Accumulates triggered by spikes (one per spike per synapse), per sample."""
        return self._total(lambda r: r.events)

    @property
    def mac_flops(self) -> float:
        """FLOPs the SNN still pays as MACs (layers with real-valued input, all steps), per sample."""
        return self._total(lambda r: 0.0 if r.spiking else r.flops * r.steps)

    @property
    def mac_ops(self) -> float:
        """Work the SNN still pays as MACs, in the report's unit, per sample."""
        return self._total(lambda r: 0.0 if r.spiking else sum(r.ops(self.unit)[0]) * r.steps)

    @property
    def energy_snn_mj(self) -> float:
        return self._total(lambda r: r.energy_pj) * 1e-9

    @property
    def energy_ann_mj(self) -> float:
        return self.ann_ops * self.energy.e_mac * 1e-9

    @property
    def ratio(self) -> float:
        """SNN energy / ANN-equivalent energy (below 1 = the SNN is cheaper)."""
        return self.energy_snn_mj / self.energy_ann_mj if self.energy_ann_mj > 0 else float("nan")

    def per_sample(self) -> dict[str, list[float]]:
        """Per-sample ANN FLOPs and MACs, SOPs (report's unit), synaptic events and energies (mJ)."""
        rows = self._counted()

        def col(field_: str) -> list[float]:
            return [sum(getattr(r, field_)[i] for r in rows) for i in range(self.batch_size)]

        ann = col("flops_ps" if self.unit == "flops" else "macs_ps")
        return {
            "ann_flops": col("flops_ps"),
            "ann_macs": col("macs_ps"),
            "sops": col("sops_ps" if self.unit == "flops" else "events_ps"),
            "synaptic_events": col("events_ps"),
            "energy_snn_mj": [e * 1e-9 for e in col("energy_ps")],
            "energy_ann_mj": [f * self.energy.e_mac * 1e-9 for f in ann],
        }

    def per_step(self) -> dict[str, list[float]]:
        """Per timestep, per sample (batch mean): input spikes, synaptic events and SNN energy (mJ).

        A layer with real-valued input pays its MACs at every step; the steps sum to the totals.
        """
        rows = self._counted()
        T = max((r.steps for r in rows), default=1)
        spikes, events, energy = [0.0] * T, [0.0] * T, [0.0] * T
        for r in rows:
            ev = r.events_pt or [r.events / r.steps] * r.steps
            sp = r.spikes_pt or [r.spikes / r.steps] * r.steps
            for t in range(min(T, r.steps)):
                spikes[t] += sp[t]
                events[t] += ev[t]
                if r.spiking:
                    sops = ev[t] * (r.flops / r.macs if self.unit == "flops" and r.macs > 0 else 1.0)
                    energy[t] += self.energy.e_ac * sops
                else:
                    energy[t] += self.energy.e_mac * (r.flops if self.unit == "flops" else r.macs)
        b = self.batch_size
        return {
            "spikes": [v / b for v in spikes],
            "synaptic_events": [v / b for v in events],
            "energy_snn_mj": [v / b * 1e-9 for v in energy],
        }

    def layer_dicts(self) -> list[dict[str, Any]]:
        """One dict per layer with the table's columns, per sample (batch mean)."""
        b = self.batch_size
        return [
            {
                "layer": r.name,
                "type": r.type,
                "kind": r.kind,
                "input_sites": r.in_sites / b,
                "input_neurons": r.in_neurons / b,
                "output_sites": r.out_sites / b,
                "active_pairs": r.pairs / b,
                "c_in": r.c_in,
                "c_out": r.c_out,
                "steps": r.steps,
                "input": "spikes" if r.spiking else "real",
                "flops": r.flops / b,
                "macs": r.macs / b,
                "firing_rate": r.rate,
                "sops": (r.sops if self.unit == "flops" else r.events) / b,
                "synaptic_events": r.events / b,
                "energy_pj": r.energy_pj / b,
                "counted": r.counted,
                "calls": r.calls,
            }
            for r in self.layers
        ]

    def to_dict(self) -> dict[str, Any]:
        """The table's content plus per-sample lists, ready for JSON."""
        return {
            "model": self.model,
            "points": self.points,
            "batch_size": self.batch_size,
            "convention": self.convention,
            "unit": self.unit,
            "energy_table": {
                "name": self.energy.name,
                "e_mac_pj": self.energy.e_mac,
                "e_ac_pj": self.energy.e_ac,
            },
            "ann_ops": self.ann_ops,
            "ann_flops": self.ann_flops,
            "ann_macs": self.ann_macs,
            "exact_ann_flops": self.exact_ann_flops,
            "mac_ops": self.mac_ops,
            "mac_flops": self.mac_flops,
            "sops": self.sops,
            "synaptic_events": self.synaptic_events,
            "energy_snn_mj": self.energy_snn_mj,
            "energy_ann_mj": self.energy_ann_mj,
            "ratio": self.ratio,
            "per_sample": self.per_sample(),
            "per_step": self.per_step(),
            "notes": list(self.notes),
            "layers": self.layer_dicts(),
        }

    def to_json(self, path: str | None = None, indent: int = 2) -> str:
        """The report as JSON text; also written atomically to ``path`` when given."""
        import json

        text = json.dumps(self.to_dict(), indent=indent)
        if path is not None:
            from svl.utils import atomic_write

            with atomic_write(path, "w") as fh:
                fh.write(text + "\n")
        return text

    def table(self) -> str:
        """The per-layer table with totals, as printable text."""
        return format_table(self)

    def plot(self, path: str) -> None:
        """Bar chart of energy and input firing rate per layer, written atomically as PNG."""
        plot_energy(self, path)


def merge_reports(reports: list[EnergyReport]) -> EnergyReport:
    """One report over several measured batches of the same model (per-sample lists concatenated)."""
    if not reports:
        raise ValueError("merge_reports needs at least one report")
    first = reports[0]
    names = [r.name for r in first.layers]
    for rep in reports[1:]:
        if (
            [r.name for r in rep.layers] != names
            or rep.convention != first.convention
            or rep.unit != first.unit
        ):
            raise ValueError("merge_reports: reports come from different models, conventions or units")
    layers = []
    for i, r0 in enumerate(first.layers):
        parts = [rep.layers[i] for rep in reports]
        merged = LayerEnergy(**{k: v for k, v in r0.__dict__.items()})
        for f in ("in_sites_ps", "out_sites_ps", "pairs_ps", "flops_ps", "sops_ps", "macs_ps", "events_ps",
                  "energy_ps"):  # fmt: skip
            setattr(merged, f, [v for p in parts for v in getattr(p, f)])
        merged.spikes = sum(p.spikes for p in parts)
        merged.spiking = all(p.spiking for p in parts)
        layers.append(merged)
    total = sum(rep.batch_size for rep in reports)
    return EnergyReport(
        model=first.model,
        layers=layers,
        batch_size=total,
        points=sum(rep.points * rep.batch_size for rep in reports) / total,
        energy=first.energy,
        convention=first.convention,
        exact_ann_flops=sum(rep.exact_ann_flops * rep.batch_size for rep in reports) / total,
        notes=list(first.notes),
        unit=first.unit,
    )


# ----------------------------------------------------------------------------- table
def si(x: float | None, digits: int = 3) -> str:
    """Compact engineering notation (1.23e+07 -> '12.3M'); '-' for None."""
    if x is None:
        return "-"
    for div, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:.{digits}g}{suffix}"
    return f"{x:.{digits}g}"


_UNIT_LINES = {
    "flops": "unit flops (docs/SPEC.md §7): ANN = E_MAC x FLOPs (2 per multiply-accumulate); SNN = E_MAC x "
    "FLOPs of real-input layers + E_AC x SOPs, SOP = rate x FLOPs x T",
    "macs": "unit macs (per synaptic event): ANN = E_MAC x MACs; SNN = E_MAC x MACs of real-input layers + "
    "E_AC x synaptic events (one accumulate per spike per synapse)",
}


def energy_line(energy: dict[str, Any], per: str = "sample") -> str:
    """The one line every result table ends its energy with (`energy_per_sample`'s dict)."""
    e = energy
    return (
        f"energy per {per}: SNN {e['energy_snn_mj']:.4f} mJ vs ANN-equivalent {e['energy_ann_mj']:.4f} mJ "
        f"(ratio {e['ratio']:.3f}; both in {e.get('unit', 'flops')})"
    )


def format_table(report: EnergyReport) -> str:
    """Per-layer table (per sample = batch mean) followed by the SNN / ANN totals and the unit."""
    flops = report.unit == "flops"
    work, ops = ("FLOPs", "SOPs") if flops else ("MACs", "ACs")
    head = ("layer", "type", "in sites", "pairs", "C_in", "C_out", work, "rate", ops, "energy")
    rows = []
    for d in report.layer_dicts():
        rate = d["firing_rate"]
        rows.append(
            (
                d["layer"] + ("" if d["counted"] else " (not counted)"),
                d["type"] + ("" if d["input"] == "spikes" else " [MAC]"),
                si(d["input_sites"]),
                si(d["active_pairs"]),
                str(d["c_in"]),
                str(d["c_out"]),
                si(d["flops"] if flops else d["macs"]),
                "real" if rate is None else f"{rate:.3f}",
                si(d["sops"]),
                f"{d['energy_pj'] * 1e-9:.4g} mJ",
            )
        )
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    right = set(range(2, len(head)))

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))
        )

    t = report.energy
    per = report.per_sample()["energy_snn_mj"]
    out = [
        f"model {report.model}: batch {report.batch_size}, {report.points:.0f} points per sample, "
        f"convention {report.convention}, unit {report.unit}, "
        f"E_MAC {t.e_mac} pJ / E_AC {t.e_ac} pJ ({t.name})",
        line(head),
        line(tuple("-" * w for w in widths)),
        *(line(r) for r in rows),
        "",
        f"ANN {work} {report.ann_ops:.4g} (of which paid as MACs by the SNN: {report.mac_ops:.4g})"
        f"  {'SOPs' if flops else 'synaptic events (ACs)'} {report.sops:.4g}  per sample",
        f"energy per sample: SNN {report.energy_snn_mj:.4g} mJ  ANN {report.energy_ann_mj:.4g} mJ  "
        f"SNN/ANN {report.ratio:.4f} ({1 / report.ratio if report.ratio else float('inf'):.2f}x less)",
        f"SNN energy per sample over the batch: min {min(per):.4g}  max {max(per):.4g} mJ",
        _UNIT_LINES[report.unit],
    ]
    if report.convention != "exact":
        out.append(f"our exact count for comparison: ANN FLOPs {report.exact_ann_flops:.4g} per sample")
    out.extend(f"note: {n}" for n in report.notes)
    return "\n".join(out)
