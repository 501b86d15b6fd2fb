"""Oriented box geometry (svl/boxes.py) against independent references: shapely's polygon
intersection for the bird's-eye-view IoU, a Monte-Carlo volume estimate (with `points_in_boxes`)
for the 3D IoU, and a brute-force loop for NMS."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from svl.boxes import (
    bev_corners,
    bev_intersection,
    bev_iou,
    box_corners,
    intersection3d,
    iou3d,
    nms_bev,
    points_in_boxes,
    validate_boxes,
)


def _random_boxes(rng: np.random.Generator, n: int, spread: float = 3.0) -> np.ndarray:
    xy = rng.uniform(-spread, spread, (n, 2))
    z = rng.uniform(-1, 1, (n, 1))
    size = rng.uniform(0.3, 5.0, (n, 3))
    yaw = rng.uniform(-math.pi, math.pi, (n, 1))
    return np.concatenate([xy, z, size, yaw], 1)


def _pair_cases(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """~200 pairs: random overlaps of all degrees plus the hard cases, as (a, b) rows."""
    a = _random_boxes(rng, 150)
    b = a.copy()
    b[:, :2] += rng.normal(0, 1.5, (150, 2))  # partial overlaps, many of them
    b[:, 3:6] *= rng.uniform(0.5, 1.5, (150, 3))
    b[:, 6] += rng.uniform(-math.pi, math.pi, 150)
    base = np.array([1.0, -2.0, 0.0, 4.0, 1.8, 1.5, 0.4])
    special = []
    for delta in (
        [0, 0, 0, 0, 0, 0, 0],  # identical
        [0, 0, 0, 0, 0, 0, math.pi],  # the same box, heading reversed
        [0, 0, 0, 0, 0, 0, math.pi / 2],  # turned 90 degrees: a cross
        [0, 0, 0, 0, 0, 0, 1e-9],  # near-parallel edges everywhere
        [0, 0, 0, 0, 0, 0, 1e-4],
        [0.5, 0, 0, 0, 0, 0, 0],  # shifted along its own heading: collinear edges
        [0, 0, 0, -2.0, -0.9, 0, 0],  # nested, sharing the centre
        [0, 0, 0, -2.0, -0.9, 0, 0.7],  # nested and turned
        [30, 0, 0, 0, 0, 0, 0],  # far apart
        [0, 0, 0, 1e-3, 0, 0, 1e-7],  # almost the same box
    ):
        special.append((base, base + np.array(delta)))
    # Touching along an edge (the footprints share the long side): IoU 0.
    c, s = math.cos(base[6]), math.sin(base[6])
    touch = base.copy()
    touch[:2] += base[4] * np.array([-s, c])
    special.append((base, touch))
    # A corner of one box exactly on the edge of the other, and one box inside with an edge in common.
    inner = base.copy()
    inner[3] = 2.0
    inner[:2] += 1.0 * np.array([c, s])
    special.append((base, inner))
    # Large coordinates, the way KITTI's far cars are.
    far = base.copy()
    far[:2] = [70.0, -35.0]
    special.append((far, far + np.array([0.3, 0.2, 0, 0, 0, 0, 0.2])))
    for u, v in special:
        special.append((v, u))  # both orders
        if len(special) > 40:
            break
    sa, sb = (np.stack(x) for x in zip(*special))
    return np.concatenate([a, sa]), np.concatenate([b, sb])


def test_corners_order_and_layout() -> None:
    box = np.array([1.0, 2.0, 3.0, 4.0, 2.0, 1.0, math.pi / 2])
    c = bev_corners(box)
    assert c.shape == (4, 2)
    # Front-left corner first: the box faces +y, so its left is -x.
    np.testing.assert_allclose(c[0], [0.0, 4.0], atol=1e-12)
    signed = 0.5 * sum(c[k, 0] * c[(k + 1) % 4, 1] - c[(k + 1) % 4, 0] * c[k, 1] for k in range(4))
    assert signed == pytest.approx(8.0)  # positive: counter-clockwise, l * w
    c3 = box_corners(torch.tensor(np.stack([box, box]), dtype=torch.float32))
    assert isinstance(c3, torch.Tensor) and c3.shape == (2, 8, 3) and c3.dtype == torch.float32
    np.testing.assert_allclose(c3[0, :4, 2], 2.5)
    np.testing.assert_allclose(c3[0, 4:, 2], 3.5)
    np.testing.assert_allclose(c3[0, 4:, :2], c3[0, :4, :2])
    # Every corner lies on the box's surface.
    assert points_in_boxes(box_corners(box) * (1 - 1e-12) + 1e-12 * box[:3], box[None]).all()


def test_bev_iou_matches_shapely() -> None:
    shapely = pytest.importorskip("shapely")
    a, b = _pair_cases(np.random.default_rng(0))
    got = bev_iou(a, b, aligned=True)
    got_inter = bev_intersection(a, b, aligned=True)
    ca, cb = bev_corners(a), bev_corners(b)
    for k in range(len(a)):
        pa, pb = shapely.Polygon(ca[k]), shapely.Polygon(cb[k])
        inter = pa.intersection(pb).area
        want = inter / (pa.area + pb.area - inter)
        assert got[k] == pytest.approx(want, abs=1e-5), (k, a[k], b[k])
        assert got_inter[k] == pytest.approx(inter, abs=1e-5 * max(1.0, inter))
    # The (N, M) form gives the same numbers as the aligned one.
    full = bev_iou(a[:60], b[:50])
    np.testing.assert_allclose(np.diag(full[:50, :50]), got[:50], atol=1e-12)
    assert (got > 0.01).sum() > 50 and (got == 0).sum() > 5  # the cases span overlaps and misses


def test_bev_iou_exact_cases() -> None:
    box = np.array([[2.0, 3.0, 0.0, 4.0, 1.5, 1.6, 0.8]])
    assert bev_iou(box, box)[0, 0] == pytest.approx(1.0, abs=1e-12)
    square = np.array([[2.0, 3.0, 0.0, 2.0, 2.0, 1.0, 0.3]])
    turned = square + [0, 0, 0, 0, 0, 0, math.pi / 2]
    assert bev_iou(square, turned)[0, 0] == pytest.approx(1.0, abs=1e-12)
    assert iou3d(square, turned)[0, 0] == pytest.approx(1.0, abs=1e-12)
    apart = box + [10, 0, 0, 0, 0, 0, 0]
    assert bev_iou(box, apart)[0, 0] == 0 and iou3d(box, apart)[0, 0] == 0
    # Axis-aligned boxes shifted along x by d: IoU = (l - d) / (l + d).
    a = np.array([[0.0, 0.0, 0.0, 4.0, 2.0, 1.0, 0.0]])
    for d in (0.0, 1.0, 3.999):
        assert bev_iou(a, a + [d, 0, 0, 0, 0, 0, 0])[0, 0] == pytest.approx((4 - d) / (4 + d), abs=1e-12)
    # Stacked boxes: same footprint, z overlap of half the height.
    assert iou3d(a, a + [0, 0, 0.5, 0, 0, 0, 0])[0, 0] == pytest.approx(1 / 3, abs=1e-12)
    assert intersection3d(a, a + [0, 0, 0.5, 0, 0, 0, 0])[0, 0] == pytest.approx(4.0)
    assert iou3d(a, a + [0, 0, 1.0, 0, 0, 0, 0])[0, 0] == 0  # touching faces


def test_overlap_types_and_shapes() -> None:
    a = _random_boxes(np.random.default_rng(1), 5)
    assert isinstance(bev_iou(a, a), np.ndarray) and bev_iou(a, a).dtype == np.float64
    t = torch.tensor(a, dtype=torch.float32)
    out = iou3d(t, t)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32 and out.shape == (5, 5)
    np.testing.assert_allclose(out.numpy(), iou3d(a, a), atol=1e-6)
    np.testing.assert_allclose(np.diag(iou3d(a, a)), 1.0, atol=1e-12)
    assert bev_iou(a[:0], a).shape == (0, 5) and bev_iou(a, np.zeros((0, 7))).shape == (5, 0)
    assert bev_iou(a, a, aligned=True).shape == (5,)
    with pytest.raises(ValueError, match=r"shape \(N, 7\)"):
        bev_iou(a[:, :5], a)
    with pytest.raises(ValueError, match="aligned"):
        bev_iou(a, a[:3], aligned=True)


def test_iou3d_matches_monte_carlo() -> None:
    rng = np.random.default_rng(2)
    a = _random_boxes(rng, 8, spread=0.5)
    b = a + np.concatenate([rng.normal(0, 0.7, (8, 3)), np.zeros((8, 3)), rng.uniform(-1, 1, (8, 1))], 1)
    exact = iou3d(a, b, aligned=True)
    n = 200_000
    for k in range(len(a)):
        corners = np.concatenate([box_corners(a[k]), box_corners(b[k])])
        lo, hi = corners.min(0), corners.max(0)
        xyz = rng.uniform(lo, hi, (n, 3))
        inside = points_in_boxes(xyz, np.stack([a[k], b[k]]))
        either = int((inside[:, 0] | inside[:, 1]).sum())
        est = (inside[:, 0] & inside[:, 1]).sum() / either
        se = math.sqrt(max(est * (1 - est), 1e-4) / either)
        assert abs(exact[k] - est) < 5 * se, (k, exact[k], est, se)
    assert (exact > 0.05).sum() >= 6  # most pairs overlap: the comparison is rarely 0 == 0


def test_nms_keeps_the_best_of_overlapping_boxes() -> None:
    box = [0.0, 0.0, 0.0, 4.0, 2.0, 1.5, 0.0]
    shifted = [0.2, 0.1, 0.0, 4.0, 2.0, 1.5, 0.05]
    far = [20.0, 0.0, 0.0, 4.0, 2.0, 1.5, 0.0]
    keep = nms_bev(torch.tensor([box, shifted]), torch.tensor([0.3, 0.9]), 0.5)
    assert keep.dtype == torch.long and keep.tolist() == [1]
    assert nms_bev(np.array([box, far]), np.array([0.3, 0.9]), 0.5).tolist() == [1, 0]
    assert nms_bev(np.array([box, far]), np.array([0.3, 0.9]), 0.5, max_keep=1).tolist() == [1]
    assert nms_bev(np.zeros((0, 7)), np.zeros(0), 0.5).tolist() == []
    # Equal scores keep the input order.
    assert nms_bev(np.array([far, box]), np.array([0.5, 0.5]), 0.5).tolist() == [0, 1]
    with pytest.raises(ValueError, match="scores"):
        nms_bev(np.array([box]), np.array([0.1, 0.2]), 0.5)
    with pytest.raises(ValueError, match="finite"):
        nms_bev(np.array([box]), np.array([np.nan]), 0.5)


@pytest.mark.parametrize("threshold", [0.1, 0.5])
def test_nms_matches_brute_force(threshold: float) -> None:
    rng = np.random.default_rng(3)
    boxes = _random_boxes(rng, 300, spread=12.0)
    scores = rng.uniform(0, 1, 300).round(2)  # ties included
    iou = bev_iou(boxes, boxes)
    order = sorted(range(300), key=lambda k: -scores[k])  # sorted() is stable
    want: list[int] = []
    for k in order:
        if all(iou[k, m] <= threshold for m in want):
            want.append(k)
    got = nms_bev(torch.tensor(boxes), torch.tensor(scores), threshold)
    assert got.tolist() == want
    assert 10 < len(want) < 300
    assert nms_bev(boxes, scores, threshold, max_keep=7).tolist() == want[:7]


def test_validate_boxes() -> None:
    good = np.array([[0.0, 0, 0, 4, 2, 1.5, 0.1]])
    out = validate_boxes(good.tolist(), "a.txt")
    assert out.dtype == np.float64 and out.shape == (1, 7)
    assert validate_boxes([], "a.txt").shape == (0, 7)
    assert validate_boxes(torch.tensor(good), "a.txt").shape == (1, 7)
    bad = np.concatenate([good, good, good])
    bad[1, 4] = 0.0
    with pytest.raises(
        ValueError, match=r"^labels/000001\.txt: line 5: .*non-positive size \(l=4, w=0, h=1\.5\)"
    ):
        validate_boxes(bad, "labels/000001.txt", lines=[3, 5, 9])
    with pytest.raises(ValueError, match=r"^x\.npz: box 1: "):
        validate_boxes(bad, "x.npz")
    bad[1, 4] = 2.0
    bad[2, 6] = np.inf
    with pytest.raises(ValueError, match=r"box 2: .*non-finite"):
        validate_boxes(bad, "x.npz")
    bad[0, 3] = -1.0
    with pytest.raises(ValueError, match=r"box 0: .*non-positive.*\(1 more bad boxes\)"):
        validate_boxes(bad, "x.npz")
    with pytest.raises(ValueError, match=r"x\.npz: boxes must be rows"):
        validate_boxes(np.zeros((2, 6)), "x.npz")
