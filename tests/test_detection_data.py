"""Detection data on real frames: the `kitti` dataset, box-aware augmentation, ground-truth sampling.

Why these checks: an augmentation that moves the points but not the boxes (or turns a box the wrong
way) trains a detector on labels beside their objects, and nothing downstream notices. So every
box-aware transform is checked point by point on a real KITTI frame and a `modelnet40_scenes`
scene: each point inside box k before stays inside box k after, a marker at each box's front stays
at the front (the heading follows), padding rows stay bit-identical, and transforms that cannot
follow a box refuse rather than misalign. Ground-truth sampling must paste objects that collide
with nothing, with exactly their own points.
"""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest

from svl.boxes import bev_overlap, points_in_boxes
from svl.data import build_dataset, collate_points
from svl.data.detection import KITTI_POINT_CLOUD_RANGE, build_gt_database
from svl.data.readers.kitti import camera_boxes_to_lidar, fov_mask, read_velodyne
from svl.data.transforms import build_transforms

SETS = (("boxes", "box_labels"), ("ignore_boxes", "ignore_labels"))
PAD = 12  # box rows of the test samples: room for padding and pasted objects


# ----------------------------------------------------------------------------- fixtures and helpers
@pytest.fixture(scope="module")
def kitti_root(shared_data):
    return shared_data / "kitti_samples"


@pytest.fixture(scope="module")
def kitti_all(kitti_root):
    """The three real frames (split "all": no ImageSets needed), reflectance as a feature."""
    return build_dataset("kitti", "all", root=kitti_root, reflectance=True)


@pytest.fixture(scope="module")
def scenes(shared_data, tmp_path_factory):
    """Four modelnet40_scenes training scenes (4,096 points by FPS) and their ground-truth database,
    built in a private cache."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SVL_CACHE", str(tmp_path_factory.mktemp("svl-cache")))
        ds = build_dataset("modelnet40_scenes", "train", root=shared_data, num_points=4096, scenes=4)
        db = build_gt_database(ds)
    return ds, db


def _pad(sample, k=PAD):
    """The sample with every box set padded (zero rows, label -1) to k rows."""
    out = dict(sample)
    for key, label_key in SETS:
        if key in sample:
            b, lab = np.asarray(sample[key]), np.asarray(sample[label_key])
            real = lab >= 0
            out[key] = np.zeros((k, 7), np.float32)
            out[key][: real.sum()] = b[real]
            out[label_key] = np.full(k, -1, np.int64)
            out[label_key][: real.sum()] = lab[real]
            if key == "boxes" and "difficulty" in sample:
                out["difficulty"] = np.full(k, -1, np.int64)
                out["difficulty"][: real.sum()] = np.asarray(sample["difficulty"])[real]
    return out


def _source(name, kitti_all, scenes):
    """A padded sample: KITTI frame 000001 (a car, a cyclist, a truck as ignore box) or scene 0."""
    if name == "kitti":
        return _pad(kitti_all[1])
    return _pad(scenes[0][0])


def _real(sample, key, label_key):
    return np.flatnonzero(np.asarray(sample[label_key]) >= 0) if key in sample else np.zeros(0, int)


def _fronts(boxes):
    """(K, 3) a point 0.45 l ahead of each box's centre: inside, near the front face."""
    b = np.asarray(boxes, np.float64).reshape(-1, 7)
    heading = np.stack([np.cos(b[:, 6]), np.sin(b[:, 6]), np.zeros(len(b))], 1)
    return b[:, :3] + 0.45 * b[:, 3:4] * heading


def _with_markers(sample):
    """The sample with one front marker per real box appended to the points (per-point arrays grow too)."""
    fronts = np.concatenate(
        [_fronts(np.asarray(sample[k])[_real(sample, k, lk)]) for k, lk in SETS if k in sample]
    )
    out = dict(sample)
    n = len(sample["xyz"])
    out["xyz"] = np.concatenate([sample["xyz"], fronts]).astype(np.float32)
    for key in ("feats", "segment", "instance"):
        if key in sample and len(sample[key]) == n:
            v = np.asarray(sample[key])
            out[key] = np.concatenate([v, np.zeros((len(fronts), *v.shape[1:]), v.dtype)])
    return out, len(fronts)


