"""Running a (folded) encoder over datasets and point-cloud files: score matrices and top-k labels.

Text-free on purpose: nothing here imports a teacher, so `svl classify` runs with the encoder and
the Rep-VLI head file only.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

__all__ = ["classify_files", "normalize_cloud", "predict_scores"]


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


def normalize_cloud(xyz: np.ndarray | Tensor, num_points: int | None = None, seed: int = 0) -> Tensor:
    """Resample to `num_points` and centre/scale to the unit sphere: the datasets' test transforms.

    Resampling is seeded (repetition only when the file has fewer points), so the same file always
    gets the same label.
    """
    from svl.data.transforms import build_transforms

    x = np.asarray(xyz.detach().cpu() if isinstance(xyz, Tensor) else xyz, dtype=np.float32)
    if x.ndim != 2 or x.shape[1] != 3 or x.shape[0] == 0:
        raise ValueError(f"a point cloud must be a non-empty (N, 3) array, got shape {tuple(x.shape)}")
    if not np.isfinite(x).all():
        raise ValueError("the point cloud contains NaN or inf coordinates")
    steps: list[Any] = ["normalize"]
    if num_points is not None and num_points > 0:
        steps.insert(0, {"name": "random_sample", "num_points": int(num_points)})
    out = build_transforms(steps)({"xyz": x}, np.random.default_rng(seed))
    return torch.from_numpy(np.ascontiguousarray(out["xyz"]))


@torch.no_grad()
def classify_files(
    model: nn.Module,
    class_names: Sequence[str],
    paths: Sequence[str | os.PathLike[str]],
    topk: int = 5,
    num_points: int | None = None,
    device: str | torch.device = "cpu",
) -> list[dict[str, Any]]:
    """Label each point-cloud file: `[{"file", "label", "top": [(name, score), ...]}, ...]`.

    Scores are the folded head's logits: cosine similarity times the student's (per-file) norm,
    so they rank classes within a file but are not calibrated probabilities.
    """
    from svl.data import load_points
    from svl.data.batch import collate_points

    if not paths:
        raise ValueError("no point-cloud files given")
    model.eval().to(device)
    k = min(int(topk), len(class_names))
    results = []
    for p in paths:
        path = Path(p)
        if not path.exists():
            raise FileNotFoundError(f"point-cloud file {path} does not exist")
        sample = load_points(path)
        xyz = sample["xyz"] if isinstance(sample, dict) else sample
        item = {"xyz": normalize_cloud(xyz, num_points), "label": 0, "index": 0}
        batch = collate_points([item]).to(device)
        logits = model(batch).float().cpu()[0]
        if logits.shape[0] != len(class_names):
            raise ValueError(f"model returned {logits.shape[0]} scores for {len(class_names)} classes")
        top = torch.topk(logits, k)
        results.append(
            {
                "file": str(path),
                "label": class_names[int(top.indices[0])],
                "top": [{"class": class_names[int(i)], "score": float(logits[i])} for i in top.indices],
            }
        )
    return results
