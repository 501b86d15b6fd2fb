"""`svl transfer` / `transfer_report`: what a pretrained encoder sees on other data (issue 30)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from svl.checkpoint import save_checkpoint
from svl.cli import main
from svl.data import build_dataset
from svl.infer.transfer import BN_LOGVAR_SHIFT, draw_batches, format_transfer, transfer_report

TINY = {"stem_channels": 4, "channels": [4, 8, 8, 8], "depth": 1, "out_dim": 16}
SCALE_10 = [{"name": "random_scale", "low": 10.0, "high": 10.0}]
N = 16  # samples per dataset: one batch, so BN calibrated on it sees exactly the report's inputs


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory, model_checkpoint, calibrate_bn, shared_data) -> tuple[torch.nn.Module, Path]:
    """A tiny pretraining checkpoint whose BN running statistics come from the report's reference batch."""
    tmp = tmp_path_factory.mktemp("transfer")
    model, _ = model_checkpoint(tmp / "fresh.safetensors", "e3dsnn_t", meta={"kind": "svl-pretrain"}, **TINY)
    ref = build_dataset("modelnet40", "train", root=shared_data / "modelnet40", num_points=1024, seed=0)
    calibrate_bn(model, draw_batches(ref, N, N, 0)[0])
    meta = {"model": "e3dsnn_t", "model_cfg": TINY, "kind": "svl-pretrain"}
    return model, save_checkpoint(tmp / "p.safetensors", model.state_dict(), meta)


def _report(path: Path, shared: Path, name: str = "modelnet40", **options: object) -> dict:
    root = shared / ("modelnet40" if name == "modelnet40" else "events/nmnist_small")
    return transfer_report(path, name, samples=N, batch_size=N, options={"root": str(root), **options})


def test_reference_after_calibration_has_no_bn_shift(calibrated, shared_data) -> None:
    _, path = calibrated
    rep = _report(path, shared_data, num_points=1024)
    assert rep["reference"] == "modelnet40" and [g["group"] for g in rep["groups"]] == [
        "stem", "stages.0", "stages.1", "stages.2", "stages.3", "sn_out",
    ]  # fmt: skip
    for g in rep["groups"]:
        assert g["sites"] == pytest.approx(g["sites_ref"]) and g["sites"] > 0
        if g["group"] != "sn_out":
            assert g["bn_mean_shift"] < 0.05 and abs(g["bn_logvar_shift"]) < 0.05, g
    assert not [v for v in rep["verdict"] if "BN" in v]


def test_scaled_input_shifts_bn_and_fills_more_sites(calibrated, shared_data) -> None:
    model, path = calibrated
    rep = _report(path, shared_data, transforms=SCALE_10)
    stem = rep["groups"][0]
    # xyz 10x: the first conv's output variance grows (colour stays 0.4), every later BN sees spikes
    assert stem["bn_logvar_shift"] > BN_LOGVAR_SHIFT > abs(stem["bn_logvar_shift_ref"])
    assert stem["bn_mean_shift"] > 10 * stem["bn_mean_shift_ref"]
    assert any(v.startswith("stem: BN input variance") for v in rep["verdict"])
    deep = {g["group"]: g for g in rep["groups"]}["stages.3"]
    assert deep["sites"] > 4 * deep["sites_ref"]  # 10x the extent at the same voxel size
    # independent: the first BN's input statistics by hand on the same draw
    ds = build_dataset("modelnet40", "train", root=shared_data / "modelnet40", transforms=SCALE_10, seed=0)
    (batch,) = draw_batches(ds, N, N, 0)
    with torch.no_grad():
        f = model.stem[0].conv(model.voxelize(batch)).features.double()
    bn = model.stem[0].bn.bn
    rm, rv = bn.running_mean.double(), bn.running_var.double()
    shift = ((f.mean(0) - rm).abs() / (rv + bn.eps).sqrt()).mean()
    logvar = torch.log((f.var(0) + bn.eps) / (rv + bn.eps)).mean()
    got = stem["bn_layers"]["stem.0.bn"]
    assert got["mean_shift"] == pytest.approx(float(shift), rel=1e-5)
    assert got["logvar_shift"] == pytest.approx(float(logvar), rel=1e-5, abs=1e-6)


