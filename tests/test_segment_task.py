"""`svl finetune task=segmentation` and `svl segment` end to end on the real ShapeNetPart samples."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from svl.tasks import load_task_config, run_task
from svl.tasks.segment import SegmentationTask


def _over(tmp_path, spp, *extra):
    return [
        "task=segmentation", f"out_dir={tmp_path}", "data.dataset=shapenetpart", f"data.root={spp}",
        "data.options.skip_missing=true", "data.num_points=512", "model.voxel_size=0.04", "train.epochs=2",
        "train.batch_size=4", "train.ckpt_every_steps=0", "train.log_every_steps=1",
        "eval.monitor_test=false", *extra,
    ]  # fmt: skip


def test_segmentation_fine_tune_reports_miou_and_segment_writes_files(tmp_path, spp, run_cli):
    _, cfg = load_task_config("classification", None, _over(tmp_path, spp))
    res = run_task(cfg)
    assert 0 <= res["miou"] <= 1 and 0 <= res["oa"] <= 1 and len(res["per_class"]) == 50
    sp = res["shapenetpart"]
    assert sp["shapes"] == res["n_test"] and 0 <= sp["instance_miou"] <= 1
    assert res["energy"]["energy_snn_mj"] > 0
    assert json.loads((tmp_path / "results.json").read_text())["miou"] == pytest.approx(res["miou"])
    pts = next(spp.glob("*/points/*.pts"))
    out = tmp_path / "seg"
    code, stdout, err = run_cli(
        "segment", "--checkpoint", tmp_path / "final.safetensors", pts, "-o", out, "--json"
    )
    assert code == 0, err
    r = json.loads(stdout)[0]
    labels = np.load(out / f"{pts.stem}.npy")
    n = len(np.loadtxt(pts))
    assert len(labels) == r["points"] == n and (out / f"{pts.stem}.png").stat().st_size > 1000
    ply = (out / f"{pts.stem}.ply").read_bytes()
    assert b"property int label" in ply and ply.count(b"\n", 0, ply.index(b"end_header")) < 20
    written = {Path(r[k]).name for k in ("ply", "npy", "png")}
    assert written == {f"{pts.stem}{e}" for e in (".ply", ".npy", ".png")} == {p.name for p in out.iterdir()}
    code, line, _ = run_cli(
        "segment", "--checkpoint", tmp_path / "final.safetensors", pts, "-o", tmp_path / "o2"
    )
    assert code == 0 and all(
        str(tmp_path / "o2" / f"{pts.stem}{e}") in line for e in (".ply", ".npy", ".png")
    )
    code, _, err = run_cli("segment", "--checkpoint", tmp_path / "results.json", pts, "-o", out)
    assert code == 2


def test_encoder_init_loads_only_the_e3dsnn_stages(tmp_path, spp, model_checkpoint):
    src, ckpt = model_checkpoint(tmp_path / "enc.safetensors", "e3dsnn_t", voxel_size=0.04, out_dim=384)
    _, cfg = load_task_config("classification", None, _over(tmp_path / "run", spp, f"init={ckpt}"))
    t = SegmentationTask(cfg)
    net = t.build_net()
    mine, theirs = net.state_dict(), src.state_dict()
    enc = [k for k in mine if k.startswith(("stem.", "stages."))]
    assert enc and all(torch.equal(mine[k], theirs[k]) for k in enc)
    assert "head.weight" in mine and mine["head.weight"].shape[-1] == 50
    _, bad = model_checkpoint(tmp_path / "pn.safetensors", "spike_pointnet")
    _, cfg2 = load_task_config("classification", None, _over(tmp_path / "run2", spp, f"init={bad}"))
    with pytest.raises(ValueError, match="spike_pointnet"):
        SegmentationTask(cfg2).build_net()


def test_scene_config_builds_the_task(tmp_path):
    cfgfile = Path(__file__).resolve().parents[1] / "configs" / "segment_modelnet40_scenes.yaml"
    cls, cfg = load_task_config("classification", cfgfile, [f"out_dir={tmp_path}", "data.options.scenes=3",
                                                             "data.num_points=512"])  # fmt: skip
    assert cls is SegmentationTask and cfg.model.name == "e3dsnn_unet_t"


def test_semantic_kitti_layout_end_to_end_on_a_real_scan(tmp_path, shared_data, run_cli):
    """Dense LiDAR: voxel_sample + sphere_crop before the cap, then `svl segment` labels every point."""
    import shutil

    scan = shared_data / "kitti_samples" / "training" / "velodyne" / "000000.bin"
    if not scan.is_file():
        pytest.skip("KITTI samples not in the shared data")
    xyz = np.fromfile(scan, "<f4").reshape(-1, 4)[:, :3]
    raw = np.where(xyz[:, 2] < -1.4, 40, 50).astype("<u4")  # road below the sensor height, else building
    for seq in ("00", "08"):  # 00 trains, 08 validates (the official split)
        d = tmp_path / "kitti" / "sequences" / seq
        (d / "velodyne").mkdir(parents=True)
        (d / "labels").mkdir()
        shutil.copy(scan, d / "velodyne" / "000000.bin")
        raw.tofile(d / "labels" / "000000.label")
    run = tmp_path / "run"
    _, cfg = load_task_config("classification", None, [
        "task=segmentation", f"out_dir={run}", "data.dataset=semantic_kitti",
        f"data.root={tmp_path / 'kitti'}",
        "data.num_points=2048", "model.voxel_size=0.2", "train.epochs=1", "train.batch_size=1",
        "data.test_split=val", "train.ckpt_every_steps=0", "eval.monitor_test=false", "eval.precise_bn=1",
        "energy=false",
        "data.presample=[{name: voxel_sample, voxel_size: 0.1}, {name: sphere_crop, max_points: 8000}]",
    ])  # fmt: skip
    res = run_task(cfg)
    assert res["n_train"] == res["n_test"] == 1 and len(res["per_class"]) == 19
    out = tmp_path / "seg"
    code, stdout, err = run_cli(
        "segment", "--checkpoint", run / "final.safetensors", "--format", "kitti", scan, "-o", out, "--json"
    )
    assert code == 0, err
    labels = np.load(out / "000000.npy")
    assert len(labels) == len(xyz) == json.loads(stdout)[0]["points"] and labels.max() < 19
