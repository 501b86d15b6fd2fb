"""Per-point labels: segmentation metrics against hand-computed confusion matrices, and the
ShapeNetPart v0 reader on the real samples and the official split lists."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from svl.data import build_dataset
from svl.data.segmentation import read_pts_seg
from svl.data.transforms import build_transforms
from svl.eval.segmentation import SHAPENETPART_PARTS, confusion, part_miou, segmentation_metrics


def test_metrics_match_a_hand_computed_confusion_matrix():
    y = np.array([0, 0, 1, 1, 2, 3])
    p = np.array([0, 1, 1, 1, 0, 3])
    cm = confusion(y, p, 5)
    want = np.zeros((5, 5), int)
    want[0, 0], want[0, 1], want[1, 1], want[2, 0], want[3, 3] = 1, 1, 2, 1, 1
    np.testing.assert_array_equal(cm, want)
    m = segmentation_metrics(y, p, ["a", "b", "c", "d", "e"])
    # IoU: a 1/(1+1+1), b 2/(2+1), c 0/1, d 1/1; e absent everywhere -> None, 0 in the fixed-list mean
    assert [r["iou"] for r in m["per_class"]][:4] == pytest.approx([1 / 3, 2 / 3, 0.0, 1.0])
    assert m["per_class"][4]["iou"] is None and m["absent_classes"] == ["e"]
    assert m["miou"] == pytest.approx((1 / 3 + 2 / 3 + 0 + 1) / 5)
    assert m["miou_present"] == pytest.approx((1 / 3 + 2 / 3 + 0 + 1) / 4)
    assert m["oa"] == pytest.approx(4 / 6) and m["points_scored"] == 6
    assert m["macc"] == pytest.approx((0.5 + 1 + 0 + 1 + 0) / 5)
    ig = segmentation_metrics(np.array([0, 255, 1]), np.array([0, 1, 1]), ["a", "b"], ignore_index=255)
    assert ig["oa"] == 1.0 and ig["miou"] == 1.0
    with pytest.raises(ValueError, match="outside"):
        confusion(np.array([0, 7]), np.array([0, 1]), 3)
    with pytest.raises(ValueError, match="labels but"):
        confusion(np.array([0, 1]), np.array([0]), 3)


def test_shapenetpart_instance_and_class_miou_by_hand():
    bag = SHAPENETPART_PARTS["Bag"]  # [4, 5]
    perfect = part_miou([np.array([4, 4, 5])], [np.array([4, 4, 5])], ["Bag"])
    assert perfect["instance_miou"] == 1.0 and perfect["class_miou"] == 1.0
    # part 5 absent in labels and predictions counts 1.0; part 4 perfect -> 1.0
    assert part_miou([np.array([4, 4])], [np.array([4, 4])], ["Bag"])["instance_miou"] == 1.0
    # one of four points wrong: part 4 IoU 2/3, part 5 IoU 1/2 -> shape 7/12
    r = part_miou([np.array([4, 4, 4, 5])], [np.array([4, 4, 5, 5])], ["Bag"])
    assert r["instance_miou"] == pytest.approx((2 / 3 + 1 / 2) / 2) and bag == [4, 5]
    # instance mean over shapes, class mean over categories
    r = part_miou(
        [np.array([4, 4]), np.array([4, 5]), np.array([6, 7])],
        [np.array([4, 4]), np.array([5, 4]), np.array([6, 7])],
        ["Bag", "Bag", "Cap"],
    )
    assert r["instance_miou"] == pytest.approx((1 + 0 + 1) / 3)
    assert r["class_miou"] == pytest.approx((0.5 + 1) / 2)
    with pytest.raises(ValueError, match="unknown category"):
        part_miou([np.array([0])], [np.array([0])], ["Sofa"])


def test_real_shapenetpart_samples_and_split_lists(spp):
    names = [ln.split()[0] for ln in (spp / "synsetoffset2category.txt").read_text().splitlines() if ln]
    assert names == list(SHAPENETPART_PARTS)  # the global part ids follow the file's category order
    sizes = {s: len(json.loads((spp / "train_test_split" / f"shuffled_{s}_file_list.json").read_text()))
             for s in ("train", "val", "test")}  # fmt: skip
    assert sizes == {"train": 12137, "val": 1870, "test": 2874}
    for pts in sorted(spp.glob("*/points/*.pts")):  # every real shape: one label per point, in range
        xyz, lab = read_pts_seg(pts, pts.parent.parent / "points_label" / (pts.stem + ".seg"))
        cat = names[[ln.split()[1] for ln in (spp / "synsetoffset2category.txt").read_text().splitlines()
                     if ln].index(pts.parent.parent.name)]  # fmt: skip
        assert len(xyz) == len(lab) > 0 and 1 <= lab.min() and lab.max() <= len(SHAPENETPART_PARTS[cat])
    with pytest.raises(FileNotFoundError, match="listed shapes are missing"):
        build_dataset("shapenetpart", "test", root=spp)
    listed = set()
    for split in ("train", "val", "test"):
        listed |= {e.split("/", 1)[1] for e in json.loads(
            (spp / "train_test_split" / f"shuffled_{split}_file_list.json").read_text())}  # fmt: skip
    on_disk = {f"{p.parent.parent.name}/{p.stem}" for p in spp.glob("*/points/*.pts")}
    total = 0
    for split in ("train", "val", "test"):
        try:
            ds = build_dataset("shapenetpart", split, root=spp, skip_missing=True, num_points=1024)
        except ValueError as e:  # a split none of the 16 samples belongs to
            assert "no listed shape found" in str(e)
            continue
        total += len(ds)
        for i in range(len(ds)):
            s = ds[i]
            parts = SHAPENETPART_PARTS[ds.classes[s["label"]]]
            assert s["xyz"].shape == (1024, 3) and set(np.unique(s["segment"])) <= set(parts)
    assert total == len(on_disk & listed) > 0


def test_bad_label_files_are_named(tmp_path, spp):
    pts = next(spp.glob("*/points/*.pts"))
    seg = pts.parent.parent / "points_label" / (pts.stem + ".seg")
    short = tmp_path / "short.seg"
    short.write_text("\n".join(seg.read_text().split()[:-3]) + "\n")
    with pytest.raises(ValueError, match=r"short\.seg: \d+ labels for \d+ points"):
        read_pts_seg(pts, short)
    bad = tmp_path / "bad.seg"
    shutil.copy(seg, bad)
    bad.write_text(bad.read_text().replace("1", "x", 1))
    with pytest.raises(ValueError, match="bad.seg"):
        read_pts_seg(pts, bad)


def test_transforms_keep_point_labels_aligned():
    rng = np.random.default_rng(0)
    xyz = rng.normal(size=(500, 3)).astype(np.float32)
    seg = (xyz[:, 0] > 0).astype(np.int64)  # a label that is a function of the point
    tf = build_transforms([{"name": "random_sample", "num_points": 200}, {"name": "fps", "num_points": 64}])
    out = tf({"xyz": xyz, "segment": seg}, rng)
    assert out["xyz"].shape == (64, 3) and out["segment"].shape == (64,)
    np.testing.assert_array_equal(out["segment"], (out["xyz"][:, 0] > 0).astype(np.int64))


def test_voxel_sample_votes_the_majority_label_of_each_voxel():
    from collections import Counter

    from svl.data.transforms import voxel_vote

    rng = np.random.default_rng(1)
    xyz = rng.uniform(0, 1, (3000, 3))
    seg = rng.integers(-1, 4, 3000)
    seg[:50] = -1  # some voxels hold only ignored points
    out = build_transforms([{"name": "voxel_sample", "voxel_size": 0.25}])(
        {"xyz": xyz, "segment": seg, "instance": np.arange(3000)}, rng
    )
    cells = [tuple(c) for c in np.floor(xyz / 0.25).astype(int)]
    kept = [tuple(c) for c in np.floor(out["xyz"] / 0.25).astype(int)]
    assert len(kept) == len(set(kept)) == len(set(cells))  # one point per occupied voxel
    np.testing.assert_array_equal(out["xyz"], xyz[out["instance"]])  # other fields follow the point
    for cell, label in zip(kept, out["segment"]):
        votes = Counter(int(s) for c, s in zip(cells, seg) if c == cell and s != -1)
        top = max(votes.values()) if votes else None
        want = min(k for k, v in votes.items() if v == top) if votes else -1  # ties: smaller label
        assert label == want
    np.testing.assert_array_equal(voxel_vote(np.array([0, 0, 0, 1]), np.array([-1, -1, 2, -1])), [2, -1])
    with pytest.raises(ValueError, match="voxel_size must be positive"):
        build_transforms([{"name": "voxel_sample", "voxel_size": 0}])


def test_sphere_crop_keeps_the_nearest_points_with_their_labels():
    rng = np.random.default_rng(2)
    xyz = rng.normal(size=(1000, 3))
    seg = np.arange(1000)
    out = build_transforms([{"name": "sphere_crop", "max_points": 100, "mode": "center"}])(
        {"xyz": xyz, "segment": seg}, rng
    )
    centre = (xyz.min(0) + xyz.max(0)) / 2
    want = np.sort(np.argsort(((xyz - centre) ** 2).sum(1))[:100])
    np.testing.assert_array_equal(out["segment"], want)
    np.testing.assert_array_equal(out["xyz"], xyz[want])
    rnd = build_transforms([{"name": "sphere_crop", "max_points": 100}])({"xyz": xyz, "segment": seg}, rng)
    assert len(rnd["xyz"]) == 100 and np.array_equal(rnd["xyz"], xyz[rnd["segment"]])
    inside = np.isin(np.arange(1000), rnd["segment"])
    d = np.linalg.norm(xyz[:, None] - rnd["xyz"][None], axis=2)  # (all points, candidate centres)
    assert (d[inside].max(0) <= d[~inside].min(0)).any()  # a ball around one of the kept points


def _pointcept_scene(folder: Path, n: int, k: int, seg_name: str, rng) -> np.ndarray:
    folder.mkdir(parents=True)
    seg = rng.integers(-1, k, n)
    np.save(folder / "coord.npy", rng.normal(size=(n, 3)).astype(np.float32))
    np.save(folder / "color.npy", rng.integers(0, 256, (n, 3)).astype(np.uint8))
    np.save(folder / seg_name, seg)
    return seg


def test_pointcept_layouts_read_labels_and_refuse_bad_ones(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "s3dis"
    segs = {a: _pointcept_scene(root / f"Area_{a}" / "office_1", 300, 13, "segment.npy", rng) for a in (1, 5)}
    tr = build_dataset("s3dis", "train", root=root, num_points=None)
    te = build_dataset("s3dis", "test", root=root, num_points=128)
    assert len(tr) == len(te) == 1 and len(tr.classes) == 13
    np.testing.assert_array_equal(tr[0]["segment"], segs[1])  # -1 stays the ignore label
    s = te[0]
    assert s["xyz"].shape == (128, 3) and s["rgb"].max() <= 1 and s["segment"].shape == (128,)
    sc = tmp_path / "scannet"
    _pointcept_scene(sc / "val" / "scene0000_00", 200, 20, "segment20.npy", rng)
    assert len(build_dataset("scannet", "val", root=sc).classes) == 20
    np.save(sc / "val" / "scene0000_00" / "segment20.npy", np.full(200, 25))
    with pytest.raises(ValueError, match="scene0000_00: label 25 outside 0..19"):
        build_dataset("scannet", "val", root=sc)[0]
    np.save(sc / "val" / "scene0000_00" / "segment20.npy", np.zeros(150, np.int64))
    with pytest.raises(ValueError, match="segment has 150 rows for 200 points"):
        build_dataset("scannet", "val", root=sc)[0]


def test_semantic_kitti_learning_map_on_a_real_scan(tmp_path, shared_data):
    scan = shared_data / "kitti_samples" / "training" / "velodyne" / "000000.bin"
    if not scan.is_file():
        pytest.skip("KITTI samples not in the shared data")
    seq = tmp_path / "sequences" / "08"
    (seq / "velodyne").mkdir(parents=True)
    (seq / "labels").mkdir()
    shutil.copy(scan, seq / "velodyne" / "000000.bin")
    n = scan.stat().st_size // 16
    rng = np.random.default_rng(0)
    raw = rng.choice([0, 10, 40, 252, 60, 52], n).astype(np.uint32)
    inst = rng.integers(0, 5, n).astype(np.uint32)
    (raw | (inst << 16)).astype("<u4").tofile(seq / "labels" / "000000.label")
    ds = build_dataset("semantic_kitti", "val", root=tmp_path, num_points=None)
    s = ds[0]
    want = {0: -1, 10: 0, 40: 8, 252: 0, 60: 8, 52: -1}  # car = 0, road = 8 (lane marking -> road)
    np.testing.assert_array_equal(s["segment"], np.vectorize(want.get)(raw))
    np.testing.assert_array_equal(s["instance"], inst)
    assert len(s["xyz"]) == n and len(ds.classes) == 19
    (raw[:-5]).astype("<u4").tofile(seq / "labels" / "000000.label")
    with pytest.raises(ValueError, match=r"000000\.label: .* labels for \d+ points"):
        build_dataset("semantic_kitti", "val", root=tmp_path)[0]
    np.array([7] * n, "<u4").tofile(seq / "labels" / "000000.label")
    with pytest.raises(ValueError, match="not in the SemanticKITTI learning map"):
        build_dataset("semantic_kitti", "val", root=tmp_path)[0]
