"""KITTI 3D object detection: average precision in bird's-eye view and in 3D, the devkit's way.

What is computed, per class, metric ("bev", "3d") and difficulty level, follows KITTI's devkit
(`eval.py` of second.pytorch / OpenPCDet's `kitti_object_eval_python`, the code every LiDAR
detection paper reports with):

- Difficulty levels are cumulative: a ground-truth (GT) box of level d (`kitti_difficulty`: 0 easy,
  1 moderate, 2 hard) counts at levels >= d; at easier levels, and at every level when d = -1, it
  is *ignored*: a detection matched to it is neither a true nor a false positive. Boxes of a
  neighbouring class (Van for Car, Person_sitting for Pedestrian), given in a frame's
  ``ignore_boxes`` / ``ignore_names``, are ignored the same way. Data without difficulties has one
  level, "all", where every GT box counts.
- Matching runs over the GT boxes in their order: each takes, among the unassigned detections of
  its class above the score threshold, the one with the largest overlap, which must exceed the
  class's IoU threshold strictly (Car 0.7, Pedestrian 0.5, Cyclist 0.5, others 0.5); a
  non-ignored detection is preferred to an ignored one. Unmatched detections are false positives,
  except those whose overlap with a DontCare box (intersection over the detection's own area in
  BEV, own volume in 3D) exceeds the threshold.
- The score thresholds are the scores of the true positives of a first pass that matches every
  GT box to its highest-scored detection above the IoU threshold; precision and recall are taken
  at each. AP is the mean, over the recall positions (R40: 1/40, ..., 1; R11: 0, 0.1, ..., 1), of
  the highest precision reached at a recall >= the position (0 where none is).

Where we depart from the devkit, and why:

- Recall sampling. The devkit keeps at most 41 thresholds (`get_thresholds`: one TP score per
  1/40 of recall, the nearest) and reads the k-th recall position off the k-th threshold. With
  fewer than 40 GT boxes that under-counts: one GT found perfectly scores R40 = 0 and R11 = 1/11.
  By default we evaluate at every TP score and take precision at recall >= each position, which
  is the definition the devkit approximates; on thousands of boxes the two agree closely (within
  1 AP point on a synthetic set the size of KITTI val). ``devkit_sampling=True`` reproduces the
  devkit's numbers exactly.
- DontCare regions. We check them as the official C++ devkit (`evaluate_object_3d_offline.cpp`)
  does, with the metric's own overlap, intersection over the detection's area / volume. The python
  port checks them only in its 2D image-box metric, so for BEV / 3D its numbers are ours for
  frames without ``dontcare``. (KITTI's DontCare labels carry placeholder 3D boxes, so in BEV / 3D
  they excuse nothing in either devkit; pass ``dontcare`` only for regions with real 3D extents.)
- Detections small in the image. The devkit ignores detections whose 2D box is lower than the
  level's minimum height (40, 25, 25 px); a LiDAR detector has no 2D box, so this applies only to
  frames that give ``det_height_px``.
- The devkit computes overlaps in float32 on a GPU and in the camera frame; we use
  `svl.boxes` (exact, float64, LiDAR frame: the same IoUs up to rounding).

Classes without a single GT box at a level have no AP there: NaN (the class stays in the result,
with ``num_gt`` 0, so tables keep their shape; `math.isnan` tells).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from svl.boxes import bev_intersection, bev_iou, intersection3d, iou3d, validate_boxes

__all__ = [
    "DEFAULT_IOU_THRESHOLDS",
    "DEFAULT_NEIGHBOURS",
    "LEVELS",
    "DetectionFrame",
    "evaluate_detection",
    "kitti_difficulty",
]

LEVELS = ("easy", "moderate", "hard")
MIN_HEIGHT = (40.0, 25.0, 25.0)  # image height of the 2D box, pixels; a GT box needs more than this
MAX_OCCLUSION = (0, 1, 2)  # KITTI's occlusion state: 0 visible, 1 partly, 2 largely occluded
MAX_TRUNCATION = (0.15, 0.30, 0.50)  # fraction of the object outside the image
DEFAULT_IOU_THRESHOLDS = {"Car": 0.7, "Pedestrian": 0.5, "Cyclist": 0.5}
OTHER_IOU_THRESHOLD = 0.5
DEFAULT_NEIGHBOURS = {"Car": ("Van",), "Pedestrian": ("Person_sitting",)}
METRICS = {"bev": "ap_bev", "3d": "ap3d"}  # metric -> its key in the result
_NEVER = len(LEVELS)  # "counts from level 3 on": ignored at every level


def kitti_difficulty(height_px: Any, occlusion: Any, truncation: Any) -> Any:
    """KITTI's difficulty of GT boxes: 0 easy, 1 moderate, 2 hard, -1 none (ignored at every level).

    Level d needs an image height > MIN_HEIGHT[d] (40, 25, 25 px: the devkit ignores a box whose
    height is <= the minimum), occlusion <= MAX_OCCLUSION[d] (0, 1, 2) and truncation <=
    MAX_TRUNCATION[d] (0.15, 0.3, 0.5); the levels nest, so the easiest one met is the answer.
    Scalars give an int, arrays an int64 array of their broadcast shape.
    """
    h, occ, trunc = np.broadcast_arrays(
        np.asarray(height_px, np.float64),
        np.asarray(occlusion, np.float64),
        np.asarray(truncation, np.float64),
    )
    out = np.full(h.shape, -1, np.int64)
    for level in reversed(range(len(LEVELS))):  # hardest first, so the easiest level met wins
        ok = (h > MIN_HEIGHT[level]) & (occ <= MAX_OCCLUSION[level]) & (trunc <= MAX_TRUNCATION[level])
        out[ok] = level
    return int(out) if out.ndim == 0 else out


@dataclass
class DetectionFrame:
    """One frame's ground truth and detections; boxes are `svl.boxes` rows (x, y, z, l, w, h, yaw).

    Labels are indices into the ``classes`` given to `evaluate_detection`. ``gt_difficulty`` holds
    `kitti_difficulty` levels (0, 1, 2 or -1); without it every GT box is easy. ``dontcare`` are
    regions where detections are not counted; ``ignore_boxes`` with ``ignore_names`` (one class
    name each, e.g. "Van") are boxes of classes outside ``classes`` that are ignored GT for their
    neighbouring evaluated class. ``det_height_px``: the image height of each detection's 2D box,
    for the devkit's filter of small detections (at the levels easy, moderate, hard; not in
    "all"). ``name`` (a file, a frame id) names the frame in errors. numpy arrays, tensors or
    lists; a mapping with these keys works as well.
    """

    gt_boxes: Any
    gt_labels: Any
    det_boxes: Any
    det_labels: Any
    det_scores: Any
    gt_difficulty: Any = None
    dontcare: Any = None
    ignore_boxes: Any = None
    ignore_names: Sequence[str] | None = None
    det_height_px: Any = None
    name: str = ""


def evaluate_detection(
    frames: Iterable[DetectionFrame | Mapping[str, Any]],
    classes: Sequence[str],
    iou_thresholds: Mapping[str, float] | None = None,
    metrics: Sequence[str] = ("bev", "3d"),
    num_recall: int = 40,
    *,
    neighbours: Mapping[str, Sequence[str]] | None = None,
    devkit_sampling: bool = False,
) -> dict[str, Any]:
    """KITTI AP of detections against ground truth, per class, metric and difficulty level.

    ``iou_thresholds`` overrides the defaults (Car 0.7, Pedestrian 0.5, Cyclist 0.5, any other class
    0.5) for the classes it names; the same threshold serves both metrics. ``num_recall``: 40
    (R40, the KITTI benchmark's since 2019) or 11 (R11, the older papers'). ``neighbours``: class
    -> names of ignored neighbour classes (default Van for Car, Person_sitting for Pedestrian,
    matched case-insensitively). ``devkit_sampling``: the devkit's 41-threshold recall sampling
    (see the module docstring). Returns, with ``levels`` = ["easy", "moderate", "hard"] when any
    frame has ``gt_difficulty``, else ["all"]::

        {"ap_bev": {cls: {level: ap}}, "ap3d": {cls: {level: ap}},   # the metrics asked for, in [0, 1]
         "precision": {metric: {cls: {level: [interpolated precision at each recall position]}}},
         "recall_positions": [...], "num_gt": {cls: {level: count}}, "num_det": {cls: count},
         "levels": [...], "iou_thresholds": {cls: float}, "metrics": [...], "num_recall": 40,
         "sampling": "exact" | "devkit", "num_frames": int}

    AP is NaN where a class has no GT box that counts at that level.
    """
    classes = list(classes)
    if not classes or len(set(classes)) != len(classes):
        raise ValueError(f"evaluate_detection: classes must be distinct names, got {classes}")
    metrics = list(metrics)
    unknown = [m for m in metrics if m not in METRICS]
    if unknown or not metrics:
        raise ValueError(f"evaluate_detection: metrics must be among {list(METRICS)}, got {metrics}")
    if num_recall not in (11, 40):
        raise ValueError(f"evaluate_detection: num_recall must be 40 (R40) or 11 (R11), got {num_recall}")
    thresholds = _iou_thresholds(classes, iou_thresholds)
    table = DEFAULT_NEIGHBOURS if neighbours is None else neighbours
    near = {c.lower(): {n.lower() for n in names} for c, names in table.items()}

    data = [_normalise(f, i, len(classes)) for i, f in enumerate(frames)]
    levels = list(LEVELS) if any(f.difficulty_given for f in data) else ["all"]
    groups = {
        k: [_group(f, k, near.get(name.lower(), set())) for f in data] for k, name in enumerate(classes)
    }
    for metric in metrics:
        _attach_overlaps([g for k in groups for g in groups[k]], metric)

    positions = _recall_positions(num_recall)
    result: dict[str, Any] = {METRICS[m]: {} for m in metrics}
    result["precision"] = {m: {} for m in metrics}
    num_gt: dict[str, dict[str, int]] = {}
    for k, name in enumerate(classes):
        num_gt[name] = {}
        for metric in metrics:
            result[METRICS[metric]][name] = {}
            result["precision"][metric][name] = {}
            for level in levels:
                n_valid, tp_scores, events = _statistics(groups[k], metric, level, thresholds[name])
                ap, curve = _average_precision(n_valid, tp_scores, events, num_recall, devkit_sampling)
                result[METRICS[metric]][name][level] = ap
                result["precision"][metric][name][level] = curve
                num_gt[name][level] = n_valid
    result.update(
        recall_positions=positions.tolist(),
        num_gt=num_gt,
        num_det={name: int(sum(len(g.scores) for g in groups[k])) for k, name in enumerate(classes)},
        levels=levels,
        iou_thresholds=thresholds,
        metrics=metrics,
        num_recall=num_recall,
        sampling="devkit" if devkit_sampling else "exact",
        num_frames=len(data),
    )
    return result


# ----------------------------------------------------------------------------- inputs
@dataclass
class _Frame:
    name: str
    gt: np.ndarray  # (K, 7)
    gt_labels: np.ndarray  # (K,) int64
    difficulty: np.ndarray  # (K,) int64, all 0 when not given
    difficulty_given: bool
    dontcare: np.ndarray  # (C, 7)
    ignore: np.ndarray  # (J, 7)
    ignore_names: list[str]  # (J,), lower case
    det: np.ndarray  # (D, 7)
    det_labels: np.ndarray  # (D,) int64
    scores: np.ndarray  # (D,) float64
    det_height: np.ndarray | None  # (D,) or None


@dataclass
class _Group:
    """One frame's boxes for one class: its detections against its targets (GT + neighbours)."""

    det: np.ndarray  # (D, 7)
    scores: np.ndarray  # (D,)
    det_height: np.ndarray | None  # (D,)
    # (T, 7): the class's GT boxes, then the neighbour boxes (matched in this order; the devkit
    # walks a label file's lines, where a Van may come before a Car: it matters only when both
    # overlap one detection above the threshold).
    target: np.ndarray
    counts_from: np.ndarray  # (T,): the first level index at which target t is a valid GT box
    dontcare: np.ndarray  # (C, 7)
    overlaps: dict[str, np.ndarray]  # metric -> (D, T)
    on_dontcare: dict[str, np.ndarray]  # metric -> (D, C) overlap with each DontCare box


