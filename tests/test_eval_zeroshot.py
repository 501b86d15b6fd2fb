"""Zero-shot metrics, GZSL + calibrated stacking, report files (svl.eval.zeroshot)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from svl.eval.zeroshot import (
    choose_calibration,
    class_mean_accuracy,
    confusion_matrix,
    format_table,
    gzsl_metrics,
    per_class_accuracy,
    topk_accuracy,
    write_report,
    zeroshot_report,
)


def test_topk_matches_torch_topk_reference() -> None:
    g = torch.Generator().manual_seed(1)
    scores = torch.randn(200, 12, generator=g)
    labels = torch.randint(0, 12, (200,), generator=g)
    got = topk_accuracy(scores, labels, ks=(1, 3, 5))
    for k in (1, 3, 5):
        ref = (scores.topk(k, dim=1).indices == labels[:, None]).any(1).float().mean().item()
        assert got[f"top{k}"] == pytest.approx(ref)
    assert got["top1"] < got["top3"] < got["top5"]


def test_topk_clips_k_and_breaks_ties_like_argmax() -> None:
    scores = np.zeros((4, 3))  # all tied: argmax picks class 0
    labels = np.array([0, 1, 2, 0])
    acc = topk_accuracy(scores, labels, ks=(1, 2, 5))
    assert acc["top1"] == pytest.approx(0.5)
    assert acc["top2"] == pytest.approx(0.75)
    assert acc["top5"] == 1.0


def test_per_class_confusion_and_class_mean_against_loops() -> None:
    rng = np.random.default_rng(0)
    k = 6
    labels = rng.integers(0, k - 1, 150)  # class 5 never occurs
    preds = np.where(rng.random(150) < 0.6, labels, rng.integers(0, k, 150))
    cm = confusion_matrix(labels, preds, k)
    ref = np.zeros((k, k), dtype=np.int64)
    for t, p in zip(labels, preds):
        ref[t, p] += 1
    np.testing.assert_array_equal(cm, ref)
    acc = per_class_accuracy(preds, labels, k)
    for c in range(k - 1):
        assert acc[c] == pytest.approx((preds[labels == c] == c).mean())
    assert np.isnan(acc[k - 1])
    assert class_mean_accuracy(preds, labels, k) == pytest.approx(np.mean([acc[c] for c in range(k - 1)]))


def test_gzsl_hand_worked_example() -> None:
    # classes 0, 1 seen; 2 unseen. Worked by hand:
    # gamma=0   -> preds 0,0,1,0,1: seen acc (1 + 1)/2 = 1.0, unseen 0/2 = 0 -> H = 0
    # gamma=0.1 -> preds 0,2,1,2,1: seen (0.5 + 1)/2 = 0.75, unseen 1/2 = 0.5 -> H = 0.6
    scores = np.array(
        [
            [0.9, 0.1, 0.5],
            [0.6, 0.2, 0.55],
            [0.1, 0.8, 0.3],
            [0.7, 0.1, 0.65],
            [0.2, 0.9, 0.5],
        ]
    )
    labels = np.array([0, 0, 1, 2, 2])
    seen = np.array([True, True, False])
    m0 = gzsl_metrics(scores, labels, seen)
    assert (m0["seen"], m0["unseen"], m0["H"]) == (1.0, 0.0, 0.0)
    m1 = gzsl_metrics(scores, labels, seen, gamma=0.1)
    assert m1["seen"] == pytest.approx(0.75)
    assert m1["unseen"] == pytest.approx(0.5)
    assert m1["H"] == pytest.approx(0.6)


def _biased_scores(
    n_per_class: int, seed: int, bias: float = 1.5
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scores of a classifier that is right on average but favours seen classes by `bias`."""
    rng = np.random.default_rng(seed)
    k, seen = 10, np.arange(10) < 7
    labels = np.repeat(np.arange(k), n_per_class)
    scores = np.eye(k)[labels] + rng.normal(0, 0.3, (len(labels), k)) + bias * seen[None, :]
    return scores, labels, seen


def test_calibration_recovers_unseen_accuracy_without_test_data() -> None:
    val_s, val_y, seen = _biased_scores(30, seed=1)
    test_s, test_y, _ = _biased_scores(60, seed=2)
    plain = gzsl_metrics(test_s, test_y, seen)
    assert plain["unseen"] < 0.05  # every unseen shape is called a seen class
    gamma = choose_calibration(val_s, val_y, seen)
    assert 0.9 < gamma < 2.1
    cal = gzsl_metrics(test_s, test_y, seen, gamma)
    assert cal["unseen"] > 0.8 and cal["seen"] > 0.8
    assert cal["H"] > plain["H"] + 0.5
    # the searched gamma is at least as good on validation as any gamma on a fine grid
    grid = np.linspace(-1, 3, 401)
    best_grid = max(gzsl_metrics(val_s, val_y, seen, g)["H"] for g in grid)
    assert gzsl_metrics(val_s, val_y, seen, gamma)["H"] >= best_grid - 1e-12


