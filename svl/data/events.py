"""Event-camera streams (docs/SPEC.md §8): readers, windowing, spatio-temporal points, T-step binning.

Events are numpy structured arrays with tonic's dtype ``EVENT_DTYPE`` = x int16, y int16,
t int64 (microseconds), p bool (polarity, True = ON). A window becomes a point cloud with
x, y scaled to [0, 1] by the sensor size and ``z = (t - t_min) / (t_max - t_min)``, polarity
being an extra feature (``feats = [x, y, z, p]``).
"""

from __future__ import annotations

import csv
import os
import struct
from pathlib import Path
from typing import Any

import numpy as np

from svl.data.base import PointDataset, register_dataset, resolve_root
from svl.data.transforms import Compose

__all__ = [
    "DVS_GESTURE_CLASSES",
    "EVENT_DTYPE",
    "bin_events",
    "events_to_points",
    "read_aedat31",
    "read_dvs_gesture_labels",
    "read_event_array",
    "slice_by_count",
    "slice_by_time",
]

EVENT_DTYPE = np.dtype([("x", "<i2"), ("y", "<i2"), ("t", "<i8"), ("p", "?")])
DVS128_SIZE = (128, 128)  # (width, height)
DVS_GESTURE_CLASSES = (
    "hand_clapping", "right_hand_wave", "left_hand_wave", "right_arm_clockwise",
    "right_arm_counter_clockwise", "left_arm_clockwise", "left_arm_counter_clockwise",
    "arm_roll", "air_drums", "air_guitar", "other_gestures",
)  # fmt: skip
_HEADER_DT = np.dtype(
    [("type", "<i2"), ("source", "<i2"), ("size", "<i4"), ("tsoffset", "<i4"), ("tsoverflow", "<i4"),
     ("capacity", "<i4"), ("number", "<i4"), ("valid", "<i4")]
)  # fmt: skip
POLARITY_EVENT = 1


def _events(x: Any, y: Any, t: Any, p: Any) -> np.ndarray:
    ev = np.empty(len(t), dtype=EVENT_DTYPE)
    ev["x"], ev["y"], ev["t"], ev["p"] = x, y, t, p
    return ev


