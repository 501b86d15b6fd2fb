"""Event-camera files -> numpy event arrays: every event *file* reader, format detection, tonic interop.

(Over 600 lines because it holds six binary formats side by side behind one `read_events`; each
reader is short, and splitting them would scatter the shared header and validation helpers.)

Events are structured arrays of ``EVENT_DTYPE`` (x int16, y int16, t int64 microseconds, p bool with
True = ON): tonic's field names, so tonic transforms run on them directly. `read_events` reads any
supported file into an `EventFile` (events + sensor size + format); the windowing and datasets built
on top live in svl/data/events.py, which imports these names back (this module must not import it).

Formats (``format=`` / ``--format``):

- ``nmnist``: N-MNIST / N-Caltech101 binary (.bin, .bs2), 5 bytes an event; sensor 34 x 34.
- ``aedat``: AEDAT 3.1 polarity packets (DVS128 Gesture); sensor from the header's source (DVS128).
- ``aedat4``: AEDAT 4 (DV software) through the optional ``aedat`` package; sensor from the header.
- ``prophesee``: Prophesee .dat and .raw (EVT 2.0 / 3.0) through the optional ``expelliarmus``.
- ``npy`` / ``npz``: structured arrays with fields x, y, t, p (as tonic saves them).

``.bin`` is also the KITTI LiDAR format; `sniff_bin` tells the two apart by content. Every problem is
a ValueError naming the file (an ImportError naming the package for a missing optional reader).
"""

from __future__ import annotations

import csv
import importlib
import os
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from svl.data.readers._sniff import NMNIST_OVERFLOW_Y, nmnist_timestamps, sniff_bin
from svl.utils import atomic_write

__all__ = [
    "DVS128_SIZE",
    "DVS_GESTURE_CLASSES",
    "EVENT_DTYPE",
    "EVENT_FORMATS",
    "NMNIST_SIZE",
    "TONIC_DTYPE",
    "EventFile",
    "UnsortedEventsWarning",
    "detect_event_format",
    "from_tonic",
    "is_event_array",
    "read_aedat31",
    "read_aedat4",
    "read_dvs_gesture_labels",
    "read_event_array",
    "read_events",
    "read_nmnist",
    "read_prophesee",
    "sniff_bin",
    "to_tonic",
    "write_aedat31",
    "write_nmnist",
]

EVENT_DTYPE = np.dtype([("x", "<i2"), ("y", "<i2"), ("t", "<i8"), ("p", "?")])
TONIC_DTYPE = np.dtype([("x", "<i8"), ("y", "<i8"), ("t", "<i8"), ("p", "<i8")])  # tonic's NMNIST dtype
DVS128_SIZE = (128, 128)  # (width, height)
NMNIST_SIZE = (34, 34)  # ATIS crop, (width, height)
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
EVENT_FORMATS = ("nmnist", "aedat", "aedat4", "prophesee", "npy", "npz")
# AEDAT 3.1 '#Source N: NAME' -> (width, height); matched as a prefix of the upper-cased name
_AEDAT_SENSORS = {
    "DVS128": (128, 128), "DAVIS240": (240, 180), "DAVIS346": (346, 260), "DVXPLORER": (640, 480),
}  # fmt: skip
_INT16_MAX = np.iinfo(np.int16).max


class UnsortedEventsWarning(UserWarning):
    """A file's events were not in time order; they were sorted (stable) on reading."""


@dataclass(frozen=True)
class EventFile:
    """What `read_events` found: time-sorted events, the sensor (width, height), the format, the file.

    sensor_size_from: "format" (the format's fixed sensor), "header", "argument" or "data"
    (max + 1 of x and y, when nothing else says).
    """

    events: np.ndarray
    sensor_size: tuple[int, int]
    format: str
    path: Path
    sensor_size_from: str = "format"

    @property
    def tonic_sensor_size(self) -> tuple[int, int, int]:
        """(width, height, 2): the sensor_size tonic transforms take."""
        return (int(self.sensor_size[0]), int(self.sensor_size[1]), 2)


