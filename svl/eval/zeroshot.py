"""Zero-shot metrics, generalized zero-shot (GZSL) with calibrated stacking, reports (docs/SPEC.md §6).

Everything here works on a score matrix `(N, K)` (any monotone similarity: cosine, or the folded
Rep-VLI logits) and integer labels `(N,)`, so the pretraining job, `svl zeroshot` and the tests share
one implementation. Accuracies are fractions in [0, 1]; tables print them as percentages.

GZSL: an encoder trained on seen classes scores them systematically higher, so in the all-class
setting every unseen shape tends to be called a seen class. Calibrated stacking (Chao et al., 2016)
subtracts a constant `gamma` from seen-class scores before the argmax; `choose_calibration` picks
gamma on a validation split where some trained-on-nothing classes play unseen, never on test data.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "class_mean_accuracy",
    "choose_calibration",
    "confusion_matrix",
    "format_table",
    "gzsl_metrics",
    "per_class_accuracy",
    "plot_confusion",
    "topk_accuracy",
    "write_report",
    "zeroshot_report",
    "calibrate_gamma",
    "class_mask",
    "evaluate_checkpoint",
    "gzsl_masks",
    "label_map",
    "read_class_list",
    "zsl_section",
]


# ----------------------------------------------------------------------------- input checks
def _as_scores(scores: Any) -> np.ndarray:
    if hasattr(scores, "detach"):  # torch tensor without importing torch
        scores = scores.detach().cpu().float().numpy()
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 2 or s.shape[1] < 1:
        raise ValueError(f"scores must be a (N, K) matrix, got shape {s.shape}")
    if not np.isfinite(s).all():
        raise ValueError("scores contain NaN or inf")
    return s


def _as_labels(labels: Any, n: int | None = None, num_classes: int | None = None) -> np.ndarray:
    if hasattr(labels, "detach"):
        labels = labels.detach().cpu().numpy()
    y = np.asarray(labels)
    if y.ndim != 1:
        raise ValueError(f"labels must be a 1-D array, got shape {y.shape}")
    if y.size and not np.issubdtype(y.dtype, np.integer):
        if not np.all(np.equal(np.mod(y, 1), 0)):
            raise ValueError("labels must be integers")
    y = y.astype(np.int64)
    if n is not None and y.shape[0] != n:
        raise ValueError(f"got {y.shape[0]} labels for {n} score rows")
    if num_classes is not None and y.size and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}), got range [{y.min()}, {y.max()}]")
    return y


def _as_mask(mask: Any, k: int) -> np.ndarray:
    if hasattr(mask, "detach"):
        mask = mask.detach().cpu().numpy()
    m = np.asarray(mask)
    if m.shape != (k,):
        raise ValueError(f"seen_mask must have shape ({k},) (one flag per class), got {m.shape}")
    return m.astype(bool)


# ----------------------------------------------------------------------------- closed-set metrics
def topk_accuracy(scores: Any, labels: Any, ks: Sequence[int] = (1, 3, 5)) -> dict[str, float]:
    """`{"top1": .., "top3": .., "top5": ..}`: fraction of samples whose label is among the k best.

    k larger than the number of classes is clipped to K (so top-5 of a 3-class problem is 1.0).
    Ties are broken towards the lower class index, like `argmax`.
    """
    s = _as_scores(scores)
    y = _as_labels(labels, s.shape[0], s.shape[1])
    out: dict[str, float] = {}
    if s.shape[0] == 0:
        return {f"top{k}": float("nan") for k in ks}
    # rank of the true class = number of classes scoring strictly higher (+ ties at a lower index)
    true = s[np.arange(len(y)), y][:, None]
    idx = np.arange(s.shape[1])[None, :]
    rank = ((s > true) | ((s == true) & (idx < y[:, None]))).sum(1)
    for k in ks:
        if int(k) < 1:
            raise ValueError(f"top-k needs k >= 1, got {k}")
        out[f"top{int(k)}"] = float((rank < min(int(k), s.shape[1])).mean())
    return out


def _preds(scores_or_preds: Any) -> np.ndarray:
    if hasattr(scores_or_preds, "detach"):
        scores_or_preds = scores_or_preds.detach().cpu().numpy()
    a = np.asarray(scores_or_preds)
    return a.argmax(1).astype(np.int64) if a.ndim == 2 else _as_labels(a)


def per_class_accuracy(scores_or_preds: Any, labels: Any, num_classes: int | None = None) -> np.ndarray:
    """(K,) top-1 accuracy per true class; NaN for classes with no samples.

    Accepts a score matrix (argmax taken) or already-computed predictions.
    """
    p = _preds(scores_or_preds)
    if num_classes is None:
        a = np.asarray(scores_or_preds)
        num_classes = (
            a.shape[1] if a.ndim == 2 else int(max(p.max(initial=-1), _as_labels(labels).max(initial=-1)) + 1)
        )
    y = _as_labels(labels, p.shape[0], num_classes)
    hits = np.bincount(y, weights=(p == y).astype(np.float64), minlength=num_classes)
    counts = np.bincount(y, minlength=num_classes).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, hits / np.maximum(counts, 1), np.nan)


def class_mean_accuracy(scores_or_preds: Any, labels: Any, num_classes: int | None = None) -> float:
    """Mean of per-class accuracies over classes that have samples (balanced accuracy)."""
    acc = per_class_accuracy(scores_or_preds, labels, num_classes)
    present = ~np.isnan(acc)
    return float(acc[present].mean()) if present.any() else float("nan")


def confusion_matrix(labels: Any, preds: Any, num_classes: int) -> np.ndarray:
    """(K, K) int64 counts: rows are true classes, columns predicted classes."""
    p = _preds(preds)
    y = _as_labels(labels, p.shape[0], num_classes)
    if p.size and (p.min() < 0 or p.max() >= num_classes):
        raise ValueError(f"predictions must lie in [0, {num_classes})")
    return np.bincount(y * num_classes + p, minlength=num_classes * num_classes).reshape(
        num_classes, num_classes
    )


# ----------------------------------------------------------------------------- GZSL
def _harmonic(a: float, b: float) -> float:
    if math.isnan(a) or math.isnan(b):
        return float("nan")
    return 0.0 if a + b == 0 else 2 * a * b / (a + b)


def gzsl_metrics(
    scores: Any, labels: Any, seen_mask: Any, gamma: float = 0.0, bias_mask: Any = None
) -> dict[str, float]:
    """Generalized zero-shot accuracy: `{"seen", "unseen", "H", "gamma"}`.

    Predictions are over all K classes after subtracting `gamma` from seen-class scores
    (calibrated stacking; gamma = 0 is the plain setting). "seen"/"unseen" are class-mean
    accuracies over samples whose true class is seen/unseen; H is their harmonic mean.
    `bias_mask` (default: `seen_mask`) picks the classes the bias is subtracted from, for runs
    where some benchmark-seen classes were held out of training (pseudo-unseen).
    """
    s = _as_scores(scores)
    y = _as_labels(labels, s.shape[0], s.shape[1])
    m = _as_mask(seen_mask, s.shape[1])
    b = m if bias_mask is None else _as_mask(bias_mask, s.shape[1])
    p = (s - float(gamma) * b[None, :]).argmax(1)
    acc = per_class_accuracy(p, y, s.shape[1])
    seen_acc = acc[m & ~np.isnan(acc)]
    unseen_acc = acc[~m & ~np.isnan(acc)]
    seen = float(seen_acc.mean()) if seen_acc.size else float("nan")
    unseen = float(unseen_acc.mean()) if unseen_acc.size else float("nan")
    return {"seen": seen, "unseen": unseen, "H": _harmonic(seen, unseen), "gamma": float(gamma)}


def _candidate_gammas(s: np.ndarray, m: np.ndarray, max_candidates: int = 512) -> np.ndarray:
    """Gammas at which some prediction flips between the seen and unseen groups (plus 0).

    Sample i switches from its best seen class to its best unseen class once gamma exceeds
    gap_i = max_seen_i - max_unseen_i, so only midpoints between sorted gaps matter.
    """
    gaps = np.unique(s[:, m].max(1) - s[:, ~m].max(1))
    if gaps.size > max_candidates:
        gaps = np.unique(np.quantile(gaps, np.linspace(0, 1, max_candidates)))
    mids = (gaps[1:] + gaps[:-1]) / 2 if gaps.size > 1 else gaps
    span = float(gaps[-1] - gaps[0]) if gaps.size > 1 else 1.0
    edge = max(span * 1e-3, 1e-6)
    return np.unique(np.concatenate([[0.0, gaps[0] - edge, gaps[-1] + edge], mids]))


def choose_calibration(
    scores_val: Any, labels_val: Any, seen_mask_val: Any, gammas: Sequence[float] | None = None
) -> float:
    """The calibrated-stacking gamma that maximises H on a validation split.

    `seen_mask_val` marks the classes the model was trained on; validation samples of the other
    classes (pseudo-unseen: seen in the dataset but held out of training) play the unseen role,
    so the bias is estimated without touching test data. `gammas=None` searches every gamma at
    which a prediction changes. Ties go to the gamma closest to 0 (the smallest correction).
    """
    s = _as_scores(scores_val)
    y = _as_labels(labels_val, s.shape[0], s.shape[1])
    m = _as_mask(seen_mask_val, s.shape[1])
    if m.all() or not m.any():
        raise ValueError("calibration needs both trained (seen) and pseudo-unseen classes in seen_mask_val")
    present = np.unique(y)
    if not m[present].any() or m[present].all():
        raise ValueError(
            "calibration needs validation samples of both trained and pseudo-unseen classes "
            f"(classes present: {present.tolist()})"
        )
    cand = _candidate_gammas(s, m) if gammas is None else np.asarray(list(gammas), dtype=np.float64)
    if cand.size == 0:
        raise ValueError("gammas must not be empty")
    best, best_h = 0.0, -1.0
    for g in sorted(cand.tolist(), key=abs):
        h = gzsl_metrics(s, y, m, g)["H"]
        if h > best_h + 1e-12:
            best, best_h = float(g), h
    return best


# ----------------------------------------------------------------------------- reports
def zeroshot_report(
    scores: Any,
    labels: Any,
    class_names: Sequence[str],
    seen_mask: Any = None,
    gamma: float | None = None,
    ks: Sequence[int] = (1, 3, 5),
    meta: dict[str, Any] | None = None,
    bias_mask: Any = None,
) -> dict[str, Any]:
    """Everything `svl zeroshot` prints and saves, as one JSON-serialisable dict.

    With `seen_mask`, a "gzsl" section reports the plain setting and, when `gamma` is given,
    the calibrated one side by side. `bias_mask` (default `seen_mask`) names the classes gamma is
    subtracted from, when training held some benchmark-seen classes out (pseudo-unseen).
    """
    s = _as_scores(scores)
    names = [str(n) for n in class_names]
    if len(names) != s.shape[1]:
        raise ValueError(f"{len(names)} class names for {s.shape[1]} score columns")
    y = _as_labels(labels, s.shape[0], s.shape[1])
    pred = s.argmax(1)
    acc = per_class_accuracy(pred, y, len(names))
    counts = np.bincount(y, minlength=len(names))
    cm = confusion_matrix(y, pred, len(names))
    per_class = []
    for k, name in enumerate(names):
        row = cm[k].copy()
        row[k] = 0
        confused = [names[j] for j in np.argsort(-row, kind="stable")[:2] if row[j] > 0]
        per_class.append(
            {
                "class": name,
                "n": int(counts[k]),
                "acc": None if np.isnan(acc[k]) else float(acc[k]),
                "predicted_as": int(cm[:, k].sum()),
                "most_confused_with": confused,
            }
        )
    report: dict[str, Any] = {
        "num_samples": int(s.shape[0]),
        "num_classes": len(names),
        **topk_accuracy(s, y, ks),
        "class_mean": class_mean_accuracy(pred, y, len(names)),
        "class_names": names,
        "per_class": per_class,
        "confusion": cm.tolist(),
    }
    if seen_mask is not None:
        m = _as_mask(seen_mask, len(names))
        gz: dict[str, Any] = {
            "seen_classes": [n for n, f in zip(names, m) if f],
            "unseen_classes": [n for n, f in zip(names, m) if not f],
            "uncalibrated": gzsl_metrics(s, y, m, 0.0),
        }
        b = m if bias_mask is None else _as_mask(bias_mask, len(names))
        if bias_mask is not None:
            gz["bias_classes"] = [n for n, f in zip(names, b) if f]
        if gamma is not None:
            gz["calibrated"] = gzsl_metrics(s, y, m, float(gamma), bias_mask=b)
        report["gzsl"] = gz
    if meta:
        report["meta"] = dict(meta)
    return report


def _pct(v: float | None) -> str:
    return "   n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:6.2f}"


def format_table(report: dict[str, Any], per_class: bool = True) -> str:
    """Human-readable summary (accuracies in %) + optional per-class table."""
    tops = "  ".join(f"{k}={_pct(report[k]).strip()}%" for k in report if k.startswith("top"))
    lines = [
        f"zero-shot: {report['num_samples']} samples, {report['num_classes']} classes",
        f"  {tops}  class-mean={_pct(report['class_mean']).strip()}%",
    ]
    gz = report.get("gzsl")
    if gz:
        for key in ("uncalibrated", "calibrated"):
            if key in gz:
                g = gz[key]
                lines.append(
                    f"  GZSL {key:<12} (gamma={g['gamma']:.4f}): seen={_pct(g['seen']).strip()}%  "
                    f"unseen={_pct(g['unseen']).strip()}%  H={_pct(g['H']).strip()}%"
                )
    if per_class:
        width = max([5] + [len(r["class"]) for r in report["per_class"]])
        lines.append("")
        lines.append(f"{'class':<{width}}  {'n':>5}  {'acc %':>6}  {'pred':>5}  most confused with")
        for r in report["per_class"]:
            lines.append(
                f"{r['class']:<{width}}  {r['n']:>5}  {_pct(r['acc'])}  {r['predicted_as']:>5}  "
                + ", ".join(r["most_confused_with"])
            )
    return "\n".join(lines)


def plot_confusion(
    cm: Any, names: Sequence[str], path: str | os.PathLike[str], title: str = "confusion (row-normalised)"
) -> Path:
    """Save a row-normalised confusion matrix as PNG (matplotlib Agg, atomic write)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from svl.utils import atomic_write

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


