"""collate_points, transforms and DataLoader determinism."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from svl.data import build_dataset
from svl.data.batch import Collate, collate_points
from svl.data.transforms import build_transforms, farthest_point_sample, list_transforms


def _sample(n=64, i=0, rgb=False, normals=False):
    r = np.random.default_rng(i)
    s = {"xyz": r.normal(size=(n, 3)).astype(np.float32), "label": i % 3, "index": i}
    if rgb:
        s["rgb"] = r.random((n, 3)).astype(np.float32)
    if normals:
        s["normals"] = r.normal(size=(n, 3)).astype(np.float32)
    return s


def test_collate_feats_and_extras():
    ss = [_sample(i=0, rgb=True), _sample(i=1)]
    ss[0]["image_emb"] = np.ones((3, 8))
    ss[1]["image_emb"] = np.zeros((3, 8))
    ss[0]["text"], ss[1]["text"] = "a", "b"
    b = collate_points(ss)
    assert b.xyz.shape == (2, 64, 3) and b.feats.shape == (2, 64, 6)
    torch.testing.assert_close(b.feats[0, :, 3:], torch.as_tensor(ss[0]["rgb"]))
    assert torch.all(b.feats[1, :, 3:] == 0.4)
    assert b.labels.tolist() == [0, 1] and b.index.tolist() == [0, 1]
    assert b.extras["image_emb"].shape == (2, 3, 8) and "text" not in b.extras
    bn = collate_points([_sample(normals=True), _sample(i=1, normals=True)], normals=True)
    assert bn.feats.shape == (2, 64, 9)
    with pytest.raises(ValueError, match="normals"):
        collate_points([_sample()], normals=True)
    with pytest.raises(ValueError, match="fixed N"):
        collate_points([_sample(64), _sample(32)])
    assert b.to("cpu").xyz.shape == b.xyz.shape


def test_collate_voxelize_matches_sparse_engine():
    from svl.sparse import voxelize

    ss = [_sample(i=i) for i in range(3)]
    b = collate_points(ss, voxel_size=0.5)
    xyz = torch.cat([torch.as_tensor(s["xyz"]) for s in ss])
    feats = torch.cat([xyz, torch.full_like(xyz, 0.4)], 1)
    ref, p2v = voxelize(xyz, feats, torch.arange(3).repeat_interleave(64), 0.5)
    assert torch.equal(b.sparse.coords, ref.coords) and torch.equal(b.point2voxel, p2v)
    torch.testing.assert_close(b.sparse.features, ref.features)
    # the voxelize transform asks collate for the same thing
    tf = build_transforms([{"name": "voxelize", "voxel_size": 0.5}])
    b2 = collate_points([tf(s) for s in ss])
    assert torch.equal(b2.sparse.coords, ref.coords)


def _fps_reference(x, k):
    """Plain numpy greedy FPS from index 0."""
    chosen, d = [0], np.full(len(x), np.inf)
    for _ in range(k - 1):
        d = np.minimum(d, ((x - x[chosen[-1]]) ** 2).sum(1))
        chosen.append(int(np.argmax(d)))
    return np.array(chosen)


def test_fps_backends_match_reference():
    x = np.random.default_rng(0).random((3000, 3)).astype(np.float32)
    ref = _fps_reference(x.astype(np.float64), 64)
    assert np.array_equal(farthest_point_sample(x, 64, backend="torch"), ref)
    assert np.array_equal(farthest_point_sample(x, 64), ref)


def test_transforms():
    rng = np.random.default_rng(0)
    s = _sample(500, rgb=True, normals=True)
    s["xyz"] = s["xyz"] * 3 + 5
    n = build_transforms(["normalize"])(s, rng)
    assert np.allclose(n["xyz"].mean(0), 0, atol=1e-5)
    assert math.isclose(np.linalg.norm(n["xyz"], axis=1).max(), 1.0, rel_tol=1e-5)
    r = build_transforms(["rotate_gravity"])(n, rng)  # rotation about z keeps z and radii
    np.testing.assert_allclose(r["xyz"][:, 2], n["xyz"][:, 2], atol=1e-6)
    np.testing.assert_allclose(
        np.linalg.norm(r["xyz"][:, :2], axis=1), np.linalg.norm(n["xyz"][:, :2], axis=1), atol=1e-5
    )
    sw = build_transforms([{"name": "swap_axes", "up_axis": "y", "mode": "swap"}])(n, rng)
    np.testing.assert_array_equal(sw["xyz"], n["xyz"][:, [0, 2, 1]])
    sc = build_transforms(["random_scale"])(n, rng)
    ratio = np.linalg.norm(sc["xyz"], axis=1).max()
    assert 0.8 <= ratio <= 1.25
    drops = [build_transforms(["color_drop"])(n, np.random.default_rng(i)) for i in range(400)]
    frac = np.mean([np.all(d["rgb"] == 0.4) for d in drops])
    assert 0.42 < frac < 0.58
    aug = build_transforms(["openshape_augment", {"name": "random_sample", "num_points": 128}])
    a1, a2 = aug(n, np.random.default_rng(7)), aug(n, np.random.default_rng(7))
    assert a1["xyz"].shape == (128, 3) and np.array_equal(a1["xyz"], a2["xyz"])
    assert {"fps", "openshape_augment", "voxelize", "point_dropout"} <= set(list_transforms())
    with pytest.raises(ValueError, match="unknown transform"):
        build_transforms(["nope"])


def test_dataloader_workers_are_deterministic(shared_data):
    ds = build_dataset("modelnet40", "test", root=shared_data, num_points=256, augment=True, seed=3)
    sub = torch.utils.data.Subset(ds, range(16))

    def run(workers):
        dl = torch.utils.data.DataLoader(sub, batch_size=8, num_workers=workers, collate_fn=Collate())
        return [b.xyz for b in dl]

    a, b = run(0), run(2)
    assert len(a) == len(b) == 2
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    ds.set_epoch(1)
    assert not torch.equal(run(0)[0], a[0])  # a new epoch gives new augmentations


def test_collate_equals_a_plain_reference():
    """Features, labels, index and extras built by hand with numpy, compared bit for bit."""
    ss = [_sample(40, i=0, rgb=True, normals=True), _sample(40, i=1, normals=True)]
    ss[0]["image_emb"], ss[1]["image_emb"] = np.full((2, 4), 1.5, np.float64), np.zeros((2, 4))
    ss[0]["has_text"], ss[1]["has_text"] = True, False
    b = collate_points(ss, normals=True)
    ref = np.stack(
        [
            np.concatenate([ss[0]["xyz"], ss[0]["rgb"], ss[0]["normals"]], 1),
            np.concatenate([ss[1]["xyz"], np.full((40, 3), 0.4, np.float32), ss[1]["normals"]], 1),
        ]
    )
    assert b.feats.dtype == torch.float32 and np.array_equal(b.feats.numpy(), ref)
    assert np.array_equal(b.xyz.numpy(), np.stack([s["xyz"] for s in ss]))
    assert b.labels.tolist() == [0, 1] and b.index.tolist() == [0, 1]
    assert b.extras["image_emb"].dtype == torch.float32 and b.extras["has_text"].tolist() == [True, False]
    # samples with their own feats and per-step features (event streams): feats win, steps go (T, B, N, C)
    ev = [
        {"xyz": s["xyz"], "feats": np.ones((40, 4)) * i, "steps": np.ones((3, 40, 4)) * i}
        for i, s in enumerate(ss)
    ]
    be = collate_points(ev)
    assert be.labels is None and be.feats.shape == (2, 40, 4) and be.extras["steps"].shape == (3, 2, 40, 4)
    assert torch.equal(be.extras["steps"][:, 1], torch.ones(3, 40, 4))
    with pytest.raises(ValueError, match="some samples have a label"):
        collate_points([ss[0], {"xyz": ss[1]["xyz"]}])
    with pytest.raises(ValueError, match="different voxel sizes"):
        collate_points([dict(ss[0], voxel_size=0.1), dict(ss[1], voxel_size=0.2)])


def test_missing_colour_has_one_home():
    from svl.data import MISSING_COLOR
    from svl.data.transforms import ColorDrop

    assert MISSING_COLOR == 0.4  # SPEC §3: the colour of points without colour
    assert ColorDrop().value == MISSING_COLOR


def test_transform_registry():
    from svl.data import TRANSFORMS, register_transform
    from svl.registry import Registry

    assert isinstance(TRANSFORMS, Registry) and TRANSFORMS.group == "svl.transforms"

    @register_transform("scale_by_test")
    class ScaleBy:
        def __init__(self, k: float = 2.0) -> None:
            self.k = k

        def __call__(self, sample, rng):
            return {**sample, "xyz": sample["xyz"] * self.k}

    try:
        assert ScaleBy.registered_name == "scale_by_test" and "scale_by_test" in list_transforms()
        out = build_transforms([{"name": "scale_by_test", "k": 3.0}])({"xyz": np.ones((2, 3))})
        assert np.array_equal(out["xyz"], np.full((2, 3), 3.0))
        with pytest.raises(ValueError, match="already registered"):
            register_transform("scale_by_test")(type("Other", (), {}))
        with pytest.raises(ValueError, match="bad arguments"):
            build_transforms([{"name": "scale_by_test", "q": 1}])
    finally:
        TRANSFORMS.unregister("scale_by_test")