def _plain(x: Any) -> Any:
    return x.detach().cpu().numpy() if hasattr(x, "detach") else x


def _vector(x: Any, n: int, what: str, integer: bool) -> np.ndarray:
    arr = np.asarray(_plain(x), np.float64).reshape(-1) if x is not None else np.zeros(0)
    if arr.shape[0] != n:
        raise ValueError(f"{what}: expected {n} values (one per box), got {arr.shape[0]}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{what}: value {int(np.flatnonzero(~np.isfinite(arr))[0])} is not finite")
    if integer:
        if (arr != np.round(arr)).any():
            raise ValueError(f"{what}: expected integers, got {arr[arr != np.round(arr)][0]}")
        return arr.astype(np.int64)
    return arr


def _normalise(frame: DetectionFrame | Mapping[str, Any], index: int, num_classes: int) -> _Frame:
    if isinstance(frame, Mapping):
        allowed = {f.name for f in fields(DetectionFrame)}
        extra = sorted(set(frame) - allowed)
        if extra:
            raise ValueError(f"frame {index}: unknown keys {extra}; a frame has {sorted(allowed)}")
        try:
            frame = DetectionFrame(**frame)
        except TypeError as e:  # a required key missing
            raise ValueError(f"frame {index}: {e}") from None
    where = f"frame {frame.name or index}"
    gt = validate_boxes(_plain(frame.gt_boxes), f"{where}: gt_boxes")
    det = validate_boxes(_plain(frame.det_boxes), f"{where}: det_boxes")
    gt_labels = _vector(frame.gt_labels, len(gt), f"{where}: gt_labels", integer=True)
    det_labels = _vector(frame.det_labels, len(det), f"{where}: det_labels", integer=True)
    for what, labels in (("gt_labels", gt_labels), ("det_labels", det_labels)):
        bad = (labels < 0) | (labels >= num_classes)
        if bad.any():
            raise ValueError(
                f"{where}: {what}: label {labels[bad][0]} is not a class index 0..{num_classes - 1}"
            )
    scores = _vector(frame.det_scores, len(det), f"{where}: det_scores", integer=False)
    given = frame.gt_difficulty is not None
    difficulty = (
        _vector(frame.gt_difficulty, len(gt), f"{where}: gt_difficulty", integer=True)
        if given
        else np.zeros(len(gt), np.int64)
    )
    if not np.isin(difficulty, (-1, 0, 1, 2)).all():
        raise ValueError(
            f"{where}: gt_difficulty must be 0, 1, 2 or -1, got {sorted(set(difficulty.tolist()))}"
        )
    dontcare = validate_boxes(
        _plain(frame.dontcare) if frame.dontcare is not None else [], f"{where}: dontcare"
    )
    ignore = validate_boxes(
        _plain(frame.ignore_boxes) if frame.ignore_boxes is not None else [], f"{where}: ignore_boxes"
    )
    names = [str(n).lower() for n in (frame.ignore_names if frame.ignore_names is not None else [])]
    if len(names) != len(ignore):
        raise ValueError(f"{where}: {len(ignore)} ignore_boxes but {len(names)} ignore_names")
    det_height = (
        _vector(frame.det_height_px, len(det), f"{where}: det_height_px", integer=False)
        if frame.det_height_px is not None
        else None
    )
    return _Frame(
        where, gt, gt_labels, difficulty, given, dontcare, ignore, names, det, det_labels, scores, det_height
    )


