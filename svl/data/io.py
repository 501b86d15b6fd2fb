"""Point-cloud and mesh file readers behind one entry point, `load_points`.

Every reader returns the same sample dict so the rest of svl never cares where a cloud came from:

- ``xyz``: (N, 3) float32, finite. Axis convention: svl works z-up (gravity = +z). Files carry no
  reliable up axis, so coordinates are returned as stored unless ``up_axis`` names the file's up
  axis ("y" is common for ShapeNet/ModelNet-h5/OpenShape data), in which case they are rotated to
  z-up (a proper rotation, normals rotated too).
- ``rgb``: optional (N, 3) float32 in [0, 1]. Integer colours (PLY uchar, PCD packed rgb, OFF/XYZ
  values above 1) are divided by 255; missing colour stays missing (svl uses 0.4 downstream).
- ``normals``: optional (N, 3) float32 unit vectors.
- ``meta``: dict with the source path, format, up axis found/applied, colour range, point counts.

Meshes (OBJ, OFF, STL and PLY files with faces) are sampled on their surface with area-weighted
triangle sampling (seeded), with face normals and barycentric vertex colours when present.
Bad input of any kind raises ``ValueError`` naming the file and the problem (``FileNotFoundError``
for a missing file).
"""

from __future__ import annotations

import os
import re
import struct
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "POINT_FORMATS",
    "load_points",
    "lzf_decompress",
    "rotate_up_to_z",
    "sample_mesh_surface",
]

# extension -> reader key
POINT_FORMATS: dict[str, str] = {
    ".ply": "ply",
    ".obj": "obj",
    ".off": "off",
    ".stl": "stl",
    ".xyz": "text",
    ".txt": "text",
    ".csv": "text",
    ".pts": "text",
    ".npy": "npy",
    ".npz": "npz",
    ".pcd": "pcd",
}
DEFAULT_MESH_POINTS = 10000  # OpenShape stores 10k points per shape


class _Bad(Exception):
    """Internal: a reader found a problem; load_points turns it into a ValueError with the path."""


