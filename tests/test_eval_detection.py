"""KITTI detection AP (svl/eval/detection.py): hand-built cases whose AP is worked out in the
comments, and a plain-loop transcription of the devkit's matching on random scenes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from svl.boxes import bev_intersection, bev_iou, intersection3d, iou3d
from svl.eval.detection import DetectionFrame, evaluate_detection, kitti_difficulty

CAR = (4.0, 2.0, 1.5)  # l, w, h


def car(x: float, y: float = 0.0, z: float = 0.0, yaw: float = 0.0, size=CAR) -> list[float]:
    return [x, y, z, *size, yaw]


def frame(gt, det, scores, gt_labels=None, det_labels=None, **extra) -> dict:
    """A frame of cars (label 0) unless labels are given."""
    return dict(
        gt_boxes=np.array(gt, float).reshape(-1, 7),
        gt_labels=np.zeros(len(gt), int) if gt_labels is None else gt_labels,
        det_boxes=np.array(det, float).reshape(-1, 7),
        det_labels=np.zeros(len(det), int) if det_labels is None else det_labels,
        det_scores=np.array(scores, float),
        **extra,
    )


def ap(result: dict, cls: str = "Car", level: str = "all", metric: str = "ap3d") -> float:
    return result[metric][cls][level]


def test_perfect_detections_score_one() -> None:
    frames = [
        frame([car(0), car(10, 5, yaw=0.7)], [car(10, 5, yaw=0.7), car(0)], [0.4, 0.9]),
        frame([], [], []),
    ]
    frames.append(frame([car(-8, 3, yaw=-2.0)], [car(-8, 3, yaw=-2.0)], [0.6]))
    r = evaluate_detection(frames, ["Car"])
    assert ap(r, metric="ap3d") == pytest.approx(1.0) and ap(r, metric="ap_bev") == pytest.approx(1.0)
    assert r["levels"] == ["all"] and r["num_gt"] == {"Car": {"all": 3}} and r["num_det"] == {"Car": 3}
    assert r["precision"]["3d"]["Car"]["all"] == [1.0] * 40
    assert r["recall_positions"][0] == 0.025 and r["recall_positions"][-1] == 1.0
    assert r["iou_thresholds"] == {"Car": 0.7} and r["num_recall"] == 40 and r["sampling"] == "exact"


def test_result_layout() -> None:
    r = evaluate_detection([frame([car(0)], [car(0)], [0.5])], ["Car", "Pedestrian"], metrics=["bev"])
    assert set(r) == {
        "ap_bev",
        "precision",
        "recall_positions",
        "num_gt",
        "num_det",
        "levels",
        "iou_thresholds",
        "metrics",
        "num_recall",
        "sampling",
        "num_frames",
    }
    assert set(r["ap_bev"]) == {"Car", "Pedestrian"} and r["iou_thresholds"]["Pedestrian"] == 0.5
    assert r["num_frames"] == 1 and r["metrics"] == ["bev"]


def test_missed_object_r40_and_r11() -> None:
    # 3 cars, 2 found (precision 1 at recall 2/3). R40: positions k/40 <= 2/3 are k = 1..26 -> 26/40.
    # R11: positions 0, 0.1, .., 0.6 -> 7/11.
    frames = [frame([car(0), car(10), car(20)], [car(0), car(10)], [0.9, 0.8])]
    r40 = evaluate_detection(frames, ["Car"])
    r11 = evaluate_detection(frames, ["Car"], num_recall=11)
    for metric in ("ap3d", "ap_bev"):
        assert ap(r40, metric=metric) == pytest.approx(26 / 40, abs=1e-12)
        assert ap(r11, metric=metric) == pytest.approx(7 / 11, abs=1e-12)
    assert r11["recall_positions"] == pytest.approx([k / 10 for k in range(11)])
    full = evaluate_detection(
        [frame([car(0), car(10), car(20)], [car(0), car(10), car(20)], [0.9, 0.8, 0.7])], ["Car"]
    )
    assert ap(full) - ap(r40) == pytest.approx(14 / 40, abs=1e-12)  # what the miss costs


def test_duplicate_detection_is_a_false_positive() -> None:
    # Car 1 found twice (0.9 and a duplicate at 0.8), car 2 once (0.7). Thresholds = TP scores 0.9, 0.7:
    # at 0.9 recall 1/2, precision 1; at 0.7 recall 1, precision 2/3 (the duplicate counts).
    # R40 = (20 * 1 + 20 * 2/3) / 40 = 5/6.
    frames = [frame([car(0), car(10)], [car(0), car(0.05), car(10)], [0.9, 0.8, 0.7])]
    r = evaluate_detection(frames, ["Car"])
    assert ap(r) == pytest.approx(5 / 6, abs=1e-12) and ap(r, metric="ap_bev") == pytest.approx(
        5 / 6, abs=1e-12
    )
    assert r["precision"]["3d"]["Car"]["all"][19:21] == pytest.approx([1.0, 2 / 3])
    # A duplicate scored below every true positive costs nothing: no threshold sees it.
    later = [frame([car(0), car(10)], [car(0), car(10), car(0.05)], [0.9, 0.8, 0.7])]
    assert ap(evaluate_detection(later, ["Car"])) == pytest.approx(1.0)


def test_wrong_class_detection() -> None:
    ped = (0.8, 0.6, 1.7)
    # One car, detected only as a pedestrian: nothing for Car.
    alone = [frame([car(0)], [car(0)], [0.9], det_labels=[1])]
    r = evaluate_detection(alone, ["Car", "Pedestrian"])
    assert ap(r, "Car") == 0.0 and ap(r, "Car", metric="ap_bev") == 0.0
    assert math.isnan(ap(r, "Pedestrian")) and r["num_gt"]["Pedestrian"] == {"all": 0}
    # With a pedestrian in the frame, the wrong-class box (0.9) is a false positive for Pedestrian:
    # at the only TP score 0.5, precision 1/2, recall 1 -> AP 0.5.
    frames = [
        frame(
            [car(0), car(10, size=ped)],
            [car(0), car(10, size=ped)],
            [0.9, 0.5],
            gt_labels=[0, 1],
            det_labels=[1, 1],
        )
    ]
    r = evaluate_detection(frames, ["Car", "Pedestrian"])
    assert ap(r, "Car") == 0.0 and ap(r, "Pedestrian") == pytest.approx(0.5, abs=1e-12)
    assert r["num_det"] == {"Car": 0, "Pedestrian": 2}


def test_detection_on_dontcare_is_ignored() -> None:
    base = frame([car(0)], [car(0), car(20.3)], [0.8, 0.95])
    # Without the region the box at x = 20.3 is a false positive above the TP: precision 1/2.
    assert ap(evaluate_detection([base], ["Car"])) == pytest.approx(0.5)
    r = evaluate_detection([dict(base, dontcare=np.array([car(20)]))], ["Car"])
    assert ap(r) == pytest.approx(1.0) and ap(r, metric="ap_bev") == pytest.approx(1.0)
    # A region the detection barely touches (intersection < 0.7 of its own area) excuses nothing.
    r = evaluate_detection([dict(base, dontcare=np.array([car(23)]))], ["Car"])
    assert ap(r) == pytest.approx(0.5)


def test_difficulty_levels() -> None:
    # A easy (found, 0.9), B moderate (found, 0.8), C moderate (missed), D no level (found, 0.7).
    gt = [car(0), car(10), car(20), car(30)]
    f = frame(gt, [car(0), car(10), car(30)], [0.9, 0.8, 0.7], gt_difficulty=[0, 1, 1, -1])
    r = evaluate_detection([f], ["Car"])
    assert r["levels"] == ["easy", "moderate", "hard"]
    assert r["num_gt"]["Car"] == {"easy": 1, "moderate": 3, "hard": 3}
    # Easy: only A counts; the detections of B and D match ignored boxes and are no false positives.
    assert ap(r, level="easy") == pytest.approx(1.0)
    # Moderate / hard: A and B found, C missed (recall 2/3, precision 1): 26/40.
    assert ap(r, level="moderate") == pytest.approx(26 / 40) and ap(r, level="hard") == pytest.approx(26 / 40)
    # Frames without difficulties count as easy once any frame has them.
    r = evaluate_detection([f, frame([car(0)], [], [])], ["Car"])
    assert r["num_gt"]["Car"]["easy"] == 2 and ap(r, level="easy") == pytest.approx(20 / 40)


def test_kitti_difficulty() -> None:
    assert kitti_difficulty(50, 0, 0.0) == 0
    assert kitti_difficulty(40, 0, 0.0) == 1  # the devkit needs a height above 40 for easy
    assert kitti_difficulty(40.5, 0, 0.15) == 0
    assert kitti_difficulty(50, 1, 0.0) == 1
    assert kitti_difficulty(30, 0, 0.3) == 1
    assert kitti_difficulty(30, 2, 0.5) == 2
    assert kitti_difficulty(25, 0, 0.0) == -1
    assert kitti_difficulty(100, 3, 0.0) == -1
    assert kitti_difficulty(100, 0, 0.51) == -1
    out = kitti_difficulty(np.array([50, 30, 20]), np.array([0, 2, 0]), 0.0)
    assert out.tolist() == [0, 2, -1] and out.dtype == np.int64


def test_iou_just_below_and_above_the_threshold() -> None:
    # Same-size boxes shifted by d along their length: IoU = (l - d) / (l + d), so d = l (1 - t) / (1 + t).
    for iou, want in ((0.69, 0.0), (0.71, 1.0)):
        d = 4.0 * (1 - iou) / (1 + iou)
        assert bev_iou(np.array([car(0)]), np.array([car(d)]))[0, 0] == pytest.approx(iou)
        r = evaluate_detection([frame([car(0)], [car(d)], [0.5])], ["Car"])
        assert ap(r) == want and ap(r, metric="ap_bev") == want
    # The 3D overlap can fail where the BEV one passes: a box lifted by a third of its height.
    r = evaluate_detection([frame([car(0)], [car(0, z=0.5)], [0.5])], ["Car"])
    assert ap(r, metric="ap_bev") == 1.0 and ap(r, metric="ap3d") == 0.0
    # Thresholds per class: at 0.5 the 0.69 box counts.
    d = 4.0 * 0.31 / 1.69
    assert ap(evaluate_detection([frame([car(0)], [car(d)], [0.5])], ["Car"], {"Car": 0.5})) == 1.0


def test_matching_follows_the_devkit() -> None:
    # Two overlapping cars at x = 0 and 1; detection A at x = 0.5 (IoU 0.78 with both), B at x = 0.1
    # (IoU 0.95 with car 1, 0.63 with car 2). Listed A first.
    gt, det = [car(0), car(1)], [car(0.5), car(0.1)]
    # B scored higher: the first pass gives car 1 B and car 2 A (thresholds 0.9, 0.8). At 0.8 the
    # counting pass lets car 1 take its largest overlap (B, not the first listed A), so car 2 keeps A.
    assert ap(evaluate_detection([frame(gt, det, [0.8, 0.9])], ["Car"])) == pytest.approx(1.0)
    # A scored higher: the first pass gives car 1 its highest-scored detection A, and car 2 nothing
    # (B overlaps it by 0.63), so 0.9 is the only threshold: recall 1/2, AP 0.5, though at 0.8 both
    # cars would be found. The devkit's thresholds come from this pass alone; so do ours.
    assert ap(evaluate_detection([frame(gt, det, [0.9, 0.8])], ["Car"])) == pytest.approx(0.5)


def test_no_detections_and_no_ground_truth() -> None:
    r = evaluate_detection([frame([car(0), car(10)], [], [])], ["Car", "Cyclist"])
    assert ap(r) == 0.0 and ap(r, metric="ap_bev") == 0.0 and r["num_det"]["Car"] == 0
    # No cyclist anywhere: NaN, not 0 (nothing to find is not a failure to find).
    assert math.isnan(ap(r, "Cyclist")) and r["num_gt"]["Cyclist"] == {"all": 0}
    assert all(math.isnan(p) for p in r["precision"]["3d"]["Cyclist"]["all"])
    r = evaluate_detection([], ["Car"])
    assert math.isnan(ap(r)) and r["num_frames"] == 0


def test_neighbouring_class_is_ignored() -> None:
    van = car(20, size=(5.0, 2.1, 2.2))
    base = frame([car(0)], [car(0), van], [0.8, 0.9])
    # Unannounced, the van's detection is a false positive for Car.
    assert ap(evaluate_detection([base], ["Car"])) == pytest.approx(0.5)
    with_van = dict(base, ignore_boxes=np.array([van]), ignore_names=["Van"])
    assert ap(evaluate_detection([with_van], ["Car"])) == pytest.approx(1.0)
    # Not a neighbour of Car by another name, nor when the table says otherwise.
    other = dict(with_van, ignore_names=["Tram"])
    assert ap(evaluate_detection([other], ["Car"])) == pytest.approx(0.5)
    assert ap(evaluate_detection([other], ["Car"], neighbours={"Car": ["tram"]})) == pytest.approx(1.0)
    # The van never counts as a car to find.
    r = evaluate_detection(
        [dict(with_van, det_boxes=np.array([car(0)]), det_scores=[0.8], det_labels=[0])], ["Car"]
    )
    assert ap(r) == pytest.approx(1.0) and r["num_gt"]["Car"]["all"] == 1


def test_small_detections_are_ignored_at_their_level() -> None:
    # A false positive (0.9) 30 px high: below easy's 40 px (ignored), above moderate's 25 (counted).
    f = frame([car(0)], [car(0), car(20)], [0.5, 0.9], gt_difficulty=[0], det_height_px=[60.0, 30.0])
    r = evaluate_detection([f], ["Car"])
    assert ap(r, level="easy") == pytest.approx(1.0) and ap(r, level="moderate") == pytest.approx(0.5)


def test_devkit_sampling() -> None:
    # The devkit reads recall position k off its k-th threshold: one perfect detection is one
    # threshold, so R40 sees precision only at position 0 (not summed) and R11 at 0 only.
    one = [frame([car(0)], [car(0)], [0.9])]
    assert ap(evaluate_detection(one, ["Car"], devkit_sampling=True)) == 0.0
    assert ap(evaluate_detection(one, ["Car"], num_recall=11, devkit_sampling=True)) == pytest.approx(1 / 11)
    assert evaluate_detection(one, ["Car"], devkit_sampling=True)["sampling"] == "devkit"
    # With many objects both samplings agree closely.
    rng = np.random.default_rng(0)
    frames = []
    for _ in range(40):
        gt = [car(12 * k, rng.uniform(-5, 5), yaw=rng.uniform(-3, 3)) for k in range(5)]
        det = [
            np.add(b, [rng.normal(0, 0.15), rng.normal(0, 0.15), 0, 0, 0, 0, 0])
            for b in gt
            if rng.random() < 0.85
        ]
        det += [car(rng.uniform(80, 100), rng.uniform(-5, 5)) for _ in range(2)]
        frames.append(frame(gt, det, rng.uniform(0, 1, len(det))))
    exact = evaluate_detection(frames, ["Car"], {"Car": 0.5})
    devkit = evaluate_detection(frames, ["Car"], {"Car": 0.5}, devkit_sampling=True)
    assert 0.3 < ap(exact) < 0.95 and abs(ap(exact) - ap(devkit)) < 0.03


# ----------------------------------------------------------------------------- the devkit as plain loops
def _reference(
    frames: list[dict], level: int, metric: str, thr: float, num_recall: int, devkit: bool
) -> float:
    """The devkit's eval (clean_data, compute_statistics, get_thresholds, get_mAP) written as loops."""
    min_height = (40, 25, 25)
    prepared, n_valid = [], 0
    for f in frames:
        iou = bev_iou if metric == "bev" else iou3d
        inter = bev_intersection if metric == "bev" else intersection3d
        det, gt, dc = f["det_boxes"], f["gt_boxes"], f["dontcare"]
        ov = iou(det, gt)
        own = det[:, 3] * det[:, 4] * (det[:, 5] if metric == "3d" else 1)
        on_dc = (inter(det, dc) / own[:, None] > thr).any(1) if len(det) else np.zeros(0, bool)
        ig_gt = [0 if 0 <= d <= level else 1 for d in f["gt_difficulty"]]
        ig_det = [1 if h < min_height[level] else 0 for h in f["det_height_px"]]
        n_valid += ig_gt.count(0)
        prepared.append((ov, ig_gt, ig_det, list(f["det_scores"]), on_dc))
    tp_scores = []
    for ov, ig_gt, ig_det, scores, _ in prepared:
        taken = [False] * len(scores)
        for i in range(len(ig_gt)):
            best, best_score = -1, -1e7
            for j in range(len(scores)):
                if not taken[j] and ov[j, i] > thr and scores[j] > best_score:
                    best, best_score = j, scores[j]
            if best >= 0:
                taken[best] = True
                if ig_gt[i] == 0 and ig_det[best] == 0:
                    tp_scores.append(best_score)
    tp_scores.sort(reverse=True)
    if devkit:
        thresholds, current = [], 0.0
        for i, s in enumerate(tp_scores):
            left = (i + 1) / n_valid
            right = (i + 2) / n_valid if i < len(tp_scores) - 1 else left
            if (right - current) < (current - left) and i < len(tp_scores) - 1:
                continue
            thresholds.append(s)
            current += 1 / 40
    else:
        thresholds = sorted(set(tp_scores), reverse=True)
    precision, recall = [], []
    for t in thresholds:
        tp = fp = fn = 0
        for ov, ig_gt, ig_det, scores, on_dc in prepared:
            taken = [False] * len(scores)
            for i in range(len(ig_gt)):
                pick, best_ov, picked_ignored = -1, 0.0, False
                for j in range(len(scores)):
                    if taken[j] or scores[j] < t or ov[j, i] <= thr:
                        continue
                    if ig_det[j] == 0 and (ov[j, i] > best_ov or picked_ignored):
                        pick, best_ov, picked_ignored = j, ov[j, i], False
                    elif ig_det[j] == 1 and pick == -1:
                        pick, picked_ignored = j, True
                if pick == -1:
                    fn += ig_gt[i] == 0
                else:
                    taken[pick] = True
                    tp += ig_gt[i] == 0 and ig_det[pick] == 0
            fp += sum(
                1
                for j in range(len(scores))
                if scores[j] >= t and not taken[j] and ig_det[j] == 0 and not on_dc[j]
            )
        precision.append(tp / (tp + fp) if tp + fp else 0.0)
        recall.append(tp / (tp + fn) if tp + fn else 0.0)
    if devkit:
        prec = (precision + [0.0] * 41)[:41]
        prec = [max(prec[i:]) for i in range(41)]
        return sum(prec[1:]) / 40 if num_recall == 40 else sum(prec[::4]) / 11
    positions = [k / 40 for k in range(1, 41)] if num_recall == 40 else [k / 10 for k in range(11)]
    return sum(max([p for p, r in zip(precision, recall) if r >= q] + [0.0]) for q in positions) / len(
        positions
    )