def _iou_thresholds(classes: list[str], given: Mapping[str, float] | None) -> dict[str, float]:
    defaults = {c.lower(): t for c, t in DEFAULT_IOU_THRESHOLDS.items()}
    given = dict(given or {})
    unknown = sorted(set(given) - set(classes))
    if unknown:
        raise ValueError(
            f"evaluate_detection: iou_thresholds names {unknown}, not among the classes {classes}"
        )
    out = {c: float(given.get(c, defaults.get(c.lower(), OTHER_IOU_THRESHOLD))) for c in classes}
    bad = {c: t for c, t in out.items() if not 0 <= t < 1}
    if bad:
        raise ValueError(f"evaluate_detection: IoU thresholds must lie in [0, 1), got {bad}")
    return out


def _group(frame: _Frame, k: int, neighbour_names: set[str]) -> _Group:
    mine = frame.gt_labels == k
    near = np.array([n in neighbour_names for n in frame.ignore_names], bool)
    counts_from = np.where(frame.difficulty[mine] >= 0, frame.difficulty[mine], _NEVER)
    dets = frame.det_labels == k
    return _Group(
        det=frame.det[dets],
        scores=frame.scores[dets],
        det_height=None if frame.det_height is None else frame.det_height[dets],
        target=np.concatenate([frame.gt[mine], frame.ignore[near]]),
        counts_from=np.concatenate([counts_from, np.full(int(near.sum()), _NEVER)]).astype(np.int64),
        dontcare=frame.dontcare,
        overlaps={},
        on_dontcare={},
    )


