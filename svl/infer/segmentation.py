"""Per-point labels from a segmentation checkpoint: of point-cloud files (`segment`, what `svl segment`
writes) and of a dataset's scenes (`predict_points`, what the segmentation task scores). Both label
every point given, in passes of the training budget (`cover`, `predict_logits`)."""

from __future__ import annotations

import math
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from svl.data import collate_points, load_points
from svl.data.readers.ply import write_ply_labels
from svl.infer.checks import voxel_warning
from svl.infer.files import FileErrors, each_file, make_output_dir, output_paths
from svl.models.loading import SEGMENTER_KIND, load_model
from svl.plots import class_colors, plot_segmentation
from svl.utils import atomic_write, progress

__all__ = ["chunk_input", "cover", "predict_logits", "predict_points", "segment"]

_POINT_KEYS = ("xyz", "rgb", "normals", "feats")  # what the network reads of a point


def cover(n: int, num_points: int | None, rng: np.random.Generator) -> list[tuple[np.ndarray, int]]:
    """Chunks `(idx, owned)` whose `idx[:owned]` are disjoint and cover 0..n-1, each `idx` holding
    exactly `num_points` indices (None: one chunk of all n).

    Why: the network was trained on `num_points` random points of a scan, so each chunk is such a
    random subset (Pointcept's test fragments, with the training sampler in place of its grid
    sampler); the last chunk is topped up with other points of the scan (context only, not owned),
    a scan smaller than the budget with repeats (as training samples it).
    """
    if n < 1:
        raise ValueError("cover: an empty scan")
    if num_points is None:
        return [(np.arange(n), n)]
    m = int(num_points)
    if m < 1:
        raise ValueError(f"cover: num_points must be >= 1, got {num_points}")
    perm = rng.permutation(n)
    if n <= m:
        return [(np.concatenate([perm, rng.choice(n, m - n, replace=True)]), n)]
    chunks = [(perm[i : i + m], m) for i in range(0, n - n % m, m)]
    r = n % m
    if r:
        rest = perm[: n - r]  # n - r >= m points not in the last chunk: context without repeats
        chunks.append((np.concatenate([perm[n - r :], rng.choice(rest, m - r, replace=False)]), r))
    return chunks


def chunk_input(sample: dict[str, Any], idx: np.ndarray, angle: float = 0.0) -> dict[str, Any]:
    """The network input of one chunk: the sample's point arrays at `idx`, xyz and normals turned `angle`
    about z (a sample's own precomputed `feats` are taken as they are)."""
    item: dict[str, Any] = {k: np.asarray(sample[k])[idx] for k in _POINT_KEYS if sample.get(k) is not None}
    if angle:
        c, s = math.cos(angle), math.sin(angle)
        rot = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], np.float32)
        for k in ("xyz", "normals"):
            if k in item:
                item[k] = item[k].astype(np.float32) @ rot.T
    return item


@torch.no_grad()
def predict_logits(
    net: nn.Module,
    samples: Iterable[dict[str, Any]],
    *,
    num_points: int | None,
    batch_size: int = 8,
    votes: int = 1,
    seed: int = 0,
) -> Iterator[tuple[dict[str, Any], np.ndarray]]:
    """(sample, logits (N, K)) for every sample in order, each of its N points scored.

    Each point takes the logits of its own voxel in the pass where it was an input (the U-Net's
    point->voxel inverse map), over the `cover` chunks of its scan: exact (no neighbour search) and
    as cheap as the points demand (ceil(N / num_points) passes). With `votes` > 1 vote v repeats
    this with another random cover, the scan turned 2 pi v / votes about the gravity axis (z, as
    `rotate_gravity` trains), and the logits are averaged. Chunks of several scans share a batch.
    """
    if votes < 1:
        raise ValueError(f"votes must be >= 1, got {votes}")
    net.eval()
    pending: deque[list[Any]] = deque()  # [sample, logit sum or None, chunks not yet run]
    buf: list[tuple[list[Any], np.ndarray, int, dict[str, Any]]] = []

    def flush() -> None:
        out = net(collate_points([b[3] for b in buf])).float().cpu().numpy()
        for (entry, idx, owned, _), lg in zip(buf, out):
            if entry[1] is None:
                entry[1] = np.zeros((len(entry[0]["xyz"]), lg.shape[-1]), np.float64)
            entry[1][idx[:owned]] += lg[:owned]
            entry[2] -= 1
        buf.clear()

    def done() -> Iterator[tuple[dict[str, Any], np.ndarray]]:
        while pending and pending[0][2] == 0:
            s, acc, _ = pending.popleft()
            yield s, (acc / votes).astype(np.float32)

    for i, s in enumerate(samples):
        entry: list[Any] = [s, None, 0]
        pending.append(entry)
        for v in range(votes):
            for idx, owned in cover(len(s["xyz"]), num_points, np.random.default_rng([seed, i, v])):
                if buf and len(idx) != len(buf[0][1]):
                    flush()  # a batch stacks chunks of one size
                buf.append((entry, idx, owned, chunk_input(s, idx, 2 * math.pi * v / votes)))
                entry[2] += 1
                if len(buf) >= batch_size:
                    flush()
        yield from done()
    if buf:
        flush()
    yield from done()


