"""Architectures: parameter counts, spike-driven == integer mode on real clouds, ANN twins, inputs, T > 1."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from svl.models import count_params, create_model
from svl.models.pointformer import SpikeDrivenAttention, _fps_torch, farthest_point_sample, group_points
from svl.spiking import ILIF, SpikeTrain, record_spikes, set_spike_mode, spike_stats

SMALL_PF = {"depth": 2, "num_groups": 64, "group_size": 16}


# ----------------------------------------------------------------------------- parameter counts
def _e3dsnn_formula(E: int, ch: list[int], depth: int, cin: int = 6, out: int = 40) -> int:
    """Independent count from SPEC §3: conv weights K^3*cin*cout, BN 2*c, head cin*out + out."""
    n = 27 * cin * E + 2 * 27 * E * E + 3 * 2 * E
    prev = E
    for c in ch:
        n += 8 * prev * c + 2 * c + depth * (3 * 27 * c * c + 3 * 2 * c)
        prev = c
    return n + prev * out + out


@pytest.mark.parametrize(
    "name,E,ch,depth,paper",
    [
        ("e3dsnn_t", 16, [16, 32, 64, 128], 1, 1.87e6),
        ("e3dsnn_s", 24, [24, 48, 96, 160], 1, 3.27e6),
        ("e3dsnn_l", 64, [64, 128, 128, 256], 2, 17.33e6),
        ("e3dsnn_h", 64, [96, 192, 288, 384], 2, 46.57e6),
    ],
)
def test_e3dsnn_param_counts(name, E, ch, depth, paper):
    n = count_params(create_model(name))
    assert n == _e3dsnn_formula(E, ch, depth)
    assert abs(n - paper) / paper < 0.005
    assert count_params(create_model(name + "_ann")) == n


def test_e3dsnn_1280_head_sizes():
    assert count_params(create_model("e3dsnn_l", out_dim=1280)) == pytest.approx(17.7e6, rel=0.005)
    assert 46.7e6 <= count_params(create_model("e3dsnn_h", out_dim=1280)) <= 47.1e6


def test_pointformer_and_pointnet_param_counts():
    pf = create_model("spike_pointformer_l")
    n = count_params(pf)
    assert 21.9e6 <= n <= 22.1e6
    assert len(pf.blocks) == 12 and pf.dim == 384 and pf.blocks[0].mlp[1].fc.out_features == 1536
    assert not any(isinstance(m, nn.LayerNorm | nn.Softmax) for m in pf.modules())
    # The same trunk with a 1024-d output: only the head grows (768 x 1024 + 1024).
    big = create_model("spike_pointformer_l", out_dim=1024)
    assert count_params(big) - n == (768 + 1) * (1024 - 40)
    assert big.head.in_features == big.embed_dim_in == 768
    pn = count_params(create_model("spike_pointnet"))
    assert 3.4e6 <= pn <= 3.6e6


# ----------------------------------------------------------------------------- spike-driven == integer
def _modes(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    set_spike_mode(model, "integer")
    with torch.no_grad():
        a = model(x)
    set_spike_mode(model, "binary")
    with torch.no_grad():
        b = model(x)
    set_spike_mode(model, "integer")
    return a, b


@pytest.mark.parametrize("name,cfg", [("e3dsnn_t", {}), ("spike_pointnet", {})])
def test_binary_equals_integer_on_modelnet40(modelnet_clouds, calibrate_bn, name, cfg):
    x = modelnet_clouds(8)[0]
    model = calibrate_bn(create_model(name, **cfg), x)
    record_spikes(model)
    a, b = _modes(model, x)
    stats = spike_stats(model)
    neurons = {n for n, m in model.named_modules() if isinstance(m, ILIF)}
    assert neurons and set(stats) == neurons, "every spiking layer must have run and been recorded"
    rates = [s["rate"] for s in stats.values()]
    assert min(rates) > 0.05, "the network must actually spike for the comparison to mean anything"
    assert (a - b).abs().max() <= 1e-4 * a.abs().max()
    assert torch.equal(a.argmax(1), b.argmax(1))


def test_binary_equals_integer_pointformer_float64(modelnet_clouds, calibrate_bn):
    """In float64 the summation-order error (~1e-16) never reaches a rounding boundary: exact match."""
    x = modelnet_clouds(8)[0].double()
    model = calibrate_bn(create_model("spike_pointformer_l", **SMALL_PF).double(), x)
    a, b = _modes(model, x)
    assert a.dtype == torch.float64
    assert (a - b).abs().max() <= 1e-4 * a.abs().max()
    assert torch.equal(a.argmax(1), b.argmax(1))


def test_float32_disagreements_are_rounding_ties(modelnet_clouds, calibrate_bn):
    """In float32 a spike may differ only where the membrane sits within float error of k + 0.5."""
    x = modelnet_clouds(8)[0]
    model = calibrate_bn(create_model("spike_pointformer_l", **SMALL_PF), x)
    seen: dict[str, list] = {}

    def hook(name):
        def fn(mod, inp, out):
            s = out.count() if isinstance(out, SpikeTrain) else out
            seen.setdefault(name, []).append((inp[0].detach().clone(), s.detach().clone()))

        return fn

    hooked = [n for n, m in model.named_modules() if isinstance(m, ILIF)]
    for n in hooked:
        model.get_submodule(n).register_forward_hook(hook(n))
    _modes(model, x)
    assert hooked and sorted(seen) == sorted(hooked), "every neuron's hook must have fired"
    assert all(len(calls) == 2 for calls in seen.values()), "one call in integer mode, one in binary mode"
    for (u_int, s_int), (u_bin, s_bin) in seen.values():
        bad = s_int != s_bin
        if bad.any():  # the first layer that disagrees: only boundary ties, caused by summation order
            u = u_int[bad]
            assert ((u - torch.floor(u) - 0.5).abs() < 1e-4).all()
            assert ((u_int - u_bin).abs().max()) < 1e-4
            break
        torch.testing.assert_close(u_int, u_bin, rtol=1e-5, atol=1e-4)


def test_attention_is_q_ktv_and_matches_qkt_v():
    """Q (K^T V) == (Q K^T) V (the softmax-free order it replaces), per head, in both spike modes."""
    torch.manual_seed(0)
    att = SpikeDrivenAttention(dim=32, num_heads=4, nf=lambda: ILIF(D=4)).double().eval()
    x = torch.randn(2, 10, 32, dtype=torch.float64) * 2
    captured = {}
    att.sn_attn.register_forward_hook(lambda m, i, o: captured.__setitem__("a", i[0]))
    with torch.no_grad():
        out_int = att(x)
        assert "a" in captured, "the attention neuron's hook must have fired"
        s = att.sn_in(x)
        q, k, v = (
            att._heads(sn(lin(s))) for lin, sn in ((att.q, att.sn_q), (att.k, att.sn_k), (att.v, att.sn_v))
        )
        ref = ((q @ k.transpose(-2, -1)) @ v * att.scale).transpose(-3, -2).flatten(-2)
        torch.testing.assert_close(captured["a"], ref)
        assert (q.unique() >= 0).all() and q.max() <= 4 and float(q.sum()) > 0
        set_spike_mode(att, "binary")
        out_bin = att(x)
    torch.testing.assert_close(out_int, out_bin, rtol=0, atol=1e-12)


# ----------------------------------------------------------------------------- ANN twins, inputs, T
@pytest.mark.parametrize(
    "name,cfg", [("e3dsnn_t", {}), ("spike_pointnet", {}), ("spike_pointformer_l", SMALL_PF)]
)
def test_ann_twin_shares_layout_and_runs(modelnet_clouds, name, cfg):
    x = modelnet_clouds(4)[0]
    snn = create_model(name, out_dim=16, **cfg).eval()
    ann = create_model(name + "_ann", out_dim=16, **cfg).eval()
    assert any(isinstance(m, ILIF) for m in snn.modules())
    assert not any(isinstance(m, ILIF) for m in ann.modules())
    ann.load_state_dict(snn.state_dict())  # same parameter names and shapes
    with torch.no_grad():
        ya, ys = ann(x), snn(x)
    assert ya.shape == ys.shape == (4, 16) and torch.isfinite(ya).all()
    assert not torch.allclose(ya, ys)


@pytest.mark.parametrize(
    "name,cfg", [("e3dsnn_t", {}), ("spike_pointnet", {}), ("spike_pointformer_l", SMALL_PF)]
)
def test_tensor_and_batch_inputs_agree(modelnet_clouds, calibrate_bn, point_batch, name, cfg):
    xyz = modelnet_clouds(2)[0]
    model = calibrate_bn(create_model(name, out_dim=8, **cfg), xyz)
    batch = point_batch(xyz)
    feats = batch.feats
    assert torch.equal(feats[..., 3:], torch.full_like(xyz, 0.4))
    with torch.no_grad():
        a, b, c = model(xyz), model(feats), model(batch)
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a, c)
    with pytest.raises(ValueError, match="input channels"):
        model(torch.zeros(2, 1024, 5))
    with pytest.raises(ValueError, match="PointBatch"):
        model([1, 2, 3])


@pytest.mark.parametrize(
    "name,cfg", [("e3dsnn_t", {}), ("spike_pointnet", {}), ("spike_pointformer_l", SMALL_PF)]
)
def test_multistep_repeat_equals_explicit_steps(modelnet_clouds, calibrate_bn, point_batch, name, cfg):
    xyz = modelnet_clouds(2)[0]
    model = calibrate_bn(create_model(name, out_dim=8, T=2, **cfg), xyz)
    feats = point_batch(xyz).feats
    steps = feats.unsqueeze(0).expand(2, *feats.shape)
    with torch.no_grad():
        a, b = model(xyz), model(point_batch(xyz, feats, steps=steps))
        other = feats.clone()
        other[..., 3:] = 0.9
        c = model(point_batch(xyz, feats, steps=torch.stack([feats, other])))
    assert a.shape == (2, 8)
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)
    n = [m for m in model.modules() if isinstance(m, ILIF)]
    assert n and all(m.T == 2 for m in n)


def test_e3dsnn_uses_given_sparse_tensor_and_head_is_linear_before_pool(
    modelnet_clouds, calibrate_bn, point_batch
):
    from svl.sparse import global_mean_pool, voxelize

    xyz = modelnet_clouds(2)[0]
    model = calibrate_bn(create_model("e3dsnn_t", out_dim=8), xyz)
    feats = point_batch(xyz).feats
    idx = torch.arange(2).repeat_interleave(xyz.shape[1])
    st, _ = voxelize(xyz.reshape(-1, 3), feats.reshape(-1, 6), idx, 0.02, batch_size=2)
    batch = point_batch(xyz, feats, sparse=st)
    with torch.no_grad():
        torch.testing.assert_close(model(batch), model(xyz))
        f = model.forward_features(xyz)
        assert f.stride == 16 and f.features.shape[-1] == model.embed_dim_in == 128
        site = f.features @ model.head.weight[0] + model.head.bias  # per-site head, then mean pool
        torch.testing.assert_close(global_mean_pool(f.replace(features=site)), model(xyz))


def test_e3dsnn_trains_through_the_surrogate(modelnet_clouds):
    xyz = modelnet_clouds(4)[0]
    model = create_model("e3dsnn_t", out_dim=8).train()
    model(xyz).pow(2).sum().backward()
    assert model.stem[0].conv.weight.grad.abs().sum() > 0
    assert model.stages[3].blocks[0].conv3.conv.weight.grad.abs().sum() > 0


# ----------------------------------------------------------------------------- grouping
def test_fps_backends_agree_and_spread(modelnet_clouds):
    pytest.importorskip("fpsample")
    xyz = modelnet_clouds(2)[0]
    a = farthest_point_sample(xyz, 64, backend="fpsample")
    b = _fps_torch(xyz, 64)
    assert torch.equal(a, b)
    # farthest-point property: the 2nd centre is the point farthest from the 1st (point 0)
    d = (xyz - xyz[:, :1]).norm(dim=-1)
    assert torch.equal(a[:, 1], d.argmax(1))
    with pytest.raises(ValueError, match="cannot sample"):
        farthest_point_sample(xyz[:, :10], 64)


def test_group_points_knn_is_centre_relative(modelnet_clouds):
    xyz = modelnet_clouds(1)[0]
    feats = torch.cat([xyz, torch.rand_like(xyz)], -1)
    centres, groups = group_points(xyz, feats, 16, 8)
    assert centres.shape == (1, 16, 3) and groups.shape == (1, 16, 8, 6)
    rel = groups[..., :3]
    assert torch.allclose(rel[:, :, 0], torch.zeros(3), atol=1e-6)  # nearest neighbour = the centre
    r = rel.norm(dim=-1)
    dists = (centres.unsqueeze(2) - xyz.unsqueeze(1)).norm(dim=-1).sort(-1).values[..., :8]
    torch.testing.assert_close(r, dists, atol=1e-5, rtol=1e-5)
