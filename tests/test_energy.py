"""Energy meter on dense and sparse spiking layers, checked against hand counts and SpikingJelly.

Hand counts are synaptic events (one accumulate per spike per synapse) and MACs; the default unit's
SOPs follow from them in closed form (events x FLOPs / MACs, FLOPs = 2 MACs - outputs).
"""

from __future__ import annotations

import itertools
import json

import pytest
import torch
from torch import nn

from svl.energy import EnergyTable, measure_energy, merge_reports, random_voxel_input
from svl.sparse import SparseBatchNorm, SparseConv3d, SparseTensor, SubMConv3d
from svl.spiking import ILIF, SConv2d, SLinear, SpikeTrain, as_tensor, set_spike_mode


class TinyCNN(nn.Module):
    """Real input -> conv -> SN -> strided conv -> SN -> linear: one MAC layer, two AC layers."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = SConv2d(3, 8, 3, padding=1)
        self.n1 = ILIF(D=4)
        self.c2 = SConv2d(8, 16, 3, stride=2, padding=1)
        self.n2 = ILIF(D=4)
        self.fc = SLinear(16 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s1 = self.n1(self.c1(x) * 2.0)  # gain so that the neurons fire well above rate 0
        self.s1 = s1
        s2 = self.n2(self.c2(s1))
        self.s2 = s2
        flat = s2.map(lambda b: b.flatten(-3)) if isinstance(s2, SpikeTrain) else s2.flatten(-3)
        return self.fc(flat)


def _counts(s):
    return s.count() if isinstance(s, SpikeTrain) else s


def _hand_conv_sops(s: torch.Tensor, c_out: int, k: int, stride: int, pad: int) -> float:
    """Loop over every output position and tap: one accumulate per spike per output channel."""
    n, c, h, w = s.shape
    ho, wo = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
    total = 0.0
    for oi, oj, di, dj in itertools.product(range(ho), range(wo), range(k), range(k)):
        i, j = oi * stride - pad + di, oj * stride - pad + dj
        if 0 <= i < h and 0 <= j < w:
            total += float(s[:, :, i, j].sum())
    return total * c_out


def test_dense_cnn_matches_closed_form():
    torch.manual_seed(0)
    net = TinyCNN().eval()
    x = torch.randn(2, 3, 8, 8)
    rep = measure_energy(net, x)
    rows = {r.name: r for r in rep.layers}
    s1, s2 = _counts(net.s1), _counts(net.s2)
    # MACs = output positions x taps x C_in x C_out; FLOPs = 2 * MACs - output sites, per sample.
    macs = {"c1": 64 * 9 * 3 * 8, "c2": 16 * 9 * 8 * 16, "fc": 256 * 10}
    outs = {"c1": 64, "c2": 16, "fc": 1}
    for k in macs:
        assert rows[k].macs == 2 * macs[k]
        assert rows[k].flops == 2 * (2 * macs[k] - outs[k])
    assert not rows["c1"].spiking and rows["c1"].sops == rows["c1"].events == 0
    assert rows["c2"].events == _hand_conv_sops(s1, 16, 3, 2, 1)
    assert rows["fc"].events == float(s2.sum()) * 10
    for k in ("c2", "fc"):  # SOP = rate x FLOPs x T with rate = events / MACs
        assert rows[k].sops == pytest.approx(rows[k].events * (2 * macs[k] - outs[k]) / macs[k])
    assert rows["c2"].rate == pytest.approx(float(s1.sum()) / (2 * 8 * 64))
    assert 0.05 < rows["c2"].rate < 2.0
    ann = (rows["c1"].flops + rows["c2"].flops + rows["fc"].flops) / 2
    snn = (4.6 * rows["c1"].flops + 0.9 * (rows["c2"].sops + rows["fc"].sops)) / 2
    assert rep.unit == "flops" and rep.ann_flops == rep.ann_ops == pytest.approx(ann)
    assert rep.energy_ann_mj == pytest.approx(ann * 4.6e-9)
    assert rep.energy_snn_mj == pytest.approx(snn * 1e-9)
    assert rep.ratio == pytest.approx(snn / (4.6 * ann))
    # Per synaptic event: the ANN in MACs, the SNN in accumulates.
    per_event = measure_energy(net, x, unit="macs")
    ann_macs = sum(macs.values())
    snn_ev = 4.6 * macs["c1"] + 0.9 * (rows["c2"].events + rows["fc"].events) / 2
    assert per_event.ann_ops == per_event.ann_macs == ann_macs and per_event.ann_flops == rep.ann_flops
    assert per_event.sops == per_event.synaptic_events == rep.synaptic_events
    assert per_event.energy_ann_mj == pytest.approx(ann_macs * 4.6e-9)
    assert per_event.energy_snn_mj == pytest.approx(snn_ev * 1e-9)


def test_binary_mode_counts_equal_integer_counts():
    torch.manual_seed(1)
    net = TinyCNN().eval()
    x = torch.randn(3, 3, 8, 8)
    integer = measure_energy(net, x)
    set_spike_mode(net, "binary")
    binary = measure_energy(net, x)
    assert isinstance(net.s2, SpikeTrain)
    assert binary.sops == integer.sops > 0
    assert len(binary.layers) == len(integer.layers) == 3
    assert [r.sops_ps for r in binary.layers] == [r.sops_ps for r in integer.layers]
    assert binary.energy_snn_mj == pytest.approx(integer.energy_snn_mj)


def test_agrees_with_spikingjelly_synop_counter():
    op_counter = pytest.importorskip("spikingjelly.activation_based.op_counter")
    torch.manual_seed(2)
    net = set_spike_mode(TinyCNN().eval(), "binary")  # SpikingJelly counts binary (0/1) inputs only
    x = torch.randn(2, 3, 8, 8)
    counter = op_counter.SynOpCounter()
    with torch.no_grad(), op_counter.DispatchCounterMode([counter]):
        net(x)
    rep = measure_energy(net, x)
    assert counter.get_total() == pytest.approx(rep.synaptic_events * rep.batch_size)


def test_per_sample_split_equals_single_sample_runs():
    torch.manual_seed(3)
    net = TinyCNN().eval()
    x = torch.randn(3, 3, 8, 8)
    batch = measure_energy(net, x).per_sample()
    for i in range(3):
        single = measure_energy(net, x[i : i + 1])
        assert batch["sops"][i] == pytest.approx(single.sops)
        assert batch["energy_snn_mj"][i] == pytest.approx(single.energy_snn_mj)
        assert batch["ann_flops"][i] == pytest.approx(single.ann_flops)


def test_multistep_linear_counts_every_step():
    torch.manual_seed(4)
    T, B = 3, 2
    net = nn.Sequential(SLinear(5, 7), ILIF(D=4, T=T), SLinear(7, 4))
    x = torch.randn(T, B, 5) * 2
    rep = measure_energy(net, x.transpose(0, 1).contiguous(), forward=lambda m, b: m(b.transpose(0, 1)))
    with torch.no_grad():
        s = net[1](net[0](x))
    r0, r2 = rep.layers
    assert r0.steps == T and not r0.spiking
    assert r0.flops == B * (2 * 5 * 7 - 1)  # one step's ANN work
    assert r0.energy_pj == pytest.approx(4.6 * T * r0.flops)  # the real-valued layer runs every step
    assert r2.events == float(s.sum()) * 4
    assert r2.sops == pytest.approx(r2.events * (2 * 7 * 4 - 1) / (7 * 4))  # rate x FLOPs x T
    assert r2.rate == pytest.approx(float(s.sum()) / (T * B * 7))


def _brute_pairs(coords: torch.Tensor) -> list[tuple[int, int]]:
    """(input, output) pairs of a 3x3x3 submanifold conv by comparing every pair of sites."""
    out = []
    for o, i in itertools.product(range(len(coords)), repeat=2):
        d = coords[i] - coords[o]
        if d[0] == 0 and bool((d[1:].abs() <= 1).all()):
            out.append((i, o))
    return out


class _SparseNet(nn.Module):
    """Stem (real input, called twice to test accumulation) -> SN -> SubM -> SN -> strided conv."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = SubMConv3d(4, 6)
        self.sn1 = ILIF(D=4)
        self.conv = SubMConv3d(6, 5)
        self.sn2 = ILIF(D=4)
        self.down = SparseConv3d(5, 3)

    def forward(self, st: SparseTensor) -> SparseTensor:
        u = self.stem(st).features + self.stem(st).features  # a shared module used twice
        s1 = self.sn1(st.replace(features=u * 2))
        s2 = self.sn2(self.conv(s1))
        self.s1, self.s2 = s1.features, s2.features
        return self.down(s2)