def _attach_overlaps(groups: list[_Group], metric: str) -> None:
    """Fill ``overlaps[metric]`` and ``on_dontcare[metric]`` of every group, in two batched calls
    (one per kind of overlap) over the pairs of all frames: a call per frame would cost more."""
    iou, inter = (bev_iou, bev_intersection) if metric == "bev" else (iou3d, intersection3d)
    for attr in ("target", "dontcare"):
        rows_a, rows_b, shapes = [np.zeros((0, 7))], [np.zeros((0, 7))], []
        for g in groups:
            other = getattr(g, attr)
            i, j = np.divmod(np.arange(len(g.det) * len(other)), max(len(other), 1))
            rows_a.append(g.det[i])
            rows_b.append(other[j])
            shapes.append((len(g.det), len(other)))
        a, b = np.concatenate(rows_a), np.concatenate(rows_b)
        if attr == "target":
            values = iou(a, b, aligned=True)
        else:  # intersection over the detection's own area / volume, as the devkit's criterion 0
            own = a[:, 3] * a[:, 4] * (a[:, 5] if metric == "3d" else 1.0)
            values = inter(a, b, aligned=True) / own
        start = 0
        for g, (d, t) in zip(groups, shapes):
            block = values[start : start + d * t].reshape(d, t)
            start += d * t
            if attr == "target":
                g.overlaps[metric] = block
            else:
                g.on_dontcare[metric] = block  # thresholded per class in `_statistics`


