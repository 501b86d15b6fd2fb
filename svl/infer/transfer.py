"""What a pretrained encoder sees on your data, against what it was trained on (issue 30).

A checkpoint pretrained on unit-sphere objects can fail to transfer to data of another frame (event
streams filling [0, 1]^3 with time as an axis, scenes in metres) for reasons a loss curve does not
name. `transfer_report` runs the encoder over a few seeded samples of the user's dataset and of a
reference (the pretraining data) and reports, per layer group (stem, stages.0-3, sn_out):

- occupied sites per sample at the group's output (how many voxels the data fills at each stride),
- the firing rate of the group's neurons (mean spikes per neuron and step over D: 0 silent, 1 saturated),
- BN shift: the pooled mean / variance of each SparseBatchNorm's input features against the layer's
  running statistics (what pretraining saw; no reference data needed), in running sd and log ratio,
  each a mean over channels; a group shows its worst layer (every layer is under "bn_layers").

Figures past the module's thresholds become verdict lines naming the group, the figure and a fix.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from svl.data import build_dataset
from svl.energy.measure import seeded_batches
from svl.models import create_model, load_weights
from svl.models.loading import polarity_from_colour, read_meta
from svl.sparse import SparseBatchNorm, SparseTensor
from svl.spiking import record_spikes, spike_stats

__all__ = [
    "BN_LOGVAR_SHIFT",
    "BN_MEAN_SHIFT",
    "FIRING_RATIO",
    "SILENT_FIRING",
    "SITES_RATIO",
    "draw_batches",
    "format_transfer",
    "transfer_report",
]

# Each stride-2 stage divides a surface's sites by about 4 (2 x 2 on a 2D manifold), so 4x more or fewer
# sites than on the reference is a whole stage of resolution off: the data's frame or units differ.
SITES_RATIO = 4.0
# A layer firing 3x more or less than on the reference is past the spread between the reference's own
# batches (well under 1.5x on ModelNet40) and changes the next layer's input scale by as much.
FIRING_RATIO = 3.0
# Under 1% of the maximum rate a layer passes almost nothing on; its group's later figures mean little.
SILENT_FIRING = 0.01
# BN input mean off by more than one running sd: the features sit outside most of what pretraining saw,
# so after BN every neuron's input moves by its whole learned scale (the I-LIF threshold is ~1 such unit).
BN_MEAN_SHIFT = 1.0
# BN input variance more than 4x (sd 2x) larger or smaller than the running variance: |log ratio| > log 4.
BN_LOGVAR_SHIFT = math.log(4.0)
_MAY_DIFFER = ("T", "in_channels", "voxel_size")  # as the event fine-tune loads an SVL pretraining


def draw_batches(ds: Any, samples: int, batch_size: int, seed: int) -> list[Any]:
    """Collated batches of `samples` seeded random items of `ds`, drawn as the energy meter draws them."""
    return seeded_batches(ds, samples, batch_size, seed, what=getattr(ds, "name", "dataset"))


def _groups(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(group name, the module whose output ends the group): stem, stages.0.., sn_out."""
    out: list[tuple[str, nn.Module]] = [("stem", model.stem[-1])]
    out += [(f"stages.{i}", s) for i, s in enumerate(model.stages)]
    if isinstance(getattr(model, "sn_out", None), nn.Module):
        out.append(("sn_out", model.sn_out))
    return out


def _group_of(name: str, groups: list[str]) -> str | None:
    return next((g for g in groups if name == g or name.startswith(g + ".")), None)


def _input_shape(sample: Mapping[str, Any]) -> tuple[int, int | None]:
    """(feature channels, time steps or None) of one sample; xyz alone reads as 3 channels."""
    steps = sample.get("steps")
    feats = sample.get("feats")
    c = int(feats.shape[-1]) if feats is not None else 3
    return c, (int(steps.shape[0]) if steps is not None else None)


