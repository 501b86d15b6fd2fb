"""The ESIM-style simulator against closed forms, the renderer on real shapes, `modelnet40_dvs` end to end.

Why closed forms: a linear log-intensity ramp crosses its thresholds at times one can write down, so the
simulator's event counts, times, polarities, refractory filtering and noise rate are checked against
arithmetic, not against a second copy of the implementation.
"""

from __future__ import annotations

import numpy as np
import pytest

from svl.data.event_sim import (
    RenderConfig,
    SimConfig,
    log_intensity,
    project_points,
    render_frames,
    sample_motion,
    simulate_events,
)
from svl.data.events import EVENT_DTYPE

QUIET = dict(sigma=0.0, refractory_us=0, noise_rate_hz=0.0)  # the ideal sensor: closed forms hold exactly


def _ramp(values, times, shape=(1, 1)):
    """Frames whose every pixel has log intensity `values[k]` at `times[k]`."""
    L = np.asarray(values, np.float64)[:, None, None] * np.ones(shape)
    return L, np.asarray(times, np.int64)


@pytest.mark.parametrize("k", [1, 3, 5])
def test_rising_ramp_gives_k_on_events_at_crossing_times(k):
    C, t0, t1 = 0.2, 1000, 11000
    rise = k * C + 0.05  # k thresholds and a bit: exactly k crossings
    L, ts = _ramp([0.3, 0.3 + rise], [t0, t1])
    ev = simulate_events(L, ts, SimConfig(c_pos=C, c_neg=C, **QUIET), np.random.default_rng(0))
    assert ev.dtype == EVENT_DTYPE and len(ev) == k
    assert ev["p"].all() and (ev["x"] == 0).all() and (ev["y"] == 0).all()
    slope = rise / (t1 - t0)
    expect = t0 + np.arange(1, k + 1) * C / slope
    np.testing.assert_allclose(ev["t"], expect, atol=0.5 + 1e-9)  # rounded to the microsecond


def test_falling_ramp_gives_off_events_with_their_own_threshold():
    cp, cn = 0.3, 0.15
    L, ts = _ramp([0.0, -0.5], [0, 10_000])  # 3 OFF thresholds of 0.15 (0.45) and a bit
    ev = simulate_events(L, ts, SimConfig(c_pos=cp, c_neg=cn, **QUIET))
    assert len(ev) == 3 and not ev["p"].any()
    np.testing.assert_allclose(ev["t"], np.arange(1, 4) * cn / 0.5 * 10_000, atol=0.5 + 1e-9)


def test_crossings_continue_across_frames_from_the_reference():
    # 0 -> 0.5 -> 1.1 over two intervals: levels 0.2, 0.4 | 0.6, 0.8, 1.0 (the reference carries over)
    L, ts = _ramp([0.0, 0.5, 1.1], [0, 5000, 11_000])
    ev = simulate_events(L, ts, SimConfig(c_pos=0.2, **QUIET))
    np.testing.assert_allclose(ev["t"], [2000, 4000, 6000, 8000, 10_000], atol=1)


def test_no_change_no_events_and_ties_are_sorted():
    L, ts = _ramp([0.1] * 5, [0, 1, 2, 3, 4], shape=(8, 9))
    assert len(simulate_events(L, ts, SimConfig(**QUIET))) == 0
    # the same ramp on every pixel: equal times, ordered row-major
    L, ts = _ramp([0.0, 0.25], [0, 1000], shape=(3, 4))
    ev = simulate_events(L, ts, SimConfig(**QUIET))
    assert len(ev) == 12 and (ev["t"] == ev["t"][0]).all()
    assert (ev["y"].astype(int) * 4 + ev["x"]).tolist() == list(range(12))


def test_refractory_drops_close_events_but_the_reference_still_moves():
    C, R = 0.2, 1000
    # interval 1: 0 -> 0.65 over 1000 us: crossings at 307.7, 615.4, 923.1 us -> only the first survives
    # interval 2: 0.65 -> 0.35 over 10 ms. The reference moved to 0.6 (all three crossings), so one OFF
    # event at L = 0.4, i.e. 0.25 / 0.3 of the way; had it stayed at 0.2 there would be none.
    L, ts = _ramp([0.0, 0.65, 0.35], [0, 1000, 11_000])
    ev = simulate_events(L, ts, SimConfig(c_pos=C, c_neg=C, sigma=0, refractory_us=R, noise_rate_hz=0))
    assert ev["p"].tolist() == [True, False]
    np.testing.assert_allclose(ev["t"], [1000 * C / 0.65, 1000 + 10_000 * 0.25 / 0.3], atol=0.5 + 1e-9)
    # a long ramp: 30 crossings 300 us apart; kept ones are the greedy >= R subset of the closed form
    L, ts = _ramp([0.0, 30 * C + 0.01], [0, 30 * 300])
    ev = simulate_events(L, ts, SimConfig(c_pos=C, sigma=0, refractory_us=R, noise_rate_hz=0))
    times = np.rint(np.arange(1, 31) * C / ((30 * C + 0.01) / 9000)).astype(int)
    kept = [times[0]]
    for t in times[1:]:
        if t - kept[-1] >= R:
            kept.append(t)
    assert ev["t"].tolist() == kept and (np.diff(ev["t"]) >= R).all()


