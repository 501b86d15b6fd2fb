"""Every chart svl draws, in one place: confusion matrices, class-coloured point clouds, bird's-eye
views with boxes, energy per layer.

A floor of its own, low in the layers: it takes arrays (and duck-typed reports) and imports only numpy,
svl.boxes and svl.utils, so metrics, inference and the energy report can all draw without importing
each other. matplotlib is imported inside each function: it is heavy, and most runs never plot.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from svl.boxes import bev_corners
from svl.utils import atomic_path, atomic_write

__all__ = ["class_colors", "plot_bev", "plot_confusion", "plot_energy", "plot_segmentation"]


def class_colors(k: int) -> np.ndarray:
    """(k, 3) uint8 distinct colours (tab20, then hsv) for k classes."""
    from matplotlib import colormaps

    base = colormaps["tab20"](np.arange(20))[:, :3]
    extra = colormaps["hsv"](np.linspace(0, 1, max(k - 20, 1), endpoint=False))[:, :3]
    return (255 * np.concatenate([base, extra])[:k]).astype(np.uint8)


def plot_confusion(
    cm: Any, names: Sequence[str], path: str | os.PathLike[str], title: str = "confusion (row-normalised)"
) -> Path:
    """Save a row-normalised confusion matrix as PNG (matplotlib Agg, atomic write)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    c = np.asarray(cm, dtype=np.float64)
    k = len(names)
    if c.shape != (k, k):
        raise ValueError(f"confusion matrix shape {c.shape} does not match {k} class names")
    rows = c.sum(1, keepdims=True)
    norm = np.divide(c, rows, out=np.zeros_like(c), where=rows > 0)
    size = max(4.0, 0.22 * k + 2.0)
    fig, ax = plt.subplots(figsize=(size + 1.0, size))
    try:
        im = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
        ax.set_xticks(range(k))
        ax.set_yticks(range(k))
        fs = 8 if k <= 20 else 6
        ax.set_xticklabels(names, rotation=90, fontsize=fs)
        ax.set_yticklabels(names, fontsize=fs)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(title)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
        fig.tight_layout()
        p = Path(path)
        with atomic_write(p, "wb") as fh:
            fig.savefig(fh, format="png", dpi=120)
    finally:
        plt.close(fig)
    return p