def _grow(boxes, tol):
    b = np.array(boxes, np.float64).reshape(-1, 7)
    b[:, 3:6] += 2 * tol
    return b


def _all_real_boxes(sample):
    return np.concatenate(
        [np.asarray(sample[k], np.float64)[_real(sample, k, lk)] for k, lk in SETS if k in sample]
    )


# ----------------------------------------------------------------------------- box-aware transforms
BOX_AWARE = {
    "rotate_gravity": ["rotate_gravity"],
    "rotate_gravity_pi4": [{"name": "rotate_gravity", "max_angle": math.pi / 4}],
    "random_scale": [{"name": "random_scale", "low": 0.8, "high": 1.25}],
    "random_shift": [{"name": "random_shift", "shift": 2.0}],
    "flip_y": [{"name": "random_flip", "p": 1.0}],
    "flip_x_and_y": [{"name": "random_flip", "p": 1.0, "x": True}],
    "normalize": ["normalize"],
    "object_noise": ["object_noise"],
    "chain": [
        "object_noise",
        {"name": "random_flip", "p": 1.0, "x": True},
        "rotate_gravity",
        {"name": "random_scale", "low": 0.95, "high": 1.05},
        {"name": "random_shift", "shift": 1.0},
    ],
}


@pytest.mark.parametrize("source", ["kitti", "scenes"])
@pytest.mark.parametrize("name", list(BOX_AWARE))
def test_box_aware_transforms_keep_points_in_their_boxes(name, source, kitti_all, scenes):
    s, n_markers = _with_markers(_source(source, kitti_all, scenes))
    before = {k: points_in_boxes(s["xyz"], np.asarray(s[k])[_real(s, k, lk)]) for k, lk in SETS if k in s}
    out = build_transforms(BOX_AWARE[name])(s, np.random.default_rng(3))
    assert out["xyz"].shape == s["xyz"].shape and out["xyz"].dtype == np.float32
    tol = 1e-5 * float(np.abs(out["xyz"]).max())  # float32 rounding of points on a box face
    for key, label_key in SETS:
        if key not in s:
            continue
        rows = _real(s, key, label_key)
        assert np.array_equal(_real(out, key, label_key), rows)
        pad = np.setdiff1d(np.arange(PAD), rows)
        assert not out[key][pad].any() and (out[label_key][pad] == -1).all()  # padding untouched
        assert out[key].dtype == np.float32 and out[key].shape == (PAD, 7)
        assert np.array_equal(out[label_key], s[label_key])
        after = points_in_boxes(out["xyz"], _grow(out[key][rows], tol))
        lost = before[key] & ~after
        assert not lost.any(), f"{name}/{source}: {lost.sum(0)} points left boxes of {key}"
    # the heading follows the points: each box's front marker is still at its front
    np.testing.assert_allclose(out["xyz"][-n_markers:], _fronts(_all_real_boxes(out)), atol=3 * tol)
    assert not np.allclose(_all_real_boxes(out), _all_real_boxes(s), atol=1e-3), "nothing moved"


def test_random_scale_scales_sizes_and_flip_mirrors_yaw():
    box = np.array([[10.0, 2.0, -1.0, 4.0, 1.6, 1.5, 0.3]], np.float32)
    s = {"xyz": np.zeros((1, 3), np.float32), "boxes": box, "box_labels": np.array([0])}
    out = build_transforms([{"name": "random_scale", "low": 2.0, "high": 2.0}])(s, np.random.default_rng(0))
    np.testing.assert_allclose(out["boxes"][0], [20, 4, -2, 8, 3.2, 3, 0.3], rtol=1e-6)
    out = build_transforms([{"name": "random_flip", "p": 1.0}])(s, np.random.default_rng(0))
    np.testing.assert_allclose(out["boxes"][0], [10, -2, -1, 4, 1.6, 1.5, -0.3], rtol=1e-6)
    out = build_transforms([{"name": "random_flip", "p": 1.0, "y": False, "x": True}])(
        s, np.random.default_rng(0)
    )
    np.testing.assert_allclose(out["boxes"][0], [-10, 2, -1, 4, 1.6, 1.5, math.pi - 0.3], rtol=1e-6)
    out = build_transforms([{"name": "rotate_gravity", "max_angle": 3.0}])(s, np.random.default_rng(1))
    a = np.random.default_rng(1).uniform(-3.0, 3.0)
    assert out["boxes"][0, 6] == pytest.approx((0.3 + a + math.pi) % (2 * math.pi) - math.pi, abs=1e-6)