# ----------------------------------------------------------------------------- matching
def _statistics(
    groups: list[_Group], metric: str, level: str, threshold: float
) -> tuple[int, np.ndarray, tuple[np.ndarray, ...]]:
    """(valid GT count, first-pass TP scores, (score, dTP, dFP, dFN) events) over all frames."""
    index = 0 if level == "all" else LEVELS.index(level)
    n_valid, tp_scores = 0, []
    events: list[list[np.ndarray]] = [[], [], [], []]
    for g in groups:
        ignored_gt = g.counts_from > index
        ignored_det = np.zeros(len(g.scores), bool)
        if g.det_height is not None and level != "all":
            ignored_det = g.det_height < MIN_HEIGHT[index]
        on_dontcare = (g.on_dontcare[metric] > threshold).any(1)
        ov = g.overlaps[metric]
        n_valid += int((~ignored_gt).sum())
        tp_scores.append(_first_pass(ov, ignored_gt, ignored_det, g.scores, threshold))
        for acc, part in zip(
            events, _frame_events(ov, ignored_gt, ignored_det, g.scores, on_dontcare, threshold)
        ):
            acc.append(part)
    flat = tuple(np.concatenate(e) if e else np.zeros(0) for e in events)
    return n_valid, np.concatenate(tp_scores) if tp_scores else np.zeros(0), flat


