"""Handlers of `svl build-head`, `svl zeroshot` and `svl classify` (wired in svl/cli.py).

Pretraining checkpoints may carry a zero-shot section in their metadata, written by the pretraining
job: `meta["zsl"] = {"trained_classes": [...], "pseudo_unseen_classes": [...], "gamma": float}`.
`svl zeroshot` uses it for generalized zero-shot: trained classes get the calibrated-stacking bias,
and gamma comes from `--gamma`, else that section, else `--calibrate` (chosen on the validation
split with the pseudo-unseen classes playing unseen; never on test data).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["read_class_list", "run_build_head", "run_classify", "run_zeroshot"]


def _norm(name: str) -> str:
    return " ".join(str(name).replace("_", " ").lower().split())


def read_list_file(path: str | Path, what: str = "class list") -> list[str]:
    """Non-empty strings from a .json list or a text file (one per line, '#' comments skipped)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{what} {p} does not exist")
    text = p.read_text(encoding="utf-8")
    if p.suffix.lower() == ".json":
        try:
            items = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{p}: invalid JSON ({e})") from None
        if not isinstance(items, list) or not all(isinstance(n, str) for n in items):
            raise ValueError(f"{p}: expected a JSON list of strings")
    else:
        items = [ln for ln in text.splitlines() if not ln.lstrip().startswith("#")]
    items = [n.strip() for n in items if n.strip()]
    if not items:
        raise ValueError(f"{p}: the {what} is empty")
    return items


def read_class_list(spec: str) -> list[str]:
    """Class names from a file (.txt one per line, or a .json list) or a dataset: NAME[:seen|:unseen]."""
    p = Path(spec)
    if p.suffix.lower() in (".txt", ".json") or p.exists():
        return read_list_file(p)
    from svl.data.datasets import build_dataset

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


# ----------------------------------------------------------------------------- build-head
def run_build_head(args: argparse.Namespace) -> int:
    from svl.models.heads import build_head_file

    names = read_class_list(args.classes)
    templates = read_list_file(args.templates, "templates file") if args.templates else None
    path, meta = build_head_file(
        args.checkpoint,
        names,
        args.output,
        teacher=args.teacher,
        text_mode=args.text_mode,
        templates=templates,
        device=args.device,
    )
    print(
        f"wrote {path}: {len(names)} classes, teacher {meta['teacher']}, text mode {meta['text_mode']}, "
        f"{meta['num_templates']} templates (sha256 {meta['templates_hash'][:12]}), "
        f"encoder sha256 {meta['encoder_sha256'][:12]}"
    )
    return 0


# ----------------------------------------------------------------------------- zeroshot
def _label_map(ds_classes: list[str], head_classes: list[str], data: str) -> list[int]:
    """Dataset label index -> head column, matched by normalised class name."""
    index = {_norm(n): i for i, n in enumerate(head_classes)}
    return [index.get(_norm(n), -1) for n in ds_classes]


def _class_mask(head_classes: Sequence[str], names: Sequence[str]) -> np.ndarray:
    wanted = {_norm(n) for n in names}
    return np.array([_norm(n) in wanted for n in head_classes])


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
        bench = _class_mask(head_classes, benchmark_seen)
        both_present = bench[present].any() and not bench[present].all()
        if both_present and (bench | ~trained_mask).all():  # every trained class is benchmark-seen
            return bench, trained_mask
    return trained_mask, None


def _zsl_section(ckpt_meta: dict[str, Any]) -> dict[str, Any]:
    z = ckpt_meta.get("zsl")
    return z if isinstance(z, dict) else {}