def write_report(
    report: dict[str, Any], out_dir: str | os.PathLike[str], prefix: str = "zeroshot"
) -> dict[str, Path]:
    """Write `<prefix>.json`, `<prefix>_per_class.txt` and `<prefix>_confusion.png` into `out_dir`."""
    from svl.utils import atomic_write

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out}: output path exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": out / f"{prefix}.json",
        "table": out / f"{prefix}_per_class.txt",
        "confusion": out / f"{prefix}_confusion.png",
    }

    def _clean(o: Any) -> Any:  # NaN is not valid JSON
        if isinstance(o, float) and math.isnan(o):
            return None
        if isinstance(o, dict):
            return {k: _clean(v) for k, v in o.items()}
        if isinstance(o, list | tuple):
            return [_clean(v) for v in o]
        return o

    with atomic_write(paths["json"], "w") as fh:
        json.dump(_clean(report), fh, indent=2)
        fh.write("\n")
    with atomic_write(paths["table"], "w") as fh:
        fh.write(format_table(report) + "\n")
    plot_confusion(report["confusion"], report["class_names"], paths["confusion"])
    return paths


# ----------------------------------------------------------------------------- evaluating a checkpoint
# Pretraining checkpoints carry a zero-shot section written by the pretraining task:
# meta["zsl"] = {"trained_classes": [...], "pseudo_unseen_classes": [...], "gamma": float,
# "gamma_descriptions": float}. GZSL uses it: trained classes get the calibrated-stacking bias, and
# gamma comes from the caller, else that section, else calibration on the validation split with the
# pseudo-unseen classes playing unseen (never on test data).