# ----------------------------------------------------------------------------- building and checking
def _events(x: Any, y: Any, t: Any, p: Any) -> np.ndarray:
    ev = np.empty(len(t), dtype=EVENT_DTYPE)
    ev["x"], ev["y"], ev["t"], ev["p"] = x, y, t, p
    return ev


def _polarity(p: Any, where: object) -> np.ndarray:
    """bool, {0, 1} or {-1, 1} -> bool (True = ON); anything else is an unknown encoding."""
    p = np.asarray(p)
    if p.dtype == np.bool_:
        return p
    if p.dtype.kind not in "iuf":
        raise ValueError(f"{where}: polarity has dtype {p.dtype}; expected bool, {{0, 1}} or {{-1, 1}}")
    values = set(np.unique(p).tolist())
    if values <= {0, 1} or values <= {-1, 1}:
        return p == 1
    shown = sorted(values)[:8]
    raise ValueError(
        f"{where}: unknown polarity encoding: values {shown}{' ...' if len(values) > 8 else ''} "
        "(expected bool, {0, 1} or {-1, 1})"
    )


def _integers(v: Any, name: str, where: object) -> np.ndarray:
    """A coordinate or timestamp column as int64; floats only when they hold whole numbers."""
    v = np.asarray(v)
    if v.dtype.kind == "f":
        if not np.isfinite(v).all():
            raise ValueError(f"{where}: {name} holds NaN or inf")
        if (v != np.round(v)).any():
            raise ValueError(f"{where}: {name} holds non-integer values (e.g. {v[v != np.round(v)][0]!r})")
        if len(v) and np.abs(v).max() >= 2.0**63:
            raise ValueError(f"{where}: {name} values too large for int64")
    elif v.dtype.kind == "u":
        if len(v) and int(v.max()) > np.iinfo(np.int64).max:
            raise ValueError(f"{where}: {name} values too large for int64")
    elif v.dtype.kind not in "ib":
        raise ValueError(f"{where}: {name} has dtype {v.dtype}; expected integers")
    return v.astype(np.int64)


def _assemble(x: Any, y: Any, t: Any, p: Any, where: object) -> np.ndarray:
    """EVENT_DTYPE events from foreign columns (other int widths, float, int polarity), range-checked."""
    n = len(np.asarray(t))
    if any(len(np.asarray(v)) != n for v in (x, y, p)):
        raise ValueError(f"{where}: x, y, t, p columns have different lengths")
    xi, yi, ti = _integers(x, "x", where), _integers(y, "y", where), _integers(t, "t", where)
    for name, v in (("x", xi), ("y", yi)):
        if len(v) and v.max() > _INT16_MAX:
            raise ValueError(f"{where}: {name} coordinates up to {int(v.max())} do not fit int16")
    return _events(xi, yi, ti, _polarity(p, where))


def _checked(
    ev: np.ndarray, p: object, sensor_size: tuple[int, int] | None = None, allow_empty: bool = False
) -> np.ndarray:
    """Refuse empty or off-sensor events; sort out-of-order timestamps, with a warning naming `p`."""
    if len(ev) == 0:
        if allow_empty:
            return ev
        raise ValueError(f"{p}: no events")
    x, y = ev["x"], ev["y"]
    xr, yr = (int(x.min()), int(x.max())), (int(y.min()), int(y.max()))
    if xr[0] < 0 or yr[0] < 0:
        raise ValueError(
            f"{p}: negative pixel coordinates (x in [{xr[0]}, {xr[1]}], y in [{yr[0]}, {yr[1]}])"
        )
    if sensor_size is not None:
        w, h = int(sensor_size[0]), int(sensor_size[1])
        if xr[1] >= w or yr[1] >= h:
            raise ValueError(
                f"{p}: events outside the {w}x{h} sensor: x in [{xr[0]}, {xr[1]}], y in [{yr[0]}, {yr[1]}] "
                f"(valid x 0..{w - 1}, y 0..{h - 1}); state the sensor's size: --sensor-size W H on the "
                "command line, sensor_size=(W, H) in the API"
            )
    back = int((np.diff(ev["t"]) < 0).sum())
    if back:
        warnings.warn(
            f"{p}: {back} of {len(ev) - 1} timestamps go backwards; events sorted by time",
            UnsortedEventsWarning,
            stacklevel=3,
        )
        ev = ev[np.argsort(ev["t"], kind="stable")]
    return ev


