"""What the energy meter measured: the per-layer rows, the report over them, and its table and chart.

Data only: the hooks that fill these rows live in svl.energy.meter, which imports this module (never
the other way round). matplotlib is imported only when plotting.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ENERGY_PRESETS",
    "EnergyReport",
    "EnergyTable",
    "LayerEnergy",
    "format_table",
    "merge_reports",
    "plot_report",
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

    ``flops`` is one step's ANN-equivalent work; ``steps`` the time steps it ran (T); ``sops`` the
    accumulates over all steps; ``energy`` what the layer costs the SNN under the chosen table. Sites
    are input sites (sparse) or rows / positions (dense) of one step. Totals are batch sums.
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
    sops_ps: list[float]
    energy_ps: list[float] = field(default_factory=list)  # pJ
    counted: bool = True  # False where a convention leaves the layer out
    calls: int = 1

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
    """Per-layer rows plus totals. Headline figures are per sample (the batch mean)."""

    model: str
    layers: list[LayerEnergy]
    batch_size: int
    points: float
    energy: EnergyTable
    convention: str = "exact"
    exact_ann_flops: float = 0.0  # per sample: our exact count, kept beside a non-exact convention
    notes: list[str] = field(default_factory=list)

    def _counted(self) -> list[LayerEnergy]:
        return [r for r in self.layers if r.counted]

    @property
    def ann_flops(self) -> float:
        return sum(r.flops for r in self._counted()) / self.batch_size

    @property
    def sops(self) -> float:
        return sum(r.sops for r in self._counted()) / self.batch_size

    @property
    def mac_flops(self) -> float:
        """FLOPs the SNN still pays as MACs (layers with real-valued input, all steps), per sample."""
        return sum(r.flops * r.steps for r in self._counted() if not r.spiking) / self.batch_size

    @property
    def energy_snn_mj(self) -> float:
        return sum(r.energy_pj for r in self._counted()) / self.batch_size * 1e-9

    @property
    def energy_ann_mj(self) -> float:
        return self.ann_flops * self.energy.e_mac * 1e-9

    @property
    def ratio(self) -> float:
        """SNN energy / ANN-equivalent energy (below 1 = the SNN is cheaper)."""
        return self.energy_snn_mj / self.energy_ann_mj if self.energy_ann_mj > 0 else float("nan")

    def per_sample(self) -> dict[str, list[float]]:
        """Per-sample ANN FLOPs, SOPs and energies (mJ)."""
        rows = self._counted()
        cols = range(self.batch_size)
        flops = [sum(r.flops_ps[i] for r in rows) for i in cols]
        return {
            "ann_flops": flops,
            "sops": [sum(r.sops_ps[i] for r in rows) for i in cols],
            "energy_snn_mj": [sum(r.energy_ps[i] for r in rows) * 1e-9 for i in cols],
            "energy_ann_mj": [f * self.energy.e_mac * 1e-9 for f in flops],
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
                "firing_rate": r.rate,
                "sops": r.sops / b,
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
            "energy_table": {
                "name": self.energy.name,
                "e_mac_pj": self.energy.e_mac,
                "e_ac_pj": self.energy.e_ac,
            },
            "ann_flops": self.ann_flops,
            "exact_ann_flops": self.exact_ann_flops,
            "mac_flops": self.mac_flops,
            "sops": self.sops,
            "energy_snn_mj": self.energy_snn_mj,
            "energy_ann_mj": self.energy_ann_mj,
            "ratio": self.ratio,
            "per_sample": self.per_sample(),
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
        plot_report(self, path)


def merge_reports(reports: list[EnergyReport]) -> EnergyReport:
    """One report over several measured batches of the same model (per-sample lists concatenated)."""
    if not reports:
        raise ValueError("merge_reports needs at least one report")
    first = reports[0]
    names = [r.name for r in first.layers]
    for rep in reports[1:]:
        if [r.name for r in rep.layers] != names or rep.convention != first.convention:
            raise ValueError("merge_reports: reports come from different models or conventions")
    layers = []
    for i, r0 in enumerate(first.layers):
        parts = [rep.layers[i] for rep in reports]
        merged = LayerEnergy(**{k: v for k, v in r0.__dict__.items()})
        for f in ("in_sites_ps", "out_sites_ps", "pairs_ps", "flops_ps", "sops_ps", "energy_ps"):
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
    )


# ----------------------------------------------------------------------------- table and chart
def si(x: float | None, digits: int = 3) -> str:
    """Compact engineering notation (1.23e+07 -> '12.3M'); '-' for None."""
    if x is None:
        return "-"
    for div, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:.{digits}g}{suffix}"
    return f"{x:.{digits}g}"


def format_table(report: EnergyReport) -> str:
    """Per-layer table (per sample = batch mean) followed by the SNN / ANN totals."""
    head = ("layer", "type", "in sites", "pairs", "C_in", "C_out", "FLOPs", "rate", "SOPs", "energy")
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
                si(d["flops"]),
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
        f"convention {report.convention}, E_MAC {t.e_mac} pJ / E_AC {t.e_ac} pJ ({t.name})",
        line(head),
        line(tuple("-" * w for w in widths)),
        *(line(r) for r in rows),
        "",
        f"ANN FLOPs {report.ann_flops:.4g} (of which paid as MACs by the SNN: {report.mac_flops:.4g})"
        f"  SOPs {report.sops:.4g}  per sample",
        f"energy per sample: SNN {report.energy_snn_mj:.4g} mJ  ANN {report.energy_ann_mj:.4g} mJ  "
        f"SNN/ANN {report.ratio:.4f} ({1 / report.ratio if report.ratio else float('inf'):.2f}x less)",
        f"SNN energy per sample over the batch: min {min(per):.4g}  max {max(per):.4g} mJ",
    ]
    if report.convention != "exact":
        out.append(f"our exact count for comparison: ANN FLOPs {report.exact_ann_flops:.4g} per sample")
    out.extend(f"note: {n}" for n in report.notes)
    return "\n".join(out)


def plot_report(report: EnergyReport, path: str) -> None:
    """Two bar panels per layer: SNN energy (uJ, MAC layers hatched) and input firing rate; PNG, atomic."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from svl.utils import atomic_path

    layers = [d for d in report.layer_dicts() if d["counted"]]
    names = [d["layer"] for d in layers]
    x = range(len(layers))
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(max(8.0, 0.35 * len(layers) + 2), 7), sharex=True)
    colors = ["tab:red" if d["input"] == "real" else "tab:blue" for d in layers]
    ax1.bar(x, [d["energy_pj"] * 1e-6 for d in layers], color=colors)
    ax1.set_ylabel("energy per sample (uJ)")
    ax1.set_title(
        f"{report.model}: SNN {report.energy_snn_mj:.3g} mJ vs ANN {report.energy_ann_mj:.3g} mJ per sample "
        "(red = real-valued input, MAC)"
    )
    ax2.bar(x, [d["firing_rate"] or 0.0 for d in layers], color="tab:green")
    ax2.set_ylabel("input firing rate")
    ax2.set_xticks(list(x), names, rotation=90, fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