def test_calibration_rejects_degenerate_inputs() -> None:
    s, y, seen = _biased_scores(5, seed=0)
    with pytest.raises(ValueError, match="pseudo-unseen"):
        choose_calibration(s, y, np.ones(10, bool))
    only_seen = y < 7
    with pytest.raises(ValueError, match="both trained and pseudo-unseen"):
        choose_calibration(s[only_seen], y[only_seen], seen)
    with pytest.raises(ValueError, match="seen_mask"):
        gzsl_metrics(s, y, seen[:5])


def test_bad_metric_inputs_raise() -> None:
    with pytest.raises(ValueError, match=r"\(N, K\)"):
        topk_accuracy(np.zeros(5), np.zeros(5, int))
    with pytest.raises(ValueError, match="labels must lie"):
        topk_accuracy(np.zeros((2, 3)), np.array([0, 3]))
    with pytest.raises(ValueError, match="2 labels for 3"):
        topk_accuracy(np.zeros((3, 3)), np.array([0, 1]))
    with pytest.raises(ValueError, match="NaN"):
        topk_accuracy(np.full((1, 2), np.nan), np.array([0]))


def test_report_files_and_table(tmp_path) -> None:
    s, y, seen = _biased_scores(8, seed=3)
    names = [f"class_{i}" for i in range(10)]
    rep = zeroshot_report(s, y, names, seen_mask=seen, gamma=1.5, meta={"head": "x"})
    assert rep["top1"] == pytest.approx(topk_accuracy(s, y)["top1"])
    assert rep["gzsl"]["calibrated"]["unseen"] > rep["gzsl"]["uncalibrated"]["unseen"]
    assert sum(r["n"] for r in rep["per_class"]) == len(y)
    paths = write_report(rep, tmp_path / "out")
    data = json.loads(paths["json"].read_text())
    assert data["num_samples"] == 80 and data["gzsl"]["calibrated"]["gamma"] == 1.5
    assert np.array(data["confusion"]).sum() == 80
    assert paths["confusion"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = paths["table"].read_text()
    assert "class_9" in table and "GZSL calibrated" in table
    assert format_table(rep, per_class=False).count("\n") == 3
    assert not list((tmp_path / "out").glob(".*.tmp"))
    with pytest.raises(ValueError, match="class names"):
        zeroshot_report(s, y, names[:5])


def test_gzsl_bias_mask_separates_bias_from_reporting_groups():
    # 3 classes: 0 trained, 1 benchmark-seen but held out of training, 2 unseen.
    s = np.array([[0.9, 0.8, 0.1], [0.6, 0.5, 0.55], [0.7, 0.2, 0.65]])
    y = np.array([1, 2, 2])
    seen = np.array([True, True, False])
    plain = gzsl_metrics(s, y, seen, 0.2, bias_mask=seen)  # bias on 0 and 1: preds 0, 2, 2
    only_trained = gzsl_metrics(s, y, seen, 0.2, bias_mask=np.array([True, False, False]))  # preds 1, 2, 2
    assert plain["seen"] == 0.0 and plain["unseen"] == 1.0
    assert only_trained["seen"] == 1.0 and only_trained["unseen"] == 1.0 and only_trained["H"] == 1.0


def test_report_uses_bias_mask_for_calibration_only():
    s = np.array([[0.9, 0.8, 0.1], [0.6, 0.5, 0.55], [0.7, 0.2, 0.65]])
    y = np.array([1, 2, 2])
    seen, trained = np.array([True, True, False]), np.array([True, False, False])
    rep = zeroshot_report(s, y, ["a", "b", "c"], seen_mask=seen, gamma=0.2, bias_mask=trained)
    gz = rep["gzsl"]
    assert gz["seen_classes"] == ["a", "b"] and gz["bias_classes"] == ["a"]
    assert gz["calibrated"] == gzsl_metrics(s, y, seen, 0.2, bias_mask=trained)
    assert gz["calibrated"]["seen"] == 1.0
    assert gz["uncalibrated"] == gzsl_metrics(s, y, seen, 0.0)