def _need_file(path: str | os.PathLike[str]) -> Path:
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file")
    if p.is_dir():
        raise ValueError(f"{p}: is a directory, expected an event file")
    return p


def _require(module: str, what: str) -> ModuleType:
    """Import an optional reader's package, or say which package to install."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ModuleNotFoundError(
            f"reading {what} files needs the '{module}' package: pip install {module} "
            "(or pip install 'svl[events]')",
            name=module,
        ) from None


# ----------------------------------------------------------------------------- N-MNIST
def read_nmnist(path: str | os.PathLike[str]) -> np.ndarray:
    """N-MNIST / N-Caltech101 binary (.bin, .bs2) -> EVENT_DTYPE events, time-sorted.

    5 bytes an event: x, y, then polarity (top bit) and a 23-bit timestamp in us, big-endian.
    Events with y == 240 are the authors' timestamp-overflow markers: dropped, each adding 2**13 us
    to what follows, as their reader (and tonic's) does. The sensor is not checked here (N-Caltech101
    is 240 x 180); `read_events` checks N-MNIST's 34 x 34.
    """
    p = _need_file(path)
    data = p.read_bytes()
    if not data:
        raise ValueError(f"{p}: empty file (0 bytes): no N-MNIST events")
    if len(data) % 5:
        raise ValueError(
            f"{p}: truncated N-MNIST file: {len(data)} bytes is not a multiple of the 5-byte event record "
            f"({len(data) % 5} bytes left over)"
        )
    rec = np.frombuffer(data, np.uint8).reshape(-1, 5)
    t = nmnist_timestamps(rec)
    keep = rec[:, 1] != NMNIST_OVERFLOW_Y
    ev = _events(rec[keep, 0], rec[keep, 1], t[keep], rec[keep, 2] >> 7)
    return _checked(ev, p)


def write_nmnist(path: str | os.PathLike[str], events: np.ndarray) -> None:
    """Write events in the N-MNIST layout (x, y < 256 but not y == 240, t < 2**23 us); for tests and
    conversions."""

    x, y, t = (np.asarray(events[k]).astype(np.int64) for k in "xyt")
    xy = np.concatenate([x, y])
    if len(t) and (xy.min() < 0 or xy.max() > 255 or (y == NMNIST_OVERFLOW_Y).any()):
        raise ValueError(f"write_nmnist: {path}: x and y must be 0..255 (y != 240) for the 5-byte layout")
    if len(t) and (t.min() < 0 or t.max() >= 1 << 23):
        raise ValueError(f"write_nmnist: {path}: timestamps must be 0..2**23-1 us, got {t.min()}..{t.max()}")
    rec = np.empty((len(t), 5), np.uint8)
    rec[:, 0], rec[:, 1] = x, y
    rec[:, 2] = (_polarity(events["p"], path).astype(np.int64) << 7) | (t >> 16)
    rec[:, 3], rec[:, 4] = (t >> 8) & 0xFF, t & 0xFF
    with atomic_write(path) as fh:
        fh.write(rec.tobytes())


# ----------------------------------------------------------------------------- AEDAT 3.1
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


def write_aedat31(path: str | os.PathLike[str], events: np.ndarray, packet_size: int = 4096) -> None:
    """Write EVENT_DTYPE events as AEDAT 3.1 polarity packets (for tests and conversions)."""

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


def _aedat31_sensor(p: Path) -> tuple[int, int] | None:
    """The sensor named by an AEDAT 3.1 header's '#Source N: NAME' line, when svl knows it."""
    with open(p, "rb") as fh:
        head = fh.read(1 << 16)
    for line in head.split(b"\n"):
        if not line.startswith(b"#"):
            break
        if line.startswith(b"#Source"):
            name = line.partition(b":")[2].strip().decode("ascii", "replace").upper()
            for key, size in _AEDAT_SENSORS.items():
                if name.startswith(key):
                    return size
    return None


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