def read_class_list(spec: str) -> list[str]:
    """Class names from a file (.txt one per line, or a .json list) or a dataset: NAME[:seen|:unseen]."""
    from svl.data import build_dataset
    from svl.vocab import read_list_file

    p = Path(spec)
    if p.suffix.lower() in (".txt", ".json") or p.exists():
        return read_list_file(p)
    name, _, part = spec.partition(":")
    if part not in ("", "seen", "unseen", "all"):
        raise ValueError(f"--classes {spec!r}: the part after ':' must be seen, unseen or all")
    ds = build_dataset(name, "test")
    if part in ("seen", "unseen"):
        attr = f"{part}_classes"
        if not hasattr(ds, attr):
            raise ValueError(f"dataset {name!r} has no seen/unseen class split; use --classes {name}")
        return list(getattr(ds, attr))
    return list(ds.classes)


def label_map(ds_classes: Sequence[str], head_classes: Sequence[str]) -> list[int]:
    """Dataset label index -> head column (-1 when absent), matched by `svl.vocab.name_key`."""
    from svl.vocab import name_key

    index = {name_key(n): i for i, n in enumerate(head_classes)}
    return [index.get(name_key(n), -1) for n in ds_classes]


def class_mask(head_classes: Sequence[str], names: Sequence[str]) -> np.ndarray:
    """Boolean mask over `head_classes`: which of them are among `names` (by `name_key`)."""
    from svl.vocab import name_key

    wanted = {name_key(n) for n in names}
    return np.array([name_key(n) in wanted for n in head_classes])