def _model_for(
    base: nn.Module, checkpoint: Path, sample: Mapping[str, Any], where: str, voxel_size: float | None = None,
    xyz_scale: float = 1.0,
) -> nn.Module:  # fmt: skip
    """The checkpoint's encoder reading `sample`'s channels and steps at `voxel_size` (the downstream
    config's; default the checkpoint's): `base` itself, or a rebuild with the data's in_channels / T and
    the weights carried over as the event fine-tune does (6 -> 4 channels through `polarity_from_colour`)."""
    c, steps = _input_shape(sample)
    cin, T = int(base.in_channels), int(base.T)
    fits_c = c == cin or (c == 3 and cin == 6)  # xyz alone gets the missing colour appended
    same_voxel = voxel_size is None or float(voxel_size) == float(getattr(base, "voxel_size", 0.0))
    if fits_c and steps in (None, T) and same_voxel and xyz_scale == 1.0:
        return base
    if not fits_c and not (cin == 6 and c == 4):
        raise ValueError(
            f"{where} gives {c} input channels and {checkpoint} reads {cin}; only a 6-channel (xyz + colour) "
            "checkpoint is carried over to 4 event channels (x, y, t, polarity)"
        )
    cfg = {**base.model_cfg, "in_channels": c if not fits_c else cin, "T": steps or T}
    if not same_voxel:
        cfg["voxel_size"] = float(voxel_size)
    net = create_model(base.model_name, **cfg)
    load_weights(net, checkpoint, base.model_name, adapt=polarity_from_colour, model_cfg=cfg,
                 may_differ=_MAY_DIFFER, xyz_scale=xyz_scale)  # fmt: skip
    return net.eval()


@torch.no_grad()
def _measure(model: nn.Module, batches: list[Any]) -> dict[str, dict[str, Any]]:
    """Per group: sites per sample, firing rate (0..1) and the BN shifts of the eval-mode forward passes."""
    groups = _groups(model)
    names = [g for g, _ in groups]
    sites = dict.fromkeys(names, 0.0)
    bn_acc: dict[str, list[Any]] = {}  # bn name -> [sum, sum of squares, count, SparseBatchNorm]
    hooks = []

    def count_sites(g: str) -> Any:
        def hook(_m: nn.Module, _i: Any, out: Any) -> None:
            if isinstance(out, SparseTensor):
                sites[g] += float(out.coords.shape[0])

        return hook

    def bn_input(name: str, bn: nn.BatchNorm1d) -> Any:
        def hook(_m: nn.Module, args: tuple[Any, ...]) -> None:
            x = args[0].detach().double().reshape(-1, bn.num_features)
            acc = bn_acc.setdefault(name, [0.0, 0.0, 0, bn])
            acc[0], acc[1], acc[2] = acc[0] + x.sum(0), acc[1] + (x * x).sum(0), acc[2] + x.shape[0]

        return hook

    for g, m in groups:
        hooks.append(m.register_forward_hook(count_sites(g)))
    for name, m in model.named_modules():
        if isinstance(m, SparseBatchNorm):
            hooks.append(m.bn.register_forward_pre_hook(bn_input(name, m.bn)))
    spikes: dict[str, float] = {}
    cells: dict[str, float] = {}
    model.eval()
    record_spikes(model, True)
    n, points = 0, 0
    try:
        for b in batches:
            model(b)
            n += int(b.xyz.shape[0])
            points += int(b.xyz.shape[0] * b.xyz.shape[1])
            for name, st in spike_stats(model).items():
                spikes[name] = spikes.get(name, 0.0) + st["spikes"]
                cells[name] = cells.get(name, 0.0) + st["neurons"]
    finally:
        record_spikes(model, False)
        for h in hooks:
            h.remove()
    D = float(getattr(model, "D", 1) or 1)
    out: dict[str, Any] = {g: {"sites": sites[g] / max(n, 1)} for g in names}
    out["_points"] = points / max(n, 1)
    for g in names:
        lay = [k for k in spikes if _group_of(k, names) == g]
        cnt = sum(cells[k] for k in lay)
        out[g]["firing"] = sum(spikes[k] for k in lay) / cnt / D if cnt else None
        shifts = [_bn_shift(*bn_acc[k]) for k in bn_acc if _group_of(k, names) == g]
        # the group's figure is its worst layer: a mean over the stem's three BNs hid the first one's
        # 16x variance on a 10x-scaled cloud (the two after it see spikes, which stay in 0..D)
        out[g]["bn_mean_shift"] = max(s[0] for s in shifts) if shifts else None
        out[g]["bn_logvar_shift"] = max((s[1] for s in shifts), key=abs) if shifts else None
        out[g]["bn_layers"] = {k: _bn_shift(*bn_acc[k]) for k in bn_acc if _group_of(k, names) == g}
    return out


def _bn_shift(s: Any, s2: Any, n: int, bn: nn.BatchNorm1d) -> tuple[float, float]:
    """(mean over channels of |batch mean - running mean| / running sd, of log(batch var / running var));
    the batch variance is unbiased, as BN's running variance is."""
    mean = s / n
    var = (s2 / n - mean * mean).clamp_min(0) * (n / max(n - 1, 1))
    rm, rv = bn.running_mean.double(), bn.running_var.double()
    eps = float(bn.eps)
    shift = ((mean - rm).abs() / (rv + eps).sqrt()).mean()
    logvar = torch.log((var + eps) / (rv + eps)).mean()
    return float(shift), float(logvar)


