"""Running a (folded) encoder over datasets and point-cloud files: score matrices and top-k labels.

Text-free on purpose: nothing here imports a teacher, so `svl classify` runs with the encoder and
the Rep-VLI head file only.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["classify_event_files", "classify_files", "classify_image_files", "predict_scores"]


@torch.no_grad()
def predict_scores(
    model: nn.Module,
    dataset: Any,
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    limit: int | None = None,
    indices: Sequence[int] | None = None,
    desc: str = "zero-shot",
) -> tuple[Tensor, Tensor]:
    """(scores (N, K), labels (N,)) of `model` over `dataset` items (all, the first `limit`, or `indices`)."""
    from svl.data.batch import collate_points
    from svl.utils import progress

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    idx = list(range(len(dataset))) if indices is None else [int(i) for i in indices]
    if limit is not None:
        idx = idx[: max(0, int(limit))]
    if not idx:
        raise ValueError("no samples to evaluate (empty dataset, split or selection)")
    model.eval().to(device)
    scores, labels = [], []
    chunks = [idx[s : s + batch_size] for s in range(0, len(idx), batch_size)]
    for chunk in progress(chunks, desc=desc):
        batch = collate_points([dataset[i] for i in chunk]).to(device)
        scores.append(model(batch).float().cpu())
        labels.append(batch.labels.cpu())
    return torch.cat(scores), torch.cat(labels).long()


@torch.no_grad()
def classify_files(
    model: nn.Module,
    class_names: Sequence[str],
    paths: Sequence[str | os.PathLike[str]],
    topk: int = 5,
    num_points: int | None = None,
    device: str | torch.device = "cpu",
    up_axis: str | None = None,
) -> list[dict[str, Any]]:
    """Label each point-cloud file: `[{"file", "label", "top", "prepared", "warnings"}, ...]`.

    Every file goes through `svl.data.prepare` with the model's contract (`model.pretrained_cfg`):
    the up axis (`up_axis`, default z) rotated to the model's gravity axis, resampled to the
    contract's points (or `num_points`), centred and scaled to the unit sphere, colour as trained.
    `prepared` records what was assumed; `warnings` holds e.g. a degenerate-cloud warning.
    Scores are the folded head's logits: cosine similarity times the student's (per-file) norm,
    so they rank classes within a file but are not calibrated probabilities.
    """
    from svl.data import load_points, prepare
    from svl.data.batch import collate_points

    if not paths:
        raise ValueError("no point-cloud files given")
    model.eval().to(device)
    contract = getattr(model, "pretrained_cfg", None)
    k = min(int(topk), len(class_names))
    results = []
    for p in paths:
        path = Path(p)
        if not path.exists():
            raise FileNotFoundError(f"point-cloud file {path} does not exist")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            sample = prepare(
                load_points(path), contract, up_axis=up_axis, num_points=num_points, where=str(path)
            )
        item = {"xyz": sample["xyz"], "label": 0, "index": 0}
        item.update({k: sample[k] for k in ("rgb", "normals") if sample.get(k) is not None})
        batch = collate_points([item]).to(device)
        logits = model(batch).float().cpu()[0]
        warned = [str(w.message) for w in caught]
        results.append(_ranked(str(path), logits, class_names, k, sample["prepared"], warned))
    return results


def _ranked(
    file: str,
    scores: Tensor,
    class_names: Sequence[str],
    k: int,
    prepared: dict[str, Any],
    notes: list[str],
) -> dict[str, Any]:
    """One file's result: its label, its top-k classes with scores, what was assumed, warnings."""
    if scores.shape[0] != len(class_names):
        raise ValueError(f"model returned {scores.shape[0]} scores for {len(class_names)} classes")
    top = torch.topk(scores, k)
    return {
        "file": file,
        "label": class_names[int(top.indices[0])],
        "top": [{"class": class_names[int(i)], "score": float(scores[i])} for i in top.indices],
        "prepared": prepared,
        "warnings": notes,
    }


@torch.no_grad()
def classify_event_files(
    model: nn.Module,
    class_names: Sequence[str],
    paths: Sequence[str | os.PathLike[str]],
    events_meta: dict[str, Any],
    topk: int = 5,
    format: str | None = None,
    device: str | torch.device = "cpu",
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Label event recordings with a classifier fine-tuned on events (task `event_classification`).

    Each file is read (`read_events`, `format` forced or detected), encoded as in training (the
    checkpoint's encoding, time bins and events per window, from `events_meta`: its meta["data"]) and
    classified; a sensor of another size than the training data's is a warning (coordinates are scaled
    by the sensor size, so the object's scale changes).
    """
    from svl.data.batch import collate_points
    from svl.data.events import events_to_points, events_to_steps
    from svl.data.readers.events import read_events

    if not paths:
        raise ValueError("no event files given")
    model.eval().to(device)
    enc, n = events_meta.get("encoding", "cloud"), int(events_meta.get("num_points", 1024))
    T = int(getattr(model, "T", 1))
    trained = tuple(events_meta.get("sensor_size") or ())
    k = min(int(topk), len(class_names))
    results = []
    for p in paths:
        rec = read_events(p, format=format)
        notes = []
        if trained and tuple(rec.sensor_size) != trained:
            notes.append(
                f"{rec.path}: sensor {rec.sensor_size[0]}x{rec.sensor_size[1]} but the classifier was "
                f"trained on {trained[0]}x{trained[1]}; coordinates are scaled by the sensor size"
            )
        if enc == "bins":
            sample = events_to_steps(rec.events, T, rec.sensor_size, n, seed=seed)
        else:
            sample = events_to_points(rec.events, rec.sensor_size, n, seed=seed)
        logits = model(collate_points([{**sample, "label": 0, "index": 0}]).to(device)).float().cpu()[0]
        prepared = {"format": rec.format, "events": len(rec.events), "encoding": enc, "num_points": n}
        results.append(_ranked(str(rec.path), logits, class_names, k, prepared, notes))
    return results


@torch.no_grad()
def classify_image_files(
    model: nn.Module,
    class_names: Sequence[str],
    paths: Sequence[str | os.PathLike[str]],
    data: dict[str, Any],
    topk: int = 5,
    device: str | torch.device = "cpu",
) -> list[dict[str, Any]]:
    """Label image files (PNG/JPEG) with an image classifier (`svl distill`): each image is read with
    the channels the model was trained on and resized to its input size, as in training. Scores are
    softmax probabilities."""
    from svl.data.images import collate_images, read_image, resize_image

    if not paths:
        raise ValueError("no image files given")
    size, channels = int(data["image_size"]), int(data["channels"])
    model.eval().to(device)
    k = min(int(topk), len(class_names))
    results = []
    for p in paths:
        path = Path(p)
        img = read_image(path, channels=channels)
        h, w = img.shape[-2:]
        batch = collate_images([{"image": resize_image(img, size), "label": 0, "index": 0}]).to(device)
        probs = model(batch).float().softmax(-1).cpu()[0]
        prepared = {"image_size": [int(h), int(w)], "resized_to": size, "channels": channels}
        results.append(_ranked(str(path), probs, class_names, k, prepared, []))
    return results
