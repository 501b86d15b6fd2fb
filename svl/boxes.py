"""Oriented 3D boxes: one convention for scenes, KITTI, augmentation, the detector and AP.

A box is a row ``(x, y, z, l, w, h, yaw)`` in a z-up frame (LiDAR / scene frame): ``(x, y, z)`` the
box centre (not the bottom), ``l, w, h`` its extents along its own x, y, z axes, ``yaw`` the turn
about +z from the frame's +x axis to the box's own +x (its heading), in radians. This is
OpenPCDet's LiDAR convention; KITTI's camera-frame labels convert to it in
`svl.data.readers.kitti`. Arrays are ``(..., 7)``; numpy or torch where stated.
"""

from __future__ import annotations

import numpy as np

__all__ = ["points_in_boxes"]


def points_in_boxes(xyz: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """``(N, K)`` bool: point n lies inside (or on the surface of) box k."""
    xyz, boxes = np.asarray(xyz, np.float64), np.asarray(boxes, np.float64).reshape(-1, 7)
    d = xyz[:, None, :] - boxes[None, :, :3]  # (N, K, 3)
    c, s = np.cos(boxes[:, 6]), np.sin(boxes[:, 6])
    lx = d[..., 0] * c + d[..., 1] * s  # into each box's own frame (rotate by -yaw)
    ly = -d[..., 0] * s + d[..., 1] * c
    half = boxes[None, :, 3:6] / 2
    return (np.abs(lx) <= half[..., 0]) & (np.abs(ly) <= half[..., 1]) & (np.abs(d[..., 2]) <= half[..., 2])