def _first_pass(
    ov: np.ndarray, ignored_gt: np.ndarray, ignored_det: np.ndarray, scores: np.ndarray, threshold: float
) -> np.ndarray:
    """Scores of the true positives when each GT box (in order) takes its highest-scored detection.

    No score threshold here: this pass only proposes the thresholds (the devkit's
    ``compute_fp=False`` call), at which `_frame_events` then counts.
    """
    assigned = np.zeros(len(scores), bool)
    found = []
    for i in range(ov.shape[1]):
        candidate = (ov[:, i] > threshold) & ~assigned
        if not candidate.any():
            continue
        j = int(np.argmax(np.where(candidate, scores, -np.inf)))  # first of equal scores, as the devkit
        assigned[j] = True
        if not ignored_gt[i] and not ignored_det[j]:
            found.append(scores[j])
    return np.asarray(found, np.float64)


def _frame_events(
    ov: np.ndarray,
    ignored_gt: np.ndarray,
    ignored_det: np.ndarray,
    scores: np.ndarray,
    on_dontcare: np.ndarray,
    threshold: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """TP / FP / FN counts of one frame at every score threshold, as changes at its scores.

    The devkit's counting pass (``compute_fp=True``): at threshold s only detections scoring >= s
    take part, and the GT boxes, in order, each take the unassigned detection with the largest
    overlap above the IoU threshold, a non-ignored one before an ignored one. A frame's counts
    change only at its own scores, so they are computed for each distinct score at once: row p of
    the (P, D) masks is the frame with its p-th highest distinct score as the threshold. Returns
    (score, dTP, dFP, dFN) per distinct score, from the counts with no detection (0, 0, #valid).
    """
    n_det = len(scores)
    n_valid = int((~ignored_gt).sum())
    if n_det == 0:
        return np.zeros(0), np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)
    order = np.argsort(-scores, kind="stable")
    ranked = scores[order]
    ends = np.flatnonzero(np.append(ranked[:-1] != ranked[1:], True)) + 1  # sizes of tie-complete prefixes
    counted = ~ignored_det & ~on_dontcare  # unassigned and not excused: a false positive
    tp = np.zeros(len(ends), np.int64)
    fn = np.zeros(len(ends), np.int64)
    if ov.shape[1] == 0:  # nothing to match (most frames for the rarer classes): all false positives
        return _steps(ranked[ends - 1], tp, np.cumsum(counted[order])[ends - 1], fn, n_valid)
    rank = np.empty(n_det, np.int64)
    rank[order] = np.arange(n_det)
    live = rank[None, :] < ends[:, None]  # (P, D): detection j scores >= threshold p
    assigned = np.zeros_like(live)
    rows = np.arange(len(ends))
    for i in range(ov.shape[1]):
        hit = ov[:, i] > threshold
        # Preference key: a non-ignored detection by its overlap (> 2), else an ignored one (1, the
        # first in input order wins, as in the devkit), 0 for none.
        key = np.where(hit, np.where(ignored_det, 1.0, 2.0 + ov[:, i]), 0.0)
        offer = np.where(live & ~assigned, key[None, :], 0.0)
        j = offer.argmax(1)
        found = offer[rows, j] > 0
        if not ignored_gt[i]:
            fn += ~found
            tp += found & ~ignored_det[j]
        assigned[rows[found], j[found]] = True
    fp = (live & ~assigned & counted[None, :]).sum(1)
    return _steps(ranked[ends - 1], tp, fp, fn, n_valid)


