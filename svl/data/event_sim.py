"""An ESIM-style event-camera simulator and `modelnet40_dvs`: ModelNet40 shapes seen by a simulated DVS.

Why: real event data for 3D shapes is scarce; rendering a real ModelNet40 cloud under a smooth motion
and running an event simulator over the frames gives a labelled event dataset with the official split,
so the event encoders can be trained and compared on the same 40 classes as the point-cloud ones.

- `simulate_events` (ESIM, Rebecq et al. 2018; v2e, Hu et al. 2021): per-pixel reference log
  intensity, linear interpolation between frames, one event per threshold crossing at the
  interpolated time, per-pixel threshold mismatch, a refractory period and background-activity noise.
- `render_frames`: a small numpy renderer of a point cloud into grey frames (z-buffered splats,
  Lambert shading from screen-space normals of the depth map, 2x supersampling) along a motion from
  `sample_motion` (a yaw sweep about the gravity axis, an elevation wobble, a slight drift).
- `modelnet40_dvs`: every shape of a split simulated once, deterministically from `sim_seed`, and
  cached as one .npz per split and settings under ``svl.utils.cache_dir("modelnet40_dvs")``.

Only numpy at import time, so `import svl.data` stays cheap.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from svl.data.base import PointDataset, register_dataset
from svl.data.events import EVENT_DTYPE, EventDataset
from svl.data.modelnet import modelnet40_arrays
from svl.data.transforms import Compose
from svl.utils import cached_arrays, get_logger, progress
from svl.vocab import load_class_names

__all__ = [
    "SIM_VERSION",
    "Motion",
    "ModelNet40DVS",
    "RenderConfig",
    "SimConfig",
    "log_intensity",
    "project_points",
    "render_frames",
    "sample_motion",
    "simulate_events",
    "simulate_shape",
    "simulate_split",
]

SIM_VERSION = 1  # bump when the simulator or renderer changes what they output: old caches then miss


# ----------------------------------------------------------------------------- the event simulator
@dataclass(frozen=True)
class SimConfig:
    """Sensor model of `simulate_events` (log-intensity units; defaults near a DVS128 / DAVIS346)."""

    c_pos: float = 0.2  # ON contrast threshold (nominal)
    c_neg: float = 0.2  # OFF contrast threshold (nominal)
    sigma: float = 0.03  # std of the per-pixel threshold mismatch, drawn once per recording
    c_min: float = 0.01  # thresholds are clipped to at least this
    refractory_us: int = 1000  # a pixel that fired cannot fire again for this long
    noise_rate_hz: float = 0.1  # background activity per pixel (ON + OFF together), Poisson
    eps: float = 1e-3  # log(I + eps) of intensities in [0, 1]

    def __post_init__(self) -> None:
        if self.c_pos <= 0 or self.c_neg <= 0 or self.c_min <= 0:
            raise ValueError(
                f"SimConfig: thresholds must be > 0, got {self.c_pos}, {self.c_neg}, {self.c_min}"
            )
        if self.sigma < 0 or self.refractory_us < 0 or self.noise_rate_hz < 0 or self.eps <= 0:
            raise ValueError(
                f"SimConfig: sigma, refractory_us, noise_rate_hz must be >= 0 and eps > 0: {self}"
            )

    @classmethod
    def from_dict(cls, overrides: dict[str, Any] | None) -> SimConfig:
        """Defaults updated by `overrides`, with a clear error on an unknown key (a typo in a config)."""
        return _from_dict(cls, overrides)


def _from_dict(cls: Any, overrides: dict[str, Any] | None) -> Any:
    known = {f.name: f for f in fields(cls)}
    unknown = set(overrides or {}) - set(known)
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown option(s) {sorted(unknown)}; known: {sorted(known)}")
    kw = {}
    for k, v in (overrides or {}).items():
        default = getattr(cls, k)
        kw[k] = tuple(float(x) for x in v) if isinstance(default, tuple) else type(default)(v)
    return cls(**kw)


def log_intensity(frames: np.ndarray, eps: float = SimConfig.eps) -> np.ndarray:
    """log(I + eps) of frames in [0, 1]: what a DVS pixel's photoreceptor responds to."""
    return np.log(np.clip(np.asarray(frames, np.float64), 0.0, None) + eps)


