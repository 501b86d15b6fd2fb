"""`modelnet40_scenes` on the real shared ModelNet40: split hygiene, geometry, labels, visibility, caching.

Why these checks: a scene generator that leaks test shapes into train scenes, lets objects overlap or
puts labels on the wrong points would silently corrupt every segmentation / detection result built
on it, so each property is checked against the stored poses and the split files themselves.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from svl.data.scenes import FLOOR, MIN_BOX, SceneConfig, sensor_bins, visible_mask

TINY = dict(scenes=4, points_per_scene=2048)


@pytest.fixture
def split_arrays(shared_data):
    from svl.data.modelnet import modelnet40_arrays

    return {s: modelnet40_arrays(shared_data, s)[0] for s in ("train", "test")}


def _box_frame(xyz, box):
    """Points in an oriented box's own frame (centre at 0, axes l, w, h)."""
    c, yaw = box[:3], box[6]
    d = xyz - c
    cy, sy = math.cos(yaw), math.sin(yaw)
    return np.stack([cy * d[:, 0] + sy * d[:, 1], -sy * d[:, 0] + cy * d[:, 1], d[:, 2]], 1)


@pytest.mark.parametrize("split", ["train", "test"])
def test_scenes_use_their_split_and_are_geometrically_sound(shared_data, svl_cache, split_arrays, split):
    from svl.data import build_dataset

    ds = build_dataset("modelnet40_scenes", split, root=shared_data, **TINY)
    assert len(ds) == 4 and len(ds.classes) == 41 and ds.classes[FLOOR] == "floor"
    own = split_arrays[split]
    other = split_arrays["test" if split == "train" else "train"]
    other_names = set(map(str, other["names"]))
    for i in range(len(ds)):
        s = ds[i]
        xyz, seg, inst = s["xyz"], s["segment"], s["instance"]
        assert xyz.shape == (2048, 3) and xyz.dtype == np.float32
        assert seg.dtype == np.int64 and inst.dtype == np.int64 and seg.min() >= 0 and seg.max() <= FLOOR
        ids, poses = ds.data["shape_ids"][i], ds.data["poses"][i]
        k = int((ids >= 0).sum())
        assert 1 <= k <= 6 and (ids[:k] >= 0).all() and (ids[k:] == -1).all()
        assert (s["box_labels"][k:] == -1).all() and not s["boxes"][k:].any()
        assert (s["boxes"][:k, 3:6] >= MIN_BOX - 1e-6).all()  # planar shapes too: every box has a volume
        # floor: label 40, instance 0, on the plane
        floor = seg == FLOOR
        assert floor.any() and (inst[floor] == 0).all() and np.abs(xyz[floor, 2]).max() < 1e-6
        circles = []
        for j in range(k):
            sid = int(ids[j])
            # the shape is a real one of this split (by name), never of the other split
            assert str(ds.shape_names[sid]) not in other_names
            cls = int(own["labels"][sid])
            assert s["box_labels"][j] == cls
            pts = xyz[inst == j + 1]
            assert len(pts) > 0 and (seg[inst == j + 1] == cls).all()
            # the points are that shape under the stored pose (they are a subset of its transformed cloud)
            scale, yaw, *off = poses[j]
            cy, sy = math.cos(yaw), math.sin(yaw)
            R = np.array([[cy, -sy, 0], [sy, cy, 0], [0, 0, 1]])
            shape = scale * np.asarray(own["points"][sid], np.float64) @ R.T + np.asarray(off)
            nn = np.sqrt(((pts[:, None, :] - shape[None]) ** 2).sum(-1)).min(1)
            assert nn.max() < 1e-5
            # standing on the floor, inside its oriented box
            box = s["boxes"][j]
            assert abs(shape[:, 2].min()) < 1e-6 and abs(box[6] - yaw) < 1e-6
            q = _box_frame(pts.astype(np.float64), box.astype(np.float64))
            assert (np.abs(q) <= box[3:6] / 2 + 1e-4).all()
            circles.append((box[:2].astype(np.float64), np.linalg.norm(shape[:, :2] - box[:2], axis=1).max()))
        for a in range(k):
            for b in range(a + 1, k):
                (ca, ra), (cb, rb) = circles[a], circles[b]
                assert np.linalg.norm(ca - cb) >= ra + rb - 1e-6, "object footprints overlap"
        # the scene label is the class of the object with most points
        assert s["label"] == s["box_labels"][int(np.bincount(inst, minlength=k + 1)[1:].argmax())]