def plot_segmentation(
    xyz: np.ndarray, labels: np.ndarray, class_names: Sequence[str], path: str | Path, title: str = ""
) -> Path:
    """Top (x-y) and side (x-z) views of points coloured by class, with a legend of the classes present."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cols = class_colors(len(class_names)) / 255.0
    fig = Figure(figsize=(12, 5.5), dpi=100)
    FigureCanvasAgg(fig)
    present = np.unique(labels)
    for j, (a, b, name) in enumerate(((0, 1, "top (x-y)"), (0, 2, "side (x-z)"))):
        ax = fig.add_subplot(1, 2, j + 1)
        ax.scatter(xyz[:, a], xyz[:, b], c=cols[labels], s=1.5, linewidths=0)
        ax.set_aspect("equal")
        ax.set_title(name, fontsize=9)
    handles = [
        fig.axes[0].scatter([], [], color=cols[c], s=20, label=class_names[c]) for c in present if c >= 0
    ]
    fig.legend(handles=handles, loc="center right", fontsize=7, frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.subplots_adjust(right=0.83)
    with atomic_write(path) as fh:
        fig.savefig(fh, format="png")
    return Path(path)


def plot_bev(
    xyz: np.ndarray,
    boxes: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str],
    path: str | Path,
    scores: np.ndarray | None = None,
    gt_boxes: np.ndarray | None = None,
    title: str = "",
    point_cloud_range: Sequence[float] | None = None,
) -> Path:
    """Bird's-eye view: every point of the scan (grey, darker the higher, never white on white; those
    outside `point_cloud_range` fainter, the range outlined dashed) and boxes coloured by class with a
    heading tick and score; ground-truth boxes, when given, dashed black."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cols = class_colors(max(len(class_names), 1)) / 255.0
    fig = Figure(figsize=(8, 8), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    xyz = np.asarray(xyz, np.float64).reshape(-1, 3)
    inside = np.ones(len(xyz), bool)
    if point_cloud_range is not None:
        r = [float(v) for v in point_cloud_range]
        inside = (xyz[:, 0] >= r[0]) & (xyz[:, 0] <= r[3]) & (xyz[:, 1] >= r[1]) & (xyz[:, 1] <= r[4])
        ax.plot([r[0], r[3], r[3], r[0], r[0]], [r[1], r[1], r[4], r[4], r[1]], color="0.4",
                linestyle=":", linewidth=1)  # fmt: skip
    if len(xyz):
        lo, hi = np.percentile(xyz[:, 2], [1, 99])
        t = np.clip((xyz[:, 2] - lo) / max(hi - lo, 1e-9), 0.0, 1.0)
        grey = np.repeat((0.65 - 0.55 * t)[:, None], 3, 1)  # 0.65 (low) .. 0.1 (high): always visible
        for sel, alpha in ((~inside, 0.3), (inside, 0.8)):
            if sel.any():
                ax.scatter(xyz[sel, 0], xyz[sel, 1], c=grey[sel], s=1.0, linewidths=0, alpha=alpha)
    if gt_boxes is not None and len(gt_boxes):
        for c in np.asarray(bev_corners(np.asarray(gt_boxes, np.float64))):
            ax.fill(c[:, 0], c[:, 1], fill=False, edgecolor="black", linestyle="--", linewidth=1)
    boxes = np.asarray(boxes, np.float64).reshape(-1, 7)
    shown = set()
    for i, c in enumerate(np.asarray(bev_corners(boxes)) if len(boxes) else []):
        k = int(labels[i])
        ax.fill(c[:, 0], c[:, 1], fill=False, edgecolor=cols[k], linewidth=1.5,
                label=None if k in shown else class_names[k])  # fmt: skip
        shown.add(k)
        x, y, yaw, half = boxes[i, 0], boxes[i, 1], boxes[i, 6], boxes[i, 3] / 2
        ax.plot([x, x + half * np.cos(yaw)], [y, y + half * np.sin(yaw)], color=cols[k], linewidth=1.5)
        if scores is not None:
            ax.text(x, y, f"{scores[i]:.2f}", fontsize=6, ha="center", va="center", color=cols[k])
    ax.set_aspect("equal")
    ax.set_xlabel("x (m)")
    ax.set_ylabel("y (m)")
    if shown:
        ax.legend(loc="upper right", fontsize=7, frameon=False)
    ax.set_title(title, fontsize=10)
    with atomic_write(path) as fh:
        fig.savefig(fh, format="png")
    return Path(path)


def plot_energy(report: Any, path: str) -> None:
    """Two bar panels per layer of an `svl.energy.EnergyReport`: SNN energy (uJ, MAC layers in red) and
    input firing rate; PNG, atomic."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = [d for d in report.layer_dicts() if d["counted"]]
    names = [d["layer"] for d in layers]
    x = range(len(layers))
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(max(8.0, 0.35 * len(layers) + 2), 7), sharex=True)
    colors = ["tab:red" if d["input"] == "real" else "tab:blue" for d in layers]
    ax1.bar(x, [d["energy_pj"] * 1e-6 for d in layers], color=colors)
    ax1.set_ylabel("energy per sample (uJ)")
    ax1.set_title(
        f"{report.model}: SNN {report.energy_snn_mj:.3g} mJ vs ANN {report.energy_ann_mj:.3g} mJ per sample, "
        f"unit {report.unit} (red = real-valued input, MAC)"
    )
    ax2.bar(x, [d["firing_rate"] or 0.0 for d in layers], color="tab:green")
    ax2.set_ylabel("input firing rate")
    ax2.set_xticks(list(x), names, rotation=90, fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