def _random_scene(rng: np.random.Generator) -> dict:
    n = int(rng.integers(0, 7))
    gt = np.array([car(*rng.uniform(-6, 6, 2), yaw=rng.uniform(-3, 3)) for _ in range(n)]).reshape(-1, 7)
    det = []
    for b in gt:
        for _ in range(int(rng.choice([0, 1, 1, 1, 2]))):  # misses, hits and duplicates
            det.append(b + np.r_[rng.normal(0, 0.2, 3), rng.normal(0, 0.1, 3), rng.normal(0, 0.1)])
    for _ in range(int(rng.integers(0, 3))):  # false positives, some near the cars
        det.append(np.array(car(*rng.uniform(-15, 15, 2), yaw=rng.uniform(-3, 3))))
    det = np.array(det).reshape(-1, 7)
    dontcare = det[rng.random(len(det)) < 0.1] + np.r_[rng.normal(0, 0.3, 2), np.zeros(5)]
    return frame(
        gt,
        det,
        rng.integers(0, 20, len(det)) / 20,  # ties
        gt_difficulty=rng.choice([-1, 0, 0, 1, 2], n),
        det_height_px=rng.uniform(20, 60, len(det)),
        dontcare=dontcare,
    )


def test_matches_the_devkit_loops_on_random_scenes() -> None:
    rng = np.random.default_rng(7)
    frames = [_random_scene(rng) for _ in range(25)]
    checked = 0
    for devkit in (False, True):
        for num_recall in (40, 11):
            r = evaluate_detection(
                frames, ["Car"], {"Car": 0.5}, num_recall=num_recall, devkit_sampling=devkit
            )
            for metric, key in (("bev", "ap_bev"), ("3d", "ap3d")):
                for level, name in enumerate(("easy", "moderate", "hard")):
                    want = _reference(frames, level, metric, 0.5, num_recall, devkit)
                    assert r[key]["Car"][name] == pytest.approx(want, abs=1e-12), (
                        devkit,
                        num_recall,
                        metric,
                        name,
                    )
                    checked += want > 0
    assert checked >= 20  # the scenes give real, non-zero APs to compare