# ----------------------------------------------------------------------------- AEDAT 4, Prophesee
def read_aedat4(path: str | os.PathLike[str]) -> tuple[np.ndarray, tuple[int, int] | None]:
    """AEDAT 4 (DV software) -> (events of the first event stream, (width, height) from its header).

    Needs the optional ``aedat`` package (imported here, not at svl import time).
    """
    p = _need_file(path)
    aedat = _require("aedat", "AEDAT4")
    try:
        decoder = aedat.Decoder(str(p))
        streams = decoder.id_to_stream()
        ids = [i for i, s in streams.items() if s.get("type") == "events"]
        if not ids:
            kinds = sorted({str(s.get("type")) for s in streams.values()})
            raise ValueError(f"{p}: AEDAT4 file has no event stream (streams: {kinds or 'none'})")
        sid = ids[0]
        size = (int(streams[sid]["width"]), int(streams[sid]["height"]))
        chunks = [pk["events"] for pk in decoder if pk.get("stream_id") == sid and "events" in pk]
    except ValueError as e:
        if str(p) in str(e):
            raise
        raise ValueError(f"{p}: corrupt AEDAT4 file ({e})") from None
    except Exception as e:  # noqa: BLE001 - the decoder raises many types on bad bytes
        raise ValueError(f"{p}: corrupt AEDAT4 file ({type(e).__name__}: {e})") from None
    if not chunks:
        raise ValueError(f"{p}: no events")
    raw = np.concatenate(chunks)
    return _checked(_assemble(raw["x"], raw["y"], raw["t"], raw["on"], p), p), size


def _percent_header(p: Path) -> dict[str, str]:
    """Prophesee '% key value' header lines -> {key (lower case): value}."""
    out: dict[str, str] = {}
    with open(p, "rb") as fh:
        head = fh.read(1 << 16)
    pos = 0
    while head[pos : pos + 1] == b"%":
        nl = head.find(b"\n", pos)
        if nl < 0:
            break
        key, _, value = head[pos + 1 : nl].decode("ascii", "replace").strip().partition(" ")
        if key.lower() == "end":
            break
        out.setdefault(key.lower(), value.strip())
        pos = nl + 1
    return out


def _prophesee_encoding(p: Path, header: dict[str, str]) -> str:
    evt, fmt = header.get("evt", ""), header.get("format", "").split(";")[0].strip().upper()
    if evt.startswith("3") or fmt == "EVT3":
        return "EVT3"
    if evt.startswith("2.0") or evt == "2" or fmt == "EVT2":
        return "EVT2"
    if evt or fmt:
        raise ValueError(f"{p}: Prophesee encoding {evt or fmt!r} is not supported (EVT 2.0, EVT 3.0, DAT)")
    if p.suffix.lower() == ".dat":
        return "DAT"
    raise ValueError(f"{p}: no '% evt' or '% format' header line says which RAW encoding this is")


def _prophesee_sensor(header: dict[str, str]) -> tuple[int, int] | None:
    try:
        if "width" in header and "height" in header:
            return int(header["width"]), int(header["height"])
        if "geometry" in header:
            w, _, h = header["geometry"].lower().partition("x")
            return int(w), int(h)
        fields = dict(f.split("=", 1) for f in header.get("format", "").split(";") if "=" in f)
        if "width" in fields and "height" in fields:
            return int(fields["width"]), int(fields["height"])
    except ValueError:
        return None
    return None