def read_aedat31(path: str | os.PathLike[str], keep_invalid: bool = False) -> np.ndarray:
    """Parse an AEDAT 3.1 file (DVS128 Gesture) into EVENT_DTYPE events, sorted by time.

    Layout: ASCII header lines starting with '#' (first '#!AER-DAT3.1', last '#!END-HEADER'),
    then packets: a 28-byte little-endian header (eventType i16, eventSource i16, eventSize i32,
    eventTSOffset i32, eventTSOverflow i32, eventCapacity i32, eventNumber i32, eventValid i32)
    followed by eventCapacity x eventSize bytes. Polarity events (type 1, 8 bytes): u32 data with
    bit 0 = valid, bit 1 = polarity, bits 2-16 = y, bits 17-31 = x; i32 timestamp (us), extended to
    64 bits by (eventTSOverflow << 31). Other packet types are skipped; invalid events dropped.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such file")
    data = p.read_bytes()
    if not data.startswith(b"#!AER-DAT"):
        raise ValueError(f"{p}: not an AEDAT file (missing '#!AER-DAT' header)")
    pos, version = 0, None
    while pos < len(data) and data[pos : pos + 1] == b"#":
        nl = data.find(b"\n", pos)
        if nl < 0:
            raise ValueError(f"{p}: AEDAT header is truncated")
        line = data[pos:nl].rstrip(b"\r")
        if line.startswith(b"#!AER-DAT"):
            version = line[9:].decode("ascii", "replace")
        pos = nl + 1
        if line.startswith(b"#!END-HEADER"):
            break
    if version is None or not version.startswith("3."):
        raise ValueError(f"{p}: AEDAT version {version!r} is not supported (need 3.x)")
    chunks = []
    while pos < len(data):
        if pos + 28 > len(data):
            raise ValueError(f"{p}: truncated packet header at byte {pos}")
        h = np.frombuffer(data, _HEADER_DT, 1, pos)[0]
        pos += 28
        size, cap, num = int(h["size"]), int(h["capacity"]), int(h["number"])
        if size <= 0 or cap < 0 or not 0 <= num <= cap:
            raise ValueError(
                f"{p}: corrupt packet header at byte {pos - 28} (size {size}, capacity {cap}, number {num})"
            )
        nbytes = size * cap
        if pos + nbytes > len(data):
            raise ValueError(
                f"{p}: truncated packet at byte {pos - 28}: needs {nbytes} bytes, {len(data) - pos} left"
            )
        if int(h["type"]) == POLARITY_EVENT:
            if size != 8:
                raise ValueError(f"{p}: polarity packet with event size {size} (expected 8)")
            raw = np.frombuffer(data, np.dtype([("d", "<u4"), ("ts", "<i4")]), num, pos)
            d = raw["d"]
            ok = np.ones(num, bool) if keep_invalid else (d & 1).astype(bool)
            t = (np.int64(int(h["tsoverflow"])) << np.int64(31)) + raw["ts"].astype(np.int64)
            chunks.append(_events((d >> 17) & 0x7FFF, (d >> 2) & 0x7FFF, t, (d >> 1) & 1)[ok])
        pos += nbytes
    ev = np.concatenate(chunks) if chunks else np.empty(0, EVENT_DTYPE)
    order = np.argsort(ev["t"], kind="stable")
    return ev[order]


def read_dvs_gesture_labels(path: str | os.PathLike[str]) -> list[tuple[int, int, int]]:
    """DVS128 Gesture labels CSV ('class,startTime_usec,endTime_usec') -> [(label 0-10, t0, t1)]."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such file")
    out = []
    with open(p, newline="", encoding="utf-8", errors="replace") as fh:
        for i, row in enumerate(csv.reader(fh)):
            if not row or not row[0].strip() or (i == 0 and not row[0].strip().isdigit()):
                continue
            try:
                c, t0, t1 = int(row[0]), int(row[1]), int(row[2])
            except (ValueError, IndexError):
                raise ValueError(f"{p}: line {i + 1}: expected 'class,start_us,end_us', got {row}") from None
            if not 1 <= c <= len(DVS_GESTURE_CLASSES) or t1 <= t0:
                raise ValueError(f"{p}: line {i + 1}: class {c} not in 1..11 or empty time range")
            out.append((c - 1, t0, t1))
    if not out:
        raise ValueError(f"{p}: no label rows")
    return out


