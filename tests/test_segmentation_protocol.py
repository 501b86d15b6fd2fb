"""Segmentation scored the way the benchmarks' tools score it: every original point of every test
scan predicted (against an explicit per-point loop), mIoU over the dataset's fixed class list with
absent classes (against hand-computed values), ShapeNetPart's category-constrained argmax, and a
SemanticKITTI-layout run whose `points_scored` equals the labelled points of its test scans."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from svl.data import build_dataset
from svl.eval.segmentation import SHAPENETPART_PARTS, segmentation_metrics
from svl.infer import chunk_input, cover, predict_logits, predict_points
from svl.models import create_model
from svl.tasks import load_task_config, run_task
from svl.tasks.segment import SegmentationTask


@pytest.mark.parametrize(("n", "m"), [(1, 4), (5, 8), (8, 8), (9, 8), (23, 8), (24, 8), (7, None)])
def test_cover_owns_every_point_once_in_budget_sized_passes(n, m):
    chunks = cover(n, m, np.random.default_rng(0))
    owned = np.concatenate([idx[:k] for idx, k in chunks])
    np.testing.assert_array_equal(np.sort(owned), np.arange(n))  # each point exactly once
    assert all(len(idx) == (n if m is None else m) for idx, _ in chunks)
    assert len(chunks) == (1 if m is None else max(1, -(-n // m)))
    for idx, _ in chunks:
        assert idx.min() >= 0 and idx.max() < n
        if m is not None and n >= m:
            assert len(np.unique(idx)) == m  # context padding without repeats when the scan allows


class VoxelMeanNet(nn.Module):
    """A stand-in U-Net: each point's logits are a fixed function of the mean x of its voxel (the
    U-Net's point->voxel inverse map), so a reference can recompute them point by point."""

    def __init__(self, k: int = 5, h: float = 0.25) -> None:
        super().__init__()
        self.k, self.h = k, h
        self.w = nn.Parameter(torch.linspace(-1.0, 1.0, k))

    def forward(self, batch):  # noqa: D102
        out = []
        for xyz in batch.xyz:
            _, inv = torch.unique(torch.floor(xyz / self.h).long(), dim=0, return_inverse=True)
            mean_x = torch.zeros(int(inv.max()) + 1).index_add_(0, inv, xyz[:, 0])
            mean_x = mean_x / torch.bincount(inv).float()
            out.append(torch.sin(3.0 * mean_x[inv, None] * (1 + torch.arange(self.k)) + self.w))
        return torch.stack(out)


def _reference(sample, num_points, seed, i, k, h):
    """Explicit loop: every point takes the logits of its own voxel in the pass that owns it."""
    xyz = sample["xyz"].astype(np.float64)
    ref = np.full((len(xyz), k), np.nan)
    for idx, owned in cover(len(xyz), num_points, np.random.default_rng([seed, i, 0])):
        pts = xyz[idx]
        for j in range(owned):
            same = np.all(np.floor(pts / h) == np.floor(pts[j] / h), axis=1)  # brute force, no hashing
            mx = pts[same, 0].mean()
            ref[idx[j]] = np.sin(3.0 * mx * (1 + np.arange(k)) + np.linspace(-1.0, 1.0, k))
    return ref


def test_every_point_takes_its_own_voxel_logits_against_an_explicit_loop():
    rng = np.random.default_rng(3)
    scans = [{"xyz": rng.uniform(-1, 1, (n, 3)).astype(np.float32)} for n in (37, 64, 5, 100)]
    net = VoxelMeanNet()
    got = list(predict_logits(net, scans, num_points=16, batch_size=3, seed=7))
    assert [s is t for (s, _), t in zip(got, scans)] == [True] * 4  # in order, every scan
    for i, (s, logits) in enumerate(got):
        assert logits.shape == (len(s["xyz"]), 5)
        np.testing.assert_allclose(logits, _reference(s, 16, 7, i, 5, 0.25), rtol=0, atol=1e-5)