def read_prophesee(path: str | os.PathLike[str]) -> tuple[np.ndarray, tuple[int, int] | None]:
    """Prophesee .dat / .raw (EVT 2.0, EVT 3.0) -> (events, (width, height) from the header or None).

    Needs the optional ``expelliarmus`` package (imported here, not at svl import time).
    """
    p = _need_file(path)
    if p.stat().st_size == 0:
        raise ValueError(f"{p}: empty file (0 bytes)")
    header = _percent_header(p)
    encoding = _prophesee_encoding(p, header)
    wizard = _require("expelliarmus", "Prophesee").Wizard
    try:
        arr = wizard(encoding=encoding).read(p)
    except Exception as e:  # noqa: BLE001 - the C decoder reports bad bytes in many ways
        raise ValueError(f"{p}: corrupt Prophesee {encoding} file ({type(e).__name__}: {e})") from None
    if arr is None:
        raise ValueError(f"{p}: expelliarmus could not decode it as Prophesee {encoding}")
    ev = _assemble(arr["x"], arr["y"], arr["t"], arr["p"], p)
    return _checked(ev, p), _prophesee_sensor(header)


# ----------------------------------------------------------------------------- numpy arrays
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
                        return _checked(_assemble(cols["x"], cols["y"], cols["t"], cols["p"], p), p)
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
    return _checked(_assemble(arr["x"], arr["y"], arr["t"], arr["p"], p), p)


def _npz_sensor(p: Path) -> tuple[int, int] | None:
    """An optional 'sensor_size' array (width, height[, 2]) saved beside the events."""
    try:
        with np.load(p, allow_pickle=False) as z:
            if "sensor_size" in z.files:
                s = np.asarray(z["sensor_size"]).ravel()
                return int(s[0]), int(s[1])
    except Exception:  # noqa: BLE001 - read_event_array has already reported a bad archive
        return None
    return None


def is_event_array(path: str | os.PathLike[str]) -> bool | None:
    """Does a .npy/.npz hold x, y, t, p events (True), something else (False), or is it unreadable
    (None)? Lets callers route numpy files to the event or the point-cloud reader without loading them."""
    try:
        obj = np.load(path, mmap_mode="r", allow_pickle=False)
        if isinstance(obj, np.lib.npyio.NpzFile):
            with obj:
                return "events" in obj.files or all(k in obj.files for k in "xytp")
        return obj.dtype.names is not None and all(k in obj.dtype.names for k in "xytp")
    except Exception:  # noqa: BLE001 - a corrupt file is reported by whichever reader gets it
        return None


# ----------------------------------------------------------------------------- detection, read_events
def detect_event_format(path: str | os.PathLike[str]) -> str | None:
    """The event format of a file by extension and content, or None when it is not an event file
    (a KITTI .bin, a point-cloud .npy, a .ply ...). Raises ValueError for a .bin that fits nothing."""
    p = Path(path)
    ext = p.suffix.lower()
    if ext == ".bs2":
        return "nmnist"
    if ext == ".bin":
        return "nmnist" if sniff_bin(p) == "nmnist" else None
    if ext in (".npy", ".npz"):
        return ext[1:] if is_event_array(p) else None
    if ext in (".dat", ".raw"):
        return "prophesee"
    try:
        with open(p, "rb") as fh:
            head = fh.read(16)
    except OSError:
        return None
    if head.startswith(b"#!AER-DAT4"):
        return "aedat4"
    if head.startswith(b"#!AER-DAT"):
        return "aedat"
    if ext == ".aedat4":
        return "aedat4"  # let the reader say what is wrong with it
    if ext == ".aedat":
        return "aedat"
    return None


def _read_format(p: Path, fmt: str) -> tuple[np.ndarray, tuple[int, int] | None, str]:
    """(events, sensor size or None, where the size came from) for one format."""
    if fmt == "nmnist":
        return read_nmnist(p), NMNIST_SIZE, "format"
    if fmt == "aedat":
        return read_aedat31(p), _aedat31_sensor(p), "header"
    if fmt == "aedat4":
        ev, size = read_aedat4(p)
        return ev, size, "header"
    if fmt == "prophesee":
        ev, size = read_prophesee(p)
        return ev, size, "header"
    ev = read_event_array(p)
    return ev, _npz_sensor(p) if p.suffix.lower() == ".npz" else None, "header"


