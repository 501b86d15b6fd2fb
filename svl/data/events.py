"""Event-camera streams as encoder input (docs/SPEC.md §8): windowing, the two encodings, datasets.

Events are numpy structured arrays with tonic's field names, ``EVENT_DTYPE`` = x int16, y int16,
t int64 (microseconds), p bool (polarity, True = ON); the file readers are in
svl/data/readers/events.py. A window becomes (a) one point cloud with x, y scaled to [0, 1] by the
sensor size and ``z = (t - t_min) / (t_max - t_min)``, polarity an extra feature
(``feats = [x, y, z, p]``), or (b) T time bins fed as consecutive timesteps (`events_to_steps`).
The datasets (`EventDataset`: DVS128 Gesture, N-MNIST; svl/data/event_sim.py: simulated
ModelNet40) give either encoding.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from svl.data.base import PointDataset, register_dataset, resolve_root
from svl.data.readers.events import (
    DVS128_SIZE,
    DVS_GESTURE_CLASSES,
    EVENT_DTYPE,
    NMNIST_SIZE,
    read_aedat31,
    read_dvs_gesture_labels,
    read_event_array,
    write_aedat31,
)
from svl.data.transforms import Compose

__all__ = [
    "DVS_GESTURE_CLASSES",
    "EVENT_DTYPE",
    "ENCODINGS",
    "EventDataset",
    "NMNIST_SIZE",
    "augment_events",
    "events_to_steps",
    "events_to_points",
    "read_aedat31",
    "read_dvs_gesture_labels",
    "read_event_array",
    "slice_by_count",
    "slice_by_time",
    "write_aedat31",
]


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


def events_to_steps(
    events: np.ndarray,
    T: int,
    sensor_size: tuple[int, int] = DVS128_SIZE,
    num_points: int | None = None,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Encoding (b): T equal time bins fed as consecutive timesteps -> one sample dict.

    The window is subsampled to `num_points` events as in `events_to_points`; each event belongs to
    the bin its timestamp falls in, and its z is the time *within* that bin, in [0, 1), so every bin
    spans the same x-y-z volume and a site's membrane carries meaning from one step to the next.
    Returns ``xyz (N, 3)`` (all bins' events, the sites every step shares), ``feats (N, 4)``,
    ``steps (T, N, 4)`` (an event's features at its own step, zeros elsewhere) and
    ``step_mask (T, N)`` (which step each event belongs to). A bin may hold no events (a silent step).
    """
    if T < 1:
        raise ValueError(f"events_to_steps: T must be >= 1, got {T}")
    if len(events) == 0:
        raise ValueError("events_to_steps: empty window")
    w, h = sensor_size
    if num_points is not None and len(events) != num_points:
        idx = np.sort(
            np.random.default_rng(seed).choice(len(events), num_points, replace=len(events) < num_points)
        )
        events = events[idx]
    t = events["t"].astype(np.float64)
    t0, span = t.min(), t.max() - t.min()
    phase = (t - t0) / span * T if span > 0 else np.zeros_like(t)
    step = np.minimum(phase.astype(np.int64), T - 1)
    z = np.clip(phase - step, 0.0, 1.0)
    xyz = np.stack([events["x"] / max(w - 1, 1), events["y"] / max(h - 1, 1), z], 1).astype(np.float32)
    pol = events["p"].astype(np.float32)
    feats = np.concatenate([xyz, pol[:, None]], 1)
    mask = step[None, :] == np.arange(T)[:, None]
    steps = np.where(mask[..., None], feats[None], 0.0).astype(np.float32)
    return {"xyz": xyz, "feats": feats, "polarity": pol, "steps": steps, "step_mask": mask}


ENCODINGS = ("cloud", "bins")


def augment_events(
    events: np.ndarray,
    sensor_size: tuple[int, int],
    rng: np.random.Generator,
    shift: int = 0,
    drop: float = 0.0,
    flip_x: bool = False,
) -> np.ndarray:
    """Event-space training augmentation: an integer pixel translation of up to `shift` (events leaving
    the sensor are dropped), a random `drop` share of events removed, a horizontal flip half the time."""
    w, h = sensor_size
    ev = events.copy()
    if flip_x and rng.random() < 0.5:
        ev["x"] = w - 1 - ev["x"]
    if shift:
        dx, dy = rng.integers(-shift, shift + 1, size=2)
        ev["x"] += dx
        ev["y"] += dy
        ev = ev[(ev["x"] >= 0) & (ev["x"] < w) & (ev["y"] >= 0) & (ev["y"] < h)]
    if drop > 0 and len(ev) > 1:
        keep = rng.random(len(ev)) >= drop
        if keep.any():
            ev = ev[keep]
    return ev if len(ev) else events


