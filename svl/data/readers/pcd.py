"""PCL point-cloud data (.pcd), including the LZF-compressed binary mode."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import numpy as np

from svl.data.readers._common import BadFile, ReadOptions, floats, text_lines

__all__ = ["lzf_decompress", "read_pcd"]


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
                raise BadFile("LZF literal run past end of data")
            out += data[i : i + ln]
            i += ln
        else:
            ln = ctrl >> 5
            if ln == 7:
                if i >= n:
                    raise BadFile("LZF truncated length byte")
                ln += data[i]
                i += 1
            if i >= n:
                raise BadFile("LZF truncated back-reference")
            ref = len(out) - ((ctrl & 0x1F) << 8) - data[i] - 1
            i += 1
            ln += 2
            if ref < 0:
                raise BadFile("LZF back-reference before start of output")
            for k in range(ln):
                out.append(out[ref + k])
        if len(out) > out_len:
            raise BadFile(f"LZF output exceeds the declared size {out_len}")
    if len(out) != out_len:
        raise BadFile(f"LZF output is {len(out)} bytes, header says {out_len}")
    return bytes(out)


def read_pcd(path: Path, opts: ReadOptions) -> dict[str, Any]:
    """PCL's PCD v0.7: ascii, binary and binary_compressed (LZF) data, packed rgb, normals."""
    data = path.read_bytes()
    hdr: dict[str, list[str]] = {}
    pos = 0
    while True:
        nl = data.find(b"\n", pos)
        if nl < 0:
            raise BadFile("PCD header is truncated (no DATA line)")
        line = data[pos:nl].decode("ascii", errors="strict").strip()
        pos = nl + 1
        if not line or line.startswith("#"):
            continue
        tok = line.split()
        hdr[tok[0].upper()] = tok[1:]
        if tok[0].upper() == "DATA":
            break
        if pos > 4096:
            raise BadFile("PCD header too long or not a PCD file")
    for key in ("FIELDS", "SIZE", "TYPE"):
        if key not in hdr:
            raise BadFile(f"PCD header lacks {key}")
    fields = hdr["FIELDS"]
    k = len(fields)
    counts = [int(c) for c in hdr.get("COUNT", ["1"] * k)]
    sizes = [int(s) for s in hdr["SIZE"]]
    types = hdr["TYPE"]
    if not (len(sizes) == len(types) == len(counts) == k) or k == 0:
        raise BadFile("PCD FIELDS/SIZE/TYPE/COUNT lengths differ")
    if "POINTS" in hdr:
        npts = int(hdr["POINTS"][0])
    else:
        npts = int(hdr["WIDTH"][0]) * int(hdr.get("HEIGHT", ["1"])[0])
    if npts < 0:
        raise BadFile(f"negative point count {npts}")
    dts = []
    for f, s, t, c in zip(fields, sizes, types, counts):
        code = {"F": "f", "I": "i", "U": "u"}.get(t.upper())
        if code is None or s not in (1, 2, 4, 8) or (code == "f" and s not in (4, 8)) or c < 1:
            raise BadFile(f"unsupported PCD field {f!r} (type {t}, size {s}, count {c})")
        dts.append((f if f != "_" else f"_pad{len(dts)}", f"<{code}{s}", (c,) if c > 1 else ()))
    names = [d[0] for d in dts]
    if len(set(names)) != len(names):
        dts = [(f"{n}_{i}", t, sh) for i, (n, t, sh) in enumerate(dts)]
    dt = np.dtype(dts)
    mode = (hdr["DATA"] or [""])[0].lower()
    body = data[pos:]
    if mode == "ascii":
        rows = [ln.split() for ln in text_lines(body) if ln.strip()]
        if len(rows) < npts:
            raise BadFile(f"PCD ascii data truncated: {len(rows)} of {npts} points")
        width = sum(counts)
        if any(len(r) != width for r in rows[:npts]):
            raise BadFile(f"PCD ascii rows must have {width} values")
        vals = np.asarray(floats([t for r in rows[:npts] for t in r], "PCD data")).reshape(npts, width)
        arr = np.empty(npts, dtype=dt)
        col = 0
        for (nm, _, sh), c in zip(dts, counts):
            arr[nm] = vals[:, col : col + c].reshape((npts, *sh)) if c > 1 else vals[:, col]
            col += c
    elif mode == "binary":
        if len(body) < dt.itemsize * npts:
            raise BadFile(f"PCD binary data truncated: need {dt.itemsize * npts} bytes, have {len(body)}")
        arr = np.frombuffer(body, dtype=dt, count=npts)
    elif mode == "binary_compressed":
        if len(body) < 8:
            raise BadFile("PCD binary_compressed data truncated (no size header)")
        csize, usize = struct.unpack_from("<II", body, 0)
        if usize != dt.itemsize * npts:
            raise BadFile(f"PCD binary_compressed size {usize} != {npts} points x {dt.itemsize} bytes")
        if 8 + csize > len(body):
            raise BadFile("PCD binary_compressed data truncated")
        raw_bytes = lzf_decompress(body[8 : 8 + csize], usize)
        arr = np.empty(npts, dtype=dt)
        off = 0
        for nm in dt.names:  # column-major: all values of one field, then the next
            fdt = dt.fields[nm][0]
            nbytes = fdt.itemsize * npts
            arr[nm] = np.frombuffer(raw_bytes, dtype=fdt, count=npts, offset=off)
            off += nbytes
    else:
        raise BadFile(f"unsupported PCD DATA mode {mode!r}")
    lower = {n.lower(): n for n in arr.dtype.names}
    if not all(a in lower for a in "xyz"):
        raise BadFile(f"PCD has no x/y/z fields (fields {fields})")
    raw: dict[str, Any] = {"xyz": np.stack([arr[lower[a]].astype(np.float64) for a in "xyz"], 1)}
    for key in ("rgb", "rgba"):
        if key in lower:
            packed = np.ascontiguousarray(arr[lower[key]])
            if packed.dtype.itemsize != 4:
                raise BadFile(f"PCD {key} field must be 4 bytes")
            u = packed.view(np.uint32)
            raw["rgb"] = np.stack([(u >> 16) & 255, (u >> 8) & 255, u & 255], 1).astype(np.uint8)
            break
    if all(n in lower for n in ("normal_x", "normal_y", "normal_z")):
        raw["normals"] = np.stack([arr[lower[n]] for n in ("normal_x", "normal_y", "normal_z")], 1)
    return raw
