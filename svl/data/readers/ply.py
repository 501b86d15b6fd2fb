"""PLY (ascii, binary little/big endian): vertices with optional colours and normals, optional faces."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from svl.data.readers._common import BadFile, ReadOptions, floats, triangulate
from svl.utils import atomic_write

__all__ = ["read_ply"]

_PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}  # fmt: skip
_RGB_NAMES = (("red", "green", "blue"), ("r", "g", "b"), ("diffuse_red", "diffuse_green", "diffuse_blue"))
_NORMAL_NAMES = (("nx", "ny", "nz"), ("normal_x", "normal_y", "normal_z"))


def read_ply(path: Path, opts: ReadOptions) -> dict[str, Any]:
    """ASCII and binary (both byte orders) PLY; a face element makes it a mesh."""
    data = path.read_bytes()
    if not data.startswith(b"ply"):
        raise BadFile("not a PLY file (missing 'ply' magic)")
    end = data.find(b"end_header")
    if end < 0:
        raise BadFile("PLY header has no end_header line")
    nl = data.find(b"\n", end)
    if nl < 0:
        raise BadFile("PLY header is truncated after end_header")
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
                raise BadFile(f"unsupported PLY format line {line!r}")
            fmt = tok[1]
        elif tok[0] == "element":
            if len(tok) != 3 or not tok[2].isdigit():
                raise BadFile(f"bad PLY element line {line!r}")
            elements.append({"name": tok[1], "count": int(tok[2]), "props": []})
        elif tok[0] == "property":
            if not elements:
                raise BadFile("PLY property before any element")
            if len(tok) == 5 and tok[1] == "list":
                if tok[2] not in _PLY_TYPES or tok[3] not in _PLY_TYPES:
                    raise BadFile(f"unknown PLY list types in {line!r}")
                elements[-1]["props"].append((tok[4], _PLY_TYPES[tok[2]], _PLY_TYPES[tok[3]]))
            elif len(tok) == 3 and tok[1] in _PLY_TYPES:
                elements[-1]["props"].append((tok[2], _PLY_TYPES[tok[1]], None))
            else:
                raise BadFile(f"bad PLY property line {line!r}")
        else:
            raise BadFile(f"unexpected PLY header line {line!r}")
    if fmt is None:
        raise BadFile("PLY header has no format line")
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
        raise BadFile("PLY file has no vertex element")
    names = vert.dtype.names or ()
    if not all(k in names for k in ("x", "y", "z")):
        raise BadFile(f"PLY vertex element lacks x/y/z properties (has {list(names)})")
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
        raw["faces"] = triangulate(parsed["face"], len(raw["xyz"]))
    return raw


def _ply_ascii_element(el: dict[str, Any], tokens: list[bytes], pos: int, parsed: dict[str, Any]) -> int:
    props, n = el["props"], el["count"]
    has_list = any(lt for _, _, lt in props)
    if not has_list:
        k = len(props)
        if pos + n * k > len(tokens):
            raise BadFile(f"PLY ascii data truncated in element {el['name']!r} (expected {n} rows)")
        if el["name"] == "vertex":
            vals = np.asarray(floats(tokens[pos : pos + n * k], "PLY vertex data")).reshape(n, k)
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
                raise BadFile(f"PLY ascii data truncated in element {el['name']!r}")
            if lt:
                cnt = int(tokens[pos])
                if cnt < 0 or pos + 1 + cnt > len(tokens):
                    raise BadFile(f"PLY ascii list in {el['name']!r} is truncated or has a bad length")
                vals = [int(x) for x in tokens[pos + 1 : pos + 1 + cnt]]
                pos += 1 + cnt
                if nm in ("vertex_indices", "vertex_index"):
                    row_faces = vals
            else:
                pos += 1
        if el["name"] == "face":
            if row_faces is None:
                raise BadFile("PLY face element has no vertex_indices list")
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
            raise BadFile(
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
                    raise BadFile(f"PLY binary data truncated in element {el['name']!r}")
                cnt = int(np.frombuffer(body, cdt, 1, pos)[0])
                pos += cdt.itemsize
                idt = np.dtype(bo + lt)
                if cnt < 0 or pos + cnt * idt.itemsize > len(body):
                    raise BadFile(f"PLY binary list in {el['name']!r} is truncated or has a bad length")
                vals = np.frombuffer(body, idt, cnt, pos).astype(np.int64).tolist()
                pos += cnt * idt.itemsize
                if nm in ("vertex_indices", "vertex_index"):
                    row_faces = vals
            else:
                pos += np.dtype(t).itemsize
                if pos > len(body):
                    raise BadFile(f"PLY binary data truncated in element {el['name']!r}")
        if el["name"] == "face":
            if row_faces is None:
                raise BadFile("PLY face element has no vertex_indices list")
            rows.append(row_faces)
    if el["name"] == "face":
        parsed["face"] = rows
    return pos


def write_ply_labels(
    path: str | Path, xyz: np.ndarray, labels: np.ndarray, rgb8: np.ndarray | None = None
) -> Path:
    """A binary little-endian PLY of points with an int32 ``label`` property (and uchar colours),
    written atomically; PLY viewers (CloudCompare, MeshLab) show the label as a scalar field."""

    xyz, labels = np.asarray(xyz, np.float32), np.asarray(labels).astype(np.int32)
    if xyz.ndim != 2 or xyz.shape[1] != 3 or len(labels) != len(xyz):
        raise ValueError(f"write_ply_labels: xyz {xyz.shape} and labels {labels.shape} do not match")
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    if rgb8 is not None:
        fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
    fields.append(("label", "<i4"))
    rec = np.empty(len(xyz), np.dtype(fields))
    rec["x"], rec["y"], rec["z"] = xyz.T
    if rgb8 is not None:
        rec["red"], rec["green"], rec["blue"] = np.asarray(rgb8, np.uint8).T
    rec["label"] = labels
    props = {"<f4": "float", "u1": "uchar", "<i4": "int"}
    header = ["ply", "format binary_little_endian 1.0", f"element vertex {len(xyz)}"]
    header += [f"property {props[t]} {n}" for n, t in fields] + ["end_header"]
    with atomic_write(path) as fh:
        fh.write(("\n".join(header) + "\n").encode("ascii"))
        fh.write(rec.tobytes())
    return Path(path)