class EventDataset(PointDataset):
    """Labelled event recordings as samples the encoders eat, in one of two encodings (docs/SPEC.md §8):

    - ``encoding="cloud"`` (a): the window is one spatio-temporal cloud, z = normalised time; with
      ``T > 1`` the model repeats it over the timesteps.
    - ``encoding="bins"`` (b): T time bins fed as consecutive timesteps (`events_to_steps`); the
      I-LIF membranes carry across the bins.

    Subclasses implement ``events(i)`` (EVENT_DTYPE, time-sorted) and ``labels()``; `event_augment`
    holds `augment_events` options (training sets only; not ``augment``, which `build_dataset` keeps
    for point-cloud augmentation).
    """

    up_axis_on_disk = None  # x, y are the sensor's pixels and z is time: no up axis to read

    sensor_size: tuple[int, int] = DVS128_SIZE

    def __init__(
        self,
        split: str,
        classes: Any,
        transforms: Compose,
        seed: int,
        *,
        num_points: int = 1024,
        T: int = 1,
        encoding: str = "cloud",
        event_augment: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(split, classes, transforms, seed)
        if encoding not in ENCODINGS:
            raise ValueError(f"{self.name}: encoding must be one of {ENCODINGS}, got {encoding!r}")
        if int(T) < 1:
            raise ValueError(f"{self.name}: T must be >= 1, got {T}")
        if encoding == "bins" and int(T) < 2:
            raise ValueError(f"{self.name}: encoding 'bins' needs T >= 2 time bins, got T={T}")
        unknown = set(event_augment or {}) - {"shift", "drop", "flip_x"}
        if unknown:
            raise ValueError(
                f"{self.name}: unknown event augmentation(s) {sorted(unknown)}; use shift, drop, flip_x"
            )
        self.num_points, self.T, self.encoding = int(num_points), int(T), encoding
        self.augment = dict(event_augment or {})

    def events(self, i: int) -> np.ndarray:
        raise NotImplementedError

    def _load(self, i: int) -> dict[str, Any]:
        ev = self.events(i)
        if len(ev) == 0:
            raise ValueError(f"{self.name}/{self.split}: sample {i} holds no events")
        rng = self.sample_rng(i, 2)
        if self.augment:
            ev = augment_events(ev, self.sensor_size, rng, **self.augment)
        seed = int(rng.integers(1 << 31))
        if self.encoding == "bins":
            s: dict[str, Any] = events_to_steps(ev, self.T, self.sensor_size, self.num_points, seed=seed)
        else:
            s = events_to_points(ev, self.sensor_size, self.num_points, seed=seed)
        s["label"] = int(self.labels()[i])
        return s


class DVSGestureDataset(EventDataset):
    """DVS128 Gesture: each labelled gesture of each recording (optionally its first `window_us`)."""

    name = "dvs128_gesture"
    sensor_size = DVS128_SIZE

    def __init__(self, items, split, transforms, seed, window_us=None, **kw):
        super().__init__(split, DVS_GESTURE_CLASSES, transforms, seed, **kw)
        self.items, self.window_us = items, window_us
        self._labels = np.asarray([it[1] for it in items], np.int64)
        self._cache: dict[Path, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.items)

    def labels(self) -> np.ndarray:
        return self._labels

    def events(self, i: int) -> np.ndarray:
        path, _, t0, t1 = self.items[i]
        if path not in self._cache:
            self._cache = {path: read_aedat31(path)}  # recordings come in order: keep one
        ev = self._cache[path]
        lo, hi = np.searchsorted(ev["t"], [t0, t1])
        ev = ev[lo:hi]
        if self.window_us:
            ev = slice_by_time(ev, self.window_us)[0]
        if len(ev) == 0:
            raise ValueError(f"{path}: gesture {i} ({t0}-{t1} us) holds no events")
        return ev


@register_dataset("dvs128_gesture", takes=("num_points", "T", "encoding", "event_augment"))
def _build_dvs_gesture(
    split: str,
    root: Any,
    transforms: Compose,
    seed: int,
    num_points: int = 1024,
    T: int = 1,
    encoding: str = "cloud",
    event_augment: dict[str, Any] | None = None,
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
    return DVSGestureDataset(
        items, split, transforms, seed, window_us,
        num_points=num_points, T=T, encoding=encoding, event_augment=event_augment,
    )  # fmt: skip


class NMNISTDataset(EventDataset):
    """N-MNIST (Orchard et al. 2015): saccade recordings of MNIST digits, one file per sample."""

    name = "nmnist"
    sensor_size = NMNIST_SIZE

    def __init__(
        self, files: list[Path], labels: list[int], split: str, transforms: Compose, seed: int, **kw
    ):
        super().__init__(split, [str(d) for d in range(10)], transforms, seed, **kw)
        self.files, self._labels = files, np.asarray(labels, np.int64)
        self._cache: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.files)

    def labels(self) -> np.ndarray:
        return self._labels

    def events(self, i: int) -> np.ndarray:
        if i not in self._cache:  # ~5k events (80 kB) a digit: keep them all
            from svl.data.readers.events import read_nmnist

            self._cache[i] = read_nmnist(self.files[i])
        return self._cache[i]


def _nmnist_list(base: Path, split: str, listing: str | None) -> tuple[list[Path], list[int]]:
    """Files and labels from a '#sample #class' list (the slayerPytorch layout: <sample>.bs2|.bin)."""
    if listing is None:
        found = sorted(base.glob(f"{split}*.txt"))
        if len(found) != 1:
            raise FileNotFoundError(
                f"{base}: expected one '{split}*.txt' list of '#sample #class' lines, found "
                f"{[f.name for f in found] or 'none'}; pass {split}_list=NAME"
            )
        path = found[0]
    else:
        path = base / listing
        if not path.is_file():
            raise FileNotFoundError(f"{path}: split list not found")
    files, labels = [], []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        parts = line.split()
        if not parts or parts[0].startswith("#"):
            continue
        try:
            sample, label = parts[0], int(parts[1])
        except (IndexError, ValueError):
            raise ValueError(f"{path}: line {n}: expected '<sample> <class>', got {line!r}") from None
        if not 0 <= label <= 9:
            raise ValueError(f"{path}: line {n}: class {label} is not a digit 0-9")
        f = next(
            (base / f"{sample}{ext}" for ext in (".bs2", ".bin") if (base / f"{sample}{ext}").is_file()), None
        )
        if f is None:
            raise FileNotFoundError(f"{path}: line {n}: no {sample}.bs2 or {sample}.bin in {base}")
        files.append(f)
        labels.append(label)
    if not files:
        raise ValueError(f"{path}: no samples listed")
    return files, labels


@register_dataset("nmnist", takes=("num_points", "T", "encoding", "event_augment"))
def _build_nmnist(
    split: str,
    root: Any,
    transforms: Compose,
    seed: int,
    num_points: int = 1024,
    T: int = 1,
    encoding: str = "cloud",
    event_augment: dict[str, Any] | None = None,
    train_list: str | None = None,
    test_list: str | None = None,
) -> PointDataset:
    """N-MNIST: the official layout (Train|Test/<digit>/*.bin) or a folder of <sample>.bs2|.bin files
    with '#sample #class' lists (train*.txt / test*.txt; the default root events/nmnist_small)."""
    if split not in ("train", "test"):
        raise ValueError(f"nmnist: split must be 'train' or 'test', got {split!r}")
    base = resolve_root(root, "events/nmnist_small" if root is None else "")
    official = base / split.capitalize()
    if official.is_dir():
        files, labels = [], []
        for d in range(10):
            got = sorted((official / str(d)).glob("*.bin"))
            files += got
            labels += [d] * len(got)
        if not files:
            raise FileNotFoundError(f"{official}: no <digit>/*.bin recordings")
    else:
        files, labels = _nmnist_list(base, split, train_list if split == "train" else test_list)
    return NMNISTDataset(
        files, labels, split, transforms, seed,
        num_points=num_points, T=T, encoding=encoding, event_augment=event_augment,
    )  # fmt: skip