def read_event_array(path: str | os.PathLike[str], key: str | None = None) -> np.ndarray:
    """Structured event arrays from .npy / .npz (fields x, y, t, p as tonic writes them)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such file")
    if p.suffix.lower() not in (".npy", ".npz"):
        raise ValueError(f"{p}: unknown extension {p.suffix!r} for an event array (use .npy or .npz)")
    try:
        obj = np.load(p, allow_pickle=False)
        if isinstance(obj, np.lib.npyio.NpzFile):
            with obj:
                if key is None:
                    if "events" in obj.files:
                        key = "events"
                    elif all(k in obj.files for k in "xytp"):
                        cols = {k: obj[k] for k in "xytp"}
                        n = len(cols["t"])
                        if any(np.shape(v) != (n,) for v in cols.values()):
                            raise ValueError(f"{p}: x, y, t, p arrays have different lengths")
                        return _checked(_events(cols["x"], cols["y"], cols["t"], cols["p"]), p)
                    elif len(obj.files) == 1:
                        key = obj.files[0]
                    else:
                        raise ValueError(f"{p}: several arrays {obj.files}; pass key=")
                arr = obj[key]
        else:
            arr = obj
    except ValueError as e:
        if str(p) in str(e):
            raise
        raise ValueError(f"{p}: unreadable event array ({e})") from None
    except Exception as e:  # noqa: BLE001 - corrupt archives raise many types
        raise ValueError(f"{p}: corrupt event file ({type(e).__name__}: {e})") from None
    if arr.dtype.names is None or not all(k in arr.dtype.names for k in "xytp"):
        raise ValueError(f"{p}: expected a structured array with fields x, y, t, p, got dtype {arr.dtype}")
    if arr.ndim != 1:
        raise ValueError(f"{p}: event array must be 1-D, got shape {arr.shape}")
    return _checked(_events(arr["x"], arr["y"], arr["t"], arr["p"]), p)


def _checked(ev: np.ndarray, p: Path) -> np.ndarray:
    if len(ev) == 0:
        raise ValueError(f"{p}: no events")
    if (ev["x"] < 0).any() or (ev["y"] < 0).any():
        raise ValueError(f"{p}: negative pixel coordinates")
    if (np.diff(ev["t"]) < 0).any():
        ev = ev[np.argsort(ev["t"], kind="stable")]
    return ev


def slice_by_time(
    events: np.ndarray, window_us: int, overlap_us: int = 0, drop_last: bool = False
) -> list[np.ndarray]:
    """Consecutive windows of `window_us` microseconds (stride window - overlap), from t_min."""
    if window_us <= 0 or not 0 <= overlap_us < window_us:
        raise ValueError(
            "slice_by_time: need window_us > 0 and 0 <= overlap_us < window_us, "
            f"got {window_us}, {overlap_us}"
        )
    if len(events) == 0:
        return []
    t = events["t"]
    t0, t1 = int(t[0]), int(t[-1])
    stride = window_us - overlap_us
    out = []
    start = t0
    while start <= t1:
        end = start + window_us
        if drop_last and end > t1 + 1:
            break
        lo, hi = np.searchsorted(t, [start, end])
        out.append(events[lo:hi])
        start += stride
    return out


def slice_by_count(
    events: np.ndarray, count: int, overlap: int = 0, drop_last: bool = True
) -> list[np.ndarray]:
    """Windows of `count` events (stride count - overlap); a shorter tail only if not drop_last."""
    if count <= 0 or not 0 <= overlap < count:
        raise ValueError(f"slice_by_count: need count > 0 and 0 <= overlap < count, got {count}, {overlap}")
    out, stride = [], count - overlap
    for s in range(0, len(events), stride):
        w = events[s : s + count]
        if len(w) < count and (drop_last or len(w) == 0):
            break
        out.append(w)
        if s + count >= len(events):
            break
    return out


def events_to_points(
    events: np.ndarray,
    sensor_size: tuple[int, int] = DVS128_SIZE,
    num_points: int | None = None,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """A window -> {'xyz' (N, 3), 'feats' (N, 4) = xyz + polarity, 'polarity' (N,)}.

    x, y are divided by (width - 1, height - 1); z = (t - t_min) / (t_max - t_min) (0 when the
    window spans no time). num_points: seeded random subset / repetition to a fixed N.
    """
    if len(events) == 0:
        raise ValueError("events_to_points: empty window")
    w, h = sensor_size
    if num_points is not None and len(events) != num_points:
        idx = np.sort(
            np.random.default_rng(seed).choice(len(events), num_points, replace=len(events) < num_points)
        )
        events = events[idx]
    t = events["t"].astype(np.float64)
    span = t.max() - t.min()
    z = (t - t.min()) / span if span > 0 else np.zeros_like(t)
    xyz = np.stack([events["x"] / max(w - 1, 1), events["y"] / max(h - 1, 1), z], 1).astype(np.float32)
    pol = events["p"].astype(np.float32)
    return {"xyz": xyz, "feats": np.concatenate([xyz, pol[:, None]], 1), "polarity": pol}


def bin_events(
    events: np.ndarray,
    T: int,
    sensor_size: tuple[int, int] = DVS128_SIZE,
    points_per_step: int | None = None,
    seed: int = 0,
) -> np.ndarray:
    """Split a window into T equal time bins for multi-step SNNs -> (T, N, 4) point features.

    Each bin is converted with `events_to_points` using the whole window's time range (so z stays
    comparable across steps) and resampled to `points_per_step` (default: window size // T).
    """
    if T < 1:
        raise ValueError(f"bin_events: T must be >= 1, got {T}")
    if len(events) == 0:
        raise ValueError("bin_events: empty window")
    n = points_per_step or max(1, len(events) // T)
    t = events["t"]
    edges = np.linspace(int(t.min()), int(t.max()) + 1, T + 1)
    full = events_to_points(events, sensor_size)["feats"]
    rng = np.random.default_rng(seed)
    steps = []
    for k in range(T):
        lo, hi = np.searchsorted(t, [edges[k], edges[k + 1]])
        if hi <= lo:  # silent bin: repeat the nearest event so shapes stay fixed
            lo, hi = min(lo, len(t) - 1), min(lo, len(t) - 1) + 1
        idx = lo + rng.choice(hi - lo, n, replace=hi - lo < n)
        steps.append(full[np.sort(idx)])
    return np.stack(steps).astype(np.float32)


class DVSGestureDataset(PointDataset):
    """DVS128 Gesture: each labelled gesture of each recording, as a spatio-temporal point cloud."""

    name = "dvs128_gesture"

    def __init__(self, items, split, transforms, seed, num_points, T, window_us):
        super().__init__(split, DVS_GESTURE_CLASSES, transforms, seed)
        self.items, self.num_points, self.T, self.window_us = items, num_points, T, window_us
        self._cache: dict[Path, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.items)

    def labels(self) -> np.ndarray:
        return np.asarray([it[1] for it in self.items], np.int64)

    def _load(self, i: int) -> dict[str, Any]:
        path, label, t0, t1 = self.items[i]
        if path not in self._cache:
            self._cache = {path: read_aedat31(path)}  # recordings come in order: keep one
        ev = self._cache[path]
        lo, hi = np.searchsorted(ev["t"], [t0, t1])
        ev = ev[lo:hi]
        if self.window_us:
            ev = slice_by_time(ev, self.window_us)[0]
        if len(ev) == 0:
            raise ValueError(f"{path}: gesture {i} ({t0}-{t1} us) holds no events")
        rng = np.random.default_rng([self.seed, self.epoch, i, 2])
        s: dict[str, Any] = {
            **events_to_points(ev, DVS128_SIZE, self.num_points, seed=int(rng.integers(1 << 31)))
        }
        s["label"] = label
        if self.T > 1:
            s["steps"] = bin_events(
                ev, self.T, DVS128_SIZE, self.num_points // self.T, seed=int(rng.integers(1 << 31))
            )
        return s


@register_dataset("dvs128_gesture")
def _build_dvs_gesture(
    split: str,
    root: Any,
    transforms: Compose,
    seed: int,
    num_points: int = 1024,
    T: int = 1,
    window_us: int | None = None,
) -> PointDataset:
    """DvsGesture/ with trials_to_{train,test}.txt, userXX_<light>.aedat and *_labels.csv."""
    if split not in ("train", "test"):
        raise ValueError(f"dvs128_gesture: split must be 'train' or 'test', got {split!r}")
    base = resolve_root(root, "DvsGesture")
    listing = base / f"trials_to_{split}.txt"
    if not listing.exists():
        raise FileNotFoundError(f"{listing}: split list not found")
    items = []
    for name in listing.read_text().split():
        aedat = base / name
        for label, t0, t1 in read_dvs_gesture_labels(base / name.replace(".aedat", "_labels.csv")):
            items.append((aedat, label, t0, t1))
    return DVSGestureDataset(items, split, transforms, seed, num_points, T, window_us)


def write_aedat31(path: str | os.PathLike[str], events: np.ndarray, packet_size: int = 4096) -> None:
    """Write EVENT_DTYPE events as AEDAT 3.1 polarity packets (for tests and conversions)."""
    from svl.utils import atomic_write

    t = events["t"].astype(np.int64)
    with atomic_write(path) as fh:
        fh.write(b"#!AER-DAT3.1\r\n#Format: RAW\r\n#Source 1: DVS128\r\n#!END-HEADER\r\n")
        for s in range(0, len(events), packet_size):
            e = events[s : s + packet_size]
            te = t[s : s + packet_size]
            ovf = int(te[0] >> 31)
            if int(te[-1] >> 31) != ovf:
                raise ValueError("write_aedat31: a packet may not cross a timestamp overflow")
            fh.write(struct.pack("<hhiiiiii", POLARITY_EVENT, 1, 8, 4, ovf, len(e), len(e), len(e)))
            d = (
                (e["x"].astype(np.uint32) << 17)
                | (e["y"].astype(np.uint32) << 2)
                | (e["p"].astype(np.uint32) << 1)
                | 1
            )
            rec = np.empty(len(e), np.dtype([("d", "<u4"), ("ts", "<i4")]))
            rec["d"], rec["ts"] = d, (te & 0x7FFFFFFF).astype(np.int32)
            fh.write(rec.tobytes())