def _device(name: str | None) -> str:
    import torch

    if name in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def run_zeroshot(args: argparse.Namespace) -> int:
    import torch

    from svl.checkpoint import read_checkpoint_meta
    from svl.data.datasets import build_dataset
    from svl.eval.classify import predict_scores
    from svl.eval.zeroshot import format_table, write_report, zeroshot_report
    from svl.models.heads import load_zeroshot_model

    device = _device(args.device)
    model, head_classes, head_meta = load_zeroshot_model(args.checkpoint, args.head)
    ckpt_meta = read_checkpoint_meta(args.checkpoint)
    ds = build_dataset(args.data, args.split)
    lmap = _label_map(list(ds.classes), head_classes, args.data)
    scores, labels = predict_scores(model, ds, args.batch_size, device, limit=args.limit)
    y = torch.tensor([lmap[int(v)] for v in labels])
    missing = sorted({ds.classes[int(v)] for v, m in zip(labels, y) if m < 0})
    if missing:
        raise ValueError(
            f"head {args.head} has no class for {len(missing)} class(es) present in "
            f"{args.data}/{args.split}: {missing[:10]}; build a head with --classes {args.data}"
        )

    seen_mask, bias_mask, gamma = None, None, args.gamma
    zsl = _zsl_section(ckpt_meta)
    trained = zsl.get("trained_classes") or getattr(ds, "seen_classes", None)
    if trained is not None and not args.no_gzsl:
        mask = _class_mask(head_classes, trained)
        present = np.unique(y.numpy())
        if mask[present].any() and not mask[present].all():
            bench_seen = getattr(ds, "seen_classes", None)
            seen_mask, bias_mask = gzsl_masks(head_classes, mask, bench_seen, present)
            # The pretraining job calibrates each text mode's class embeddings separately.
            key = "gamma_descriptions" if head_meta.get("text_mode") == "descriptions" else "gamma"
            if gamma is None and zsl.get(key) is not None:
                gamma = float(zsl[key])
            if gamma is None and args.calibrate:
                gamma = _calibrate(model, args, head_classes, mask, zsl, device)
        elif args.calibrate or args.gamma is not None:
            print(
                f"note: {args.data}/{args.split} does not hold both trained and untrained classes of the "
                "head, so there is no generalized zero-shot setting to calibrate",
                file=sys.stderr,
            )
    meta = {
        "checkpoint": str(args.checkpoint),
        "head": str(args.head),
        "data": args.data,
        "split": args.split,
        "teacher": head_meta.get("teacher"),
        "text_mode": head_meta.get("text_mode"),
        "templates_hash": head_meta.get("templates_hash"),
        "encoder_sha256": head_meta.get("encoder_sha256"),
    }
    report = zeroshot_report(
        scores, y, head_classes, seen_mask=seen_mask, gamma=gamma, meta=meta, bias_mask=bias_mask
    )
    print(format_table(report, per_class=not args.quiet))
    if args.output:
        paths = write_report(report, args.output)
        print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


def _calibrate(model, args, head_classes, trained_mask, zsl: dict[str, Any], device: str) -> float:
    """Gamma chosen on the validation split: pseudo-unseen classes (kept out of training) play unseen."""
    import torch

    from svl.data.datasets import build_dataset
    from svl.eval.classify import predict_scores
    from svl.eval.zeroshot import choose_calibration, gzsl_metrics

    pseudo = zsl.get("pseudo_unseen_classes")
    if not pseudo:
        raise ValueError(
            f"{args.checkpoint}: --calibrate needs pseudo-unseen classes (seen classes held out of training) "
            "recorded in the checkpoint's meta['zsl']['pseudo_unseen_classes']; pass --gamma instead"
        )
    val = build_dataset(args.data, args.val_split)
    lmap = _label_map(list(val.classes), head_classes, args.data)
    s, lab = predict_scores(model, val, args.batch_size, device, desc="calibration (val)")
    yv = torch.tensor([lmap[int(v)] for v in lab])
    ok = yv >= 0
    trained = zsl.get("trained_classes")
    if trained:  # only classes the run knows as trained or pseudo-unseen
        keep = {_norm(n) for n in list(trained) + list(pseudo)}
        ok &= torch.tensor([_norm(val.classes[int(v)]) in keep for v in lab])
    gamma = choose_calibration(s[ok], yv[ok], trained_mask)
    m = gzsl_metrics(s[ok], yv[ok], trained_mask, gamma)
    print(
        f"calibration on {args.data}/{args.val_split} ({int(ok.sum())} samples, "
        f"pseudo-unseen {list(pseudo)}): gamma={gamma:.4f}  val seen={100 * m['seen']:.2f}%  "
        f"unseen={100 * m['unseen']:.2f}%  H={100 * m['H']:.2f}%"
    )
    return gamma


# ----------------------------------------------------------------------------- classify
def run_classify(args: argparse.Namespace) -> int:
    from svl.eval.classify import classify_files
    from svl.models.heads import load_zeroshot_model

    model, names, _ = load_zeroshot_model(args.checkpoint, args.head)
    cfg = getattr(model, "pretrained_cfg", None) or {}
    num_points = args.num_points or (cfg.get("num_points") if isinstance(cfg, dict) else None)
    results = classify_files(
        model, names, args.files, topk=args.topk, num_points=num_points, device=_device(args.device)
    )
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for r in results:
        tops = "  ".join(f"{t['class']} {t['score']:.3f}" for t in r["top"])
        print(f"{r['file']}: {r['label']}    [{tops}]")
    return 0