def test_sparse_conv_counts_match_brute_force(random_sites):
    torch.manual_seed(5)
    coords = random_sites(batch=2, grid=5, p=0.15, seed=5)  # ~40 sites in two 5^3 grids
    assert all(int((coords[:, 0] == b).sum()) > 0 for b in range(2))  # both samples have sites
    st = SparseTensor(torch.randn(len(coords), 4), coords, batch_size=2)
    net = _SparseNet().eval()
    rep = measure_energy(net, st)
    rows = {r.name: r for r in rep.layers}
    pairs = _brute_pairs(coords)
    n = len(coords)
    assert rows["stem"].pairs == 2 * len(pairs) and rows["stem"].calls == 2
    assert rows["stem"].flops == 2 * (2 * len(pairs) * 4 * 6 - n) and not rows["stem"].spiking
    s1 = _counts(net.s1).sum(1)
    assert rows["conv"].spiking and rows["conv"].pairs == len(pairs)
    assert rows["conv"].events == sum(float(s1[i]) for i, _ in pairs) * 5 > 0
    assert rows["conv"].flops == 2 * len(pairs) * 6 * 5 - n and rows["conv"].macs == len(pairs) * 6 * 5
    # Strided conv, kernel 2 stride 2: every input site lies in exactly one window.
    cells = {tuple(c[:1].tolist() + (c[1:] // 2).tolist()) for c in coords}
    assert rows["down"].pairs == n and rows["down"].out_sites == len(cells)
    assert rows["down"].flops == 2 * n * 5 * 3 - len(cells)
    assert rows["down"].events == float(_counts(net.s2).sum()) * 3
    per = rep.per_sample()
    for b in range(2):
        nb = int((coords[:, 0] == b).sum())
        pb = sum(1 for i, _ in pairs if coords[i, 0] == b)
        expect = 2 * (2 * pb * 4 * 6 - nb) + (2 * pb * 6 * 5 - nb)
        expect += 2 * nb * 5 * 3 - sum(1 for c in cells if c[0] == b)
        assert per["ann_flops"][b] == expect
    set_spike_mode(net, "binary")
    binary = measure_energy(net, st)
    assert isinstance(net.s2, SpikeTrain)
    assert binary.sops == rep.sops and binary.per_sample()["sops"] == per["sops"]
    assert binary.per_sample()["synaptic_events"] == per["synaptic_events"]


def test_json_table_plot(tmp_path):
    torch.manual_seed(6)
    net = TinyCNN().eval()
    rep = measure_energy(net, torch.randn(2, 3, 8, 8), energy=EnergyTable.preset("int8"), name="tiny")
    out = tmp_path / "e.json"
    rep.to_json(str(out))
    d = json.loads(out.read_text())
    for key in ("model", "points", "ann_flops", "sops", "energy_snn_mj", "energy_ann_mj", "ratio", "layers"):
        assert key in d
    assert d["model"] == "tiny" and len(d["layers"]) == 3
    assert d["unit"] == "flops" and d["ann_ops"] == d["ann_flops"] and d["ann_macs"] < d["ann_flops"]
    assert {
        "layer",
        "type",
        "input_sites",
        "active_pairs",
        "c_in",
        "c_out",
        "flops",
        "firing_rate",
        "sops",
        "macs",
        "synaptic_events",
    } <= set(d["layers"][0])
    assert d["energy_table"] == {"name": "int8", "e_mac_pj": 0.23, "e_ac_pj": 0.03}
    assert d["energy_ann_mj"] == pytest.approx(d["ann_flops"] * 0.23e-9)
    text = rep.table()
    assert "c2" in text and "SNN/ANN" in text
    png = tmp_path / "e.png"
    rep.plot(str(png))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_inputs():
    with pytest.raises(ValueError, match="unknown energy preset"):
        EnergyTable.preset("fp64")
    with pytest.raises(ValueError, match="positive"):
        EnergyTable(e_mac=0.0)
    with pytest.raises(ValueError, match="unknown energy convention"):
        measure_energy(TinyCNN(), torch.randn(1, 3, 8, 8), convention="syops")
    with pytest.raises(ValueError, match="no synaptic layer"):
        measure_energy(nn.ReLU(), torch.randn(2, 3))
    with pytest.raises(ValueError, match="only to E-3DSNN"):
        measure_energy(TinyCNN(), torch.randn(1, 3, 8, 8), convention="e3dsnn-release")
    with pytest.raises(ValueError, match="unknown energy unit"):
        measure_energy(TinyCNN(), torch.randn(1, 3, 8, 8), unit="joules")
    with pytest.raises(ValueError, match="counts FLOPs"):
        measure_energy(TinyCNN(), torch.randn(1, 3, 8, 8), convention="e3dsnn-release", unit="macs")
    a = measure_energy(TinyCNN(), torch.randn(1, 3, 8, 8))
    with pytest.raises(ValueError, match="units"):
        merge_reports([a, measure_energy(TinyCNN(), torch.randn(1, 3, 8, 8), unit="macs")])


def test_energy_table_preset_overrides():
    assert EnergyTable.preset("int8") == EnergyTable(0.23, 0.03, "int8")
    # overriding one figure keeps the preset's other one and renames the table
    assert EnergyTable.preset("int8", e_ac=0.05) == EnergyTable(0.23, 0.05, "custom")
    assert EnergyTable.preset("fp32", e_mac=2.0) == EnergyTable(2.0, 0.9, "custom")
    with pytest.raises(ValueError, match="unknown energy preset"):
        EnergyTable.preset("fp64", e_mac=1.0)


class _ReleaseStem(nn.Module):
    """E-3DSNN stem (SubM3 in->E, BN, SN, SubM3 E->E, BN, SN, SubM3 E->E, BN) + one strided stage conv.

    The release's printed FLOPs depend only on the stem and the input's kernel map, so this is enough
    to pin the convention independently of svl.models.
    """

    def __init__(self, E: int) -> None:
        super().__init__()
        self.convs = nn.ModuleList([SubMConv3d(6, E), SubMConv3d(E, E), SubMConv3d(E, E)])
        self.bns = nn.ModuleList([SparseBatchNorm(E) for _ in range(3)])
        self.sn = ILIF(D=4)
        self.down = SparseConv3d(E, 2 * E)

    def forward(self, st: SparseTensor) -> SparseTensor:
        x = self.bns[0](self.convs[0](st))
        x = self.bns[1](self.convs[1](self.sn(x)))
        x = self.bns[2](self.convs[2](self.sn(x)))
        return self.down(self.sn(x))


@pytest.mark.parametrize(("E", "release_flops"), [(16, 2.92e7), (24, 6.52e7)])
def test_release_convention_reproduces_published_flops(E, release_flops):
    st = random_voxel_input(9830, grid=64, channels=6, seed=0)
    assert st.num_sites == 9830 and int(st.coords[:, 1:].max()) <= 63
    rep = measure_energy(_ReleaseStem(E).eval(), st, convention="e3dsnn-release")
    assert rep.ann_flops == pytest.approx(release_flops, rel=0.03)
    assert rep.energy_ann_mj == pytest.approx(release_flops * 4.6e-9, rel=0.03)
    stem = rep.layers[:3]
    assert len(stem) == 3
    assert all(r.counted and r.c_in == E and r.c_out == E for r in stem)  # the first counted as E->E
    assert not rep.layers[3].counted
    # The release's pairs are the stem's real kernel-map pairs: (2 * P * E^2 - N) x 3.
    pairs = stem[0].pairs
    assert rep.ann_flops == 3 * (2 * pairs * E * E - 9830)
    # Our exact count of the same layers: in->E first conv, and the strided conv too.
    exact = measure_energy(_ReleaseStem(E).eval(), st)
    assert exact.ann_flops == rep.exact_ann_flops
    assert exact.layers[0].flops == 2 * pairs * 6 * E - 9830


class _SpikeAttention(nn.Module):
    """Spike-driven linear attention ``SN(Q (K^T V) * scale)`` with functional matmuls."""

    def __init__(self, d: int = 8) -> None:
        super().__init__()
        self.q, self.k, self.v = SLinear(d, d), SLinear(d, d), SLinear(d, d)
        self.sq, self.sk, self.sv, self.so = ILIF(), ILIF(), ILIF(), ILIF()
        self.proj = SLinear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.sq(self.q(x)), self.sk(self.k(x)), self.sv(self.v(x))
        self.kv = k.transpose(-2, -1) @ v
        self.qs = q
        return self.proj(self.so(q @ self.kv * 0.125))


def test_functional_attention_matmuls_are_counted():
    torch.manual_seed(7)
    att = _SpikeAttention().eval()
    x = torch.randn(2, 5, 8) * 2  # (B, tokens, d); x itself is real-valued
    rep = measure_energy(att, x)
    rows = {r.name: r for r in rep.layers}
    kv, qkv = rows["_SpikeAttention.matmul1"], rows["_SpikeAttention.matmul2"]
    assert kv.spiking and kv.events == pytest.approx(float(att.kv.sum()))  # coincident spike pairs
    assert kv.flops == 2 * (2 * 5 * 8 - 1) * 8  # per product: (2 k n - 1) m, k = tokens
    assert qkv.spiking and qkv.events == pytest.approx(float(att.qs.sum()) * 8)
    assert not rows["q"].spiking and rows["proj"].spiking
    assert [r.name for r in rep.layers][:3] == ["q", "k", "v"]
    per = rep.per_sample()["sops"]
    single = measure_energy(att, x[1:]).sops
    assert per[1] == pytest.approx(single)


class _PointMLP(nn.Module):
    """A point-wise spiking MLP with max pooling: (B, N, 6) clouds -> (B, 16)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.sn1, self.fc2, self.sn2, self.head = (
            SLinear(6, 32),
            ILIF(),
            SLinear(32, 16),
            ILIF(),
            SLinear(16, 16),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.sn2(self.fc2(self.sn1(self.fc1(x) * 3)))
        pooled = s.map(lambda b: b.amax(-2)) if isinstance(s, SpikeTrain) else s.amax(-2)  # still spikes
        return self.head(pooled)


def test_measure_model_on_random_clouds_and_merge():
    from svl.energy import measure_model, random_cloud

    cloud = random_cloud(100, channels=6, batch_size=2, seed=1)
    assert cloud.shape == (2, 100, 6) and float(cloud[..., :3].norm(dim=-1).max()) <= 1.0
    assert torch.all(cloud[..., 3:] == 0.4)
    net = _PointMLP().eval()
    rep = measure_model(net, random_points=64, seed=3)
    assert rep.batch_size == 1 and rep.points == 64
    assert rep.layers[-1].spiking  # max-pooled spikes are still spikes
    a, b = measure_energy(net, cloud[:1]), measure_energy(net, cloud[1:])
    merged = merge_reports([a, b])
    whole = measure_energy(net, cloud)
    assert merged.batch_size == 2
    assert merged.sops == pytest.approx(whole.sops) and merged.energy_snn_mj == pytest.approx(
        whole.energy_snn_mj
    )
    assert merged.per_sample()["sops"] == pytest.approx(whole.per_sample()["sops"])
    with pytest.raises(ValueError, match="exactly one"):
        measure_model(net)


def test_units_price_both_sides_alike():
    """At firing rate 1 a spiking layer costs E_AC / E_MAC of its ANN work, whichever the unit."""
    fc1, fc2 = SLinear(5, 7), SLinear(7, 3)
    nn.init.zeros_(fc1.weight)
    nn.init.constant_(fc1.bias, 2.0)  # every membrane is 2: one spike per neuron with D = 1
    net = nn.Sequential(fc1, ILIF(D=1), fc2).eval()
    x = torch.randn(2, 4, 5)  # 2 samples of 4 rows
    work = {"flops": (4 * (2 * 5 * 7 - 1), 4 * (2 * 7 * 3 - 1)), "macs": (4 * 5 * 7, 4 * 7 * 3)}
    for unit, (w1, w2) in work.items():
        rep = measure_energy(net, x, unit=unit)
        r1, r2 = rep.layers
        assert not r1.spiking and r2.spiking and r2.rate == 1.0
        assert r2.events == 2 * 4 * 7 * 3  # every spike reaches every output
        assert rep.ann_ops == w1 + w2 and rep.sops == pytest.approx(w2)  # SOPs = the layer's ANN work
        assert r2.energy_pj / 2 == pytest.approx(0.9 * w2)
        assert rep.energy_snn_mj == pytest.approx((4.6 * w1 + 0.9 * w2) * 1e-9)
        assert rep.energy_ann_mj == pytest.approx(4.6 * (w1 + w2) * 1e-9)
        assert "unit " + unit in rep.table()


class _SameValues(nn.Module):
    """Identity rows reach some layers as input values and others as I-LIF spikes (the same numbers)."""

    def __init__(self) -> None:
        super().__init__()
        self.sn = ILIF(D=4)
        self.fc_real, self.fc_spk, self.fc_max, self.fc_mean = (SLinear(4, 3) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.sn(x)  # quantize(0 or 1) = 0 or 1: identical values, now spikes
        counts = as_tensor(s)  # binary mode: the sum of the binary sub-steps, still spikes
        assert torch.equal(counts, x)
        eye = torch.eye(4)
        y = (
            self.fc_real(x)
            + self.fc_spk(s)
            + torch.matmul(x, eye)[..., :3]
            + torch.matmul(counts, eye)[..., :3]
        )
        pooled = self.fc_max(counts.amax(-2)) + self.fc_mean(counts.mean(-2))  # max keeps spikes, mean not
        return y + pooled.unsqueeze(-2)


@pytest.mark.parametrize("mode", ["integer", "binary"])
def test_spikes_are_known_by_provenance_not_value(mode):
    net = set_spike_mode(_SameValues().eval(), mode)
    x = torch.eye(4).repeat(2, 1, 1)  # 2 samples of one-hot rows: non-negative integers <= D
    rows = {r.name: r for r in measure_energy(net, x).layers}
    real = ("fc_real", "fc_mean", "_SameValues.matmul1")
    assert {n for n, r in rows.items() if not r.spiking} == set(real)
    for n in real:  # real-valued input is paid as MACs, every FLOP at E_MAC
        assert rows[n].events == rows[n].sops == 0
        assert rows[n].energy_pj == pytest.approx(4.6 * rows[n].flops)
    # Hand counts: 8 spikes (4 per sample), each reaching 3 outputs (4 for x @ eye); max pooling of
    # the one-hot rows gives 4 spikes per sample.
    assert rows["fc_spk"].events == 8 * 3 and rows["fc_max"].events == 8 * 3
    assert rows["_SameValues.matmul2"].events == 8 * 4
    assert rows["fc_spk"].energy_pj == pytest.approx(0.9 * rows["fc_spk"].sops)


# ----------------------------------------------------------------------------- the time axis (issue 27)
def _per_sample(model, make, batch_sizes=(1, 2, 4)):
    from svl.energy import measure_energy

    out = []
    for b in batch_sizes:
        r = measure_energy(model, make(b))
        out.append((r.energy_snn_mj, r.energy_ann_mj, r.sops))
    return out


@pytest.mark.parametrize("T", [2])
def test_a_batch_of_T_samples_is_not_read_as_T_steps(T):
    """The meter takes the time axis from the model's declaration, not from a size equal to T: the
    same sample repeated B = 1, T, 2T times costs the same per sample (Spikformer and E-3DSNN)."""
    from svl.data.batch import collate_points
    from svl.models import create_model

    torch.manual_seed(0)
    img = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 4
    spikformer = create_model("spikformer_s", T=T).eval()
    got = _per_sample(spikformer, lambda b: img.expand(b, -1, -1, -1).contiguous(), (1, T, 2 * T))
    for g in got[1:]:
        assert g == pytest.approx(got[0], rel=1e-9)
    torch.manual_seed(0)
    e3d = create_model("e3dsnn_t", T=T, out_dim=10).eval()
    g = torch.Generator().manual_seed(2)
    xyz = torch.rand(256, 3, generator=g) - 0.5
    cloud = {"xyz": xyz, "feats": torch.full((256, 3), 0.4), "label": 0}

    def points(b):
        return collate_points([dict(cloud, index=i) for i in range(b)])

    got = _per_sample(e3d, points, (1, T, 2 * T))
    for g in got[1:]:
        assert g == pytest.approx(got[0], rel=1e-9)


def test_an_undeclared_untimed_input_is_an_error_not_a_guess():
    from svl.energy import measure_energy
    from svl.models import create_model

    m = create_model("spikformer_tiny", T=2, in_channels=1, img_size=8).eval()
    type(m).untimed_inputs, saved = ("head",), type(m).untimed_inputs
    try:
        with pytest.raises(ValueError, match="untimed_inputs"):
            measure_energy(m, torch.rand(3, 1, 8, 8))
    finally:
        type(m).untimed_inputs = saved


def test_energy_per_sample_uses_the_models_own_firing_rates():
    """Two students that fire differently get different SNN energy and report their rates."""
    from svl.data.images import collate_images
    from svl.energy import energy_per_sample
    from svl.models import create_model

    data = [{"image": torch.rand(1, 8, 8, generator=torch.Generator().manual_seed(i)), "label": 0, "index": i}
            for i in range(4)]  # fmt: skip
    out = []
    for scale in (1.0, 3.0):
        torch.manual_seed(0)
        m = create_model("spikformer_tiny", T=2, in_channels=1, img_size=8)
        with torch.no_grad():
            m.sps.stages[0].conv.weight.mul_(scale)
        out.append(energy_per_sample(m, data, collate=collate_images))
    assert out[0]["energy_ann_mj"] == out[1]["energy_ann_mj"]
    assert out[0]["firing_rate"] != out[1]["firing_rate"]
    assert out[0]["energy_snn_mj"] != out[1]["energy_snn_mj"]
    assert set(out[0]["firing_rates"]) >= {"sps", "blocks.0", "blocks.1", "sn_out"}
