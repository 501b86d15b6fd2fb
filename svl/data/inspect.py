"""What a point-cloud file, an event file or a dataset holds (the library side of `svl data info|render`).

Files are told apart by extension, content and an optional forced format: event recordings
(`svl.data.readers.events`) get event statistics and an accumulated-frame + x-y-t picture, point
clouds the bounds and the multi-view render.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from svl.data import build_dataset
from svl.data.readers import load_points
from svl.data.readers.events import EVENT_FORMATS, EventFile, detect_event_format, is_event_array, read_events
from svl.utils import atomic_write

__all__ = [
    "dataset_info",
    "event_file_info",
    "file_info",
    "is_event_file",
    "is_file_like",
    "load_sample",
    "render_events",
]


def _npz_summary(path: Path) -> dict[str, Any] | None:
    """Multi-cloud npz archives (like the shared ModelNet40 files): list arrays without loading them."""
    import zipfile

    try:
        out = {}
        with zipfile.ZipFile(path) as zf:
            for member in zf.namelist():
                if not member.endswith(".npy"):
                    continue
                with zf.open(member) as fh:
                    version = np.lib.format.read_magic(fh)
                    read = (
                        np.lib.format.read_array_header_1_0
                        if version == (1, 0)
                        else (np.lib.format.read_array_header_2_0)
                    )
                    shape, _, dtype = read(fh)
                out[member[:-4]] = {"shape": list(shape), "dtype": str(dtype)}
        return out
    except Exception:  # noqa: BLE001 - fall back to the generic reader, which reports errors properly
        return None


def is_event_file(path: str | Path, format: str | None = None) -> bool:
    """Whether `path` is read as events (True) or as a point cloud (False).

    format: None / "auto" decides by extension and content (a .bin by its bytes, a .npy/.npz by its
    fields); an event format (nmnist, aedat, ...) says events; npy/npz look at the fields; anything
    else ("kitti", "ply", ...) is a point format.
    """

    p = Path(path)
    fmt = (format or "auto").lower()
    if fmt in ("npy", "npz"):
        return p.is_file() and bool(is_event_array(p))
    if fmt in EVENT_FORMATS:
        return True
    if fmt != "auto" or not p.is_file():
        return False
    return detect_event_format(p) is not None


def event_file_info(
    path: str | Path, format: str | None = None, sensor_size: tuple[int, int] | None = None
) -> dict[str, Any]:
    """What an event file holds: count, duration, sensor, polarity balance, rate, coordinate ranges."""

    ef = read_events(path, format, sensor_size=sensor_size)
    ev = ef.events
    t = ev["t"]
    span_us = int(t[-1] - t[0])
    return {
        "path": str(ef.path),
        "kind": "events",
        "format": ef.format,
        "num_events": len(ev),
        "duration_ms": round(span_us / 1e3, 3),
        "t_range_us": [int(t[0]), int(t[-1])],
        "sensor_size": list(ef.sensor_size),
        "sensor_size_from": ef.sensor_size_from,
        "on_fraction": round(float(ev["p"].mean()), 4),
        "event_rate_per_s": round(len(ev) / (span_us / 1e6), 1) if span_us > 0 else None,
        "x_range": [int(ev["x"].min()), int(ev["x"].max())],
        "y_range": [int(ev["y"].min()), int(ev["y"].max())],
        "active_pixels": int(len(np.unique(ev["x"].astype(np.int64) * 65536 + ev["y"]))),
    }


def _summarise(v: Any) -> Any:
    """Per-point arrays in a reader's meta (KITTI reflectance) as min / max / mean, not 100k numbers."""
    if isinstance(v, np.ndarray) and v.ndim > 0:
        return {
            "min": round(float(v.min()), 5),
            "max": round(float(v.max()), 5),
            "mean": round(float(v.mean()), 5),
        }
    return v