def test_object_noise_freezes_boxes_that_share_points_and_never_collides(scenes):
    s = _pad(scenes[0][0])
    s.pop("segment"), s.pop("instance")
    k = int((s["box_labels"] >= 0).sum())
    twin = s["boxes"][0].copy()
    twin[0] += 0.05  # overlaps box 0: the points they share cannot follow both
    s["boxes"][k], s["box_labels"][k] = twin, 0
    moved = 0
    for seed in range(5):
        out = build_transforms([{"name": "object_noise", "translation_std": 0.5}])(
            s, np.random.default_rng(seed)
        )
        assert np.array_equal(out["boxes"][[0, k]], s["boxes"][[0, k]])
        moved += int((np.abs(out["boxes"][1:k] - s["boxes"][1:k]).max(1) > 0).sum())
        real = out["boxes"][: k + 1]
        ov = bev_overlap(real, real)
        was = bev_overlap(s["boxes"][: k + 1], s["boxes"][: k + 1])
        assert not (ov & ~was).any()  # no new collision
    assert moved >= 5
    # an ignore box over box 1 freezes it too
    s["ignore_boxes"] = np.zeros((PAD, 7), np.float32)
    s["ignore_labels"] = np.full(PAD, -1)
    s["ignore_boxes"][0], s["ignore_labels"][0] = s["boxes"][1], 3
    for seed in range(5):
        out = build_transforms(["object_noise"])(s, np.random.default_rng(seed))
        assert np.array_equal(out["boxes"][[0, 1, k]], s["boxes"][[0, 1, k]])
        assert np.array_equal(out["ignore_boxes"], s["ignore_boxes"])
    with pytest.raises(ValueError, match="object_noise: the sample has no 'boxes'"):
        build_transforms(["object_noise"])({"xyz": s["xyz"]}, np.random.default_rng(0))


@pytest.mark.parametrize(
    "spec, msg",
    [
        ("rotation_jitter", r"rotation_jitter: the sample carries 3D boxes \(boxes"),
        (
            {"name": "random_scale", "anisotropic": True},
            r"random_scale\(anisotropic=True\): the sample carries",
        ),
        ("swap_axes", r"swap_axes: the sample carries 3D boxes"),
        ("openshape_augment", r"rotation_jitter: the sample carries 3D boxes"),
    ],
)
def test_transforms_that_would_misalign_boxes_refuse(spec, msg, kitti_all):
    s = _pad(kitti_all[1])
    with pytest.raises(ValueError, match=msg):
        build_transforms([spec])(s, np.random.default_rng(0))
    empty = {**s, "box_labels": np.full(PAD, -1), "boxes": np.zeros((PAD, 7), np.float32)}
    empty.pop("ignore_boxes"), empty.pop("ignore_labels")
    with pytest.raises(ValueError, match=msg):  # a frame without objects fails the same way
        build_transforms([spec])(empty, np.random.default_rng(0))


