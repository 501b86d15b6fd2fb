"""Text table and PNG bar chart of an EnergyReport (matplotlib is imported only when plotting)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from svl.energy.meter import EnergyReport

__all__ = ["format_table", "plot_report", "si"]


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