def gzsl_masks(
    head_classes: Sequence[str],
    trained_mask: np.ndarray,
    benchmark_seen: Sequence[str] | None,
    present: np.ndarray,
) -> tuple[np.ndarray, np.ndarray | None]:
    """(seen_mask, bias_mask) for GZSL: metrics follow the benchmark's seen/unseen split, the
    calibration bias hits only the classes the encoder was trained on (pseudo-unseen classes were
    held out of training but are benchmark-seen). Without a usable benchmark split, trained = seen.
    """
    if benchmark_seen is not None:
        bench = class_mask(head_classes, benchmark_seen)
        both_present = bench[present].any() and not bench[present].all()
        if both_present and (bench | ~trained_mask).all():  # every trained class is benchmark-seen
            return bench, trained_mask
    return trained_mask, None


def zsl_section(ckpt_meta: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint's zero-shot metadata (empty when it has none)."""
    z = ckpt_meta.get("zsl")
    return z if isinstance(z, dict) else {}


def calibrate_gamma(
    model: Any,
    data: str,
    split: str,
    head_classes: Sequence[str],
    trained_mask: np.ndarray,
    zsl: dict[str, Any],
    batch_size: int = 32,
    device: str = "cpu",
    where: str = "checkpoint",
) -> tuple[float, dict[str, Any]]:
    """Gamma chosen on a validation split where pseudo-unseen classes (kept out of training) play
    unseen; returns (gamma, {"samples", "pseudo_unseen", "seen", "unseen", "H"} on that split)."""
    import torch

    from svl.data import build_dataset
    from svl.eval.classify import predict_scores
    from svl.vocab import name_key

    pseudo = zsl.get("pseudo_unseen_classes")
    if not pseudo:
        raise ValueError(
            f"{where}: calibration needs pseudo-unseen classes (seen classes held out of training) "
            "recorded in the checkpoint's meta['zsl']['pseudo_unseen_classes']; pass a gamma instead"
        )
    val = build_dataset(data, split)
    lmap = label_map(list(val.classes), head_classes)
    s, lab = predict_scores(model, val, batch_size, device, desc="calibration (val)")
    yv = torch.tensor([lmap[int(v)] for v in lab])
    ok = yv >= 0
    trained = zsl.get("trained_classes")
    if trained:  # only classes the run knows as trained or pseudo-unseen
        keep = {name_key(n) for n in list(trained) + list(pseudo)}
        ok &= torch.tensor([name_key(val.classes[int(v)]) in keep for v in lab])
    gamma = choose_calibration(s[ok], yv[ok], trained_mask)
    m = gzsl_metrics(s[ok], yv[ok], trained_mask, gamma)
    return gamma, {"samples": int(ok.sum()), "pseudo_unseen": list(pseudo), **m}


def evaluate_checkpoint(
    checkpoint: str | os.PathLike[str],
    head: str | os.PathLike[str],
    data: str,
    split: str = "test",
    batch_size: int = 32,
    device: str = "cpu",
    limit: int | None = None,
    gamma: float | None = None,
    calibrate: bool = False,
    val_split: str = "val",
    gzsl: bool = True,
) -> dict[str, Any]:
    """Text-free zero-shot evaluation of a checkpoint + Rep-VLI head on a dataset split.

    Returns the `zeroshot_report` dict; `report["notes"]` lists what the caller may want to tell the
    user (no GZSL setting to calibrate, the calibration figures).
    """
    import torch

    from svl.checkpoint import read_checkpoint_meta
    from svl.data import build_dataset
    from svl.eval.classify import predict_scores
    from svl.models.loading import load_zeroshot_model

    model, head_classes, head_meta = load_zeroshot_model(checkpoint, head)
    ckpt_meta = read_checkpoint_meta(checkpoint)
    ds = build_dataset(data, split)
    lmap = label_map(list(ds.classes), head_classes)
    scores, labels = predict_scores(model, ds, batch_size, device, limit=limit)
    y = torch.tensor([lmap[int(v)] for v in labels])
    missing = sorted({ds.classes[int(v)] for v, m in zip(labels, y) if m < 0})
    if missing:
        raise ValueError(
            f"head {head} has no class for {len(missing)} class(es) present in "
            f"{data}/{split}: {missing[:10]}; build a head with --classes {data}"
        )
    notes: list[str] = []
    calibration = None
    seen_mask, bias_mask = None, None
    zsl = zsl_section(ckpt_meta)
    trained = zsl.get("trained_classes") or getattr(ds, "seen_classes", None)
    if trained is not None and gzsl:
        mask = class_mask(head_classes, trained)
        present = np.unique(y.numpy())
        if mask[present].any() and not mask[present].all():
            seen_mask, bias_mask = gzsl_masks(head_classes, mask, getattr(ds, "seen_classes", None), present)
            # The pretraining task calibrates each text mode's class embeddings separately.
            key = "gamma_descriptions" if head_meta.get("text_mode") == "descriptions" else "gamma"
            if gamma is None and zsl.get(key) is not None:
                gamma = float(zsl[key])
            if gamma is None and calibrate:
                gamma, calibration = calibrate_gamma(
                    model, data, val_split, head_classes, mask, zsl, batch_size, device, str(checkpoint)
                )
        elif calibrate or gamma is not None:
            notes.append(
                f"{data}/{split} does not hold both trained and untrained classes of the head, so there "
                "is no generalized zero-shot setting to calibrate"
            )
    meta = {
        "checkpoint": str(checkpoint),
        "head": str(head),
        "data": data,
        "split": split,
        "teacher": head_meta.get("teacher"),
        "text_mode": head_meta.get("text_mode"),
        "templates_hash": head_meta.get("templates_hash"),
        "encoder_sha256": head_meta.get("encoder_sha256"),
    }
    report = zeroshot_report(
        scores, y, head_classes, seen_mask=seen_mask, gamma=gamma, meta=meta, bias_mask=bias_mask
    )
    if calibration is not None:
        report["calibration"] = {"split": val_split, "gamma": gamma, **calibration}
    report["notes"] = notes
    return report