def _default_reference(meta: Mapping[str, Any]) -> str:
    data = meta.get("data")
    name = data.get("dataset") if isinstance(data, Mapping) else None
    return name if isinstance(name, str) and name else "modelnet40"


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b <= 0:
        return None
    return a / b


def transfer_report(
    checkpoint: str | os.PathLike[str],
    dataset: str,
    *,
    split: str = "train",
    samples: int = 64,
    batch_size: int = 16,
    reference: str | None = None,
    options: Mapping[str, Any] | None = None,
    seed: int = 0,
    voxel_size: float | None = None,
    xyz_scale: float = 1.0,
) -> dict[str, Any]:
    """What the checkpoint's encoder sees on `samples` seeded samples of `dataset` (built with
    `options`, e.g. {"T": 6, "encoding": "bins"}) vs the `reference` dataset (default: the pretraining
    data its meta names, else modelnet40, at the checkpoint's point count), in eval mode (BN running
    statistics, nothing updated). `voxel_size`: the one the downstream run voxelizes at (a scene config's
    model.voxel_size), default the checkpoint's; the reference keeps the checkpoint's. `xyz_scale`: the
    fine-tune's `transfer.xyz_scale` (the encoder as that run would start from the checkpoint).
    Returns {"checkpoint", "dataset", "reference", "groups", "verdict"}.
    """
    path = Path(checkpoint)
    meta = read_meta(path)
    base = create_model(None, pretrained=path)
    if not (
        isinstance(getattr(base, "stem", None), nn.Module)
        and isinstance(getattr(base, "stages", None), nn.Module)
    ):
        raise ValueError(
            f"{path} holds a {meta.get('model', type(base).__name__)!r} model with no E-3DSNN stem / stages; "
            "svl transfer reads spiking sparse encoders (e3dsnn_*) and the models built on them"
        )
    base.eval()
    reference = reference or _default_reference(meta)
    opts = {"seed": seed, **dict(options or {})}
    ds = build_dataset(dataset, split, **opts)
    ref_points = (meta.get("contract") or {}).get("num_points") or getattr(base, "num_points", None)
    ref_ds = build_dataset(reference, split, num_points=ref_points, seed=seed)
    torch.manual_seed(seed)
    mine = _measure(
        _model_for(base, path, ds[0], f"{dataset}/{split}", voxel_size, xyz_scale),
        draw_batches(ds, samples, batch_size, seed),
    )
    ref = _measure(_model_for(base, path, ref_ds[0], f"{reference}/{split}"),
                   draw_batches(ref_ds, samples, batch_size, seed))  # fmt: skip
    points, points_ref = mine.pop("_points"), ref.pop("_points")
    groups = []
    for g, m in mine.items():
        r = ref[g]
        groups.append({
            "group": g,
            "sites": m["sites"],
            "sites_ref": r["sites"],
            "sites_ratio": _ratio(m["sites"], r["sites"]),
            "firing": m["firing"],
            "firing_ref": r["firing"],
            "firing_ratio": _ratio(m["firing"], r["firing"]),
            "bn_mean_shift": m["bn_mean_shift"],
            "bn_logvar_shift": m["bn_logvar_shift"],
            "bn_mean_shift_ref": r["bn_mean_shift"],
            "bn_logvar_shift_ref": r["bn_logvar_shift"],
            "bn_layers": {k: {"mean_shift": v[0], "logvar_shift": v[1]} for k, v in m["bn_layers"].items()},
        })  # fmt: skip
    return {
        "checkpoint": str(path),
        "dataset": dataset,
        "split": split,
        "reference": reference,
        "samples": min(len(ds), int(samples)),
        "samples_ref": min(len(ref_ds), int(samples)),
        "points": points,
        "points_ref": points_ref,
        "voxel_size": voxel_size or float(getattr(base, "voxel_size", 0.0) or 0.0) or None,
        "groups": groups,
        "verdict": _verdict(
            groups, float(voxel_size or getattr(base, "voxel_size", 0.0) or 0.0), points, points_ref
        ),
    }