def file_info(
    path: str | Path,
    index: int | None = None,
    format: str | None = None,
    sensor_size: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """What a file holds: for events see `event_file_info` (`sensor_size` overrides the file's); for
    a point cloud its format, counts, channels, bounds and colour range. format: forced reader (see
    `is_event_file`)."""

    p = Path(path)
    if is_event_file(p, format):
        return event_file_info(p, format, sensor_size)
    point_format = None if format in (None, "auto") else format
    if p.suffix.lower() == ".npz" and index is None and p.is_file() and point_format in (None, "npz"):
        arrays = _npz_summary(p)
        if arrays and any(len(a["shape"]) == 3 for a in arrays.values()):
            return {"path": str(p), "format": "npz", "arrays": arrays, "note": "several clouds; pass --index"}
    s = load_points(p, index=index, format=point_format)
    xyz = s["xyz"]
    info = {k: _summarise(v) for k, v in s["meta"].items()}
    if "up_axis_in_file" in info:  # point files do not record their up axis: load_points assumed z
        info["up_axis_in_file"] = (
            f"{info['up_axis_in_file']} (assumed: the file does not say which axis is up)"
        )
    info["channels"] = ["xyz"] + [k for k in ("rgb", "normals") if k in s]
    info["bounds_min"] = np.round(xyz.min(0), 5).tolist()
    info["bounds_max"] = np.round(xyz.max(0), 5).tolist()
    info["centroid"] = np.round(xyz.mean(0), 5).tolist()
    info["max_radius_from_centroid"] = round(float(np.linalg.norm(xyz - xyz.mean(0), axis=1).max()), 5)
    if "rgb" in s:
        info["rgb_mean"] = np.round(s["rgb"].mean(0), 4).tolist()
    return info


def dataset_info(spec: str, root: str | None = None, **kwargs: Any) -> dict[str, Any]:
    """Per-split sizes and class counts of a registered dataset ('name' or 'name:split')."""

    name, _, split = spec.partition(":")
    splits = [split] if split else (
        ["train", "val", "test_unseen", "test"] if name == "modelnet40_zsl" else ["train", "test"]
    )  # fmt: skip
    out: dict[str, Any] = {"dataset": name, "splits": {}}
    for sp in splits:
        ds = build_dataset(name, sp, root=root, **kwargs)
        labels = ds.labels()
        counts = np.bincount(labels, minlength=len(ds.classes))
        out["classes"] = list(ds.classes)
        out["splits"][sp] = {
            "samples": len(ds),
            "classes_present": int((counts > 0).sum()),
            "per_class": {c: int(n) for c, n in zip(ds.classes, counts) if n},
        }
        first = ds[0]
        out["splits"][sp]["sample_keys"] = {
            k: list(np.shape(v)) for k, v in first.items() if isinstance(v, np.ndarray)
        }
        if first.get("segment") is not None:  # per-point labels: how many classes one sample holds
            out["splits"][sp]["segment_classes_in_sample"] = int(len(np.unique(np.asarray(first["segment"]))))
        for attr in ("seen_classes", "unseen_classes"):
            if hasattr(ds, attr):
                out[attr] = list(getattr(ds, attr))
    return out


def is_file_like(spec: str) -> bool:
    """A path (exists, has an extension or a folder) rather than a dataset name like 'modelnet40:test'."""
    return Path(spec).exists() or Path(spec).suffix != "" or "/" in spec


def load_sample(
    spec: str,
    index: int | None = None,
    up_axis: str = "z",
    root: str | None = None,
    variant: str | None = None,
    format: str | None = None,
) -> tuple[dict[str, Any], str]:
    """One cloud from a file or a dataset spec ('name[:split]', sample `index`), and a title for it.

    format: a forced point-cloud reader for files ("kitti", "ply", ...); None / "auto" by extension."""
    if is_file_like(spec):
        from svl.data.readers import load_points

        fmt = None if format in (None, "auto") else format
        return load_points(spec, index=index, up_axis=up_axis, format=fmt), Path(spec).name

    name, _, split = spec.partition(":")
    kwargs = {"variant": variant} if variant else {}
    ds = build_dataset(name, split or "test", root=root, **kwargs)
    s = ds[index or 0]
    if hasattr(ds, "events") and hasattr(ds, "sensor_size"):  # an event dataset: the raw stream too
        s["events"], s["sensor_size"] = ds.events(index or 0), tuple(ds.sensor_size)
    return s, f"{name}:{split or 'test'}[{index or 0}] {ds.classes[s['label']]}"


def render_events(
    source: Any,
    out: str | Path,
    *,
    format: str | None = None,
    sensor_size: tuple[int, int] | None = None,
    title: str | None = None,
    max_points: int = 20000,
    seed: int = 0,
    dpi: int = 100,
) -> Path:
    """Picture of an event recording as a PNG: the accumulated frame (ON red, OFF blue) beside an
    x-y-t scatter of (at most `max_points`, seeded) events. Written atomically.

    source: a path (read with `read_events(source, format, sensor_size=sensor_size)`) or an `EventFile`.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    ef = source if isinstance(source, EventFile) else read_events(source, format, sensor_size=sensor_size)
    ev, (w, h) = ef.events, ef.sensor_size
    flat = (np.where(ev["p"], 0, h * w) + ev["y"].astype(np.int64) * w + ev["x"]).astype(np.int64)
    counts = np.bincount(flat, minlength=2 * h * w).reshape(2, h, w).astype(np.float64)  # ON, OFF a pixel
    total = counts.sum(0)
    scale = max(float(np.percentile(total[total > 0], 99)), 1.0)  # a few hot pixels do not wash it out
    alpha = np.clip(total / scale, 0, 1)[..., None]  # how much happened at a pixel: how far from white
    on_share = (counts[0] / np.maximum(total, 1))[..., None]  # hue: red (all ON) .. blue (all OFF)
    ink = on_share * np.array([0.85, 0.1, 0.1]) + (1 - on_share) * np.array([0.1, 0.2, 0.85])
    img = (1 - alpha) + alpha * ink
    img = np.clip(img, 0, 1)

    fig = Figure(figsize=(11, 4.8), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 2, 1)
    ax.imshow(img, interpolation="nearest")
    ax.set_title(f"accumulated {len(ev)} events (ON red, OFF blue)", fontsize=9)
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    idx = np.arange(len(ev))
    if len(ev) > max_points:
        idx = np.sort(np.random.default_rng(seed).choice(len(ev), max_points, replace=False))
    sub = ev[idx]
    t_ms = (sub["t"] - ev["t"][0]) / 1e3
    ax3 = fig.add_subplot(1, 2, 2, projection="3d")
    colors = np.where(sub["p"][:, None], [[0.85, 0.1, 0.1]], [[0.1, 0.2, 0.85]])
    ax3.scatter(sub["x"], t_ms, sub["y"], c=colors, s=1, depthshade=False)
    ax3.set_xlabel("x")
    ax3.set_ylabel("t (ms)")
    ax3.set_zlabel("y")
    ax3.set_xlim(0, w - 1)
    ax3.set_zlim(h - 1, 0)  # image rows grow downwards
    ax3.set_title(f"x-y-t ({len(sub)} of {len(ev)} events)", fontsize=9)
    span = (ev["t"][-1] - ev["t"][0]) / 1e3
    fig.suptitle(
        title or f"{ef.path.name}: {ef.format}, {w}x{h}, {span:.1f} ms, {len(ev)} events", fontsize=10
    )
    out = Path(out)
    with atomic_write(out) as fh:
        fig.savefig(fh, format="png")
    return out