def test_accepts_tensors_and_dataclasses() -> None:
    f = DetectionFrame(
        gt_boxes=torch.tensor([car(0)]),
        gt_labels=torch.tensor([0]),
        det_boxes=torch.tensor([car(0)], dtype=torch.float32),
        det_labels=torch.tensor([0]),
        det_scores=torch.tensor([0.7]),
    )
    assert ap(evaluate_detection([f], ["Car"])) == pytest.approx(1.0)


def test_bad_input_is_a_clear_error() -> None:
    good = frame([car(0)], [car(0)], [0.5])
    bad = dict(good, gt_boxes=np.array([car(0, size=(4.0, 0.0, 1.5))]), name="000042.txt")
    with pytest.raises(ValueError, match=r"frame 000042\.txt: gt_boxes: box 0: .*non-positive size"):
        evaluate_detection([bad], ["Car"])
    with pytest.raises(ValueError, match=r"frame 1: det_labels: label 3 is not a class index 0\.\.0"):
        evaluate_detection([good, dict(good, det_labels=[3])], ["Car"])
    with pytest.raises(ValueError, match=r"frame 0: det_scores: expected 1 values"):
        evaluate_detection([dict(good, det_scores=[0.5, 0.2])], ["Car"])
    with pytest.raises(ValueError, match=r"det_scores: value 0 is not finite"):
        evaluate_detection([dict(good, det_scores=[np.nan])], ["Car"])
    with pytest.raises(ValueError, match=r"unknown keys \['boxes'\]"):
        evaluate_detection([dict(good, boxes=1)], ["Car"])
    with pytest.raises(ValueError, match=r"1 ignore_boxes but 0 ignore_names"):
        evaluate_detection([dict(good, ignore_boxes=[car(5)])], ["Car"])
    with pytest.raises(ValueError, match="gt_difficulty must be"):
        evaluate_detection([dict(good, gt_difficulty=[3])], ["Car"])
    with pytest.raises(ValueError, match="num_recall"):
        evaluate_detection([good], ["Car"], num_recall=41)
    with pytest.raises(ValueError, match="metrics"):
        evaluate_detection([good], ["Car"], metrics=["2d"])
    with pytest.raises(ValueError, match="iou_thresholds names"):
        evaluate_detection([good], ["Car"], {"Truck": 0.7})
