"""`svl zeroshot` and `svl build-head` as library calls: a checkpoint + Rep-VLI head run over a dataset
split and scored (`evaluate_checkpoint`), and the class list a head is built for (`read_class_list`).

Running the model lives here and the scoring in `svl.eval.zeroshot`, so the metrics never load a
model or a dataset.

Pretraining checkpoints carry a zero-shot section written by the pretraining task:
meta["zsl"] = {"trained_classes": [...], "pseudo_unseen_classes": [...], "gamma": float,
"gamma_descriptions": float}. GZSL uses it: trained classes get the calibrated-stacking bias, and
gamma comes from the caller, else that section, else calibration on the validation split with the
pseudo-unseen classes playing unseen (never on test data).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from svl.checkpoint import read_checkpoint_meta
from svl.data import build_dataset
from svl.eval.zeroshot import (
    choose_calibration,
    class_mask,
    gzsl_masks,
    gzsl_metrics,
    label_map,
    zeroshot_report,
)
from svl.infer.classification import predict_scores
from svl.models.loading import load_zeroshot_model
from svl.vocab import name_key, read_list_file

__all__ = ["calibrate_gamma", "evaluate_checkpoint", "read_class_list", "zsl_section"]


def read_class_list(spec: str) -> list[str]:
    """Class names from a file (.txt one per line, or a .json list) or a dataset: NAME[:seen|:unseen]."""
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
