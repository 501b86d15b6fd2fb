"""3D boxes from a detection checkpoint: the detector's maps turned into boxes (`postprocess`: decoded
peaks, rotated NMS), over point-cloud files (`detect`, what `svl detect` writes) and over a dataset's
frames (`predict_boxes`, what the detection task scores with KITTI AP)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from svl.boxes import nms_bev
from svl.data import collate_points, load_points
from svl.infer.checks import detector_range_check
from svl.infer.files import FileErrors, each_file, make_output_dir, output_paths
from svl.models.detector import decode
from svl.models.loading import DETECTOR_KIND, load_model
from svl.plots import plot_bev
from svl.utils import atomic_write, progress

__all__ = ["DecodingSettings", "detect", "postprocess", "predict_boxes"]

# The sample keys of a frame's ground truth, handed back by `predict_boxes` for scoring.
_TRUTH_KEYS = ("boxes", "box_labels", "difficulty", "ignore_boxes", "ignore_labels", "frame_id")


class DecodingSettings(Protocol):
    """How `predict_boxes` batches and decodes (the detection task's `eval` section is one)."""

    batch_size: int

    def decoding(self) -> dict[str, Any]:
        """Keyword arguments of `postprocess`: score_threshold, topk, nms_iou, max_boxes."""
        ...


def postprocess(
    out: Mapping[str, Any],
    grid: Any,
    score_threshold: float = 0.1,
    topk: int = 100,
    nms_iou: float = 0.1,
    max_boxes: int = 50,
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """A detector's maps -> per frame (boxes, scores, labels), numpy, best first: decoded peaks, rotated
    NMS in BEV per class (a box of one class never suppresses another's), the best `max_boxes`."""
    res = []
    with torch.no_grad():
        decoded = decode(out, grid, topk=topk, score_threshold=score_threshold)
    for boxes, scores, labels in decoded:
        keep = [
            idx[nms_bev(boxes[idx], scores[idx], nms_iou)]
            for idx in (torch.nonzero(labels == c).flatten() for c in labels.unique().tolist())
        ]
        k = torch.cat(keep) if keep else torch.zeros(0, dtype=torch.long)
        k = k[scores[k].argsort(descending=True)][:max_boxes]
        res.append((boxes[k].double().numpy(), scores[k].double().numpy(), labels[k].numpy()))
    return res


@torch.no_grad()
def predict_boxes(
    net: nn.Module, dataset: Any, ev: DecodingSettings, desc: str = "detect", truth: list | None = None
) -> list[tuple]:
    """Per frame (boxes, scores, labels) of `net` over `dataset`, in order; `truth`, when given, gets
    each frame's box keys (GT, difficulty, ignore boxes) from the same pass over the data."""
    net.eval()
    preds: list[tuple] = []
    idx = list(range(len(dataset)))
    for s in progress([idx[i : i + ev.batch_size] for i in range(0, len(idx), ev.batch_size)], desc=desc):
        samples = [dataset[i] for i in s]
        if truth is not None:
            truth += [{k: v for k, v in x.items() if k in _TRUTH_KEYS} for x in samples]
        preds += postprocess(net(collate_points(samples)), net.grid, **ev.decoding())
    return preds


def detect(
    model: str | os.PathLike[str] | nn.Module,
    files: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    *,
    class_names: Sequence[str] | None = None,
    settings: Mapping[str, Any] | None = None,
    format: str | None = None,
    score_threshold: float | None = None,
    errors: FileErrors = "raise",
) -> list[dict[str, Any]]:
    """Boxes of each point-cloud file: OUT/<name>.json (centre, size, yaw, class, score per box) and
    OUT/<name>.png (bird's-eye view: every point of the scan, the detector's range outlined);
    coordinates as stored (metres, z up). <name> is the file's path relative to the files' common
    folder without its extension (`08/velodyne/000000` for scans of several sequences; see
    `svl.infer.files.output_paths`), so no output overwrites another; outputs are written atomically.
    A scan with no point inside the detector's point-cloud range is refused (ValueError naming the
    file, nothing written for it: a failed file under errors="report"); one with few inside gets a
    line in its result's "warnings" (`svl.infer.checks.detector_range_check`).

    `model`: a `svl finetune task=detection` checkpoint, or a built detector with its `class_names`.
    `settings` are `postprocess`'s keywords (default: a checkpoint's own, meta["eval"], the ones it
    was evaluated with); `score_threshold` overrides theirs; `format` forces a point-cloud reader.
    `errors="report"`: a file that cannot be read or written becomes `{"file", "error"}` in the
    results and the other files go on (default: its error is raised).
    """
    targets = output_paths(files, out_dir, (".json", ".png"))
    if isinstance(model, nn.Module):
        if class_names is None:
            raise ValueError("detect: a built model needs its class_names")
        net, names = model, list(class_names)
    else:
        loaded = load_model(model, kind=DETECTOR_KIND)
        net, names = loaded.model, loaded.class_names
        settings = loaded.meta.get("eval") if settings is None else settings
    ev = dict(settings or {})
    if score_threshold is not None:
        ev["score_threshold"] = float(score_threshold)
    make_output_dir(out_dir)

    def one(i: int, p: str | os.PathLike[str]) -> dict[str, Any]:
        s = load_points(p, format=format)
        rng = getattr(net.grid, "point_cloud_range", None)
        warned = [w for w in [detector_range_check(s["xyz"], rng, str(p))] if w]
        item = {"xyz": s["xyz"], "index": 0, **({"rgb": s["rgb"]} if s.get("rgb") is not None else {})}
        with torch.no_grad():
            boxes, scores, labels = postprocess(net.eval()(collate_points([item])), net.grid, **ev)[0]
        if len(labels) and int(labels.max()) >= len(names):
            raise ValueError(f"model predicted class {int(labels.max())} for {len(names)} class names")
        dets = [
            {"class": names[int(k)], "score": float(sc), "centre": [float(v) for v in b[:3]],
             "size": [float(v) for v in b[3:6]], "yaw": float(b[6])}
            for b, sc, k in zip(boxes, scores, labels)
        ]  # fmt: skip
        to = targets[i]
        with atomic_write(to[".json"], "w") as fh:
            json.dump({"file": str(p), "boxes": dets}, fh, indent=2)
        plot_bev(s["xyz"], boxes, labels, names, to[".png"], scores=scores,
                 title=f"{Path(p).name}: {len(dets)} boxes", point_cloud_range=rng)  # fmt: skip
        return {"file": str(p), "boxes": len(dets), "json": str(to[".json"]), "png": str(to[".png"]),
                "detections": dets, "warnings": warned}  # fmt: skip

    return each_file(files, one, errors)