# ----------------------------------------------------------------------------- public entry point
def load_points(
    path: str | os.PathLike[str],
    num_points: int | None = None,
    *,
    up_axis: str = "z",
    as_mesh: bool | None = None,
    columns: str | None = None,
    index: int | None = None,
    allow_pickle: bool = False,
    seed: int = 0,
) -> dict[str, Any]:
    """Read a point cloud or mesh file into svl's common sample dict (see module docstring).

    num_points: for meshes the number of surface samples (default 10000); for point files a
        seeded random subset (or repetition when the file has fewer points); None keeps all.
    up_axis: the file's up axis ("x", "y", "z", or "-y" etc.); rotated to svl's z-up.
    as_mesh: PLY only: force (True) or forbid (False) surface sampling; None = sample iff faces.
    columns: text/npy column layout, e.g. "xyzrgb", "xyznxnynz", "xyz_rgb" ("_" skips a column);
        default: by header names, else 3 = xyz, 6/9 = xyz + rgb and/or normals (unit-length triple).
    index: which cloud of a multi-cloud .npz/.npy (arrays shaped (S, N, 3)).
    allow_pickle: allow object .npy files (OpenShape per-shape dicts); only for trusted files.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file")
    if p.is_dir():
        raise ValueError(f"{p}: is a directory, expected a point-cloud or mesh file")
    kind = POINT_FORMATS.get(p.suffix.lower())
    if kind is None:
        raise ValueError(
            f"{p}: unknown extension {p.suffix!r}; supported: {', '.join(sorted(POINT_FORMATS))}"
        )
    if num_points is not None and (isinstance(num_points, bool) or int(num_points) < 1):
        raise ValueError(f"{p}: num_points must be a positive integer, got {num_points!r}")
    rng = np.random.default_rng(seed)
    try:
        if kind == "ply":
            raw = _read_ply(p)
        elif kind == "obj":
            raw = _read_obj(p.read_bytes())
        elif kind == "off":
            raw = _read_off(p.read_bytes())
        elif kind == "stl":
            raw = _read_stl(p.read_bytes())
        elif kind == "text":
            raw = _read_text(p.read_bytes(), columns)
        elif kind == "npy":
            raw = _read_npy(p, columns, index, allow_pickle)
        elif kind == "npz":
            raw = _read_npz(p, columns, index)
        else:
            raw = _read_pcd(p.read_bytes())
        faces = raw.pop("faces", None)
        is_mesh = faces is not None and len(faces) > 0 if as_mesh is None else bool(as_mesh)
        if kind in ("obj", "off", "stl") and faces is not None and len(faces) == 0:
            raise _Bad("mesh has no faces")
        if is_mesh:
            if faces is None or len(faces) == 0:
                raise _Bad("as_mesh=True but the file has no faces")
            raw = _check_arrays(raw, what="vertex")
            n = DEFAULT_MESH_POINTS if num_points is None else int(num_points)
            out = sample_mesh_surface(raw["xyz"], faces, n, rng=rng, vertex_rgb=raw.get("rgb"))
            meta_counts = {"vertices": len(raw["xyz"]), "faces": len(faces), "sampled": n}
        else:
            out = _check_arrays(raw, what="point")
            meta_counts = {"points_in_file": len(out["xyz"])}
            if num_points is not None and int(num_points) != len(out["xyz"]):
                n_all = len(out["xyz"])
                n = int(num_points)
                idx = rng.choice(n_all, n, replace=n > n_all)
                out = {k: v[idx] for k, v in out.items()}
    except _Bad as e:
        raise ValueError(f"{p}: {e}") from None
    except ValueError as e:
        if str(p) in str(e):
            raise
        raise ValueError(f"{p}: invalid {kind} file: {e}") from e
    except (MemoryError, RecursionError) as e:
        raise ValueError(f"{p}: corrupt {kind} file ({type(e).__name__})") from e
    except Exception as e:  # noqa: BLE001 - any parser failure on untrusted bytes is bad input
        raise ValueError(f"{p}: corrupt or unreadable {kind} file ({type(e).__name__}: {e})") from e
    info = raw.get("_info", {})
    up = _parse_axis(up_axis, p)
    if up != (2, 1):
        out["xyz"] = rotate_up_to_z(out["xyz"], up_axis)
        if "normals" in out:
            out["normals"] = rotate_up_to_z(out["normals"], up_axis)
    sample: dict[str, Any] = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in out.items()}
    sample["meta"] = {
        "path": str(p),
        "format": kind if kind != "text" else p.suffix.lower().lstrip("."),
        "mesh": bool(is_mesh),
        "up_axis_in_file": up_axis,
        "axis_convention": "z-up" if up != (2, 1) or up_axis in ("z", "+z") else "as stored (z-up assumed)",
        "rgb_range": "[0, 1]" if "rgb" in sample else None,
        "rgb_source_scale": info.get("rgb_scale"),
        "columns": info.get("columns"),
        "num_points": len(sample["xyz"]),
        **meta_counts,
    }
    return sample


# ----------------------------------------------------------------------------- shared helpers
def _parse_axis(axis: str, where: Any = "") -> tuple[int, int]:
    """'y' / '+y' / '-y' -> (axis index, sign)."""
    a = str(axis).strip().lower()
    sign = -1 if a.startswith("-") else 1
    a = a.lstrip("+-")
    if a not in ("x", "y", "z"):
        raise ValueError(f"{where}: up_axis must be one of x, y, z (optionally signed), got {axis!r}")
    return "xyz".index(a), sign


def rotate_up_to_z(xyz: np.ndarray, up_axis: str) -> np.ndarray:
    """Rotate (N, 3) vectors so that the given up axis becomes +z (a proper rotation, det = +1).

    y-up -> z-up maps (x, y, z) to (x, -z, y); x-up maps (x, y, z) to (-z, y, x).
    """
    ax, sign = _parse_axis(up_axis)
    xyz = np.asarray(xyz, dtype=np.float32)
    if (ax, sign) == (2, 1):
        return xyz.copy()
    if (ax, sign) == (2, -1):  # flip upside down: rotate 180 deg about x
        return np.stack([xyz[:, 0], -xyz[:, 1], -xyz[:, 2]], 1)
    if ax == 1:
        out = np.stack([xyz[:, 0], -xyz[:, 2], xyz[:, 1]], 1)
    else:
        out = np.stack([-xyz[:, 2], xyz[:, 1], xyz[:, 0]], 1)
    if sign < 0:
        out = np.stack([out[:, 0], -out[:, 1], -out[:, 2]], 1)
    return out


def _check_arrays(raw: dict[str, Any], what: str) -> dict[str, np.ndarray]:
    """Validate shapes/finiteness and scale colours to [0, 1]."""
    xyz = raw.get("xyz")
    if xyz is None:
        raise _Bad(f"no {what} coordinates (x, y, z) found")
    xyz = np.asarray(xyz)
    if xyz.ndim != 2 or xyz.shape[1] != 3:
        raise _Bad(f"coordinates must have shape (N, 3), got {tuple(xyz.shape)}")
    if len(xyz) == 0:
        raise _Bad(f"empty cloud: 0 {what}s")
    if not np.issubdtype(xyz.dtype, np.number):
        raise _Bad(f"coordinates are not numeric (dtype {xyz.dtype})")
    xyz = xyz.astype(np.float64)
    bad = ~np.isfinite(xyz).all(1)
    if bad.any():
        raise _Bad(f"{int(bad.sum())} of {len(xyz)} {what}s have NaN or inf coordinates")
    out: dict[str, np.ndarray] = {"xyz": xyz}
    for key in ("rgb", "normals"):
        v = raw.get(key)
        if v is None:
            continue
        v = np.asarray(v)
        if v.shape != xyz.shape:
            raise _Bad(f"{key} shape {tuple(v.shape)} does not match coordinates {tuple(xyz.shape)}")
        if not np.issubdtype(v.dtype, np.number) and v.dtype != np.bool_:
            raise _Bad(f"{key} is not numeric (dtype {v.dtype})")
        if not np.isfinite(v.astype(np.float64)).all():
            raise _Bad(f"{key} contains NaN or inf")
        if key == "rgb":
            v, scale = _scale_rgb(v)
            raw.setdefault("_info", {})["rgb_scale"] = scale
        out[key] = v.astype(np.float64)
    return out


def _scale_rgb(v: np.ndarray) -> tuple[np.ndarray, str]:
    """Colours to [0, 1]: integer or >1 values are 0-255 (uint16 0-65535)."""
    if v.dtype == np.uint16:
        return v / 65535.0, "0-65535"
    if np.issubdtype(v.dtype, np.integer):
        if v.min() < 0 or v.max() > 255:
            raise _Bad(f"integer colours outside 0-255 (min {v.min()}, max {v.max()})")
        return v / 255.0, "0-255"
    v = v.astype(np.float64)
    if v.min() < 0 or v.max() > 255:
        raise _Bad(f"colours outside [0, 1] and [0, 255] (min {v.min():g}, max {v.max():g})")
    if v.max() > 1.0:
        return v / 255.0, "0-255"
    return v, "0-1"


def _triangulate(polys: list[list[int]], n_vertices: int) -> np.ndarray:
    """Fan-triangulate polygons (lists of vertex indices) -> (F, 3) int64, checking index range."""
    tris: list[tuple[int, int, int]] = []
    for poly in polys:
        if len(poly) < 3:
            raise _Bad(f"face with {len(poly)} vertices (need at least 3)")
        for k in range(1, len(poly) - 1):
            tris.append((poly[0], poly[k], poly[k + 1]))
    faces = np.asarray(tris, dtype=np.int64).reshape(-1, 3)
    if len(faces) and (faces.min() < 0 or faces.max() >= n_vertices):
        raise _Bad(f"face index out of range (0..{n_vertices - 1}): min {faces.min()}, max {faces.max()}")
    return faces


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
        raise _Bad("mesh has zero surface area (all faces degenerate)")
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


def _floats(tokens: list[bytes] | list[str], what: str) -> list[float]:
    try:
        return [float(t) for t in tokens]
    except ValueError:
        raise _Bad(f"non-numeric value in {what}: {b' '.join(map(_b, tokens))[:80]!r}") from None


def _b(t: bytes | str) -> bytes:
    return t if isinstance(t, bytes) else t.encode()


def _text_lines(data: bytes) -> list[bytes]:
    if b"\x00" in data:
        raise _Bad("binary data (NUL bytes) in a text format")
    return data.splitlines()


# ----------------------------------------------------------------------------- PLY
_PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}  # fmt: skip
_RGB_NAMES = (("red", "green", "blue"), ("r", "g", "b"), ("diffuse_red", "diffuse_green", "diffuse_blue"))
_NORMAL_NAMES = (("nx", "ny", "nz"), ("normal_x", "normal_y", "normal_z"))


def _read_ply(p: Path) -> dict[str, Any]:
    data = p.read_bytes()
    if not data.startswith(b"ply"):
        raise _Bad("not a PLY file (missing 'ply' magic)")
    end = data.find(b"end_header")
    if end < 0:
        raise _Bad("PLY header has no end_header line")
    nl = data.find(b"\n", end)
    if nl < 0:
        raise _Bad("PLY header is truncated after end_header")
    header = data[:end].decode("ascii", errors="strict").splitlines()
    body = data[nl + 1 :]
    fmt = None
    elements: list[dict[str, Any]] = []
    for line in header[1:]:
        tok = line.split()
        if not tok or tok[0] in ("comment", "obj_info"):
            continue
        if tok[0] == "format":
            if len(tok) < 2 or tok[1] not in ("ascii", "binary_little_endian", "binary_big_endian"):
                raise _Bad(f"unsupported PLY format line {line!r}")
            fmt = tok[1]
        elif tok[0] == "element":
            if len(tok) != 3 or not tok[2].isdigit():
                raise _Bad(f"bad PLY element line {line!r}")
            elements.append({"name": tok[1], "count": int(tok[2]), "props": []})
        elif tok[0] == "property":
            if not elements:
                raise _Bad("PLY property before any element")
            if len(tok) == 5 and tok[1] == "list":
                if tok[2] not in _PLY_TYPES or tok[3] not in _PLY_TYPES:
                    raise _Bad(f"unknown PLY list types in {line!r}")
                elements[-1]["props"].append((tok[4], _PLY_TYPES[tok[2]], _PLY_TYPES[tok[3]]))
            elif len(tok) == 3 and tok[1] in _PLY_TYPES:
                elements[-1]["props"].append((tok[2], _PLY_TYPES[tok[1]], None))
            else:
                raise _Bad(f"bad PLY property line {line!r}")
        else:
            raise _Bad(f"unexpected PLY header line {line!r}")
    if fmt is None:
        raise _Bad("PLY header has no format line")
    parsed: dict[str, Any] = {}
    if fmt == "ascii":
        tokens = body.split()
        pos = 0
        for el in elements:
            pos = _ply_ascii_element(el, tokens, pos, parsed)
    else:
        bo = "<" if fmt == "binary_little_endian" else ">"
        pos = 0
        for el in elements:
            pos = _ply_binary_element(el, body, pos, bo, parsed)
    vert = parsed.get("vertex")
    if vert is None:
        raise _Bad("PLY file has no vertex element")
    names = vert.dtype.names or ()
    if not all(k in names for k in ("x", "y", "z")):
        raise _Bad(f"PLY vertex element lacks x/y/z properties (has {list(names)})")
    raw: dict[str, Any] = {"xyz": np.stack([vert["x"], vert["y"], vert["z"]], 1)}
    for trip in _RGB_NAMES:
        if all(k in names for k in trip):
            raw["rgb"] = np.stack([vert[k] for k in trip], 1)
            break
    for trip in _NORMAL_NAMES:
        if all(k in names for k in trip):
            raw["normals"] = np.stack([vert[k] for k in trip], 1)
            break
    if "face" in parsed:
        raw["faces"] = _triangulate(parsed["face"], len(raw["xyz"]))
    return raw


def _ply_ascii_element(el: dict[str, Any], tokens: list[bytes], pos: int, parsed: dict[str, Any]) -> int:
    props, n = el["props"], el["count"]
    has_list = any(lt for _, _, lt in props)
    if not has_list:
        k = len(props)
        if pos + n * k > len(tokens):
            raise _Bad(f"PLY ascii data truncated in element {el['name']!r} (expected {n} rows)")
        if el["name"] == "vertex":
            vals = np.asarray(_floats(tokens[pos : pos + n * k], "PLY vertex data")).reshape(n, k)
            # keep the declared types so integer (uchar) colours are recognised as 0-255
            typed = np.empty(n, dtype=[(nm, t) for nm, t, _ in props])
            for i, (nm, _t, _) in enumerate(props):
                typed[nm] = vals[:, i]
            parsed["vertex"] = typed
        return pos + n * k
    rows: list[list[int]] = []
    for _ in range(n):
        row_faces = None
        for nm, _t, lt in props:
            if pos >= len(tokens):
                raise _Bad(f"PLY ascii data truncated in element {el['name']!r}")
            if lt:
                cnt = int(tokens[pos])
                if cnt < 0 or pos + 1 + cnt > len(tokens):
                    raise _Bad(f"PLY ascii list in {el['name']!r} is truncated or has a bad length")
                vals = [int(x) for x in tokens[pos + 1 : pos + 1 + cnt]]
                pos += 1 + cnt
                if nm in ("vertex_indices", "vertex_index"):
                    row_faces = vals
            else:
                pos += 1
        if el["name"] == "face":
            if row_faces is None:
                raise _Bad("PLY face element has no vertex_indices list")
            rows.append(row_faces)
    if el["name"] == "face":
        parsed["face"] = rows
    return pos


def _ply_binary_element(el: dict[str, Any], body: bytes, pos: int, bo: str, parsed: dict[str, Any]) -> int:
    props, n = el["props"], el["count"]
    has_list = any(lt for _, _, lt in props)
    if not has_list:
        dt = np.dtype([(nm, bo + t) for nm, t, _ in props])
        size = dt.itemsize * n
        if pos + size > len(body):
            raise _Bad(
                f"PLY binary data truncated in element {el['name']!r}: need {size} bytes, "
                f"{max(0, len(body) - pos)} left"
            )
        if el["name"] == "vertex":
            parsed["vertex"] = np.frombuffer(body, dtype=dt, count=n, offset=pos).astype(dt.newbyteorder("="))
        return pos + size
    # fast path: faces that are all triangles with only the index list
    if el["name"] == "face" and len(props) == 1 and n > 0:
        nm, ct, it = props[0]
        dt = np.dtype([("n", bo + ct), ("i", bo + it, (3,))])
        if pos + dt.itemsize * n <= len(body):
            arr = np.frombuffer(body, dtype=dt, count=n, offset=pos)
            if (arr["n"] == 3).all():
                parsed["face"] = arr["i"].astype(np.int64).tolist()
                return pos + dt.itemsize * n
    rows: list[list[int]] = []
    for _ in range(n):
        row_faces = None
        for nm, t, lt in props:
            if lt:
                cdt = np.dtype(bo + t)
                if pos + cdt.itemsize > len(body):
                    raise _Bad(f"PLY binary data truncated in element {el['name']!r}")
                cnt = int(np.frombuffer(body, cdt, 1, pos)[0])
                pos += cdt.itemsize
                idt = np.dtype(bo + lt)
                if cnt < 0 or pos + cnt * idt.itemsize > len(body):
                    raise _Bad(f"PLY binary list in {el['name']!r} is truncated or has a bad length")
                vals = np.frombuffer(body, idt, cnt, pos).astype(np.int64).tolist()
                pos += cnt * idt.itemsize
                if nm in ("vertex_indices", "vertex_index"):
                    row_faces = vals
            else:
                pos += np.dtype(t).itemsize
                if pos > len(body):
                    raise _Bad(f"PLY binary data truncated in element {el['name']!r}")
        if el["name"] == "face":
            if row_faces is None:
                raise _Bad("PLY face element has no vertex_indices list")
            rows.append(row_faces)
    if el["name"] == "face":
        parsed["face"] = rows
    return pos


# ----------------------------------------------------------------------------- OBJ / OFF / STL
def _read_obj(data: bytes) -> dict[str, Any]:
    verts: list[list[float]] = []
    cols: list[list[float]] = []
    polys: list[list[int]] = []
    for ln, line in enumerate(_text_lines(data), 1):
        tok = line.split()
        if not tok or tok[0].startswith(b"#"):
            continue
        if tok[0] == b"v":
            vals = _floats(tok[1:], f"OBJ line {ln}")
            if len(vals) not in (3, 4, 6, 7):
                raise _Bad(f"OBJ line {ln}: vertex with {len(vals)} values")
            verts.append(vals[:3])
            if len(vals) >= 6:
                cols.append(vals[-3:])
        elif tok[0] == b"f":
            idx = []
            for t in tok[1:]:
                try:
                    k = int(t.split(b"/")[0])
                except ValueError:
                    raise _Bad(f"OBJ line {ln}: bad face index {t[:20]!r}") from None
                if k == 0:
                    raise _Bad(f"OBJ line {ln}: face index 0 (OBJ indices start at 1)")
                idx.append(k - 1 if k > 0 else len(verts) + k)
            polys.append(idx)
    if not verts:
        raise _Bad("OBJ file has no vertices")
    raw: dict[str, Any] = {"xyz": np.asarray(verts), "faces": _triangulate(polys, len(verts))}
    if cols:
        if len(cols) != len(verts):
            raise _Bad("OBJ file gives colours for only some vertices")
        raw["rgb"] = np.asarray(cols)
    return raw


def _read_off(data: bytes) -> dict[str, Any]:
    lines = [ln.split(b"#")[0].strip() for ln in _text_lines(data)]
    lines = [ln for ln in lines if ln]
    if not lines:
        raise _Bad("empty OFF file")
    first = lines[0]
    m = re.match(rb"^(C?N?C?OFF)\s*(.*)$", first)
    if not m:
        raise _Bad(f"not an OFF file (first line {first[:40]!r})")
    kind = m.group(1)
    rest = m.group(2)  # ModelNet's broken files: "OFF490 518 0" on one line
    head_tokens = rest.split() if rest else lines[1].split() if len(lines) > 1 else []
    body_start = 1 if rest else 2
    if len(head_tokens) < 2:
        raise _Bad("OFF header lacks the vertex/face counts")
    try:
        nv, nf = int(head_tokens[0]), int(head_tokens[1])
    except ValueError:
        raise _Bad(f"bad OFF counts {b' '.join(head_tokens)[:40]!r}") from None
    if nv <= 0 or nf < 0:
        raise _Bad(f"OFF counts must be positive (vertices {nv}, faces {nf})")
    if body_start + nv + nf > len(lines):
        raise _Bad(
            f"OFF file truncated: header says {nv} vertices + {nf} faces, {len(lines) - body_start} lines"
        )
    vrows = [_floats(lines[body_start + i].split(), "OFF vertex") for i in range(nv)]
    width = {len(r) for r in vrows}
    if len(width) != 1 or min(width) < 3:
        raise _Bad("OFF vertex lines have inconsistent or too few values")
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
            raise _Bad(f"bad OFF face line {lines[body_start + nv + i][:40]!r}") from None
        if len(idx) != cnt:
            raise _Bad(f"OFF face line says {cnt} vertices but has {len(idx)}")
        polys.append(idx)
    raw["faces"] = _triangulate(polys, nv)
    return raw


def _read_stl(data: bytes) -> dict[str, Any]:
    if len(data) >= 84:
        n = struct.unpack_from("<I", data, 80)[0]
        if len(data) == 84 + 50 * n:
            if n == 0:
                raise _Bad("binary STL with 0 triangles")
            dt = np.dtype([("n", "<f4", (3,)), ("v", "<f4", (3, 3)), ("attr", "<u2")])
            tri = np.frombuffer(data, dtype=dt, count=n, offset=84)["v"].astype(np.float64)
            return {"xyz": tri.reshape(-1, 3), "faces": np.arange(3 * n, dtype=np.int64).reshape(n, 3)}
    head = data[:512].lstrip().lower()
    if not head.startswith(b"solid"):
        if len(data) >= 84:
            n = struct.unpack_from("<I", data, 80)[0]
            raise _Bad(
                f"binary STL size mismatch: header says {n} triangles ({84 + 50 * n} bytes), "
                f"file has {len(data)}"
            )
        raise _Bad("not an STL file (too short for binary, no 'solid' keyword)")
    verts = []
    for line in _text_lines(data):
        tok = line.split()
        if tok and tok[0].lower() == b"vertex":
            v = _floats(tok[1:], "STL vertex")
            if len(v) != 3:
                raise _Bad(f"STL vertex line with {len(v)} values")
            verts.append(v)
    if not verts:
        raise _Bad("ASCII STL with no vertices")
    if len(verts) % 3:
        raise _Bad(f"ASCII STL has {len(verts)} vertices, not a multiple of 3 (truncated?)")
    n = len(verts) // 3
    return {"xyz": np.asarray(verts), "faces": np.arange(3 * n, dtype=np.int64).reshape(n, 3)}


# ----------------------------------------------------------------------------- text / numpy
_COLUMN_ALIASES = {
    "x": "x", "y": "y", "z": "z",
    "r": "r", "red": "r", "g": "g", "green": "g", "b": "b", "blue": "b",
    "nx": "nx", "ny": "ny", "nz": "nz", "normal_x": "nx", "normal_y": "ny", "normal_z": "nz",
}  # fmt: skip


def _parse_columns(spec: str) -> list[str]:
    """'xyzrgb' / 'xyz_nxnynz' / 'x,y,z,r,g,b' -> per-column roles ('_' = ignore)."""
    s = spec.strip().lower()
    if "," in s or " " in s:
        return [c.strip() for c in re.split(r"[,\s]+", s) if c.strip()]
    out, i = [], 0
    while i < len(s):
        if s[i] == "n" and i + 1 < len(s) and s[i + 1] in "xyz":
            out.append(s[i : i + 2])
            i += 2
        elif s[i] in "xyzrgb_":
            out.append(s[i])
            i += 1
        else:
            raise ValueError(f"bad columns spec {spec!r}: unknown letter {s[i]!r}")
    return out


def _assign_columns(arr: np.ndarray, names: list[str] | None, info: dict[str, Any]) -> dict[str, Any]:
    """Map a (N, C) numeric table to xyz/rgb/normals by names or by the column-count rule."""
    if arr.ndim != 2:
        raise _Bad(f"expected a 2-D table (N, C), got shape {tuple(arr.shape)}")
    c = arr.shape[1]
    if names is None:
        if c < 3:
            raise _Bad(f"table has {c} columns; need at least x, y, z")
        roles = ["x", "y", "z"]
        for k in range(3, c - 2, 3):
            trip = arr[:, k : k + 3].astype(np.float64)
            unit = np.abs(np.linalg.norm(trip, axis=1) - 1) < 1e-2
            roles += ["nx", "ny", "nz"] if len(trip) and unit.mean() > 0.99 else ["r", "g", "b"]
        if c not in (3, 6, 9):
            if c == 4:
                roles.append("_")  # x y z intensity
            else:
                raise _Bad(
                    f"cannot infer the layout of {c} columns; pass columns=, e.g. 'xyz_rgb' or 'xyznxnynz'"
                )
    else:
        roles = [_COLUMN_ALIASES.get(nm.strip().lower(), "_") for nm in names]
        if len(roles) != c:
            raise _Bad(f"{len(roles)} column names for {c} columns")
    info["columns"] = "".join(r if r != "_" else "_" for r in roles)
    out: dict[str, Any] = {}
    for key, trip in (("xyz", ("x", "y", "z")), ("rgb", ("r", "g", "b")), ("normals", ("nx", "ny", "nz"))):
        if all(t in roles for t in trip):
            out[key] = arr[:, [roles.index(t) for t in trip]]
        elif key == "xyz":
            raise _Bad(f"columns {roles} lack x, y and z")
    return out


def _read_text(data: bytes, columns: str | None) -> dict[str, Any]:
    lines = [ln.strip() for ln in _text_lines(data)]
    lines = [ln for ln in lines if ln and not ln.startswith((b"#", b"//", b"%"))]
    if not lines:
        raise _Bad("empty cloud: no data lines")
    names = None
    first = lines[0].replace(b",", b" ").replace(b";", b" ").split()
    try:
        [float(t) for t in first]
    except ValueError:
        names = [t.decode("utf-8", "replace") for t in first]
        lines = lines[1:]
        if not lines:
            raise _Bad("empty cloud: header line only") from None
    if columns is not None:
        names = _parse_columns(columns)
    rows = [ln.replace(b",", b" ").replace(b";", b" ").split() for ln in lines]
    width = len(rows[0])
    for i, r in enumerate(rows):
        if len(r) != width:
            raise _Bad(f"data line {i + 1} has {len(r)} values, the first has {width} (truncated?)")
    flat = _floats([t for r in rows for t in r], "text data")
    arr = np.asarray(flat, dtype=np.float64).reshape(len(rows), width)
    info: dict[str, Any] = {}
    raw = _assign_columns(arr, names, info)
    raw["_info"] = info
    return raw


def _from_mapping(d: Any, columns: str | None, where: str) -> dict[str, Any]:
    """OpenShape-style dicts / npz: xyz|points|pos, rgb|colors, normals|normal."""

    def pick(*keys: str) -> Any:
        for k in keys:
            if k in d:
                return np.asarray(d[k])
        return None

    xyz = pick("xyz", "points", "pos", "point_cloud", "pc", "data")
    if xyz is None:
        raise _Bad(f"{where} has no xyz/points array (keys: {sorted(map(str, d.keys()))[:12]})")
    raw: dict[str, Any] = {}
    if xyz.ndim == 2 and xyz.shape[-1] != 3:
        info: dict[str, Any] = {}
        raw = _assign_columns(xyz, _parse_columns(columns) if columns else None, info)
        raw["_info"] = info
    else:
        raw["xyz"] = xyz
    rgb = pick("rgb", "colors", "colours", "color", "colour")
    if rgb is not None:
        raw["rgb"] = rgb
    nrm = pick("normals", "normal", "norm")
    if nrm is not None:
        raw["normals"] = nrm
    return raw


def _select(raw: dict[str, Any], index: int | None) -> dict[str, Any]:
    """Pick one cloud out of stacked (S, N, 3) arrays."""
    xyz = raw["xyz"]
    if xyz.ndim == 3:
        if index is None:
            raise _Bad(
                f"holds {xyz.shape[0]} clouds of shape {tuple(xyz.shape[1:])}; pass index= to pick one"
            )
        if not -xyz.shape[0] <= index < xyz.shape[0]:
            raise _Bad(f"index {index} out of range for {xyz.shape[0]} clouds")
        return {k: (v[index] if isinstance(v, np.ndarray) and v.ndim == 3 else v) for k, v in raw.items()}
    if index not in (None, 0):
        raise _Bad(f"holds a single cloud; index={index} is out of range")
    return raw


def _read_npy(p: Path, columns: str | None, index: int | None, allow_pickle: bool) -> dict[str, Any]:
    try:
        arr = np.load(p, allow_pickle=allow_pickle)
    except ValueError as e:
        if "allow_pickle" in str(e):
            raise _Bad(
                "holds Python objects (pickle); pass allow_pickle=True for trusted files only"
            ) from None
        raise
    if arr.dtype == object:
        obj = arr.item() if arr.ndim == 0 else None
        if not isinstance(obj, dict):
            raise _Bad("object array is not a dict of arrays (expected an OpenShape-style {'xyz': ...} dict)")
        return _select(_from_mapping(obj, columns, "dict"), index)
    if arr.dtype.names:
        names = list(arr.dtype.names)
        table = np.stack([arr[n].astype(np.float64) for n in names], -1)
        info: dict[str, Any] = {}
        raw = _assign_columns(table.reshape(-1, len(names)), names, info)
        raw["_info"] = info
        return raw
    if not np.issubdtype(arr.dtype, np.number):
        raise _Bad(f"array dtype {arr.dtype} is not numeric")
    if arr.ndim == 3:
        return (
            _select({"xyz": arr[..., :3]}, index)
            if arr.shape[-1] == 3
            else _select_table(arr, index, columns)
        )
    if arr.ndim != 2:
        raise _Bad(f"expected an (N, 3+) array, got shape {tuple(arr.shape)}")
    info = {}
    raw = _assign_columns(arr, _parse_columns(columns) if columns else None, info)
    raw["_info"] = info
    return _select(raw, index)


def _select_table(arr: np.ndarray, index: int | None, columns: str | None) -> dict[str, Any]:
    if index is None:
        raise _Bad(f"holds {arr.shape[0]} clouds of shape {tuple(arr.shape[1:])}; pass index= to pick one")
    if not -arr.shape[0] <= index < arr.shape[0]:
        raise _Bad(f"index {index} out of range for {arr.shape[0]} clouds")
    info: dict[str, Any] = {}
    raw = _assign_columns(arr[index], _parse_columns(columns) if columns else None, info)
    raw["_info"] = info
    return raw


_NPZ_KEYS = (
    "xyz", "points", "pos", "point_cloud", "pc", "data",
    "rgb", "colors", "colours", "color", "colour", "normals", "normal", "norm",
)  # fmt: skip


def _read_npz(p: Path, columns: str | None, index: int | None) -> dict[str, Any]:
    try:
        z = np.load(p, allow_pickle=False)
    except zipfile.BadZipFile as e:
        raise _Bad(f"not a valid npz archive ({e})") from None
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise _Bad("not an npz archive")
    with z:
        keys = sorted(z.files)
        d = {k: z[k] for k in keys if k in _NPZ_KEYS}
    raw = _from_mapping(d, columns, f"npz (keys {keys[:12]})")
    return _select(raw, index)


# ----------------------------------------------------------------------------- PCD
def lzf_decompress(data: bytes, out_len: int) -> bytes:
    """Decompress a liblzf stream (PCD binary_compressed); validates every back-reference."""
    out = bytearray()
    i, n = 0, len(data)
    while i < n:
        ctrl = data[i]
        i += 1
        if ctrl < 32:
            ln = ctrl + 1
            if i + ln > n:
                raise _Bad("LZF literal run past end of data")
            out += data[i : i + ln]
            i += ln
        else:
            ln = ctrl >> 5
            if ln == 7:
                if i >= n:
                    raise _Bad("LZF truncated length byte")
                ln += data[i]
                i += 1
            if i >= n:
                raise _Bad("LZF truncated back-reference")
            ref = len(out) - ((ctrl & 0x1F) << 8) - data[i] - 1
            i += 1
            ln += 2
            if ref < 0:
                raise _Bad("LZF back-reference before start of output")
            for k in range(ln):
                out.append(out[ref + k])
        if len(out) > out_len:
            raise _Bad(f"LZF output exceeds the declared size {out_len}")
    if len(out) != out_len:
        raise _Bad(f"LZF output is {len(out)} bytes, header says {out_len}")
    return bytes(out)


def _read_pcd(data: bytes) -> dict[str, Any]:
    hdr: dict[str, list[str]] = {}
    pos = 0
    while True:
        nl = data.find(b"\n", pos)
        if nl < 0:
            raise _Bad("PCD header is truncated (no DATA line)")
        line = data[pos:nl].decode("ascii", errors="strict").strip()
        pos = nl + 1
        if not line or line.startswith("#"):
            continue
        tok = line.split()
        hdr[tok[0].upper()] = tok[1:]
        if tok[0].upper() == "DATA":
            break
        if pos > 4096:
            raise _Bad("PCD header too long or not a PCD file")
    for key in ("FIELDS", "SIZE", "TYPE"):
        if key not in hdr:
            raise _Bad(f"PCD header lacks {key}")
    fields = hdr["FIELDS"]
    k = len(fields)
    counts = [int(c) for c in hdr.get("COUNT", ["1"] * k)]
    sizes = [int(s) for s in hdr["SIZE"]]
    types = hdr["TYPE"]
    if not (len(sizes) == len(types) == len(counts) == k) or k == 0:
        raise _Bad("PCD FIELDS/SIZE/TYPE/COUNT lengths differ")
    if "POINTS" in hdr:
        npts = int(hdr["POINTS"][0])
    else:
        npts = int(hdr["WIDTH"][0]) * int(hdr.get("HEIGHT", ["1"])[0])
    if npts < 0:
        raise _Bad(f"negative point count {npts}")
    dts = []
    for f, s, t, c in zip(fields, sizes, types, counts):
        code = {"F": "f", "I": "i", "U": "u"}.get(t.upper())
        if code is None or s not in (1, 2, 4, 8) or (code == "f" and s not in (4, 8)) or c < 1:
            raise _Bad(f"unsupported PCD field {f!r} (type {t}, size {s}, count {c})")
        dts.append((f if f != "_" else f"_pad{len(dts)}", f"<{code}{s}", (c,) if c > 1 else ()))
    names = [d[0] for d in dts]
    if len(set(names)) != len(names):
        dts = [(f"{n}_{i}", t, sh) for i, (n, t, sh) in enumerate(dts)]
    dt = np.dtype(dts)
    mode = (hdr["DATA"] or [""])[0].lower()
    body = data[pos:]
    if mode == "ascii":
        rows = [ln.split() for ln in _text_lines(body) if ln.strip()]
        if len(rows) < npts:
            raise _Bad(f"PCD ascii data truncated: {len(rows)} of {npts} points")
        width = sum(counts)
        if any(len(r) != width for r in rows[:npts]):
            raise _Bad(f"PCD ascii rows must have {width} values")
        vals = np.asarray(_floats([t for r in rows[:npts] for t in r], "PCD data")).reshape(npts, width)
        arr = np.empty(npts, dtype=dt)
        col = 0
        for (nm, _, sh), c in zip(dts, counts):
            arr[nm] = vals[:, col : col + c].reshape((npts, *sh)) if c > 1 else vals[:, col]
            col += c
    elif mode == "binary":
        if len(body) < dt.itemsize * npts:
            raise _Bad(f"PCD binary data truncated: need {dt.itemsize * npts} bytes, have {len(body)}")
        arr = np.frombuffer(body, dtype=dt, count=npts)
    elif mode == "binary_compressed":
        if len(body) < 8:
            raise _Bad("PCD binary_compressed data truncated (no size header)")
        csize, usize = struct.unpack_from("<II", body, 0)
        if usize != dt.itemsize * npts:
            raise _Bad(f"PCD binary_compressed size {usize} != {npts} points x {dt.itemsize} bytes")
        if 8 + csize > len(body):
            raise _Bad("PCD binary_compressed data truncated")
        raw_bytes = lzf_decompress(body[8 : 8 + csize], usize)
        arr = np.empty(npts, dtype=dt)
        off = 0
        for nm in dt.names:  # column-major: all values of one field, then the next
            fdt = dt.fields[nm][0]
            nbytes = fdt.itemsize * npts
            arr[nm] = np.frombuffer(raw_bytes, dtype=fdt, count=npts, offset=off)
            off += nbytes
    else:
        raise _Bad(f"unsupported PCD DATA mode {mode!r}")
    lower = {n.lower(): n for n in arr.dtype.names}
    if not all(a in lower for a in "xyz"):
        raise _Bad(f"PCD has no x/y/z fields (fields {fields})")
    raw: dict[str, Any] = {"xyz": np.stack([arr[lower[a]].astype(np.float64) for a in "xyz"], 1)}
    for key in ("rgb", "rgba"):
        if key in lower:
            packed = np.ascontiguousarray(arr[lower[key]])
            if packed.dtype.itemsize != 4:
                raise _Bad(f"PCD {key} field must be 4 bytes")
            u = packed.view(np.uint32)
            raw["rgb"] = np.stack([(u >> 16) & 255, (u >> 8) & 255, u & 255], 1).astype(np.uint8)
            break
    if all(n in lower for n in ("normal_x", "normal_y", "normal_z")):
        raw["normals"] = np.stack([arr[lower[n]] for n in ("normal_x", "normal_y", "normal_z")], 1)
    return raw
