"""Oriented 3D boxes: one convention for scenes, KITTI, augmentation, the detector and AP.

A box is a row ``(x, y, z, l, w, h, yaw)`` in a z-up frame (LiDAR / scene frame): ``(x, y, z)`` the
box centre (not the bottom), ``l, w, h`` its extents along its own x, y, z axes, ``yaw`` the turn
about +z from the frame's +x axis to the box's own +x (its heading), in radians. This is
OpenPCDet's LiDAR convention; KITTI's camera-frame labels convert to it in
`svl.data.readers.kitti`. Arrays are ``(..., 7)``; numpy or torch where stated.

Overlaps (`bev_iou`, `iou3d`, their intersections, `nms_bev`) are exact: the bird's-eye-view
intersection of two rectangles is the convex polygon spanned by the corners of each inside the
other and the crossings of their edges, its area the shoelace sum after sorting those points by
angle. They run in torch, in float64 whatever the input (the crossings of nearly parallel edges
are ill-conditioned; in float64 the IoUs stay within 1e-9 of shapely's on grid-aligned, turned
and near-parallel boxes), vectorised over pairs, and only on pairs whose circumscribed circles
meet (the others overlap by 0), so NMS over thousands of proposals and AP over a whole split stay
cheap. torch is imported inside the functions that use it, so `svl.data` can import
`points_in_boxes` without it.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from torch import Tensor

__all__ = [
    "bev_overlap",
    "wrap_angle",
    "bev_corners",
    "bev_intersection",
    "bev_iou",
    "box_corners",
    "intersection3d",
    "iou3d",
    "nms_bev",
    "points_in_boxes",
    "validate_boxes",
]

# Footprint corners in the box's own frame, in units of (l, w): counter-clockwise seen from +z.
_FOOTPRINT_X = (0.5, -0.5, -0.5, 0.5)
_FOOTPRINT_Y = (0.5, 0.5, -0.5, -0.5)
_PAIR_CHUNK = 1 << 16  # box pairs per vectorised step: ~1 KiB of temporaries each
_DENSE_CHUNK = 1 << 22  # (row, column) entries per step of the circle pre-filter


def points_in_boxes(xyz: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """``(N, K)`` bool: point n lies inside (or on the surface of) box k."""
    xyz, boxes = np.asarray(xyz, np.float64), np.asarray(boxes, np.float64).reshape(-1, 7)
    d = xyz[:, None, :] - boxes[None, :, :3]  # (N, K, 3)
    c, s = np.cos(boxes[:, 6]), np.sin(boxes[:, 6])
    lx = d[..., 0] * c + d[..., 1] * s  # into each box's own frame (rotate by -yaw)
    ly = -d[..., 0] * s + d[..., 1] * c
    half = boxes[None, :, 3:6] / 2
    return (np.abs(lx) <= half[..., 0]) & (np.abs(ly) <= half[..., 1]) & (np.abs(d[..., 2]) <= half[..., 2])


def validate_boxes(boxes: Any, where: str, lines: Sequence[int] | None = None) -> np.ndarray:
    """``boxes`` as a float64 ``(N, 7)`` array, or a ValueError naming ``where`` and the bad row.

    A box with a non-finite value or a size (l, w, h) that is not positive has no volume to
    overlap; caught here, it is one line naming the file instead of a NaN AP or a silent zero IoU
    later. ``lines[i]`` is the line of ``where`` that row i came from (a label file has other
    lines between boxes); without it the message names the row.
    """
    if _is_tensor(boxes):
        boxes = boxes.detach().cpu().numpy()
    arr = np.asarray(boxes, dtype=np.float64)
    if arr.size == 0:
        return arr.reshape(0, 7)
    if arr.ndim != 2 or arr.shape[1] != 7:
        raise ValueError(
            f"{where}: boxes must be rows (x, y, z, l, w, h, yaw), got an array of shape {arr.shape}"
        )
    bad_value = ~np.isfinite(arr).all(1)
    bad_size = (arr[:, 3:6] <= 0).any(1)  # NaN compares False: caught by bad_value
    bad = np.flatnonzero(bad_value | bad_size)
    if bad.size:
        i = int(bad[0])
        at = f"line {lines[i]}" if lines is not None else f"box {i}"
        row = ", ".join(f"{v:g}" for v in arr[i])
        problem = (
            "a non-finite value"
            if bad_value[i]
            else "a non-positive size (l={:g}, w={:g}, h={:g})".format(*arr[i, 3:6])
        )
        more = f" ({bad.size - 1} more bad boxes)" if bad.size > 1 else ""
        raise ValueError(f"{where}: {at}: box ({row}) has {problem}{more}")
    return arr


def bev_corners(boxes: Any) -> Any:
    """``(..., 4, 2)`` footprint corners, counter-clockwise seen from +z (numpy in, numpy out).

    Corner k sits at ``(sx * l / 2, sy * w / 2)`` in the box frame, with (sx, sy) = (+,+), (-,+),
    (-,-), (+,-): the front-left corner first, then round the box the positive way.
    """
    b, xp = _array(boxes)
    sx, sy = _constant(_FOOTPRINT_X, b), _constant(_FOOTPRINT_Y, b)
    dx, dy = b[..., 3:4] * sx, b[..., 4:5] * sy  # (..., 4) offsets in the box frame
    c, s = xp.cos(b[..., 6:7]), xp.sin(b[..., 6:7])
    return xp.stack([b[..., 0:1] + dx * c - dy * s, b[..., 1:2] + dx * s + dy * c], axis=-1)


def box_corners(boxes: Any) -> Any:
    """``(..., 8, 3)`` corners: 0-3 the bottom face in `bev_corners` order, 4-7 the top, k+4 above k."""
    b, xp = _array(boxes)
    xy = bev_corners(b)
    xy = xp.concatenate([xy, xy], axis=-2)  # (..., 8, 2)
    half = b[..., 5:6] / 2
    z = xp.concatenate([b[..., 2:3] - half] * 4 + [b[..., 2:3] + half] * 4, axis=-1)  # (..., 8)
    return xp.concatenate([xy, z[..., None]], axis=-1)


def bev_intersection(a: Any, b: Any, aligned: bool = False) -> Any:
    """``(N, M)`` footprint intersection areas of boxes ``a (N, 7)`` and ``b (M, 7)``.

    ``aligned=True`` pairs row i of ``a`` with row i of ``b`` instead and returns ``(N,)``.
    The other overlaps are built on it; alone it gives intersection-over-own-area (the KITTI
    devkit's test of a detection against a DontCare region).
    """
    return _overlap(a, b, aligned, "bev", iou=False)


def bev_iou(a: Any, b: Any, aligned: bool = False) -> Any:
    """``(N, M)`` exact bird's-eye-view IoU of rotated boxes ``a (N, 7)`` and ``b (M, 7)`` (z ignored).

    Output: numpy if both inputs are numpy, else torch on ``a``'s device; float32 if both inputs
    are float32, else float64. ``aligned=True`` compares row i with row i, ``(N,)``.
    """
    return _overlap(a, b, aligned, "bev", iou=True)


def intersection3d(a: Any, b: Any, aligned: bool = False) -> Any:
    """``(N, M)`` intersection volumes: footprint intersection times the overlap of the z extents."""
    return _overlap(a, b, aligned, "3d", iou=False)


def iou3d(a: Any, b: Any, aligned: bool = False) -> Any:
    """``(N, M)`` 3D IoU of yaw-only boxes: intersection volume / union volume (as `bev_iou`)."""
    return _overlap(a, b, aligned, "3d", iou=True)


def nms_bev(boxes: Any, scores: Any, iou_threshold: float, max_keep: int | None = None) -> Tensor:
    """Greedy rotated NMS in bird's-eye view: indices of the kept boxes, highest score first.

    A box is dropped when its `bev_iou` with a kept, higher-scored box exceeds ``iou_threshold``
    (strictly); equal scores keep the input order. ``max_keep`` stops after that many. Returns an
    int64 tensor on ``boxes``' device (CPU for numpy). The greedy pass runs on the CPU over the
    sparse list of overlapping pairs, so it costs the pairs that overlap, not N^2 IoUs.
    """
    import torch

    device = boxes.device if _is_tensor(boxes) else torch.device("cpu")
    b = _boxes64(boxes, "nms_bev: boxes").cpu()
    s = torch.as_tensor(np.asarray(scores.detach().cpu() if _is_tensor(scores) else scores, np.float64))
    if s.ndim != 1 or s.shape[0] != b.shape[0]:
        raise ValueError(f"nms_bev: {b.shape[0]} boxes but scores of shape {tuple(s.shape)}")
    if not torch.isfinite(s).all():
        raise ValueError("nms_bev: scores must be finite")
    if max_keep is not None and max_keep < 0:
        raise ValueError(f"nms_bev: max_keep must be >= 0, got {max_keep}")
    if b.shape[0] == 0 or max_keep == 0:
        return torch.zeros(0, dtype=torch.long, device=device)
    order = torch.sort(s, descending=True, stable=True).indices
    b = b[order]
    i, j = _near_pairs(b, b)
    upper = i < j  # each unordered pair once, i the higher-scored
    i, j = i[upper], j[upper]
    iou = _pair_overlap(b[i], b[j], "bev", iou=True)
    hit = iou > iou_threshold
    i, j = i[hit].numpy(), j[hit].numpy()
    by_i = np.argsort(i, kind="stable")
    i, j = i[by_i], j[by_i]
    n = b.shape[0]
    start = np.searchsorted(i, np.arange(n + 1))  # j[start[k]:start[k+1]] = boxes that k suppresses
    suppressed = np.zeros(n, bool)
    keep: list[int] = []
    for k in range(n):
        if suppressed[k]:
            continue
        keep.append(k)
        if max_keep is not None and len(keep) >= max_keep:
            break
        suppressed[j[start[k] : start[k + 1]]] = True
    return order[torch.as_tensor(keep, dtype=torch.long)].to(device)


# ----------------------------------------------------------------------------- internals
def _is_tensor(x: Any) -> bool:
    torch = sys.modules.get("torch")  # a tensor exists only if torch is loaded
    return torch is not None and isinstance(x, torch.Tensor)


def _array(x: Any) -> tuple[Any, Any]:
    """(array, namespace): a tensor stays a tensor, anything else becomes a float numpy array."""
    if _is_tensor(x):
        import torch

        return (x if x.is_floating_point() else x.to(torch.get_default_dtype())), torch
    x = np.asarray(x)
    return (x if np.issubdtype(x.dtype, np.floating) else x.astype(np.float64)), np


def _constant(values: tuple[float, ...], like: Any) -> Any:
    if isinstance(like, np.ndarray):
        return np.asarray(values, like.dtype)
    import torch

    return torch.tensor(values, dtype=like.dtype, device=like.device)


def _boxes64(x: Any, what: str, device: Any = None) -> Tensor:
    """A float64 ``(N, 7)`` tensor (on ``device`` if given); a clear error for any other shape."""
    import torch

    t = x.detach() if _is_tensor(x) else torch.as_tensor(np.asarray(x, np.float64))
    if t.numel() == 0:
        t = t.reshape(0, 7)
    if t.ndim != 2 or t.shape[1] != 7:
        raise ValueError(f"{what}: expected boxes of shape (N, 7), got {tuple(t.shape)}")
    return t.to(device=device if device is not None else t.device, dtype=torch.float64)


def _overlap(a: Any, b: Any, aligned: bool, kind: str, iou: bool) -> Any:
    import torch

    name = {("bev", True): "bev_iou", ("3d", True): "iou3d"}.get((kind, iou), f"intersection ({kind})")
    ta = _boxes64(a, f"{name}: a")
    tb = _boxes64(b, f"{name}: b", device=ta.device)
    f32 = _dtype_name(a) == _dtype_name(b) == "float32"
    if aligned:
        if ta.shape[0] != tb.shape[0]:
            raise ValueError(
                f"{name}: aligned=True needs as many rows in a as in b, got {ta.shape[0]} and {tb.shape[0]}"
            )
        out = torch.zeros(ta.shape[0], dtype=torch.float64, device=ta.device)
        near = _circles_meet(ta, tb)
        idx = near.nonzero(as_tuple=True)[0]
        out[idx] = _pair_overlap(ta[idx], tb[idx], kind, iou)
    else:
        out = torch.zeros(ta.shape[0], tb.shape[0], dtype=torch.float64, device=ta.device)
        i, j = _near_pairs(ta, tb)
        out[i, j] = _pair_overlap(ta[i], tb[j], kind, iou)
    if f32:
        out = out.float()
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
        return out.cpu().numpy()
    return out


def _dtype_name(x: Any) -> str:
    return str(getattr(x, "dtype", np.asarray(x).dtype)).removeprefix("torch.")


def _radius(b: Tensor) -> Tensor:
    """Radius of the footprint's circumscribed circle."""
    return 0.5 * (b[..., 3] ** 2 + b[..., 4] ** 2).sqrt()


def _circles_meet(a: Tensor, b: Tensor) -> Tensor:
    """Row-wise: could the footprints touch? False only when their circumscribed circles are apart."""
    d2 = ((a[..., :2] - b[..., :2]) ** 2).sum(-1)
    reach = _radius(a) + _radius(b)
    return d2 <= reach * reach * (1 + 1e-9)


def _near_pairs(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """Indices (i, j) of the pairs of ``a`` x ``b`` whose footprints may touch, row chunk by chunk.

    A cheap, conservative test (the dense part of an (N, M) overlap, so it sets the speed): the
    centres lie within the sum of the circumscribed radii along x and along y, in float32 about a
    common origin, the radii widened well past float32 rounding. Pairs it lets through that do
    not touch (the corners of the square around each circle) are dropped by the exact test.
    """
    import torch

    if a.shape[0] == 0 or b.shape[0] == 0:
        empty = torch.zeros(0, dtype=torch.long, device=a.device)
        return empty, empty
    origin = a[:, :2].mean(0)
    pa, pb = (a[:, :2] - origin).float(), (b[:, :2] - origin).float()
    slack = 1e-5 * (1.0 + max(pa.abs().max().item(), pb.abs().max().item()))
    ra = (_radius(a) * (1 + 1e-5) + slack).float()
    rb = (_radius(b) * (1 + 1e-5) + slack).float()
    rows = max(1, _DENSE_CHUNK // b.shape[0])
    out_i, out_j = [], []
    for s in range(0, a.shape[0], rows):
        reach = ra[s : s + rows, None] + rb[None]
        near = (pa[s : s + rows, None, 0] - pb[None, :, 0]).abs() <= reach
        near &= (pa[s : s + rows, None, 1] - pb[None, :, 1]).abs() <= reach
        i, j = near.nonzero(as_tuple=True)
        i = i + s
        meet = _circles_meet(a[i], b[j])
        out_i.append(i[meet])
        out_j.append(j[meet])
    return torch.cat(out_i), torch.cat(out_j)


def _pair_overlap(a: Tensor, b: Tensor, kind: str, iou: bool) -> Tensor:
    """``(P,)`` overlap of row i of ``a`` with row i of ``b`` (float64 tensors), chunked over pairs."""
    import torch

    parts = []
    for s in range(0, a.shape[0], _PAIR_CHUNK):
        pa, pb = a[s : s + _PAIR_CHUNK], b[s : s + _PAIR_CHUNK]
        inter = _pair_bev_intersection(pa, pb)
        size_a, size_b = pa[:, 3] * pa[:, 4], pb[:, 3] * pb[:, 4]
        if kind == "3d":
            top = torch.minimum(pa[:, 2] + pa[:, 5] / 2, pb[:, 2] + pb[:, 5] / 2)
            bottom = torch.maximum(pa[:, 2] - pa[:, 5] / 2, pb[:, 2] - pb[:, 5] / 2)
            inter = inter * (top - bottom).clamp(min=0)
            size_a, size_b = size_a * pa[:, 5], size_b * pb[:, 5]
        if iou:
            union = size_a + size_b - inter
            inter = torch.where(union > 0, inter / union.clamp(min=1e-300), torch.zeros_like(inter))
        parts.append(inter)
    return torch.cat(parts) if parts else a.new_zeros(0)


def _cross(u: Tensor, v: Tensor) -> Tensor:
    return u[..., 0] * v[..., 1] - u[..., 1] * v[..., 0]


def _inside(points: Tensor, box: Tensor, tol: Tensor) -> Tensor:
    """``(P, K)``: point k lies in the footprint of box p, its boundary widened by ``tol (P,)``.

    The tolerance keeps corners that lie on the other box's edge (identical or touching boxes,
    collinear edges, where the edge crossings are undefined) in the intersection polygon.
    """
    d = points - box[:, None, :2]
    c, s = box[:, None, 6].cos(), box[:, None, 6].sin()
    lx, ly = d[..., 0] * c + d[..., 1] * s, -d[..., 0] * s + d[..., 1] * c
    return (lx.abs() <= box[:, None, 3] / 2 + tol[:, None]) & (ly.abs() <= box[:, None, 4] / 2 + tol[:, None])


def _pair_bev_intersection(a: Tensor, b: Tensor) -> Tensor:
    """``(P,)`` footprint intersection areas, row i of ``a`` with row i of ``b`` (float64)."""
    import torch

    a, b = a.clone(), b.clone()
    b[:, :2] -= a[:, :2]  # work around a's centre: coordinates ~ box sizes, not ~ 70 m
    a[:, :2] = 0
    ca, cb = bev_corners(a), bev_corners(b)  # (P, 4, 2) each, counter-clockwise
    scale = torch.stack([a[:, 3], a[:, 4], b[:, 3], b[:, 4]], 1).amax(1)
    tol = 1e-9 * scale
    # Edge i of a runs from ca[i] by ea[i]; its crossing with edge j of b: ca[i] + t ea[i] = cb[j] + u eb[j].
    ea, eb = ca.roll(-1, 1) - ca, cb.roll(-1, 1) - cb
    r, s = ea[:, :, None], eb[:, None]  # (P, 4, 1, 2), (P, 1, 4, 2)
    qp = cb[:, None] - ca[:, :, None]  # (P, 4, 4, 2)
    den = _cross(r, s)
    # Near-parallel edges: the crossing is ill-conditioned, and where the edges overlap the polygon's
    # vertices there are corners of one box on the other's edge, which `_inside` already keeps.
    crossing = den.abs() > 1e-12 * r.norm(dim=-1) * s.norm(dim=-1)
    den = torch.where(crossing, den, torch.ones_like(den))
    t, u = _cross(qp, s) / den, _cross(qp, r) / den
    eps = 1e-9
    crossing &= (t >= -eps) & (t <= 1 + eps) & (u >= -eps) & (u <= 1 + eps)
    cross_pts = ca[:, :, None] + t[..., None] * r  # (P, 4, 4, 2)
    pts = torch.cat([ca, cb, cross_pts.flatten(1, 2)], 1)  # (P, 24, 2)
    keep = torch.cat([_inside(ca, b, tol), _inside(cb, a, tol), crossing.flatten(1)], 1)  # (P, 24)
    # The kept points are the vertices of a convex polygon (with repeats); their mean lies inside
    # it, so sorting by angle around the mean walks the boundary counter-clockwise.
    count = keep.sum(1)
    w = keep.to(pts.dtype)[..., None]
    centre = (pts * w).sum(1) / count.clamp(min=1)[:, None].to(pts.dtype)
    rel = pts - centre[:, None]
    angle = torch.where(keep, torch.atan2(rel[..., 1], rel[..., 0]), torch.full_like(rel[..., 0], torch.inf))
    order = angle.argsort(1)
    rel = rel.gather(1, order[..., None].expand(-1, -1, 2))
    keep = keep.gather(1, order)
    rel = torch.where(keep[..., None], rel, rel[:, :1])  # dropped points -> repeats of the first: no area
    area = 0.5 * _cross(rel, rel.roll(-1, 1)).sum(1)
    return torch.where(count >= 3, area.clamp(min=0), torch.zeros_like(area))


def bev_overlap(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(A, B) bool: the bird's-eye-view rectangles of boxes a and b meet (touching counts).

    Exact for rotated rectangles (separating axis theorem over the 4 edge normals): collision tests
    for object placement need a yes/no, not an IoU.
    """
    a, b = np.asarray(a, np.float64).reshape(-1, 7), np.asarray(b, np.float64).reshape(-1, 7)
    d = b[None, :, :2] - a[:, None, :2]  # (A, B, 2)

    def axes(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        c, s = np.cos(x[:, 6]), np.sin(x[:, 6])
        return np.stack([c, s], -1), np.stack([-s, c], -1)

    def radius(h: np.ndarray, u: np.ndarray, v: np.ndarray, n: np.ndarray) -> np.ndarray:
        return h[..., 0] * np.abs((u * n).sum(-1)) + h[..., 1] * np.abs((v * n).sum(-1))

    (ua, va), (ub, vb) = axes(a), axes(b)
    rect_a = (a[:, None, 3:5] / 2, ua[:, None], va[:, None])  # broadcast over (A, B)
    rect_b = (b[None, :, 3:5] / 2, ub[None], vb[None])
    separated = np.zeros((len(a), len(b)), bool)
    for n in (rect_a[1], rect_a[2], rect_b[1], rect_b[2]):  # the 4 edge normals
        separated |= np.abs((d * n).sum(-1)) > radius(*rect_a, n) + radius(*rect_b, n)
    return ~separated


def wrap_angle(a: np.ndarray | float) -> np.ndarray:
    """Angles wrapped to [-pi, pi)."""
    return (np.asarray(a, np.float64) + np.pi) % (2 * np.pi) - np.pi
