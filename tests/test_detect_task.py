"""`svl finetune task=detection` and `svl detect` end to end: scenes of real shapes and real KITTI frames."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from svl.tasks import load_task_config, run_task
from svl.tasks.detect import DetectionTask

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "detect_modelnet40_scenes.yaml"


def _scenes(tmp_path: Path, *extra: str) -> list[str]:
    return [
        f"out_dir={tmp_path}", "data.options.scenes=4", "data.num_points=1024", "train.epochs=1",
        "train.batch_size=2", "train.ckpt_every_steps=0", "eval.monitor_test=false", "eval.precise_bn=1",
        *extra,
    ]  # fmt: skip


def test_scene_detection_reports_ap_and_detect_writes_boxes(tmp_path, shared_data, svl_cache, run_cli):
    _, cfg = load_task_config("classification", CONFIG, _scenes(tmp_path / "run", "data.agnostic=true"))
    res = run_task(cfg)
    assert res["classes"] == ["object"] and res["levels"] == ["all"]
    assert 0 <= res["ap3d"]["object"]["all"] <= res["ap_bev"]["object"]["all"] + 1e-9 <= 1 + 1e-9
    assert res["num_gt"]["object"]["all"] > 0 and res["energy"]["energy_snn_mj"] > 0
    assert json.loads((tmp_path / "run" / "results.json").read_text())["map_bev"] == pytest.approx(
        res["map_bev"], nan_ok=True
    )
    from svl.data import build_dataset
    from svl.data.readers.ply import write_ply_labels

    s = build_dataset("modelnet40_scenes", "test", scenes=4, num_points=1024)[0]
    scene = tmp_path / "scene.ply"
    write_ply_labels(scene, s["xyz"], s["segment"], np.zeros((len(s["xyz"]), 3), np.uint8))
    out = tmp_path / "det"
    code, stdout, err = run_cli(
        "detect", "--checkpoint", tmp_path / "run" / "final.safetensors", scene, "-o", out,
        "--score-threshold", "0", "--json",
    )  # fmt: skip
    assert code == 0, err
    r = json.loads(stdout)[0]
    boxes = json.loads((out / "scene.json").read_text())["boxes"]
    assert r["boxes"] == len(boxes) > 0 and (out / "scene.png").stat().st_size > 1000
    b = boxes[0]
    assert b["class"] == "object" and len(b["centre"]) == 3 and len(b["size"]) == 3 and 0 <= b["score"] <= 1
    assert all(v > 0 for v in b["size"])
    scores = [d["score"] for d in boxes]
    assert scores == sorted(scores, reverse=True)
    code, _, err = run_cli("detect", "--checkpoint", tmp_path / "run" / "results.json", scene, "-o", out)
    assert code == 2 and "results.json" in err


def test_class_subset_and_bad_classes(tmp_path, shared_data, svl_cache):
    _, cfg = load_task_config("classification", CONFIG, _scenes(tmp_path, "data.classes=[chair, table]"))
    t = DetectionTask(cfg)
    assert t.classes == ["chair", "table"] and t.lut[t.box_classes.index("table")] == 1
    assert (t.lut >= 0).sum() == 2 and len(t.box_classes) == 40
    _, bad = load_task_config("classification", CONFIG, _scenes(tmp_path, "data.classes=[chair, sofa_bed]"))
    with pytest.raises(ValueError, match="sofa_bed"):
        DetectionTask(bad)


def test_encoder_init_loads_the_e3dsnn_stages(tmp_path, shared_data, svl_cache, model_checkpoint):
    src, ckpt = model_checkpoint(tmp_path / "enc.safetensors", "e3dsnn_t", voxel_size=0.05, out_dim=384)
    _, cfg = load_task_config("classification", CONFIG, _scenes(tmp_path / "run", f"init={ckpt}"))
    net = DetectionTask(cfg).build_net()
    mine, theirs = net.state_dict(), src.state_dict()
    enc = [k for k in mine if k.startswith(("stem.", "stages."))]
    assert enc and all(torch.equal(mine[k], theirs[k]) for k in enc)
    _, bad = model_checkpoint(tmp_path / "pn.safetensors", "spike_pointnet")
    _, cfg2 = load_task_config("classification", CONFIG, _scenes(tmp_path / "run2", f"init={bad}"))
    with pytest.raises(ValueError, match="spike_pointnet"):
        DetectionTask(cfg2).build_net()


def test_kitti_detection_end_to_end_on_real_frames(tmp_path, kitti_root, svl_cache, run_cli):
    cfg_file = CONFIG.parent / "detect_kitti.yaml"
    _, cfg = load_task_config("classification", cfg_file, [
        f"out_dir={tmp_path / 'run'}", f"data.root={kitti_root}", "data.num_points=4096", "train.epochs=1",
        "train.batch_size=1", "train.ckpt_every_steps=0", "eval.monitor_test=false", "eval.precise_bn=1",
        "energy=false", "model.voxel_size=0.2", "data.presample=[{name: voxel_sample, voxel_size: 0.2}]",
    ])  # fmt: skip
    res = run_task(cfg)
    assert res["classes"] == ["Car", "Pedestrian", "Cyclist"] and res["levels"] == [
        "easy",
        "moderate",
        "hard",
    ]
    assert res["iou_thresholds"]["Car"] == 0.7 and res["n_train"] == 3 and res["n_test"] == 2
    assert res["num_gt"]["Car"]["moderate"] == 1  # the moderate car of frame 000002
    assert set(res["ap3d"]) == set(res["ap_bev"]) == {"Car", "Pedestrian", "Cyclist"}
    scan = kitti_root / "training" / "velodyne" / "000000.bin"
    code, stdout, err = run_cli(
        "detect", "--checkpoint", tmp_path / "run" / "final.safetensors", "--format", "kitti", scan,
        "-o", tmp_path / "det", "--json",
    )  # fmt: skip
    assert code == 0, err
    assert (
        json.loads(stdout)[0]["json"].endswith("000000.json") and (tmp_path / "det" / "000000.png").is_file()
    )


def test_detect_names_bad_files(tmp_path, model_checkpoint, run_cli):
    """A truncated LiDAR scan and a checkpoint that is not a detector: exit 2, the file named."""
    from svl.checkpoint import save_checkpoint
    from svl.models import create_model
    from svl.models.loading import DETECTOR_KIND

    net = create_model(
        "e3dsnn_det_t", num_classes=1, point_cloud_range=[-3, -3, -0.2, 3, 3, 1.8], bev_stride=4
    )
    ckpt = tmp_path / "det.safetensors"
    cfg = {"num_classes": 1, "point_cloud_range": [-3, -3, -0.2, 3, 3, 1.8], "bev_stride": 4}
    save_checkpoint(ckpt, dict(net.state_dict()), {"kind": DETECTOR_KIND, "model": "e3dsnn_det_t",
                                                    "model_cfg": cfg, "class_names": ["object"]})  # fmt: skip
    scan = tmp_path / "cut.bin"
    scan.write_bytes(np.zeros(10 * 16 + 7, np.uint8).tobytes())
    code, _, err = run_cli("detect", "--checkpoint", ckpt, "--format", "kitti", scan, "-o", tmp_path / "o")
    assert code == 2 and "cut.bin" in err and "16" in err
    _, enc = model_checkpoint(tmp_path / "enc.safetensors", "e3dsnn_t")
    code, _, err = run_cli("detect", "--checkpoint", enc, scan, "-o", tmp_path / "o")
    assert code == 2 and "not a detection checkpoint" in err and "enc.safetensors" in err
