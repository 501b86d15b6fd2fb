"""Spikformer (2D spiking ViT): shapes, spike modes, ANN twin, energy, training, errors, registry."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from svl.energy import measure_energy
from svl.models import count_params, create_model
from svl.models.spikformer import PrototypeHead, Spikformer
from svl.spiking import ILIF, record_spikes, set_spike_mode, spike_stats


def _images(b: int = 4, size: int = 8, c: int = 3, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.rand(b, c, size, size, dtype=dtype)


# ----------------------------------------------------------------------------- shapes and features
@pytest.mark.parametrize("T", [1, 2])
@pytest.mark.parametrize("head", ["linear", "prototype"])
def test_shapes_and_forward_is_head_of_pooled(T, head):
    m = create_model("spikformer_tiny", T=T, out_dim=7, head=head).eval()
    x = torch.rand(3, 3, 8, 12)  # non-square: grid (4, 6) with patch 2
    with torch.no_grad():
        f = m.forward_features(x)
        out = m(x)
    n, c = 4 * 6, 128
    assert f["grid"] == (4, 6)
    assert f["spikes"].shape == (T, 3, n, c)
    assert len(f["membranes"]) == len(m.blocks) == 2
    assert all(mem.shape == (T, 3, n, c) and mem.is_floating_point() for mem in f["membranes"])
    assert f["pooled_steps"].shape == (T, 3, c) and f["pooled"].shape == (3, c)
    torch.testing.assert_close(f["pooled"], f["spikes"].mean((0, 2)))
    s = f["spikes"]
    assert torch.equal(s, s.round()) and s.min() >= 0 and s.max() <= m.D
    assert out.shape == (3, 7)
    torch.testing.assert_close(out, m.head(f["pooled"]))
    if head == "linear":  # linear head: the mean over T of per-step logits is the same thing
        torch.testing.assert_close(out, m.head(f["pooled_steps"]).mean(0))
    # an ImageBatch-like object is read through .images
    with torch.no_grad():
        torch.testing.assert_close(m(SimpleNamespace(images=x)), out)


def test_token_count_per_patch_size():
    for p in (1, 2, 4, 8, 16):
        m = Spikformer(img_size=16, patch_size=p, embed_dim=32, depth=1, num_heads=2, T=1).eval()
        with torch.no_grad():
            f = m.forward_features(_images(2, 16))
        assert f["grid"] == (16 // p, 16 // p) and f["spikes"].shape[2] == (16 // p) ** 2


# ----------------------------------------------------------------------------- spike modes
@pytest.mark.parametrize("T", [1, 2])
def test_binary_mode_equals_integer_mode(T, calibrate_bn):
    """float64 keeps summation-order error away from rounding ties: the two modes agree exactly."""
    x = _images(4, dtype=torch.float64)
    m = calibrate_bn(create_model("spikformer_tiny", T=T).double(), x)
    record_spikes(m)
    with torch.no_grad():
        a, fa = m(x), m.forward_features(x)
        rates = [s["rate"] for s in spike_stats(m).values()]
        set_spike_mode(m, "binary")
        b, fb = m(x), m.forward_features(x)
    assert len(rates) == sum(isinstance(n, ILIF) for n in m.modules())
    assert min(rates) > 0.05, "the network must spike for the comparison to mean anything"
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    assert torch.equal(fa["spikes"], fb["spikes"])
    assert fb["spikes"].shape == (T, 4, 16, 128)  # binary mode returns counts, not a SpikeTrain


# ----------------------------------------------------------------------------- ANN twin
def test_ann_twin_has_no_ilif_and_same_layout():
    snn, ann = create_model("spikformer_tiny", out_dim=5), create_model("spikformer_tiny_ann", out_dim=5)
    assert any(isinstance(m, ILIF) for m in snn.modules())
    assert not any(isinstance(m, ILIF) for m in ann.modules())
    assert {k: v.shape for k, v in snn.state_dict().items()} == {
        k: v.shape for k, v in ann.state_dict().items()
    }
    ann.load_state_dict(snn.state_dict())
    assert count_params(ann) == count_params(snn)
    assert not any(isinstance(m, nn.LayerNorm | nn.Softmax) for m in snn.modules())
    assert ann.pretrained_cfg["D"] is None and snn.pretrained_cfg["D"] == 4
    with torch.no_grad():
        assert ann.eval()(_images(2)).shape == (2, 5)


# ----------------------------------------------------------------------------- energy
def test_energy_rows_and_spiking_is_cheaper(calibrate_bn):
    x = _images(4)
    m = calibrate_bn(create_model("spikformer_tiny", T=2), x)
    rep = measure_energy(m, x)
    rows = {r.name: r for r in rep.layers}
    att = [r for r in rep.layers if r.kind == "attention"]
    assert len(att) == 2 * len(m.blocks) and all("matmul" in r.name for r in att)
    assert all(r.spiking for r in att), "K^T V and Q (K^T V) read spikes"
    convs = [r for r in rep.layers if r.kind == "conv"]
    assert len(convs) == 5  # 4 SPS stages + the RPE conv
    assert not rows["sps.stages.0.conv"].spiking, "the encoding conv reads the real image"
    assert all(r.spiking for r in convs if r.name != "sps.stages.0.conv")
    assert rows["sps.stages.0.conv"].steps == 1  # direct encoding: the static image is convolved once
    assert rows["sps.stages.1.conv"].steps == 2
    assert 0 < rep.energy_snn_mj < rep.energy_ann_mj and rep.ratio < 1
    # an ImageBatch-like object counts the same
    assert measure_energy(m, SimpleNamespace(images=x)).energy_snn_mj == pytest.approx(rep.energy_snn_mj)
    ann = create_model("spikformer_tiny_ann", T=2).eval()
    rep_ann = measure_energy(ann, x)
    assert not any(r.spiking for r in rep_ann.layers)
    assert rep_ann.energy_snn_mj == pytest.approx(rep_ann.energy_ann_mj, rel=1e-9)
    assert rep_ann.ratio == pytest.approx(1.0)


# ----------------------------------------------------------------------------- training
@pytest.mark.parametrize("head", ["linear", "prototype"])
def test_gradients_reach_every_parameter(head):
    m = create_model("spikformer_tiny", T=2, out_dim=4, head=head).train()
    x, y = _images(8), torch.arange(8) % 4
    F.cross_entropy(m(x), y).backward()
    missing = [n for n, p in m.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, missing
    assert all(torch.isfinite(p.grad).all() for p in m.parameters())


def test_training_reduces_loss_on_a_tiny_batch():
    m = create_model("spikformer_tiny", T=2, out_dim=4).train()
    x, y = _images(16), torch.arange(16) % 4
    opt = torch.optim.AdamW(m.parameters(), lr=2e-3)
    losses = []
    for _ in range(30):
        loss = F.cross_entropy(m(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert all(math.isfinite(v) for v in losses)
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5, losses


# ----------------------------------------------------------------------------- errors
def test_bad_inputs_and_configs():
    m = create_model("spikformer_t", T=1)  # patch 4
    with pytest.raises(ValueError, match="patch"):
        m(_images(1, 2))
    with pytest.raises(ValueError, match="patch"):
        m(torch.rand(1, 3, 32, 30))
    with pytest.raises(ValueError, match="3 input channels, got 1"):
        m(_images(1, 32, c=1))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        m(torch.rand(3, 32, 32))
    with pytest.raises(ValueError, match="divisible"):
        Spikformer(embed_dim=100, num_heads=4)
    with pytest.raises(ValueError, match="divisible"):
        Spikformer(embed_dim=64, num_heads=3)
    with pytest.raises(ValueError, match="patch_size"):
        Spikformer(patch_size=3)
    with pytest.raises(ValueError, match="patch size"):
        Spikformer(img_size=30, patch_size=4)
    with pytest.raises(ValueError, match="head"):
        Spikformer(head="mlp")


# ----------------------------------------------------------------------------- prototype head
def test_prototype_head_is_scaled_cosine():
    h = PrototypeHead(16, 5, proto_dim=8)
    assert h.prototypes.shape == (5, 8) and h.prototypes is h.protos
    f = torch.randn(3, 16)
    wf = f @ h.proj.weight.T
    cos = (wf / wf.norm(dim=1, keepdim=True)) @ (h.protos / h.protos.norm(dim=1, keepdim=True)).T
    torch.testing.assert_close(h(f), (1 / 0.07) * cos)
    torch.testing.assert_close(h.embed(f).norm(dim=-1), torch.ones(3))
    with torch.no_grad():
        h.logit_scale.fill_(math.log(1000.0))
    torch.testing.assert_close(h(f), 100.0 * cos)  # clamped at 100
    assert PrototypeHead(16, 5).prototypes.shape == (5, 16)  # proto_dim defaults to embed_dim


# ----------------------------------------------------------------------------- registry and checkpoints
def test_registry_sizes_and_overrides():
    m = create_model("spikformer_t", out_dim=40)
    assert m.head.out_features == 40 and len(m.blocks) == 4 and m.dim == 256 and m.T == 4
    assert m.model_name == "spikformer_t" and m.pretrained_cfg["T"] == 4
    assert 9.2e6 <= count_params(create_model("spikformer_4_384")) <= 9.4e6  # paper: 9.32 M
    big = create_model("spikformer_8_768", T=1)
    assert big.patch_size == 16 and big.img_size == 224 and len(big.blocks) == 8
    assert 66.0e6 <= count_params(big) <= 66.6e6  # paper: 66.34 M


def test_checkpoint_round_trip(tmp_path, model_checkpoint):
    cfg = {"out_dim": 6, "T": 2, "head": "prototype", "proto_dim": 32}
    m, path = model_checkpoint(tmp_path / "sf.safetensors", "spikformer_tiny", **cfg)
    m2 = create_model(None, pretrained=path).eval()
    assert isinstance(m2.head, PrototypeHead) and m2.T == 2 and m2.model_name == "spikformer_tiny"
    assert m.state_dict().keys() == m2.state_dict().keys()
    for k, v in m.state_dict().items():
        assert torch.equal(v, m2.state_dict()[k]), k
    x = _images(2)
    with torch.no_grad():
        torch.testing.assert_close(m(x), m2(x))