def simulate_events(
    log_frames: np.ndarray,
    timestamps_us: np.ndarray,
    cfg: SimConfig | None = None,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Events of a DVS watching `log_frames` (F, H, W) taken at `timestamps_us` (F,) -> EVENT_DTYPE, by t.

    ESIM: each pixel keeps a reference log intensity L_ref (the first frame at start). Between two
    frames the log intensity moves linearly in time; every crossing of L_ref + C+ (ON) or L_ref - C-
    (OFF) emits an event at the interpolated crossing time (rounded to the microsecond), and L_ref
    moves by that threshold, so a change of k thresholds gives k events. C+ and C- of each pixel are
    the nominal values plus Gaussian mismatch (`sigma`), drawn once per call (one recording), clipped
    to `c_min`.

    Refractory period: an event less than `refractory_us` after the pixel's last *emitted* event is
    dropped, but L_ref still moves as if it had fired (as ESIM's reference update does), so a pixel
    resumes from the current brightness rather than replaying the missed changes as a burst.

    Background activity: Poisson events at `noise_rate_hz` per pixel (ON or OFF with equal odds) at
    uniform times in [t_0, t_last); they do not touch L_ref and ignore the refractory period.
    x is the column, y the row; ties in time keep pixel order (row-major), so output is deterministic.
    """
    cfg = cfg or SimConfig()
    rng = rng if rng is not None else np.random.default_rng(0)
    L = np.asarray(log_frames, np.float64)
    ts = np.asarray(timestamps_us, np.int64)
    if L.ndim != 3 or L.shape[0] < 1 or L.shape[1] < 1 or L.shape[2] < 1:
        raise ValueError(f"simulate_events: log_frames must be (F, H, W), got {L.shape}")
    if ts.shape != (L.shape[0],):
        raise ValueError(f"simulate_events: {len(ts)} timestamps for {L.shape[0]} frames")
    if (np.diff(ts) <= 0).any():
        raise ValueError("simulate_events: timestamps_us must be strictly increasing")
    if not np.isfinite(L).all():
        raise ValueError("simulate_events: log_frames contain NaN or inf")
    F, H, W = L.shape
    P = H * W
    L = L.reshape(F, P)
    c_on = np.maximum(cfg.c_pos + cfg.sigma * rng.standard_normal(P), cfg.c_min)
    c_off = np.maximum(cfg.c_neg + cfg.sigma * rng.standard_normal(P), cfg.c_min)
    ref = L[0].copy()
    last = np.full(P, np.iinfo(np.int64).min // 2, np.int64)  # time of each pixel's last emitted event
    R = int(cfg.refractory_us)
    pix_out, t_out, p_out = [], [], []
    for k in range(F - 1):
        L0, L1 = L[k], L[k + 1]
        n_on = np.floor((L1 - ref) / c_on)
        n_off = np.floor((ref - L1) / c_off)
        n = np.maximum(n_on, 0) + np.maximum(n_off, 0)
        act = np.flatnonzero(n > 0)
        if len(act) == 0:
            continue
        na = n[act].astype(np.int64)
        on = n_on[act] > 0
        step = np.where(on, c_on[act], -c_off[act])  # signed log change per event
        slope = L1[act] - L0[act]
        with np.errstate(divide="ignore", invalid="ignore"):
            inv = np.where(slope != 0, 1.0 / slope, 0.0)
        pix = np.repeat(act, na)
        start = np.cumsum(na) - na  # first event of each active pixel in the flat list
        j = np.arange(int(na.sum())) - np.repeat(start, na) + 1  # 1..n within a pixel
        level = np.repeat(ref[act], na) + j * np.repeat(step, na)
        frac = np.clip((level - np.repeat(L0[act], na)) * np.repeat(inv, na), 0.0, 1.0)
        frac[np.repeat(slope == 0, na)] = 1.0  # rounding left L0 on a level: fire at the frame
        t = np.rint(ts[k] + frac * float(ts[k + 1] - ts[k])).astype(np.int64)
        ref[act] += na * step  # ESIM: the reference moves by every crossing, emitted or not
        if R > 0:
            keep = np.zeros(len(t), bool)
            for jj in range(int(na.max())):  # a pixel's events in order: a short loop over ranks
                has = na > jj
                pos = start[has] + jj
                pp = act[has]
                ok = t[pos] - last[pp] >= R
                keep[pos[ok]] = True
                last[pp[ok]] = t[pos[ok]]
            pix, t, pol = pix[keep], t[keep], np.repeat(on, na)[keep]
        else:
            pol = np.repeat(on, na)
            last[act] = t[start + na - 1]
        pix_out.append(pix)
        t_out.append(t)
        p_out.append(pol)
    if cfg.noise_rate_hz > 0 and ts[-1] > ts[0]:
        n_noise = int(rng.poisson(cfg.noise_rate_hz * P * (ts[-1] - ts[0]) * 1e-6))
        pix_out.append(rng.integers(0, P, n_noise))
        t_out.append(rng.integers(ts[0], ts[-1], n_noise))
        p_out.append(rng.random(n_noise) < 0.5)
    if not t_out:
        return np.empty(0, EVENT_DTYPE)
    pix, t, pol = np.concatenate(pix_out), np.concatenate(t_out), np.concatenate(p_out)
    order = np.lexsort((pix, t))
    ev = np.empty(len(t), EVENT_DTYPE)
    ev["x"], ev["y"], ev["t"], ev["p"] = pix[order] % W, pix[order] // W, t[order], pol[order]
    return ev


# ----------------------------------------------------------------------------- motion and rendering
@dataclass(frozen=True)
class RenderConfig:
    """How a shape is shown to the simulated sensor: its motion (ranges drawn per shape) and shading."""

    yaw_sweep_deg: tuple[float, float] = (30.0, 60.0)  # rotation about z over the recording (either sign)
    elevation_deg: tuple[float, float] = (10.0, 30.0)  # camera elevation, drawn per shape
    wobble_deg: float = 4.0  # amplitude of a sinusoidal elevation wobble (one period, random phase)
    drift: float = 0.06  # straight drift in the image plane, in object radii, random direction
    margin: float = 0.85  # the unit sphere spans this share of the frame
    background: float = 0.1  # grey level behind the object
    ambient: float = 0.25  # shade = ambient + (1 - ambient) * max(0, n . light)
    supersample: int = 2  # render at this many times the sensor size, then box-average (anti-aliasing)
    splat_radius: float = 1.5  # point splat radius in sensor pixels (for 1024 points; scales 1/sqrt(N))
    smooth: float = 1.5  # sigma (sensor pixels) smoothing depth before normals: hides splat bumps

    def __post_init__(self) -> None:
        if self.supersample < 1 or not 0 < self.margin <= 1 or self.splat_radius <= 0 or self.smooth <= 0:
            raise ValueError(
                f"RenderConfig: need supersample >= 1, 0 < margin <= 1, splat_radius > 0, smooth > 0: {self}"
            )

    @classmethod
    def from_dict(cls, overrides: dict[str, Any] | None) -> RenderConfig:
        """Defaults updated by `overrides` (unknown keys are an error)."""
        return _from_dict(cls, overrides)


_LIGHT = np.array([-0.35, 0.45, 0.82]) / np.linalg.norm([-0.35, 0.45, 0.82])  # camera frame: right, up, back


@dataclass
class Motion:
    """Per-frame pose of a shape: yaw about z and camera elevation (radians), image-plane shift (F, 2)."""

    yaw: np.ndarray
    elevation: np.ndarray
    shift: np.ndarray


def sample_motion(frames: int, cfg: RenderConfig, rng: np.random.Generator) -> Motion:
    """A smooth random motion over `frames` frames: a constant-speed yaw sweep from a random start angle,
    an elevation with a one-period wobble and a straight drift, so moving edges sweep across pixels."""
    s = np.linspace(0.0, 1.0, frames)
    yaw0 = rng.uniform(0.0, 2 * math.pi)
    sweep = math.radians(rng.uniform(*cfg.yaw_sweep_deg)) * (1 if rng.random() < 0.5 else -1)
    elev0 = math.radians(rng.uniform(*cfg.elevation_deg))
    phase = rng.uniform(0.0, 2 * math.pi)
    ang = rng.uniform(0.0, 2 * math.pi)
    drift = cfg.drift * np.array([math.cos(ang), math.sin(ang)])
    wobble = math.radians(cfg.wobble_deg) * (np.sin(2 * math.pi * s + phase) - math.sin(phase))
    return Motion(yaw0 + sweep * s, elev0 + wobble, (s - 0.5)[:, None] * drift[None, :])


def _rotations(m: Motion) -> np.ndarray:
    """(F, 3, 3) world -> camera: yaw the object about z, view from elevation e (rows right, up, back)."""
    cy, sy = np.cos(m.yaw), np.sin(m.yaw)
    ce, se = np.cos(m.elevation), np.sin(m.elevation)
    z, o = np.zeros_like(cy), np.ones_like(cy)
    Rz = np.stack([np.stack([cy, -sy, z], -1), np.stack([sy, cy, z], -1), np.stack([z, z, o], -1)], -2)
    C = np.stack([np.stack([z, o, z], -1), np.stack([-se, z, ce], -1), np.stack([ce, z, se], -1)], -2)
    return C @ Rz


def project_points(
    xyz: np.ndarray, motion: Motion, size: int, margin: float = RenderConfig.margin
) -> np.ndarray:
    """(F, N, 3): each point's column, row (pixels of a `size` frame) and depth (smaller = nearer)."""
    cam = np.asarray(xyz, np.float64)[None] @ _rotations(motion).transpose(0, 2, 1)
    cam[..., :2] += motion.shift[:, None, :]
    u = (cam[..., 0] * margin + 1) * 0.5 * size
    v = (1 - cam[..., 1] * margin) * 0.5 * size
    return np.stack([u, v, -cam[..., 2]], -1)


def _shift(a: np.ndarray, dy: int, dx: int, fill: Any) -> np.ndarray:
    """a (F, H, W) moved by (dy, dx) pixels, `fill` where nothing moved in."""
    out = np.full_like(a, fill)
    H, W = a.shape[-2:]
    out[:, max(dy, 0) : H + min(dy, 0), max(dx, 0) : W + min(dx, 0)] = a[
        :, max(-dy, 0) : H + min(-dy, 0), max(-dx, 0) : W + min(-dx, 0)
    ]
    return out


def _filter(a: np.ndarray, offsets: list[tuple[int, int]], op: Any, fill: Any) -> np.ndarray:
    """op-reduce (np.minimum, np.logical_or...) of `a` over neighbour `offsets` (views of one padded copy)."""
    r = max(max(abs(dy), abs(dx)) for dy, dx in offsets)
    H, W = a.shape[-2:]
    p = np.pad(a, ((0, 0), (r, r), (r, r)), constant_values=fill)
    out = a.copy()
    for dy, dx in offsets:
        if dy or dx:
            op(out, p[:, r + dy : r + dy + H, r + dx : r + dx + W], out=out)
    return out


def _min_disc(a: np.ndarray, radius: float) -> np.ndarray:
    """Min filter of (F, H, W) over a disc of `radius` pixels (inf outside the frame).

    The disc is a stack of horizontal segments: running minima over each needed half-width, then a
    vertical pass over the rows, about 4 * radius array operations instead of one per disc pixel.
    """
    r = int(math.floor(radius))
    if r < 1:
        return a.copy()
    half = {dy: int(math.floor(math.sqrt(radius**2 - dy * dy))) for dy in range(-r, r + 1)}
    H, W = a.shape[-2:]
    p = np.pad(a, ((0, 0), (0, 0), (r, r)), constant_values=np.inf)
    rows, cur = {0: a}, a
    for w in range(1, r + 1):
        cur = np.minimum(cur, np.minimum(p[:, :, r - w : r - w + W], p[:, :, r + w : r + w + W]))
        rows[w] = cur
    out = rows[half[0]].copy()
    for dy in range(-r, r + 1):
        if dy:
            src = rows[half[dy]]
            lo, hi = max(dy, 0), H + min(dy, 0)
            np.minimum(out[:, lo:hi], src[:, lo - dy : hi - dy], out=out[:, lo:hi])
    return out


def _block_sum(a: np.ndarray, ss: int) -> np.ndarray:
    """Sum of each ss x ss block of (F, H, W) -> (F, H / ss, W / ss) (strided views: fast)."""
    if ss == 1:
        return a.astype(np.float32)
    return sum(a[:, i::ss, j::ss].astype(np.float32) for i in range(ss) for j in range(ss))


_SQUARE = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]


def _blur(a: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of (F, H, W), zero padded (shifted multiply-adds: fast for tiny kernels)."""
    k = max(1, int(math.ceil(2.5 * sigma)))
    g = np.exp(-0.5 * (np.arange(-k, k + 1) / sigma) ** 2)
    g = (g / g.sum()).astype(a.dtype)
    H, W = a.shape[-2:]
    p = np.pad(a, ((0, 0), (0, 0), (k, k)))
    a = sum(g[i] * p[:, :, i : i + W] for i in range(2 * k + 1))
    p = np.pad(a, ((0, 0), (k, k), (0, 0)))
    return sum(g[i] * p[:, i : i + H, :] for i in range(2 * k + 1))


def render_frames(
    xyz: np.ndarray, motion: Motion, size: int = 64, cfg: RenderConfig | None = None
) -> np.ndarray:
    """Grey frames (F, size, size) in [0, 1] of a (unit-sphere, z-up) cloud moving along `motion`.

    Points are z-buffered as disc splats (nearest wins) at `supersample` x the size, pinholes closed
    morphologically; each sensor pixel's brightness is its covered share times the surface shade plus
    the rest times the background, so an edge crossing a pixel is a gradual change, as on a real
    sensor. The shade is Lambert from normals of the smoothed depth map (at sensor resolution) with a
    light fixed to the camera, over a dark background: silhouettes, creases and turning surfaces all
    change brightness as the shape moves.
    """
    cfg = cfg or RenderConfig()
    xyz = np.asarray(xyz, np.float64)
    if xyz.ndim != 2 or xyz.shape[1] != 3 or len(xyz) == 0:
        raise ValueError(f"render_frames: xyz must be (N, 3) with N > 0, got {xyz.shape}")
    if len(motion.yaw) < 1:
        raise ValueError("render_frames: the motion has no frames")
    ss = int(cfg.supersample)
    S = size * ss
    F = len(motion.yaw)
    uvd = project_points(xyz, motion, S, cfg.margin).astype(np.float32)
    ix, iy = np.floor(uvd[..., 0]).astype(np.int64), np.floor(uvd[..., 1]).astype(np.int64)
    ok = (ix >= 0) & (ix < S) & (iy >= 0) & (iy < S)
    flat = (np.arange(F)[:, None] * S + iy) * S + ix
    depth = np.full(F * S * S, np.inf, np.float32)
    np.minimum.at(depth, flat[ok], uvd[..., 2][ok])
    depth = depth.reshape(F, S, S)
    # z-buffered disc splats == a min filter of each pixel's nearest-point depth
    depth = _min_disc(depth, cfg.splat_radius * ss * math.sqrt(1024 / len(xyz)))
    hit = np.isfinite(depth)
    # closing (dilate, erode by a 3x3 square) fills pinholes between splats without growing the outline
    cover = _filter(_filter(hit, _SQUARE, np.logical_or, False), _SQUARE, np.logical_and, True) | hit
    cov = _block_sum(cover, ss) / (ss * ss)
    cnt = _block_sum(hit, ss)
    dsum = _block_sum(np.where(hit, depth, np.float32(0)), ss)
    # height towards the camera, smoothed so the normals follow the surface rather than single splats
    h = -_blur(dsum, cfg.smooth) / np.maximum(_blur(cnt, cfg.smooth), 1e-6)
    inside = cov > 0
    pix = 2.0 / (size * cfg.margin)  # object units per sensor pixel
    gx = (_shift(h, 0, -1, 0) - _shift(h, 0, 1, 0)) / (2 * pix)  # d h / d right
    gy = (_shift(h, 1, 0, 0) - _shift(h, -1, 0, 0)) / (2 * pix)  # d h / d up (rows run down)
    gx[~(_shift(inside, 0, 1, False) & _shift(inside, 0, -1, False))] = 0  # no slope from the background
    gy[~(_shift(inside, 1, 0, False) & _shift(inside, -1, 0, False))] = 0
    lam = (_LIGHT[2] - gx * _LIGHT[0] - gy * _LIGHT[1]) / np.sqrt(gx * gx + gy * gy + 1)
    shade = cfg.ambient + (1 - cfg.ambient) * np.clip(lam, 0, 1)
    img = cov * shade + (1 - cov) * np.float32(cfg.background)
    return np.clip(img, 0.0, 1.0).astype(np.float32)


def simulate_shape(
    xyz: np.ndarray,
    rng: np.random.Generator,
    sensor: int = 64,
    frames: int = 24,
    duration_us: int = 200_000,
    sim: SimConfig | None = None,
    render: RenderConfig | None = None,
) -> np.ndarray:
    """One shape -> one event stream: a random motion (from `rng`), frames, the simulator (same `rng`)."""
    render = render or RenderConfig()
    sim = sim or SimConfig()
    if frames < 2:
        raise ValueError(f"simulate_shape: need frames >= 2, got {frames}")
    motion = sample_motion(frames, render, rng)
    img = render_frames(xyz, motion, sensor, render)
    ts = np.rint(np.linspace(0, duration_us, frames)).astype(np.int64)
    return simulate_events(log_intensity(img, sim.eps), ts, sim, rng)


# ----------------------------------------------------------------------------- the dataset
class ModelNet40DVS(EventDataset):
    """ModelNet40 shapes as simulated event streams (one per shape), held in memory from the cache."""

    name = "modelnet40_dvs"
    sensor_size = (64, 64)

    def __init__(
        self,
        events: np.ndarray,
        offsets: np.ndarray,
        labels: np.ndarray,
        classes: list[str],
        split: str,
        transforms: Compose,
        seed: int,
        sensor: int,
        shape_ids: np.ndarray | None = None,
        settings: dict[str, Any] | None = None,
        **kw: Any,
    ) -> None:
        self.sensor_size = (int(sensor), int(sensor))
        super().__init__(split, classes, transforms, seed, **kw)
        self._events, self._offsets = events, np.asarray(offsets, np.int64)
        self._labels = np.asarray(labels, np.int64)
        self.shape_ids = shape_ids
        self.settings = dict(settings or {})

    def __len__(self) -> int:
        return len(self._labels)

    def labels(self) -> np.ndarray:
        return self._labels

    def events(self, i: int) -> np.ndarray:
        """The i-th stream as EVENT_DTYPE (time-sorted, t in microseconds from the first frame)."""
        lo, hi = self._offsets[i], self._offsets[i + 1]
        return self._events[lo:hi].astype(EVENT_DTYPE)


_STORE_DTYPE = np.dtype([("x", "<i2"), ("y", "<i2"), ("t", "<i4"), ("p", "?")])  # 9 bytes per event


def _select(labels: np.ndarray, per_class: int | None) -> np.ndarray:
    """Indices into the split: all, or the first `per_class` shapes of each class (in file order)."""
    if per_class is None:
        return np.arange(len(labels))
    if int(per_class) < 1:
        raise ValueError(f"modelnet40_dvs: per_class must be >= 1, got {per_class}")
    rank = np.zeros(len(labels), np.int64)
    seen: dict[int, int] = {}
    for i, c in enumerate(labels.tolist()):
        rank[i] = seen.get(c, 0)
        seen[c] = rank[i] + 1
    return np.flatnonzero(rank < int(per_class))


def simulate_split(
    points: np.ndarray,
    indices: np.ndarray,
    split: str,
    sim_seed: int,
    sensor: int,
    frames: int,
    duration_us: int,
    sim: SimConfig,
    render: RenderConfig,
    desc: str = "modelnet40_dvs",
) -> tuple[np.ndarray, np.ndarray]:
    """Simulate shapes `indices` of `points` -> (events in _STORE_DTYPE, offsets (S + 1,)).

    Each shape's generator is seeded by (sim_seed, split, index in the split file), so a shape's
    stream does not depend on which other shapes are simulated (per_class subsets agree with the full
    split) nor on the training seed.
    """

    split_id = {"train": 0, "test": 1}[split]
    chunks, offsets = [], [0]
    for j in progress(indices.tolist(), desc=f"simulating {desc}/{split}", unit="shape"):
        rng = np.random.default_rng([int(sim_seed), split_id, int(j)])
        ev = simulate_shape(np.asarray(points[j], np.float64), rng, sensor, frames, duration_us, sim, render)
        chunks.append(ev.astype(_STORE_DTYPE))
        offsets.append(offsets[-1] + len(ev))
    events = np.concatenate(chunks) if chunks else np.empty(0, _STORE_DTYPE)
    return events, np.asarray(offsets, np.int64)


@register_dataset("modelnet40_dvs", takes=("num_points", "T", "encoding", "event_augment"))
def _build_modelnet40_dvs(
    split: str,
    root: Any,
    transforms: Compose,
    seed: int,
    num_points: int = 1024,
    T: int = 1,
    encoding: str = "cloud",
    event_augment: dict[str, Any] | None = None,
    sensor: int = 64,
    frames: int = 24,
    duration_us: int = 200_000,
    per_class: int | None = None,
    sim: dict[str, Any] | None = None,
    render: dict[str, Any] | None = None,
    sim_seed: int = 0,
    cache: bool = True,
) -> PointDataset:
    """The shared ModelNet40 (official split, 40 classes) seen by a simulated `sensor`-pixel DVS.

    Each shape turns about its gravity axis (plus a small elevation wobble and drift) for
    `duration_us`, rendered as `frames` frames and run through `simulate_events`; `sim` / `render`
    override SimConfig / RenderConfig fields. The streams depend only on the shape, these settings
    and `sim_seed` (not the training `seed`), and are cached per split and settings (simulated once;
    `cache=False` simulates in memory every time). `per_class` keeps the first shapes of each class.
    """

    if split not in ("train", "test"):
        raise ValueError(f"modelnet40_dvs: split must be 'train' or 'test', got {split!r}")
    if int(sensor) < 8 or int(frames) < 2 or not 0 < int(duration_us) < 2**31:
        raise ValueError(
            f"modelnet40_dvs: need sensor >= 8, frames >= 2 and 0 < duration_us < 2**31, "
            f"got {sensor}, {frames}, {duration_us}"
        )
    sim_cfg, render_cfg = SimConfig.from_dict(sim), RenderConfig.from_dict(render)
    arrs, path = modelnet40_arrays(root, split)
    all_labels = np.asarray(arrs["labels"], np.int64).reshape(-1)
    indices = _select(all_labels, per_class)
    names = np.asarray(arrs["names"])
    source = hashlib.sha256("\n".join(map(str, names.tolist())).encode() + all_labels.tobytes()).hexdigest()[
        :16
    ]
    settings = {
        "version": SIM_VERSION,
        "split": split,
        "source": f"{path.name}:{source}",
        "per_class": None if per_class is None else int(per_class),
        "sensor": int(sensor),
        "frames": int(frames),
        "duration_us": int(duration_us),
        "sim_seed": int(sim_seed),
        "sim": asdict(sim_cfg),
        "render": asdict(render_cfg),
    }

    def simulate() -> dict[str, np.ndarray]:
        events, offsets = simulate_split(
            arrs["points"], indices, split, int(sim_seed), int(sensor), int(frames), int(duration_us),
            sim_cfg, render_cfg,
        )  # fmt: skip
        empty = int((np.diff(offsets) == 0).sum())
        if empty:
            get_logger(__name__).warning("modelnet40_dvs/%s: %d shapes gave no events", split, empty)
        return {"events": events, "offsets": offsets, "labels": all_labels[indices], "indices": indices}

    def complete(d: dict[str, np.ndarray]) -> bool:
        return len(d["offsets"]) == len(d["labels"]) + 1 and d["offsets"][-1] == len(d["events"])

    data = cached_arrays("modelnet40_dvs", settings, simulate, complete, enabled=cache)
    return ModelNet40DVS(
        data["events"], data["offsets"], data["labels"], load_class_names("modelnet40"), split,
        transforms, seed, sensor, shape_ids=names[data["indices"]], settings=settings,
        num_points=num_points, T=T, encoding=encoding, event_augment=event_augment,
    )  # fmt: skip