def predict_points(
    net: nn.Module,
    dataset: Any,
    batch_size: int,
    desc: str = "segment",
    *,
    num_points: int | None = None,
    votes: int = 1,
    seed: int = 0,
    allowed: Callable[[dict[str, Any]], np.ndarray | None] | None = None,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per-scene (labels, predictions) of `net` over `dataset`, in order, one per point of each scene
    as the dataset gives it (build it with `all_points=True` to score every original point).

    `num_points`: the points per pass (the training budget; see `predict_logits`). `allowed(sample)`:
    a (K,) bool mask of the classes a scene may take (ShapeNetPart: its category's parts), else None.
    """
    ys, ps = [], []
    samples = (dataset[i] for i in progress(range(len(dataset)), desc=desc))
    for s, logits in predict_logits(
        net, samples, num_points=num_points, batch_size=batch_size, votes=votes, seed=seed
    ):
        mask = None if allowed is None else allowed(s)
        if mask is not None:
            logits = np.where(np.asarray(mask, bool), logits, -np.inf)
        ys.append(np.asarray(s["segment"], np.int64))
        ps.append(logits.argmax(-1))
    return ys, ps


def segment(
    model: str | os.PathLike[str] | nn.Module,
    files: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    *,
    class_names: Sequence[str] | None = None,
    format: str | None = None,
    num_points: int | None = None,
    votes: int = 1,
    errors: FileErrors = "raise",
) -> list[dict[str, Any]]:
    """Per-point labels of each point-cloud file, written as OUT/<name>.ply (with a `label` property),
    OUT/<name>.npy and OUT/<name>.png (coloured by class); coordinates as stored (metres for scenes).
    <name> is the file's path relative to the files' common folder without its extension
    (`08/velodyne/000000` for scans of several sequences; see `svl.infer.files.output_paths`), so
    no output overwrites another; outputs are written atomically.

    `model`: a `svl finetune task=segmentation` checkpoint, or a built U-Net with its `class_names`.
    `format` forces a point-cloud reader (e.g. "kitti" for .bin scans). Every point is labelled the
    way the task scores it (`predict_logits`): passes of `num_points` points (default: the
    checkpoint's training budget; a built model: all points in one pass), `votes` averaged.
    A cloud that fills fewer than 8 voxels of the model's size gets a line in its result's
    "warnings" (`svl.infer.checks.voxel_warning`: coordinates in other units than the training data's).
    `errors="report"`: a file that cannot be read or written becomes `{"file", "error"}` in the
    results and the other files go on (default: its error is raised).
    """
    targets = output_paths(files, out_dir, (".ply", ".npy", ".png"))
    if isinstance(model, nn.Module):
        if class_names is None:
            raise ValueError("segment: a built model needs its class_names")
        net, names = model, list(class_names)
    else:
        loaded = load_model(model, kind=SEGMENTER_KIND)
        net, names = loaded.model, loaded.class_names
        if num_points is None:
            num_points = (loaded.meta.get("data") or {}).get("num_points")
    make_output_dir(out_dir)
    cols = class_colors(len(names))

    def one(i: int, p: str | os.PathLike[str]) -> dict[str, Any]:
        s = load_points(p, format=format)
        warned = [w for w in [voxel_warning(s["xyz"], getattr(net, "voxel_size", None), str(p))] if w]
        item = {"xyz": s["xyz"], **({"rgb": s["rgb"]} if s.get("rgb") is not None else {})}
        [(_, logits)] = predict_logits(net, [item], num_points=num_points, batch_size=8, votes=votes)
        if logits.shape[-1] != len(names):
            raise ValueError(f"model returned {logits.shape[-1]} scores per point for {len(names)} classes")
        pred = logits.argmax(-1)
        to = targets[i]
        write_ply_labels(to[".ply"], s["xyz"], pred, cols[pred])
        with atomic_write(to[".npy"]) as fh:
            np.save(fh, pred.astype(np.int32))
        plot_segmentation(s["xyz"], pred, names, to[".png"], title=Path(p).name)
        counts = np.bincount(pred, minlength=len(names))
        return {
            "file": str(p), "points": int(len(pred)), "ply": str(to[".ply"]), "npy": str(to[".npy"]),
            "png": str(to[".png"]), "classes": {names[c]: int(n) for c, n in enumerate(counts) if n},
            "warnings": warned,
        }  # fmt: skip

    return each_file(files, one, errors)