def test_background_noise_rate_matches_poisson_expectation():
    rate, H, W, dur = 0.5, 64, 64, 10_000_000
    L, ts = _ramp([0.0, 0.0], [0, dur], shape=(H, W))
    ev = simulate_events(L, ts, SimConfig(noise_rate_hz=rate, sigma=0), np.random.default_rng(3))
    expect = rate * H * W * dur * 1e-6
    assert abs(len(ev) - expect) < 4 * np.sqrt(expect)
    assert abs(ev["p"].mean() - 0.5) < 4 * 0.5 / np.sqrt(expect)
    assert ev["t"].min() >= 0 and ev["t"].max() < dur and (np.diff(ev["t"]) >= 0).all()
    per_pixel = np.bincount(ev["y"].astype(int) * W + ev["x"], minlength=H * W)
    assert abs(per_pixel.var() / per_pixel.mean() - 1) < 0.1  # Poisson: variance = mean
    assert len(simulate_events(L, ts, SimConfig(noise_rate_hz=0, sigma=0))) == 0


def test_thresholds_differ_per_pixel_and_stay_fixed_within_a_recording():
    # a slow common ramp over 10 frames: a pixel's events are C_pixel / slope apart, across frame borders
    sigma, C, H, W = 0.03, 0.2, 16, 16
    F, slope = 11, 0.2 / 2000  # nominal spacing 2 ms
    L, ts = _ramp(slope * np.arange(F) * 5000, np.arange(F) * 5000, shape=(H, W))
    ev = simulate_events(L, ts, SimConfig(c_pos=C, sigma=sigma, refractory_us=0, noise_rate_hz=0))
    pix = ev["y"].astype(int) * W + ev["x"]
    est = []
    for p in range(H * W):
        t = ev["t"][pix == p]
        assert len(t) >= 5
        gaps = np.diff(t)
        assert gaps.max() - gaps.min() <= 2  # one threshold for the whole recording (microsecond rounding)
        est.append((t[-1] - t[0]) / (len(t) - 1) * slope)
    est = np.asarray(est)
    assert abs(est.mean() - C) < 4 * sigma / np.sqrt(H * W)
    assert 0.8 * sigma < est.std() < 1.2 * sigma


def test_determinism_from_the_seed():
    rng = np.random.default_rng(0)
    L = np.cumsum(rng.normal(0, 0.1, (12, 20, 20)), 0)
    ts = np.arange(12) * 4000
    a = simulate_events(L, ts, SimConfig(), np.random.default_rng(7))
    b = simulate_events(L, ts, SimConfig(), np.random.default_rng(7))
    c = simulate_events(L, ts, SimConfig(), np.random.default_rng(8))
    assert len(a) > 100 and np.array_equal(a, b) and not np.array_equal(a, c)


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError, match="strictly increasing"):
        simulate_events(np.zeros((2, 2, 2)), np.array([5, 5]))
    with pytest.raises(ValueError, match="timestamps"):
        simulate_events(np.zeros((3, 2, 2)), np.array([0, 1]))
    with pytest.raises(ValueError, match="unknown option"):
        SimConfig.from_dict({"c_plus": 0.3})
    with pytest.raises(ValueError, match="thresholds"):
        SimConfig(c_pos=0)


# ----------------------------------------------------------------------------- the renderer
def _dilate(mask: np.ndarray, r: int) -> np.ndarray:
    out = mask.copy()
    H, W = mask.shape
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            out[max(dy, 0) : H + min(dy, 0), max(dx, 0) : W + min(dx, 0)] |= mask[
                max(-dy, 0) : H + min(-dy, 0), max(-dx, 0) : W + min(-dx, 0)
            ]
    return out


def test_rendered_motion_fires_on_the_object_and_its_edges(modelnet_clouds):
    clouds, _ = modelnet_clouds(4)
    size, F = 64, 24
    ts = np.rint(np.linspace(0, 200_000, F)).astype(np.int64)
    quiet = SimConfig(noise_rate_hz=0)
    for j, xyz in enumerate(clouds.numpy()):
        rng = np.random.default_rng(j)
        motion = sample_motion(F, RenderConfig(), rng)
        img = render_frames(xyz, motion, size)
        assert img.shape == (F, size, size) and img.dtype == np.float32
        assert 0 <= img.min() and img.max() <= 1
        ev = simulate_events(log_intensity(img), ts, quiet, rng)
        assert len(ev) > 500
        # where the points project in any frame (independent of the renderer), grown by the splat size
        uv = project_points(xyz, motion, size)
        mask = np.zeros((size, size), bool)
        u, v = np.floor(uv[..., 0]).astype(int).ravel(), np.floor(uv[..., 1]).astype(int).ravel()
        ok = (u >= 0) & (u < size) & (v >= 0) & (v < size)
        mask[v[ok], u[ok]] = True
        obj = _dilate(mask, 2)
        inside = obj[ev["y"], ev["x"]]
        assert inside.mean() > 0.99
        # edges: a moving image changes where it has spatial gradients (dL/dt = -grad L . v), so events
        # sit on silhouettes and creases: their pixels' gradient is well above the object's average
        L = log_intensity(img)
        k = np.clip(np.searchsorted(ts, ev["t"]) - 1, 0, F - 2)
        grad = np.hypot(*np.gradient(L, axis=(1, 2)))
        fg = img > RenderConfig().background + 0.05
        assert grad[k, ev["y"], ev["x"]].mean() > 1.8 * grad[fg].mean()