def test_votes_average_turned_passes():
    rng = np.random.default_rng(4)
    scan = {"xyz": rng.uniform(-1, 1, (40, 3)).astype(np.float32)}
    net = VoxelMeanNet()
    [(_, two)] = predict_logits(net, [scan], num_points=16, votes=2, seed=1)
    want = np.zeros_like(two)
    for v in range(2):  # vote v: cover drawn from [seed, i, v], the scan turned pi * v about z
        for idx, owned in cover(40, 16, np.random.default_rng([1, 0, v])):
            item = chunk_input(scan, idx, np.pi * v)
            b = type("B", (), {"xyz": torch.as_tensor(item["xyz"])[None]})
            want[idx[:owned]] += net(b)[0, :owned].detach().numpy() / 2
    np.testing.assert_allclose(two, want, atol=1e-5)
    with pytest.raises(ValueError, match="votes"):
        list(predict_logits(net, [scan], num_points=16, votes=0))


def test_real_unet_batched_passes_match_one_pass_at_a_time(calibrate_bn):
    torch.manual_seed(0)
    net = create_model("e3dsnn_unet_t", num_classes=4, voxel_size=0.2)
    rng = np.random.default_rng(5)
    scans = [{"xyz": rng.uniform(-1, 1, (n, 3)).astype(np.float32)} for n in (90, 40)]
    calibrate_bn(net, torch.as_tensor(rng.uniform(-1, 1, (4, 32, 3)), dtype=torch.float32))  # it fires
    got = [lg for _, lg in predict_logits(net, scans, num_points=32, batch_size=4, seed=2)]
    assert len(np.unique(got[0].argmax(-1))) > 1  # not a constant output
    for i, s in enumerate(scans):
        ref = np.full((len(s["xyz"]), 4), np.nan, np.float32)
        for idx, owned in cover(len(s["xyz"]), 32, np.random.default_rng([2, i, 0])):
            one = list(predict_logits(net, [chunk_input(s, idx)], num_points=None))[0][1]
            ref[idx[:owned]] = one[:owned]
        assert not np.isnan(ref).any()
        np.testing.assert_allclose(got[i], ref, atol=1e-4)


def test_miou_averages_the_fixed_class_list_with_absent_classes():
    names = ["road", "car", "person", "pole"]
    y = np.array([0, 0, 0, 1, 1, -1, -1, 2])
    p = np.array([0, 0, 1, 1, 3, 2, 0, 2])
    m = segmentation_metrics(y, p, names, ignore_index=-1)
    # scored: 6 points (two IGNORE). road 2/(2+0+1); car 1/(1+1+1); person 1/1; pole: no label, one
    # false positive -> IoU 0/1 = 0, absent from the labels
    assert m["points_scored"] == 6
    assert m["class_iou"] == pytest.approx({"road": 2 / 3, "car": 1 / 3, "person": 1.0, "pole": 0.0})
    assert m["miou"] == pytest.approx((2 / 3 + 1 / 3 + 1 + 0) / 4) and m["absent_classes"] == ["pole"]
    assert m["oa"] == pytest.approx(4 / 6) and m["macc"] == pytest.approx((2 / 3 + 1 / 2 + 1 + 0) / 4)
    assert np.array(m["confusion"]).shape == (4, 4) and m["confusion"][1] == [0, 1, 0, 1]
    # a class neither labelled nor predicted: IoU 0/0 -> None, and 0 in the 5-class mean (the
    # SemanticKITTI API's eps and Pointcept's tester do the same)
    m5 = segmentation_metrics(y, p, [*names, "fence"], ignore_index=-1)
    assert m5["class_iou"]["fence"] is None and m5["absent_classes"] == ["pole", "fence"]
    assert m5["miou"] == pytest.approx((2 / 3 + 1 / 3 + 1 + 0 + 0) / 5)
    assert m5["miou_present"] == pytest.approx((2 / 3 + 1 / 3 + 1) / 3)


