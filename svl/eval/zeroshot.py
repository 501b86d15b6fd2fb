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

from svl.plots import plot_confusion
from svl.utils import atomic_write
from svl.vocab import name_key

__all__ = [
    "choose_calibration",
    "class_mask",
    "class_mean_accuracy",
    "confusion_matrix",
    "format_table",
    "gzsl_masks",
    "gzsl_metrics",
    "label_map",
    "per_class_accuracy",
    "topk_accuracy",
    "write_report",
    "zeroshot_report",
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


def write_report(
    report: dict[str, Any], out_dir: str | os.PathLike[str], prefix: str = "zeroshot"
) -> dict[str, Path]:
    """Write `<prefix>.json`, `<prefix>_per_class.txt` and `<prefix>_confusion.png` into `out_dir`."""
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


# ----------------------------------------------------------------------------- head classes vs a benchmark
def label_map(ds_classes: Sequence[str], head_classes: Sequence[str]) -> list[int]:
    """Dataset label index -> head column (-1 when absent), matched by `svl.vocab.name_key`."""
    index = {name_key(n): i for i, n in enumerate(head_classes)}
    return [index.get(name_key(n), -1) for n in ds_classes]


def class_mask(head_classes: Sequence[str], names: Sequence[str]) -> np.ndarray:
    """Boolean mask over `head_classes`: which of them are among `names` (by `name_key`)."""
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