def read_events(
    path: str | os.PathLike[str], format: str | None = None, *, sensor_size: tuple[int, int] | None = None
) -> EventFile:
    """Read an event file of any supported format (module docstring) into an `EventFile`.

    format: one of EVENT_FORMATS, or None / "auto" to decide by extension and content (.bin by
        `sniff_bin`). A forced format that does not fit raises a ValueError naming it and why.
    sensor_size: (width, height) overriding the format's or header's (e.g. N-Caltech101's 240 x 180
        in the N-MNIST layout). Without either, max + 1 of x and y.
    Events outside a known sensor raise ValueError; out-of-order timestamps are sorted with an
    `UnsortedEventsWarning`.
    """
    p = _need_file(path)
    forced = format is not None and format.lower() != "auto"
    if forced:
        fmt: str | None = str(format).lower()
        if fmt not in EVENT_FORMATS:
            raise ValueError(f"{p}: unknown event format {format!r}; known: {', '.join(EVENT_FORMATS)}")
    else:
        fmt = detect_event_format(p)
        if fmt is None and p.suffix.lower() in (".npy", ".npz") and is_event_array(p) is None:
            fmt = p.suffix.lower()[1:]  # unreadable: let the array reader say why
        if fmt is None:
            ext = p.suffix.lower()
            what = "a KITTI LiDAR scan" if ext == ".bin" else f"a {p.suffix or 'extension-less'} file"
            raise ValueError(
                f"{p}: not an event file ({what}); event formats: {', '.join(EVENT_FORMATS)} "
                "(point clouds: svl.data.load_points)"
            )
    try:
        events, size, source = _read_format(p, fmt)
        if len(events) == 0:
            raise ValueError(f"{p}: no events")
        if sensor_size is not None:
            size, source = (int(sensor_size[0]), int(sensor_size[1])), "argument"
        if size is None:
            size, source = (int(events["x"].max()) + 1, int(events["y"].max()) + 1), "data"
        events = _checked(events, p, size)
    except ValueError as e:
        if not forced:
            raise
        msg = str(e).removeprefix(f"{p}: ")
        raise ValueError(f"{p}: format {fmt!r} (forced) does not fit: {msg}") from None
    return EventFile(events, (int(size[0]), int(size[1])), fmt, p, source)


# ----------------------------------------------------------------------------- tonic
def to_tonic(events: np.ndarray, dtype: np.dtype | None = None) -> np.ndarray:
    """svl events -> a copy in tonic's layout (default TONIC_DTYPE: int64 x, y, t, p with p 0/1).

    svl's own arrays already run through most tonic transforms; this is for code that does
    arithmetic on p or expects tonic's dataset dtype.
    """
    dt = np.dtype(TONIC_DTYPE if dtype is None else dtype)
    if events.dtype.names is None or not all(k in events.dtype.names for k in "xytp"):
        raise ValueError(f"to_tonic: expected fields x, y, t, p, got dtype {events.dtype}")
    out = np.empty(len(events), dt)
    for k in "xytp":
        out[k] = events[k]
    return out


def from_tonic(
    arr: np.ndarray, name: str = "tonic array", sensor_size: tuple[int, ...] | None = None
) -> np.ndarray:
    """A structured array with fields x, y, t, p (tonic's output: any int widths, p bool / {0, 1} /
    {-1, 1}) -> EVENT_DTYPE, time-sorted. sensor_size ((w, h) or tonic's (w, h, 2)) adds a bounds
    check; `name` is what errors call the array. An empty array stays empty."""
    arr = np.asarray(arr)
    if arr.dtype.names is None or not all(k in arr.dtype.names for k in "xytp"):
        raise ValueError(f"{name}: expected a structured array with fields x, y, t, p, got dtype {arr.dtype}")
    if arr.ndim != 1:
        raise ValueError(f"{name}: event array must be 1-D, got shape {arr.shape}")
    ev = _assemble(arr["x"], arr["y"], arr["t"], arr["p"], name)
    size = None if sensor_size is None else (int(sensor_size[0]), int(sensor_size[1]))
    return _checked(ev, name, size, allow_empty=True)
