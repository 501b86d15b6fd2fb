"""Multi-step spiking inference on event bins (encoding b): each step its own input, membranes carried."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from svl.data.batch import collate_points
from svl.data.events import EVENT_DTYPE, events_to_steps
from svl.models import create_model
from svl.spiking import set_spike_mode

T = 4


def _events(seed: int, n: int = 600, size: int = 34) -> np.ndarray:
    """A moving blob: pixels drift with time so every bin holds other events."""
    rng = np.random.default_rng(seed)
    ev = np.zeros(n, EVENT_DTYPE)
    ev["t"] = np.sort(rng.integers(0, 100_000, n))
    drift = (ev["t"] / 100_000 * 12).astype(int)
    ev["x"] = np.clip(8 + drift + rng.integers(-4, 5, n), 0, size - 1)
    ev["y"] = np.clip(10 + rng.integers(-6, 7, n), 0, size - 1)
    ev["p"] = rng.random(n) < 0.5
    return ev


def _batch(seeds=(0, 1), n: int = 256, edit=None):
    samples = []
    for s in seeds:
        d = events_to_steps(_events(s), T, (34, 34), n, seed=s)
        if edit is not None:
            edit(d)
        samples.append(d)
    return collate_points(samples)


MODELS = {
    "e3dsnn_t": {"voxel_size": 0.04},
    "spike_pointnet": {},
    "spike_pointformer_l": {"embed_dim": 48, "depth": 1, "num_heads": 2, "num_groups": 16, "group_size": 8},
}


def _model(name: str, **kw):
    torch.manual_seed(0)
    m = create_model(name, T=T, in_channels=4, out_dim=5, **MODELS[name], **kw)
    m.eval()
    # lively BN statistics so that spikes reach the deep layers of an untrained net
    with torch.no_grad():
        for mod in m.modules():
            if hasattr(mod, "running_var") and mod.running_var is not None:
                mod.running_var.fill_(0.05)
    return m


@pytest.mark.parametrize("name", list(MODELS))
def test_every_encoder_runs_bins_and_binary_equals_integer(name):
    b = _batch()
    m = _model(name)
    with torch.no_grad():
        out_int = m(b)
        set_spike_mode(m, "binary")
        out_bin = m(b)
    assert out_int.shape == (2, 5) and torch.isfinite(out_int).all()
    torch.testing.assert_close(out_bin, out_int, rtol=1e-4, atol=1e-4)
    ann = create_model(f"{name}_ann" if name != "spike_pointformer_l" else "spike_pointformer_l_ann",
                       T=T, in_channels=4, out_dim=5, **MODELS[name]).eval()  # fmt: skip
    with torch.no_grad():
        assert ann(b).shape == (2, 5)


def test_step_voxels_are_each_steps_own_points():
    """E-3DSNN input: per voxel and step, the mean of that step's points only (dense numpy reference)."""
    b = _batch(seeds=(3,), n=300)
    m = _model("e3dsnn_t")
    st = m.voxelize(b)
    vs = m.voxel_size
    xyz = b.xyz[0].numpy()
    feats = b.extras["steps"][:, 0].numpy()  # (T, N, 4)
    mask = b.extras["step_mask"][:, 0].numpy()
    keys = np.floor(xyz / vs).astype(int)
    sites = {tuple(c): i for i, c in enumerate(st.coords[:, 1:].tolist())}
    assert len(sites) == len({tuple(k) for k in keys})  # the union of every step's voxels
    got = st.features.detach().numpy()  # (T, V, 4)
    for key in {tuple(k) for k in keys}:
        inside = (keys == key).all(1)
        v = sites[key]
        for t in range(T):
            own = inside & mask[t]
            want = feats[t][own].mean(0) if own.any() else np.zeros(4)
            np.testing.assert_allclose(got[t, v], want, atol=1e-6)


@pytest.mark.parametrize("name", ["e3dsnn_t", "spike_pointnet"])
def test_membrane_carries_forward_and_nothing_flows_back(name):
    """Changing the last bin's events leaves steps 0..T-2 alone; changing the first bin changes later
    steps (through the membranes only: the steps share no input)."""
    m = _model(name)

    def flip(step):
        def edit(d):
            d["steps"][step, :, 3] = np.where(d["step_mask"][step], 1.0 - d["steps"][step, :, 3], 0.0)

        return edit

    def feats(batch):
        with torch.no_grad():
            f = m.forward_features(batch)
        return getattr(f, "features", f)

    base = feats(_batch())
    last = feats(_batch(edit=flip(T - 1)))
    first = feats(_batch(edit=flip(0)))
    torch.testing.assert_close(last[: T - 1], base[: T - 1])
    assert not torch.equal(last[T - 1], base[T - 1])
    assert not torch.equal(first[1], base[1])


def test_steps_must_match_model_T():
    b = _batch()
    m = create_model("e3dsnn_t", T=2, in_channels=4, out_dim=5)
    with pytest.raises(ValueError, match="T=2"):
        m(b)
    m1 = create_model("e3dsnn_t", T=1, in_channels=4, out_dim=5)
    with pytest.raises(ValueError, match="T=1"):
        m1(b)


def test_energy_per_step_sums_to_totals_and_modes_agree():
    from svl.energy import measure_energy

    b = _batch()
    m = _model("e3dsnn_t")
    rep = measure_energy(m, b)
    ps = rep.per_step()
    assert len(ps["energy_snn_mj"]) == T
    assert sum(ps["energy_snn_mj"]) == pytest.approx(rep.energy_snn_mj, rel=1e-9)
    assert sum(ps["synaptic_events"]) == pytest.approx(rep.synaptic_events, rel=1e-9)
    spiking = sum(r.spikes for r in rep.layers if r.spiking and r.counted) / rep.batch_size
    assert sum(ps["spikes"]) == pytest.approx(spiking, rel=1e-9)
    assert min(ps["synaptic_events"]) > 0
    set_spike_mode(m, "binary")
    ps_bin = measure_energy(m, b).per_step()
    for k in ps:
        np.testing.assert_allclose(ps_bin[k], ps[k], rtol=1e-6)
    # per-step rows: a step whose input bin is silent still pays its stem MACs, no synaptic events
    assert rep.to_dict()["per_step"] == ps