def _verdict(groups: list[dict[str, Any]], voxel_size: float, points: float, points_ref: float) -> list[str]:
    """One line per figure past its threshold, naming the group, the figure and what to try."""
    lines: list[str] = []
    vs = f" ({voxel_size:g})" if voxel_size else ""
    # more points fill more voxels in any frame: name the point counts next to the site counts
    more = f" (samples hold {points:.4g} points vs {points_ref:.4g})" if points != points_ref else ""
    for g in groups:
        name, ratio = g["group"], g["sites_ratio"]
        if name != "sn_out" and ratio is not None and (ratio < 1 / SITES_RATIO or ratio > SITES_RATIO):
            how = (
                f"the input is much sparser at this voxel size{vs}{more}"
                if ratio < 1
                else f"the input fills many more voxels at this voxel size{vs}{more}: other units or frame?"
            )
            lines.append(
                f"{name}: {g['sites']:.4g} sites per sample vs {g['sites_ref']:.4g} on the reference: {how}"
            )
        f, fr = g["firing"], g["firing_ref"]
        if f is not None and f < SILENT_FIRING and (fr or 0) >= SILENT_FIRING:
            lines.append(f"{name}: firing {f:.3g} of the maximum vs {fr:.3g} on the reference: nearly silent")
        elif g["firing_ratio"] is not None and not 1 / FIRING_RATIO <= g["firing_ratio"] <= FIRING_RATIO:
            lines.append(f"{name}: firing {f:.3g} vs {fr:.3g} on the reference ({g['firing_ratio']:.2g}x)")
        ms, lv = g["bn_mean_shift"], g["bn_logvar_shift"]
        ref_note = _ref_note(g)
        if ms is not None and ms > BN_MEAN_SHIFT:
            lines.append(f"{name}: BN input mean shifted by {ms:.2g} sd: re-estimate BN (eval.precise_bn) or "
                         f"normalise the frame{ref_note}")  # fmt: skip
        if lv is not None and abs(lv) > BN_LOGVAR_SHIFT:
            lines.append(f"{name}: BN input variance {math.exp(lv):.3g}x the pretraining's: re-estimate BN "
                         f"(eval.precise_bn) or rescale the input{ref_note}")  # fmt: skip
    return lines


def _ref_note(g: Mapping[str, Any]) -> str:
    """A note when the reference itself is past a BN threshold: the running statistics are off there too."""
    ms, lv = g["bn_mean_shift_ref"], g["bn_logvar_shift_ref"]
    if (ms is not None and ms > BN_MEAN_SHIFT) or (lv is not None and abs(lv) > BN_LOGVAR_SHIFT):
        return (f" (the reference too: {ms:.2g} sd, variance {math.exp(lv):.3g}x: the running statistics "
                "are off on it)")  # fmt: skip
    return ""


def _fmt(v: float | None, spec: str = ".3g") -> str:
    return "-" if v is None else format(v, spec)


def format_transfer(report: Mapping[str, Any]) -> str:
    """The report as a table (yours vs reference, with ratios) and its verdict lines."""
    pts, pts_ref = _fmt(report.get("points"), ".4g"), _fmt(report.get("points_ref"), ".4g")
    n, n_ref = report.get("samples", "?"), report.get("samples_ref", "?")
    head = (f"{report['checkpoint']}: {report['dataset']} ({n} samples, {pts} points each) vs reference "
            f"{report['reference']} ({n_ref} samples, {pts_ref} points each)")  # fmt: skip
    cols = ("group", "sites", "sites ref", "ratio", "firing", "firing ref", "ratio", "BN mean sd",
            "BN logvar", "ref mean sd", "ref logvar")  # fmt: skip
    rows = [cols]
    for g in report["groups"]:
        rows.append((
            g["group"], _fmt(g["sites"], ".4g"), _fmt(g["sites_ref"], ".4g"), _fmt(g["sites_ratio"], ".2f"),
            _fmt(g["firing"], ".3f"), _fmt(g["firing_ref"], ".3f"), _fmt(g["firing_ratio"], ".2f"),
            _fmt(g["bn_mean_shift"], ".2f"), _fmt(g["bn_logvar_shift"], "+.2f"),
            _fmt(g.get("bn_mean_shift_ref"), ".2f"), _fmt(g.get("bn_logvar_shift_ref"), "+.2f"),
        ))  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(len(cols))]
    table = [
        "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
        for r in rows
    ]
    verdict = [f"  - {v}" for v in report["verdict"]] or ["  nothing past the thresholds"]
    note = "firing: mean spikes per neuron and step / D; BN: input vs running statistics, worst layer"
    return "\n".join([head, *table, note, "verdict:", *verdict])