def test_deterministic_cached_and_collates(shared_data, svl_cache, monkeypatch):
    from svl.data import build_dataset, collate_points
    from svl.data import scenes as sc

    ds = build_dataset("modelnet40_scenes", "test", root=shared_data, **TINY)
    assert len(list((svl_cache / "modelnet40_scenes").glob("test-*.npz"))) == 1

    def boom(*a, **k):
        raise AssertionError("generated again")

    with monkeypatch.context() as m:
        m.setattr(sc, "generate_scene", boom)
        again = build_dataset("modelnet40_scenes", "test", root=shared_data, **TINY)
    fresh = build_dataset("modelnet40_scenes", "test", root=shared_data, cache=False, **TINY)
    for k in ("xyz", "segment", "instance", "boxes", "box_labels", "shape_ids", "poses"):
        assert np.array_equal(ds.data[k], again.data[k]) and np.array_equal(ds.data[k], fresh.data[k])
    other = build_dataset("modelnet40_scenes", "test", root=shared_data, cache=False, scene_seed=1, **TINY)
    assert not np.array_equal(ds.data["xyz"], other.data["xyz"])
    # a scene does not depend on how many are generated
    more = build_dataset(
        "modelnet40_scenes", "test", root=shared_data, cache=False, scenes=6, points_per_scene=2048
    )
    assert np.array_equal(more.data["xyz"][:4], ds.data["xyz"])

    b = collate_points([ds[i] for i in range(3)])
    assert tuple(b.xyz.shape) == (3, 2048, 3)
    assert tuple(b.extras["segment"].shape) == (3, 2048) and tuple(b.extras["instance"].shape) == (3, 2048)
    assert tuple(b.extras["boxes"].shape) == (3, 6, 7) and tuple(b.extras["box_labels"].shape) == (3, 6)
    # resampling through the default pipeline keeps labels with their points
    small = build_dataset("modelnet40_scenes", "test", root=shared_data, num_points=512, **TINY)
    s = small[0]
    assert s["xyz"].shape == (512, 3) and s["segment"].shape == (512,)
    assert (np.abs(s["xyz"][s["segment"] == FLOOR, 2]) < 1e-6).all()


def test_visible_only_drops_hidden_points(shared_data, svl_cache):
    from svl.data import build_dataset

    full = build_dataset("modelnet40_scenes", "train", root=shared_data, cache=False, **TINY)
    vis = build_dataset(
        "modelnet40_scenes", "train", root=shared_data, visible_only=True, cache=False, **TINY
    )
    # the same layout, fewer points survive
    assert np.array_equal(full.data["boxes"], vis.data["boxes"])
    assert np.array_equal(full.data["num_raw"], vis.data["num_raw"])
    assert (full.data["num_kept"] == full.data["num_raw"]).all()
    assert (vis.data["num_kept"] < vis.data["num_raw"]).all()
    cfg = SceneConfig()
    for i in range(len(vis)):
        xyz = vis.data["xyz"][i]
        key, r = sensor_bins(xyz, cfg.sensor, cfg.angular_res_deg)
        _, inv = np.unique(key, return_inverse=True)
        nearest = np.full(inv.max() + 1, np.inf)
        np.minimum.at(nearest, inv, r)
        assert (r <= nearest[inv] + cfg.depth_tolerance + 1e-5).all(), "a kept point is behind a nearer one"


def test_visible_mask_hides_a_wall_behind_a_wall():
    cfg = SceneConfig(sensor=(0.0, 0.0, 0.0), angular_res_deg=2.0, depth_tolerance=0.05)
    g = np.linspace(-0.3, 0.3, 40)
    yy, zz = np.meshgrid(g, g)
    near = np.stack([np.full(yy.size, 2.0), yy.ravel(), zz.ravel()], 1)  # a 0.6 m square 2 m away
    far = near * np.array([2.0, 1.0, 1.0])  # the same square at 4 m: inside the near one's shadow
    aside = near[:, [1, 0, 2]] * np.array([1.0, 2.0, 1.0])  # the square at 4 m along y: nothing in front
    keep = visible_mask(np.concatenate([near, far, aside]), cfg)
    n = len(near)
    assert keep[:n].all() and not keep[n : 2 * n].any() and keep[2 * n :].all()
    # the range falloff keeps fewer far points than near ones
    rng = np.random.default_rng(0)
    pts = np.concatenate([near, aside * np.array([3.0, 1.0, 1.0])])
    kept = visible_mask(pts, SceneConfig(sensor=(0.0, 0.0, 0.0), falloff_range=3.0), rng)
    assert kept[:n].mean() > kept[n:].mean() + 0.2


def test_bad_options(shared_data, svl_cache):
    from svl.data import build_dataset

    with pytest.raises(ValueError, match="split"):
        build_dataset("modelnet40_scenes", "val", root=shared_data, **TINY)
    with pytest.raises(ValueError, match="objects_min"):
        build_dataset("modelnet40_scenes", "test", root=shared_data, objects_min=4, objects_max=2, **TINY)
    with pytest.raises(ValueError, match="unknown"):
        build_dataset("modelnet40_scenes", "test", root=shared_data, layout={"roomsize": 2}, **TINY)
    with pytest.raises(ValueError, match="radius"):
        SceneConfig(radius=(0.5, 4.0))
