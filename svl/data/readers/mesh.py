"""Triangle meshes (OBJ, OFF, STL) and area-weighted surface sampling.

The readers return vertices and faces; `load_points` samples `sample_mesh_surface` on them.
"""

from __future__ import annotations

import re
import struct
from pathlib import Path
from typing import Any

import numpy as np

from svl.data.readers._common import BadFile, ReadOptions, floats, text_lines, triangulate

__all__ = ["DEFAULT_MESH_POINTS", "read_obj", "read_off", "read_stl", "sample_mesh_surface"]

DEFAULT_MESH_POINTS = 10000  # OpenShape stores 10k points per shape


def sample_mesh_surface(
    vertices: np.ndarray,
    faces: np.ndarray,
    num_points: int,
    *,
    rng: np.random.Generator | int | None = 0,
    vertex_rgb: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Area-weighted uniform sampling of `num_points` points on a triangle mesh.

    Faces are picked with probability proportional to area, then a uniform point inside each
    (u, v = sqrt trick). Returns xyz, face normals and, with vertex colours, interpolated rgb.
    """
    if not isinstance(rng, np.random.Generator):
        rng = np.random.default_rng(rng)
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    if v.ndim != 2 or v.shape[1] != 3 or f.ndim != 2 or f.shape[1] != 3 or len(f) == 0:
        raise ValueError(f"mesh must be vertices (V, 3) and faces (F>0, 3), got {v.shape} and {f.shape}")
    if f.min() < 0 or f.max() >= len(v):
        raise ValueError(f"face index out of range for {len(v)} vertices")
    a, b, c = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
    cross = np.cross(b - a, c - a)
    norm = np.linalg.norm(cross, axis=1)
    area = 0.5 * norm
    total = area.sum()
    if not np.isfinite(total) or total <= 0:
        raise BadFile("mesh has zero surface area (all faces degenerate)")
    fid = rng.choice(len(f), size=int(num_points), p=area / total)
    r1 = np.sqrt(rng.random(int(num_points)))
    r2 = rng.random(int(num_points))
    w = np.stack([1 - r1, r1 * (1 - r2), r1 * r2], 1)
    pts = w[:, :1] * a[fid] + w[:, 1:2] * b[fid] + w[:, 2:] * c[fid]
    normals = cross[fid] / np.maximum(norm[fid], 1e-30)[:, None]
    out = {"xyz": pts, "normals": normals}
    if vertex_rgb is not None:
        col = np.asarray(vertex_rgb, dtype=np.float64)
        out["rgb"] = (
            w[:, :1] * col[f[fid, 0]] + w[:, 1:2] * col[f[fid, 1]] + w[:, 2:] * col[f[fid, 2]]
        ).clip(0, 1)
    return out


def _with_faces(raw: dict[str, Any]) -> dict[str, Any]:
    """A mesh format without faces holds no surface to sample."""
    if len(raw["faces"]) == 0:
        raise BadFile("mesh has no faces")
    return raw


def read_obj(path: Path, opts: ReadOptions) -> dict[str, Any]:
    """Wavefront OBJ: 'v x y z [r g b]' vertices and 'f' polygons (fan-triangulated)."""
    data = path.read_bytes()
    verts: list[list[float]] = []
    cols: list[list[float]] = []
    polys: list[list[int]] = []
    for ln, line in enumerate(text_lines(data), 1):
        tok = line.split()
        if not tok or tok[0].startswith(b"#"):
            continue
        if tok[0] == b"v":
            vals = floats(tok[1:], f"OBJ line {ln}")
            if len(vals) not in (3, 4, 6, 7):
                raise BadFile(f"OBJ line {ln}: vertex with {len(vals)} values")
            verts.append(vals[:3])
            if len(vals) >= 6:
                cols.append(vals[-3:])
        elif tok[0] == b"f":
            idx = []
            for t in tok[1:]:
                try:
                    k = int(t.split(b"/")[0])
                except ValueError:
                    raise BadFile(f"OBJ line {ln}: bad face index {t[:20]!r}") from None
                if k == 0:
                    raise BadFile(f"OBJ line {ln}: face index 0 (OBJ indices start at 1)")
                idx.append(k - 1 if k > 0 else len(verts) + k)
            polys.append(idx)
    if not verts:
        raise BadFile("OBJ file has no vertices")
    raw: dict[str, Any] = {"xyz": np.asarray(verts), "faces": triangulate(polys, len(verts))}
    if cols:
        if len(cols) != len(verts):
            raise BadFile("OBJ file gives colours for only some vertices")
        raw["rgb"] = np.asarray(cols)
    return _with_faces(raw)


def read_off(path: Path, opts: ReadOptions) -> dict[str, Any]:
    """OFF / COFF / NOFF, including ModelNet's 'OFF490 518 0' first lines."""
    data = path.read_bytes()
    lines = [ln.split(b"#")[0].strip() for ln in text_lines(data)]
    lines = [ln for ln in lines if ln]
    if not lines:
        raise BadFile("empty OFF file")
    first = lines[0]
    m = re.match(rb"^(C?N?C?OFF)\s*(.*)$", first)
    if not m:
        raise BadFile(f"not an OFF file (first line {first[:40]!r})")
    kind = m.group(1)
    rest = m.group(2)  # ModelNet's broken files: "OFF490 518 0" on one line
    head_tokens = rest.split() if rest else lines[1].split() if len(lines) > 1 else []
    body_start = 1 if rest else 2
    if len(head_tokens) < 2:
        raise BadFile("OFF header lacks the vertex/face counts")
    try:
        nv, nf = int(head_tokens[0]), int(head_tokens[1])
    except ValueError:
        raise BadFile(f"bad OFF counts {b' '.join(head_tokens)[:40]!r}") from None
    if nv <= 0 or nf < 0:
        raise BadFile(f"OFF counts must be positive (vertices {nv}, faces {nf})")
    if body_start + nv + nf > len(lines):
        raise BadFile(
            f"OFF file truncated: header says {nv} vertices + {nf} faces, {len(lines) - body_start} lines"
        )
    vrows = [floats(lines[body_start + i].split(), "OFF vertex") for i in range(nv)]
    width = {len(r) for r in vrows}
    if len(width) != 1 or min(width) < 3:
        raise BadFile("OFF vertex lines have inconsistent or too few values")
    V = np.asarray(vrows)
    raw: dict[str, Any] = {"xyz": V[:, :3]}
    off = 3
    if b"N" in kind:
        raw["normals"] = V[:, 3:6]
        off = 6
    if b"C" in kind and V.shape[1] >= off + 3:
        raw["rgb"] = V[:, off : off + 3]
        if V.shape[1] >= off + 4 or raw["rgb"].max() > 1:  # rgba ints 0-255
            raw["rgb"] = raw["rgb"].astype(np.float64)
    polys = []
    for i in range(nf):
        tok = lines[body_start + nv + i].split()
        try:
            cnt = int(tok[0])
            idx = [int(t) for t in tok[1 : 1 + cnt]]
        except (ValueError, IndexError):
            raise BadFile(f"bad OFF face line {lines[body_start + nv + i][:40]!r}") from None
        if len(idx) != cnt:
            raise BadFile(f"OFF face line says {cnt} vertices but has {len(idx)}")
        polys.append(idx)
    raw["faces"] = triangulate(polys, nv)
    return _with_faces(raw)


def read_stl(path: Path, opts: ReadOptions) -> dict[str, Any]:
    """Binary or ASCII STL (unshared vertices, three per triangle)."""
    data = path.read_bytes()
    if len(data) >= 84:
        n = struct.unpack_from("<I", data, 80)[0]
        if len(data) == 84 + 50 * n:
            if n == 0:
                raise BadFile("binary STL with 0 triangles")
            dt = np.dtype([("n", "<f4", (3,)), ("v", "<f4", (3, 3)), ("attr", "<u2")])
            tri = np.frombuffer(data, dtype=dt, count=n, offset=84)["v"].astype(np.float64)
            return {"xyz": tri.reshape(-1, 3), "faces": np.arange(3 * n, dtype=np.int64).reshape(n, 3)}
    head = data[:512].lstrip().lower()
    if not head.startswith(b"solid"):
        if len(data) >= 84:
            n = struct.unpack_from("<I", data, 80)[0]
            raise BadFile(
                f"binary STL size mismatch: header says {n} triangles ({84 + 50 * n} bytes), "
                f"file has {len(data)}"
            )
        raise BadFile("not an STL file (too short for binary, no 'solid' keyword)")
    verts = []
    for line in text_lines(data):
        tok = line.split()
        if tok and tok[0].lower() == b"vertex":
            v = floats(tok[1:], "STL vertex")
            if len(v) != 3:
                raise BadFile(f"STL vertex line with {len(v)} values")
            verts.append(v)
    if not verts:
        raise BadFile("ASCII STL with no vertices")
    if len(verts) % 3:
        raise BadFile(f"ASCII STL has {len(verts)} vertices, not a multiple of 3 (truncated?)")
    n = len(verts) // 3
    return {"xyz": np.asarray(verts), "faces": np.arange(3 * n, dtype=np.int64).reshape(n, 3)}