class ConstantNet(nn.Module):
    """Logits (B, N, K) = a fixed vector: the global argmax is `best`, whatever the input."""

    def __init__(self, scores: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("scores", scores)

    def forward(self, batch):  # noqa: D102
        b, n = batch.xyz.shape[:2]
        return self.scores.expand(b, n, -1)


def test_shapenetpart_argmax_over_the_shapes_own_category_parts():
    scores = torch.zeros(50)
    scores[0], scores[5], scores[4] = 9.0, 3.0, 1.0  # Airplane part 1 best overall; Bag: part 5 > 4
    ds = [{"xyz": np.zeros((6, 3), np.float32), "segment": np.full(6, 4), "label": 1}]  # a Bag
    mask = np.zeros(50, bool)
    mask[SHAPENETPART_PARTS["Bag"]] = True
    _, free = predict_points(ConstantNet(scores), ds, 1, num_points=4)
    _, tied = predict_points(ConstantNet(scores), ds, 1, num_points=4, allowed=lambda s: mask)
    assert set(free[0]) == {0} and set(tied[0]) == {5} and len(tied[0]) == 6


def test_shapenetpart_task_scores_every_point_within_each_category(tmp_path, spp):
    _, cfg = load_task_config("classification", None, [
        "task=segmentation", f"out_dir={tmp_path}", "data.dataset=shapenetpart", f"data.root={spp}",
        "data.options.skip_missing=true", "data.num_points=512", "data.test_split=train",
    ])  # fmt: skip
    task = SegmentationTask(cfg)
    ys, ps = task.predict(ConstantNet(torch.linspace(1.0, 0.0, 50)))  # part 0 (Airplane 1) best overall
    full = build_dataset("shapenetpart", "train", root=spp, skip_missing=True, all_points=True)
    assert len(ys) == len(full) > 1
    cats = set()
    for i, (y, p) in enumerate(zip(ys, ps)):
        cat = full.classes[int(full[i]["label"])]
        cats.add(cat)
        assert len(y) == len(p) == len(full[i]["xyz"]) > 2048  # every point (several 512-point passes)
        assert set(p) == {SHAPENETPART_PARTS[cat][0]}  # the first of its own parts, never Airplane's
    assert len(cats) > 2


def _kitti_scan(d: Path, name: str, n: int, rng: np.random.Generator) -> int:
    """A SemanticKITTI-layout scan of n points: raw 40 (road) low, 50 (building) high, 0 (unlabelled,
    IGNORE) for some; returns how many points carry a label."""
    xyz = rng.uniform([-10, -10, -2], [10, 10, 2], (n, 3)).astype(np.float32)
    pts = np.concatenate([xyz, rng.uniform(0, 1, (n, 1)).astype(np.float32)], 1)
    raw = np.where(xyz[:, 2] < 0, 40, 50).astype("<u4")
    raw[rng.random(n) < 0.2] = 0
    (d / "velodyne").mkdir(parents=True, exist_ok=True)
    (d / "labels").mkdir(exist_ok=True)
    pts.astype("<f4").tofile(d / "velodyne" / f"{name}.bin")
    raw.tofile(d / "labels" / f"{name}.label")
    return int((raw != 0).sum())


def test_semantic_kitti_split_of_two_scans_scores_every_labelled_point(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "kitti" / "sequences"
    _kitti_scan(root / "00", "000000", 300, rng)
    labelled = _kitti_scan(root / "08", "000000", 301, rng) + _kitti_scan(root / "08", "000001", 150, rng)
    run = tmp_path / "run"
    _, cfg = load_task_config("classification", None, [
        "task=segmentation", f"out_dir={run}", "data.dataset=semantic_kitti", f"data.root={root.parent}",
        "data.num_points=128", "model.voxel_size=0.5", "train.epochs=1", "train.batch_size=1",
        "data.test_split=val", "train.ckpt_every_steps=0", "eval.monitor_test=false", "eval.precise_bn=1",
        "energy=false",
    ])  # fmt: skip
    run_task(cfg)
    res = json.loads((run / "results.json").read_text())
    assert res["n_test"] == 2 and res["points_scored"] == labelled  # every labelled point, once
    cm = np.array(res["confusion"])
    assert cm.shape == (19, 19) and cm.sum() == labelled
    assert cm.sum(1)[8] > 0 and cm.sum(1)[12] > 0 and cm.sum(1).astype(bool).sum() == 2  # road, building
    assert set(res["absent_classes"]) == set(res["class_iou"]) - {"road", "building"}
    tp, union = np.diag(cm), cm.sum(0) + cm.sum(1) - np.diag(cm)
    want = sum(tp[c] / union[c] for c in range(19) if union[c]) / 19  # 19 classes, 0/0 counts 0
    assert res["miou"] == pytest.approx(want) and res["passes_per_scene"] == pytest.approx((3 + 2) / 2)