def test_still_object_gives_no_events(modelnet_clouds):
    clouds, _ = modelnet_clouds(1)
    cfg = RenderConfig(yaw_sweep_deg=(0.0, 0.0), wobble_deg=0.0, drift=0.0)
    motion = sample_motion(10, cfg, np.random.default_rng(0))
    img = render_frames(clouds[0].numpy(), motion, 48, cfg)
    assert np.array_equal(img[0], img[-1])
    ev = simulate_events(log_intensity(img), np.arange(10) * 1000, SimConfig(noise_rate_hz=0))
    assert len(ev) == 0


# ----------------------------------------------------------------------------- the dataset
TINY = dict(per_class=1, sensor=32, frames=12, duration_us=100_000)


def test_dataset_end_to_end_deterministic_and_cached(shared_data, svl_cache, monkeypatch):
    from svl.data import build_dataset, collate_points
    from svl.data import event_sim as es

    ds = build_dataset("modelnet40_dvs", "test", root=shared_data, num_points=256, **TINY)
    assert len(ds) == 40 and ds.labels().tolist() == list(range(40))
    assert len(ds.classes) == 40 and ds.classes[0] == "airplane" and ds.sensor_size == (32, 32)
    files = list((svl_cache / "modelnet40_dvs").glob("test-*.npz"))
    assert len(files) == 1
    ev = ds.events(3)
    assert ev.dtype == EVENT_DTYPE and len(ev) > 0 and (np.diff(ev["t"]) >= 0).all()
    assert ev["x"].max() < 32 and ev["y"].max() < 32 and ev["t"].max() <= 100_000

    # a second build loads the cache: simulating again would raise
    def boom(*a, **k):
        raise AssertionError("simulated again")

    with monkeypatch.context() as m:
        m.setattr(es, "simulate_shape", boom)
        again = build_dataset("modelnet40_dvs", "test", root=shared_data, num_points=256, **TINY)
    assert all(np.array_equal(ds.events(i), again.events(i)) for i in range(len(ds)))

    # the same settings simulated afresh (no cache) are identical; another sim_seed differs
    fresh = build_dataset("modelnet40_dvs", "test", root=shared_data, cache=False, **TINY)
    assert all(np.array_equal(ds.events(i), fresh.events(i)) for i in range(len(ds)))
    other = build_dataset("modelnet40_dvs", "test", root=shared_data, cache=False, sim_seed=1, **TINY)
    assert not np.array_equal(ds.events(0), other.events(0))

    # both encodings collate
    b = collate_points([ds[i] for i in range(4)])
    assert tuple(b.xyz.shape) == (4, 256, 3) and tuple(b.feats.shape) == (4, 256, 4)
    assert b.labels.tolist() == [0, 1, 2, 3]
    bins = build_dataset(
        "modelnet40_dvs", "test", root=shared_data, num_points=128, encoding="bins", T=6, **TINY
    )
    b = collate_points([bins[i] for i in range(3)])
    assert tuple(b.extras["steps"].shape) == (6, 3, 128, 4)
    assert tuple(b.extras["step_mask"].shape) == (6, 3, 128)


def test_dataset_cache_key_and_options(shared_data, svl_cache):
    from svl.data import build_dataset
    from svl.data.inspect import dataset_info

    a = build_dataset("modelnet40_dvs", "test", root=shared_data, **TINY)
    b = build_dataset("modelnet40_dvs", "test", root=shared_data, **{**TINY, "per_class": 2})
    c = build_dataset("modelnet40_dvs", "test", root=shared_data, sim={"c_pos": 0.3}, **TINY)
    assert len(list((svl_cache / "modelnet40_dvs").glob("test-*.npz"))) == 3
    assert len(b) == 80 and len(c) == 40
    # a shape's stream depends on the shape and settings, not on which other shapes were simulated
    first_of_class = [int(np.flatnonzero(b.labels() == k)[0]) for k in range(3)]
    for k, i in enumerate(first_of_class):
        assert np.array_equal(a.events(k), b.events(i))
    info = dataset_info("modelnet40_dvs:test", root=str(shared_data), **TINY)
    assert info["splits"]["test"]["samples"] == 40 and info["splits"]["test"]["classes_present"] == 40
    with pytest.raises(ValueError, match="unknown option"):
        build_dataset("modelnet40_dvs", "test", root=shared_data, render={"spin": 1}, **TINY)
    with pytest.raises(ValueError, match="split"):
        build_dataset("modelnet40_dvs", "val", root=shared_data, **TINY)
