"""Classifying with a checkpoint: files of any modality it was trained on (`classify`), or a dataset
(`predict_scores`: the score matrix the zero-shot metrics take).

Text-free on purpose: nothing here imports a teacher, so `svl classify` runs with the encoder and
the Rep-VLI head file only.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from svl.data import collate_points, load_points, prepare
from svl.data.events import events_to_points, events_to_steps
from svl.data.images import collate_images, read_image, resize_image
from svl.data.readers.events import read_events
from svl.infer.checks import event_warning, point_count_warning, up_axis_warning
from svl.infer.files import FileErrors, each_file
from svl.models.loading import CLASSIFIER_KIND, load_model
from svl.utils import progress

__all__ = ["classify", "encode", "predict_scores", "vote_probabilities"]


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


def classify(
    model: str | os.PathLike[str] | nn.Module,
    files: Sequence[str | os.PathLike[str]],
    *,
    head: str | os.PathLike[str] | None = None,
    class_names: Sequence[str] | None = None,
    data: Mapping[str, Any] | None = None,
    topk: int = 5,
    num_points: int | None = None,
    up_axis: str | None = None,
    format: str | None = None,
    device: str | torch.device = "cpu",
    sensor_size: tuple[int, int] | None = None,
    errors: FileErrors = "raise",
) -> list[dict[str, Any]]:
    """Label each file, read the way the classifier was trained: `[{"file", "label", "top",
    "prepared", "warnings"}, ...]`, "top" the `topk` best classes with their scores.

    `model` is a checkpoint (a classifier written by `svl finetune` or `svl distill`, or a pretraining
    checkpoint with a Rep-VLI `head` file: point clouds), or a model with its `class_names` and
    `data` (the checkpoint's meta["data"]; default point clouds). Its "input" picks the files:
    - "image": PNG/JPEG read with the trained channels, resized to the trained size; softmax scores.
    - "events": event recordings (`format` forces a reader), encoded as in training (encoding, time
      bins, `num_points` events, default the trained count); `sensor_size` (W, H) states the
      recording's sensor when its file does not (else the format's, the header's, or max x, y + 1);
      a sensor of another size than the trained one is rescaled to it, with a warning.
    - otherwise point clouds, through `svl.data.prepare` with the model's contract: the files' up
      axis (`up_axis`, default z) turned to the model's gravity axis, `num_points` (default the
      contract's), centred and scaled, colour as trained. Scores are the head's logits: they rank
      the classes of one file but are not calibrated probabilities.

    `errors="report"`: a file that cannot be read becomes `{"file", "error"}` in the results and the
    other files go on (default: its error is raised).
    """
    if isinstance(model, nn.Module):
        if head is not None:
            raise ValueError("classify: a head file goes with a checkpoint path, not a built model")
        if class_names is None:
            raise ValueError("classify: a built model needs its class_names")
        names, data, files_up = list(class_names), dict(data or {}), None
    else:
        loaded = load_model(model, kind=CLASSIFIER_KIND, head=head)
        model, names = loaded.model, loaded.class_names
        data = {} if head is not None else dict(loaded.meta.get("data") or {})
        files_up = loaded.meta.get("files_up_axis")
    if data.get("input") == "image":
        return _classify_images(model, names, files, data, topk, device, errors)
    if data.get("input") == "events":
        events = data | ({"num_points": num_points} if num_points else {})
        return _classify_events(model, names, files, events, topk, format, device, sensor_size, errors=errors)
    if sensor_size is not None:
        raise ValueError("--sensor-size (sensor_size=) is for event files; this model reads point clouds")
    cfg = getattr(model, "pretrained_cfg", None) or {}
    n = num_points or (cfg.get("num_points") if isinstance(cfg, dict) else None)
    return _classify_points(model, names, files, topk, n, device, up_axis, errors, files_up)


@torch.no_grad()
def _classify_points(
    model: nn.Module,
    class_names: Sequence[str],
    paths: Sequence[str | os.PathLike[str]],
    topk: int,
    num_points: int | None,
    device: str | torch.device,
    up_axis: str | None,
    errors: FileErrors = "raise",
    files_up: str | None = None,
) -> list[dict[str, Any]]:
    """Point-cloud files; `prepared` records what `svl.data.prepare` assumed, `warnings` e.g. a
    degenerate cloud, or an up axis assumed where the training files (`files_up`) stood otherwise."""
    if not paths:
        raise ValueError("no point-cloud files given")
    model.eval().to(device)
    contract = getattr(model, "pretrained_cfg", None)
    k = min(int(topk), len(class_names))

    def one(_: int, p: str | os.PathLike[str]) -> dict[str, Any]:
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
        few = point_count_warning(sample["prepared"]["points_in"], num_points, str(path))
        up = up_axis_warning(sample["prepared"], files_up, str(path))
        warned += [w for w in (few, up) if w]
        return _ranked(str(path), logits, class_names, k, sample["prepared"], warned)

    return each_file(paths, one, errors)


@torch.no_grad()
def _classify_events(
    model: nn.Module,
    class_names: Sequence[str],
    paths: Sequence[str | os.PathLike[str]],
    events_meta: dict[str, Any],
    topk: int,
    format: str | None,
    device: str | torch.device,
    sensor_size: tuple[int, int] | None = None,
    seed: int = 0,
    errors: FileErrors = "raise",
) -> list[dict[str, Any]]:
    """Event recordings with a classifier fine-tuned on events (task `event_classification`). The
    encodings scale coordinates by the sensor size, so a recording from another sensor is rescaled
    to the trained one: one warning per file, saying where its size came from."""
    if not paths:
        raise ValueError("no event files given")
    model.eval().to(device)
    enc, n = events_meta.get("encoding", "cloud"), int(events_meta.get("num_points", 1024))
    T = int(getattr(model, "T", 1))
    trained = tuple(events_meta.get("sensor_size") or ())
    k = min(int(topk), len(class_names))

    def one(_: int, p: str | os.PathLike[str]) -> dict[str, Any]:
        rec = read_events(p, format=format, sensor_size=sensor_size)
        notes = [w for w in [event_warning(rec, trained, n)] if w]
        if enc == "bins":
            sample = events_to_steps(rec.events, T, rec.sensor_size, n, seed=seed)
        else:
            sample = events_to_points(rec.events, rec.sensor_size, n, seed=seed)
        logits = model(collate_points([{**sample, "label": 0, "index": 0}]).to(device)).float().cpu()[0]
        prepared = {"format": rec.format, "events": len(rec.events), "encoding": enc, "num_points": n,
                    "sensor_size": list(rec.sensor_size)}  # fmt: skip
        return _ranked(str(rec.path), logits, class_names, k, prepared, notes)

    return each_file(paths, one, errors)


@torch.no_grad()
def _classify_images(
    model: nn.Module,
    class_names: Sequence[str],
    paths: Sequence[str | os.PathLike[str]],
    data: dict[str, Any],
    topk: int,
    device: str | torch.device,
    errors: FileErrors = "raise",
) -> list[dict[str, Any]]:
    """Image files with an image classifier (`svl distill`), as in training; softmax scores. A grey file
    for an RGB model or an RGB file for a grey one is converted as PIL does (`read_image(convert=True)`),
    with a warning."""
    if not paths:
        raise ValueError("no image files given")
    size, channels = int(data["image_size"]), int(data["channels"])
    model.eval().to(device)
    k = min(int(topk), len(class_names))

    def one(_: int, p: str | os.PathLike[str]) -> dict[str, Any]:
        path = Path(p)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            img = read_image(path, channels=channels, convert=True)  # grey <-> RGB as PIL converts
        h, w = img.shape[-2:]
        batch = collate_images([{"image": resize_image(img, size), "label": 0, "index": 0}]).to(device)
        probs = model(batch).float().softmax(-1).cpu()[0]
        prepared = {"image_size": [int(h), int(w)], "resized_to": size, "channels": channels}
        return _ranked(str(path), probs, class_names, k, prepared, [str(w.message) for w in caught])

    return each_file(paths, one, errors)


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


def vote_probabilities(logits: list[Tensor] | Tensor) -> Tensor:
    """Test-time voting: softmax probabilities averaged over the passes ((V, N, K) -> (N, K))."""
    stacked = torch.stack(list(logits)) if not isinstance(logits, Tensor) else logits
    return stacked.float().softmax(-1).mean(0)


@torch.no_grad()
def encode(
    model: nn.Module,
    dataset: Any,
    batch_size: int = 64,
    desc: str = "encode",
    collate: Callable[[list[Any]], Any] | None = None,
) -> Tensor:
    """Model outputs (N, D) for every sample of `dataset`, in eval mode, in order (mode restored).

    `collate` batches the samples (default: point clouds, `collate_points`; images: `collate_images`).
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = []
    starts = range(0, len(dataset), batch_size)
    for a in progress(starts, desc=desc, leave=False):
        batch = (collate or collate_points)([dataset[i] for i in range(a, min(a + batch_size, len(dataset)))])
        out.append(model(batch.to(device)).float().cpu())
    model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0)