def test_transforms_without_boxes_draw_as_before():
    """No boxes: the same random stream and the same result as before boxes existed."""
    xyz = np.random.default_rng(0).normal(size=(50, 3)).astype(np.float32)
    s = {"xyz": xyz}

    def rz(a):
        return np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])

    out = build_transforms(["rotate_gravity"])(s, np.random.default_rng(5))
    np.testing.assert_allclose(
        out["xyz"], xyz @ rz(np.random.default_rng(5).uniform(0, 2 * math.pi)).T, atol=1e-6
    )
    out = build_transforms([{"name": "random_scale", "anisotropic": True}])(s, np.random.default_rng(5))
    np.testing.assert_allclose(out["xyz"], xyz * np.random.default_rng(5).uniform(0.8, 1.25, 3), rtol=1e-6)
    jit = build_transforms(["rotation_jitter"])(s, np.random.default_rng(5))
    assert jit["xyz"].shape == xyz.shape and not np.array_equal(jit["xyz"], xyz)
    flip = build_transforms([{"name": "random_flip", "p": 1.0}])(s, np.random.default_rng(5))
    np.testing.assert_array_equal(flip["xyz"], xyz * [1, -1, 1])
    assert build_transforms([{"name": "random_flip", "p": 0.0}])(s, np.random.default_rng(5)) is s
    with pytest.raises(ValueError, match="random_flip: need 0 <= p <= 1"):
        build_transforms([{"name": "random_flip", "x": False, "y": False}])


def test_bev_overlap_matches_sampling():
    """The rectangle test against dense sampling: never misses an overlap sampling finds, and boxes it
    calls overlapping by more than a sliver (shrunk by 5 cm, still overlapping) do share sampled area."""
    rng = np.random.default_rng(0)

    def box():
        return np.r_[rng.uniform(-3, 3, 2), 0.0, rng.uniform(0.3, 4, 2), 1.0, rng.uniform(-math.pi, math.pi)]

    def samples(b, n=3000):
        u = rng.uniform(-0.5, 0.5, (n, 2)) * b[3:5]
        c, s = math.cos(b[6]), math.sin(b[6])
        return np.stack([u[:, 0] * c - u[:, 1] * s + b[0], u[:, 0] * s + u[:, 1] * c + b[1], np.zeros(n)], 1)

    counts = [0, 0]
    for _ in range(400):
        a, b = box(), box()
        hit = points_in_boxes(samples(a), b[None]).any() or points_in_boxes(samples(b), a[None]).any()
        ov = bool(bev_overlap(a, b)[0, 0])
        assert ov == bool(bev_overlap(b, a)[0, 0])
        if hit:
            assert ov
        shrunk_a, shrunk_b = a.copy(), b.copy()
        shrunk_a[3:5] -= 0.1
        shrunk_b[3:5] -= 0.1
        if bev_overlap(shrunk_a, shrunk_b)[0, 0]:
            assert hit
        counts[ov] += 1
    assert min(counts) > 100  # both outcomes well represented


# ----------------------------------------------------------------------------- ground-truth sampling
def test_gt_database_holds_each_object_with_its_points(kitti_all):
    db = build_gt_database(kitti_all, cache=False)
    assert db["classes"].tolist() == ["Car", "Pedestrian", "Cyclist"]
    assert db["labels"].tolist() == [1, 0, 2, 0] and db["frame"].tolist() == [0, 1, 1, 2]
    assert db["num_points"].tolist() == [377, 9, 18, 67] and db["difficulty"].tolist() == [0, -1, -1, 1]
    assert db["offsets"].tolist() == [0, 377, 386, 404, 471] and db["feats"].shape == (471, 1)
    for o in range(4):
        p = db["points"][db["offsets"][o] : db["offsets"][o + 1]]
        assert (np.abs(p) <= db["boxes"][o, 3:6] / 2 + 1e-4).all()  # box frame: within the half sizes


def _pasted_rows(before, after):
    return np.flatnonzero((np.asarray(before["box_labels"]) < 0) & (np.asarray(after["box_labels"]) >= 0))