def test_event_data_runs_on_a_colour_checkpoint(calibrated, shared_data) -> None:
    _, path = calibrated  # 6 channels, T = 1; N-MNIST gives 4 channels (and T bins with encoding=bins)
    for opts in ({}, {"T": 3, "encoding": "bins"}):
        rep = _report(path, shared_data, "nmnist", **opts)
        assert rep["dataset"] == "nmnist" and rep["points"] == 1024
        assert all(g["sites"] > 0 and g["firing"] is not None for g in rep["groups"])
        assert "stages.3" in format_transfer(rep)


def test_cli_table_json_and_errors(calibrated, shared_data, model_checkpoint, tmp_path, capsys) -> None:
    _, path = calibrated
    base = ["transfer", "--checkpoint", str(path), "--data", "modelnet40", "--samples", "4",
            "--batch-size", "4", "--option", f"root={shared_data / 'modelnet40'}"]  # fmt: skip
    assert main(base) == 0
    out = capsys.readouterr().out
    assert "sites ref" in out and "stages.3" in out and "verdict:" in out
    assert main([*base, "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert set(rep) >= {"checkpoint", "dataset", "reference", "groups", "verdict"}
    assert set(rep["groups"][0]) >= {"group", "sites", "sites_ref", "firing", "firing_ref", "bn_mean_shift",
                                     "bn_logvar_shift"}  # fmt: skip
    _, other = model_checkpoint(tmp_path / "pn.safetensors", "spike_pointnet")
    for argv, says in (
        (
            ["transfer", "--checkpoint", str(other), "--data", "modelnet40"],
            f"{other} holds a 'spike_pointnet'",
        ),
        ([*base[:3], "--data", "modelnet40", "--option", "oops"], "--option 'oops': give key=value"),
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("svl: error:") and says in err[0], err


def test_the_downstream_voxel_size_is_the_one_measured(calibrated, shared_data) -> None:
    _, path = calibrated
    root = {"root": str(shared_data / "modelnet40")}
    same = transfer_report(path, "modelnet40", samples=N, batch_size=N, options=root)
    coarse = transfer_report(path, "modelnet40", samples=N, batch_size=N, options=root, voxel_size=0.08)
    assert same["voxel_size"] == pytest.approx(0.02) and coarse["voxel_size"] == pytest.approx(0.08)
    s, c = same["groups"][0], coarse["groups"][0]
    assert c["sites_ref"] == pytest.approx(s["sites_ref"])  # the reference keeps the checkpoint's voxels
    assert c["sites"] < s["sites"] / 1.5  # 4x the voxel edge: 1,024 points share fewer voxels


def test_xyz_scale_shows_the_encoder_a_fine_tune_would_start_from(calibrated, shared_data) -> None:
    """Clouds 10x larger at a 10x voxel through `xyz_scale=10` are, to the encoder, its reference clouds:
    same sites, same BN inputs; without it the stem's BN input variance is far off."""
    _, path = calibrated
    opts = {"root": str(shared_data / "modelnet40"), "transforms": SCALE_10}
    kw = {"samples": N, "batch_size": N, "options": opts, "voxel_size": 0.2}
    raw = transfer_report(path, "modelnet40", **kw)
    fixed = transfer_report(path, "modelnet40", **kw, xyz_scale=10.0)
    for g in fixed["groups"]:
        assert g["sites"] == pytest.approx(g["sites_ref"])
        if g["group"] != "sn_out":
            assert g["bn_mean_shift"] < 0.05 and abs(g["bn_logvar_shift"]) < 0.05, g
    assert raw["groups"][0]["bn_logvar_shift"] > BN_LOGVAR_SHIFT
    assert not [v for v in fixed["verdict"] if "BN" in v]
