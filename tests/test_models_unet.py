"""Spiking sparse U-Net (svl/models/unet.py): shapes, spike modes, encoder loading, energy, gradients."""

from __future__ import annotations

import pytest
import torch

from svl.data import collate_points
from svl.energy.meter import measure_energy
from svl.models import create_model
from svl.spiking import record_spikes, set_spike_mode, spike_stats

VS = 0.1  # voxel size for clouds in the unit cube: neighbours exist at every stride


def _batch(b: int = 2, n: int = 300, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    # Clustered points so several share a voxel and submanifold convs see neighbours.
    centres = torch.rand(b, n // 3, 3, generator=g)
    xyz = centres.repeat_interleave(3, 1) + 0.03 * torch.rand(b, n, 3, generator=g)
    rgb = torch.rand(b, n, 3, generator=g)
    return collate_points([{"xyz": xyz[i], "rgb": rgb[i]} for i in range(b)])


def _model(name: str = "e3dsnn_unet_t", calibrate=None, **kw):
    torch.manual_seed(0)
    model = create_model(name, voxel_size=VS, **kw)
    return calibrate(model, _batch(seed=1)) if calibrate is not None else model.eval()


@pytest.mark.parametrize("T", [1, 2])
def test_output_shape_per_point(T):
    out = _model(num_classes=7, T=T)(_batch(2, 300))
    assert out.shape == (2, 300, 7)
    assert torch.isfinite(out).all()


def test_registry_and_contract():
    m = create_model("e3dsnn_unet_s", num_classes=5)
    assert m.out_dim == m.num_classes == 5
    assert m.pretrained_cfg["embed_dim"] == 5 and m.pretrained_cfg["D"] == 4
    assert create_model("e3dsnn_unet_l").head.in_channels == 64


def test_binary_equals_integer(calibrate_bn):
    model = _model(calibrate=calibrate_bn)
    batch = _batch(seed=2)
    record_spikes(model)
    with torch.no_grad():
        a = model(batch)
        rates = [s["rate"] for s in spike_stats(model).values()]
        set_spike_mode(model, "binary")
        b = model(batch)
    assert min(rates) > 0.01, "the network must spike for the comparison to mean anything"
    torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)


def test_e3dsnn_encoder_weights_load_by_name():
    src = create_model("e3dsnn_t").state_dict()
    unet = create_model("e3dsnn_unet_t")
    enc = {k: v for k, v in src.items() if k.startswith(("stem.", "stages."))}
    own = unet.state_dict()
    assert enc and set(enc) == {k for k in own if k.startswith(("stem.", "stages."))}
    missing, unexpected = unet.load_state_dict(enc, strict=False)
    assert not unexpected and not any(k.startswith(("stem.", "stages.")) for k in missing)
    after = unet.state_dict()
    for k, v in enc.items():
        assert torch.equal(after[k], v), k


def test_energy_meter_counts_decoder(calibrate_bn):
    model = _model(calibrate=calibrate_bn)
    rep = measure_energy(model, _batch(seed=2))
    ups = [r for r in rep.layers if r.type == "SparseInverseConv3d"]
    assert len(ups) == 4 and all(r.name.startswith("ups.") and r.spiking for r in ups)
    assert all(r.flops > 0 for r in ups)
    assert any(r.name == "head" and r.spiking for r in rep.layers)
    assert 0 < rep.energy_snn_mj < rep.energy_ann_mj


def test_points_in_one_voxel_share_logits():
    batch = _batch(1, 300)
    out = _model()(batch)[0]
    keys = torch.floor(batch.xyz[0] / VS).long()
    _, inv = torch.unique(keys, dim=0, return_inverse=True)
    assert inv.max() < 299, "the cloud must have shared voxels"
    for v in inv.unique():
        rows = out[inv == v]
        assert torch.equal(rows, rows[:1].expand_as(rows))


def test_gradient_reaches_first_stem_conv():
    model = create_model("e3dsnn_unet_t", voxel_size=VS).train()
    out = model(_batch())
    out.logsumexp(-1).mean().backward()
    g = model.stem[0].conv.weight.grad
    assert g is not None and g.abs().sum() > 0


def test_ann_twin_runs():
    model = _model("e3dsnn_unet_t_ann", num_classes=4)
    assert model.pretrained_cfg["D"] is None
    out = model(_batch())
    assert out.shape == (2, 300, 4) and torch.isfinite(out).all()