def test_gt_sample_pastes_non_colliding_objects_with_their_points(kitti_all):
    db = build_gt_database(kitti_all, cache=False)
    s = _pad(kitti_all[0])  # one pedestrian; the database holds 2 cars, a cyclist and that pedestrian
    tf = build_transforms([{"name": "gt_sample", "database": db, "per_class": 5, "min_points": 1,
                            "exclude_difficulty": []}])  # fmt: skip
    out = tf(s, np.random.default_rng(0))
    rows = _pasted_rows(s, out)
    # the pedestrian would land on itself: refused; the others go in
    assert sorted(out["box_labels"][rows].tolist()) == [0, 0, 2] and rows.tolist() == [1, 2, 3]
    assert (out["box_labels"][4:] == -1).all() and not out["boxes"][4:].any()
    allb = _all_real_boxes(out)
    ov = bev_overlap(allb, allb)
    np.fill_diagonal(ov, False)
    assert not ov.any()
    # the scene keeps every point outside the pasted boxes and gains exactly the objects' points
    pasted = out["boxes"][rows].astype(np.float64)
    idx = [int(np.flatnonzero((db["boxes"] == out["boxes"][r]).all(1))[0]) for r in rows]
    n_obj = int(db["num_points"][idx].sum())
    removed = points_in_boxes(s["xyz"], pasted).any(1)
    n_scene = len(s["xyz"]) - int(removed.sum())
    assert len(out["xyz"]) == n_scene + n_obj and out["feats"].shape == (len(out["xyz"]), 1)
    np.testing.assert_array_equal(out["xyz"][:n_scene], s["xyz"][~removed])
    assert not points_in_boxes(out["xyz"][:n_scene], pasted).any()
    assert out["difficulty"][rows].tolist() == db["difficulty"][idx].tolist()
    # each object's points are the very points it had in its own frame, at the same place
    start = n_scene
    for r, o in zip(rows, idx):
        src = kitti_all._load(int(db["frame"][o]))
        mine = points_in_boxes(src["xyz"], db["boxes"][o][None])[:, 0]
        got = out["xyz"][start : start + db["num_points"][o]]
        np.testing.assert_allclose(np.sort(got, 0), np.sort(src["xyz"][mine], 0), atol=2e-5)
        np.testing.assert_array_equal(
            np.sort(out["feats"][start : start + len(got)], 0), np.sort(src["feats"][mine], 0)
        )
        assert points_in_boxes(got, _grow(out["boxes"][r], 2e-5)).all()
        start += len(got)
    # the filters: only the 67-point moderate car is eligible by default; a full class gets nothing
    out = build_transforms([{"name": "gt_sample", "database": db}])(s, np.random.default_rng(0))
    assert out["box_labels"][_pasted_rows(s, out)].tolist() == [0]
    s2 = _pad(kitti_all[2])  # already holds a car
    out = build_transforms([{"name": "gt_sample", "database": db, "per_class": {"Car": 1}, "min_points": 1,
                             "exclude_difficulty": []}])(s2, np.random.default_rng(0))  # fmt: skip
    assert out is s2
    with pytest.raises(ValueError, match=r"gt_sample: class 'Tram' is not in the database"):
        build_transforms([{"name": "gt_sample", "database": db, "per_class": {"Tram": 1}}])


def test_gt_sample_from_a_file_pickles_and_refuses_what_it_cannot_fill(kitti_all, scenes, tmp_path):
    path = tmp_path / "db.npz"
    np.savez(path, **build_gt_database(kitti_all, cache=False))
    tf = build_transforms([{"name": "gt_sample", "database": str(path), "min_points": 1}])
    clone = pickle.loads(pickle.dumps(tf))  # DataLoader workers get a copy that reloads the file
    s = _pad(kitti_all[0])
    a, b = tf(s, np.random.default_rng(1)), clone(s, np.random.default_rng(1))
    assert np.array_equal(a["xyz"], b["xyz"]) and len(_pasted_rows(s, a)) >= 1
    assert "_db" not in repr(tf) and "db.npz" in repr(tf)
    ds, db = scenes
    with pytest.raises(
        ValueError, match=r"gt_sample: the sample carries per-point \['segment', 'instance'\]"
    ):
        build_transforms([{"name": "gt_sample", "database": db}])(_pad(ds[0]), np.random.default_rng(0))
    with pytest.raises(ValueError, match="the sample has feats but database"):
        build_transforms([{"name": "gt_sample", "database": db}])(
            {**_pad(ds[0]), "segment": None, "instance": None, "feats": np.zeros((4096, 1))},
            np.random.default_rng(0),
        )
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        build_transforms([{"name": "gt_sample", "database": str(tmp_path / "nope.npz")}])(
            s, np.random.default_rng(0)
        )