def _steps(
    scores: np.ndarray, tp: np.ndarray, fp: np.ndarray, fn: np.ndarray, n_valid: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Counts per threshold -> changes per threshold, from (0, 0, n_valid) with no detection."""
    counts = np.stack([tp, fp, fn])  # (3, P)
    steps = np.empty_like(counts)
    steps[:, 0] = counts[:, 0] - (0, 0, n_valid)
    steps[:, 1:] = counts[:, 1:] - counts[:, :-1]
    return scores, steps[0], steps[1], steps[2]


# ----------------------------------------------------------------------------- AP
def _recall_positions(num_recall: int) -> np.ndarray:
    return np.arange(1, 41) / 40 if num_recall == 40 else np.arange(11) / 10


def _devkit_thresholds(tp_scores: np.ndarray, num_gt: int, num_points: int = 41) -> np.ndarray:
    """The devkit's `get_thresholds`: walking down the TP scores, keep the one whose recall is
    nearest each next multiple of 1 / (num_points - 1), and always the last."""
    ranked = np.sort(tp_scores)[::-1]
    kept, current = [], 0.0
    for i, score in enumerate(ranked):
        last = i == len(ranked) - 1
        left = (i + 1) / num_gt
        right = left if last else (i + 2) / num_gt
        if not last and (right - current) < (current - left):
            continue
        kept.append(score)
        current += 1 / (num_points - 1)
    return np.asarray(kept, np.float64)


def _average_precision(
    n_valid: int,
    tp_scores: np.ndarray,
    events: tuple[np.ndarray, ...],
    num_recall: int,
    devkit: bool,
) -> tuple[float, list[float]]:
    """AP and the interpolated precision at each recall position (see the module docstring)."""
    positions = _recall_positions(num_recall)
    if n_valid == 0:
        return math.nan, [math.nan] * len(positions)
    thresholds = _devkit_thresholds(tp_scores, n_valid) if devkit else np.unique(tp_scores)[::-1]
    if len(thresholds) == 0:
        return 0.0, [0.0] * len(positions)
    ev_score, d_tp, d_fp, d_fn = events
    order = np.argsort(-ev_score, kind="stable")
    ranked = ev_score[order]
    tp_at = np.concatenate([[0], np.cumsum(d_tp[order])])
    fp_at = np.concatenate([[0], np.cumsum(d_fp[order])])
    fn_at = n_valid + np.concatenate([[0], np.cumsum(d_fn[order])])
    n = np.searchsorted(-ranked, -thresholds, side="right")  # events scoring >= each threshold
    tp, fp, fn = tp_at[n], fp_at[n], fn_at[n]
    precision = np.divide(tp, tp + fp, out=np.zeros(len(n)), where=tp + fp > 0)
    recall = np.divide(tp, tp + fn, out=np.zeros(len(n)), where=tp + fn > 0)
    if devkit:
        # Index k of the 41 samples is the k-th threshold, precision interpolated over the later ones.
        sampled = np.zeros(41)
        sampled[: min(41, len(precision))] = precision[:41]
        sampled = np.maximum.accumulate(sampled[::-1])[::-1]
        curve = sampled[1:] if num_recall == 40 else sampled[::4]
    else:
        reached = recall[None, :] >= positions[:, None] - 1e-12
        curve = np.where(reached, precision[None, :], 0.0).max(1)
    return float(curve.mean()), curve.tolist()