def test_gt_sample_on_scenes(scenes):
    ds, db = scenes
    assert len(db["boxes"]) == int((ds.data["box_labels"] >= 0).sum()) and "difficulty" not in db
    tf = build_transforms([{"name": "gt_sample", "database": db, "per_class": 2}])
    total = 0
    for i in range(len(ds)):
        s = _pad(ds[i])
        s.pop("segment"), s.pop("instance")
        out = tf(s, np.random.default_rng(i))
        rows = _pasted_rows(s, out)
        total += len(rows)
        allb = _all_real_boxes(out)
        ov = bev_overlap(allb, allb)
        np.fill_diagonal(ov, False)
        assert not ov.any()
        for cls in np.unique(out["box_labels"][rows]):  # filled up to 2 per class, never past it
            assert (out["box_labels"] == cls).sum() <= max(2, (s["box_labels"] == cls).sum())
        n_new = sum(
            int(db["num_points"][np.flatnonzero((db["boxes"] == out["boxes"][r]).all(1))[0]]) for r in rows
        )
        n_scene = len(out["xyz"]) - n_new
        assert not points_in_boxes(out["xyz"][:n_scene], out["boxes"][rows]).any()
        assert points_in_boxes(out["xyz"][n_scene:], _grow(out["boxes"][rows], 1e-5)).any(1).all()
    assert total >= 4


def test_gt_database_is_cached(kitti_all, svl_cache):
    a = build_gt_database(kitti_all)
    files = list((svl_cache / "gt_database").glob("*.npz"))
    assert len(files) == 1
    b = build_gt_database(kitti_all)
    assert set(a) == set(b) and all(np.array_equal(a[k], b[k]) for k in a)


# ----------------------------------------------------------------------------- the kitti dataset
@pytest.fixture
def kitti_split(tmp_path, kitti_root):
    """A KITTI root with the real frames and a small ImageSets split (000000-1 train, 000002 val)."""
    (tmp_path / "training").symlink_to(kitti_root / "training")
    (tmp_path / "ImageSets").mkdir()
    (tmp_path / "ImageSets" / "train.txt").write_text("000000\n000001\n")
    (tmp_path / "ImageSets" / "val.txt").write_text("000002\n")
    return tmp_path


def test_kitti_dataset_samples(kitti_split, kitti_root):
    train = build_dataset("kitti", "train", root=kitti_split, reflectance=True)
    val = build_dataset("kitti", "val", root=kitti_split)
    assert len(train) == 2 and len(val) == 1 and train.frame_ids == ["000000", "000001"]
    assert train.classes == ["Car", "Pedestrian", "Cyclist"] and train.labels().tolist() == [0, 0]
    s = train[1]
    calib, ann = train.calib(1), train.annotations(1)
    assert s["frame_id"] == "000001" and s["index"] == 1
    assert s["xyz"].dtype == np.float32 and s["feats"].shape == (len(s["xyz"]), 1)
    r = np.asarray(KITTI_POINT_CLOUD_RANGE)
    assert ((s["xyz"] >= r[:3]) & (s["xyz"] <= r[3:])).all() and fov_mask(s["xyz"], calib).all()
    scan = read_velodyne(kitti_root / "training/velodyne/000001.bin")
    keep = fov_mask(scan[:, :3], calib) & ((scan[:, :3] >= r[:3]) & (scan[:, :3] <= r[3:])).all(1)
    np.testing.assert_array_equal(s["xyz"], scan[keep, :3])
    np.testing.assert_array_equal(s["feats"][:, 0], scan[keep, 3])
    # Car (58 m) and Cyclist are objects; the Truck 69.7 m out lies past the range: an ignore box
    want = camera_boxes_to_lidar(ann.loc[:3], ann.dims[:3], ann.rotation_y[:3], calib)
    assert s["boxes"].shape == (100, 7) and s["box_labels"][:3].tolist() == [0, 2, -1]
    np.testing.assert_allclose(s["boxes"][:2], want[1:3], rtol=1e-6, atol=1e-5)
    assert s["difficulty"][:3].tolist() == [-1, -1, -1] and not s["boxes"][2:].any()
    assert train.ignore_classes[s["ignore_labels"][0]] == "Truck" and (s["ignore_labels"][1:] == -1).all()
    np.testing.assert_allclose(s["ignore_boxes"][0], want[0], rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(s["dontcare_bbox"][:4], ann.bbox[3:], rtol=1e-6)
    assert not s["dontcare_bbox"][4:].any()
    v = val[0]
    assert "feats" not in v and v["box_labels"][:2].tolist() == [0, -1] and v["difficulty"][0] == 1
    assert val.ignore_classes[v["ignore_labels"][0]] == "Misc"
    cars = build_dataset("kitti", "train", root=kitti_split, classes=["Car"])[0]  # the pedestrian: ignored
    assert (cars["box_labels"] == -1).all() and cars["ignore_labels"][0] == train.ignore_classes.index(
        "Pedestrian"
    )
    raw = build_dataset("kitti", "train", root=kitti_split, fov=False, point_cloud_range=None)[0]
    assert raw["xyz"].shape == (115384, 3)


def test_kitti_training_pipeline_end_to_end(kitti_split, tmp_path):
    train = build_dataset("kitti", "train", root=kitti_split, reflectance=True)
    db_path = tmp_path / "kitti_db.npz"
    np.savez(db_path, **build_gt_database(train, cache=False))
    pipeline = [
        {"name": "gt_sample", "database": str(db_path), "min_points": 1, "exclude_difficulty": []},
        "object_noise",
        {"name": "random_flip"},
        {"name": "rotate_gravity", "max_angle": math.pi / 4},
        {"name": "random_scale", "low": 0.95, "high": 1.05},
        {"name": "random_sample", "num_points": 16384},
    ]
    ds = build_dataset("kitti", "train", root=kitti_split, reflectance=True, transforms=pipeline, seed=1)
    a, b = ds[0], ds[0]
    assert np.array_equal(a["xyz"], b["xyz"]) and np.array_equal(a["boxes"], b["boxes"])  # deterministic
    assert (a["box_labels"] >= 0).sum() > 1  # frame 000000's pedestrian plus pasted objects
    batch = collate_points([a, ds[1]])
    assert tuple(batch.xyz.shape) == (2, 16384, 3) and tuple(batch.feats.shape) == (2, 16384, 1)
    assert batch.labels is None
    shapes = {k: tuple(v.shape) for k, v in batch.extras.items()}
    per_object = {"boxes": (7,), "box_labels": (), "difficulty": (), "ignore_boxes": (7,),
                  "ignore_labels": (), "dontcare_bbox": (4,)}  # fmt: skip
    assert shapes == {k: (2, 100, *v) for k, v in per_object.items()}
    aug = build_dataset("kitti", "train", root=kitti_split, augment=True, num_points=4096)
    with pytest.raises(ValueError, match="rotation_jitter: the sample carries 3D boxes"):
        aug[0]  # the classification recipe tilts the scene: refused, not silently misaligned


def test_kitti_dataset_errors(kitti_split, kitti_root, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"kitti/trainval: no frame list .*ImageSets/trainval.txt"):
        build_dataset("kitti", "trainval", root=kitti_split)
    (kitti_split / "ImageSets" / "bad.txt").write_text("000000\n000009\n")
    with pytest.raises(
        FileNotFoundError, match=r"kitti/bad: 1 of 2 frames have no .*velodyne/<id>.bin \(first: 000009\)"
    ):
        build_dataset("kitti", "bad", root=kitti_split)
    with pytest.raises(ValueError, match="classes must be distinct KITTI types"):
        build_dataset("kitti", "all", root=kitti_root, classes=["Car", "DontCare"])
    with pytest.raises(ValueError, match="point_cloud_range must be"):
        build_dataset("kitti", "all", root=kitti_root, point_cloud_range=[0, 0, 0, 1, 1])
    few = build_dataset("kitti", "all", root=kitti_root, max_objects=3)
    with pytest.raises(ValueError, match=r"label_2/000001.txt: 4 DontCare regions, more than max_objects=3"):
        few[1]
    (tmp_path / "empty" / "training").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="kitti/all: no velodyne"):
        build_dataset("kitti", "all", root=tmp_path / "empty")
