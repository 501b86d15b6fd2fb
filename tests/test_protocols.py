"""Issue 27's protocol rules that every task shares: no checkpoint selected on a test split, a held-out
validation share for the dense tasks, KITTI scored with its own thresholds and recall sampling, and
results that record the run's environment."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from svl.checkpoint import load_checkpoint
from svl.tasks import load_task_config, run_task
from svl.tasks.detect import DetectionTask
from svl.train.trainer import TrainConfig

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize(
    "task, metric",
    [("segmentation", "test/miou"), ("detection", "test/map_bev"), ("classification", "test/oa"),
     ("event_classification", "test/oa"), ("distill", "test/oa"), ("pretrain", "test/oa")],
)  # fmt: skip
def test_selecting_on_test_exits_2_for_every_task(tmp_path, run_cli, task, metric) -> None:
    out = tmp_path / "run"
    cmd = "pretrain" if task == "pretrain" else "finetune"
    args = [cmd, f"task={task}"] if cmd == "finetune" else [cmd]
    code, _, err = run_cli(*args, f"out_dir={out}", f"train.select_metric={metric}")
    assert code == 2, err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "test split" in lines[0] and metric in lines[0]
    assert not out.exists() or not any(out.iterdir())  # refused before the folder was claimed


def test_test_selection_rule_lives_in_the_train_config() -> None:
    with pytest.raises(ValueError, match="test split"):
        TrainConfig(select_metric="test/anything")
    assert TrainConfig(select_metric="val/miou").select_metric == "val/miou"
    assert TrainConfig(select_metric="loss").select_metric == "loss"  # val/loss


def _scenes(out: Path, *extra: str) -> list[str]:
    return [
        f"out_dir={out}", "data.options.scenes=6", "data.num_points=512", "train.epochs=2",
        "train.batch_size=2", "train.ckpt_every_steps=0", "eval.monitor_test=false", "eval.precise_bn=1",
        "energy=false", "model.voxel_size=0.2", *extra,
    ]  # fmt: skip


def test_dense_validation_share_selects_best_and_never_touches_test(tmp_path, shared_data, svl_cache) -> None:
    _, cfg = load_task_config(
        "segmentation", CONFIGS / "segment_modelnet40_scenes.yaml",
        _scenes(tmp_path, "data.val_fraction=0.34", "train.select_metric=val/miou"),
    )  # fmt: skip
    res = run_task(cfg)
    assert res["n_val"] == 2 and res["n_train"] == 4 and res["n_test"] == 6
    vals = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    vals = [r for r in vals if r.get("kind") == "val"]
    assert len(vals) == 2 and all("val/miou" in r and not any(k.startswith("test/") for k in r) for r in vals)
    _, meta = load_checkpoint(tmp_path / "final.safetensors")
    assert meta["source"] == "best.safetensors"  # restored from the validation-selected checkpoint


def test_validation_share_is_disjoint_and_seeded(tmp_path, shared_data, svl_cache) -> None:
    over = _scenes(tmp_path, "data.val_fraction=0.5")
    _, cfg = load_task_config("detection", CONFIGS / "detect_modelnet40_scenes.yaml", over)
    a, b = DetectionTask(cfg), DetectionTask(cfg)
    assert list(a.val_set.indices) == list(b.val_set.indices) and len(a.val_set) == 3
    assert set(a.val_set.indices).isdisjoint(a.train_set.indices)
    assert set(a.val_set.indices) | set(a.train_set.indices) == set(range(6))
    assert a.has_validation
    _, bad = load_task_config(
        "detection", CONFIGS / "detect_modelnet40_scenes.yaml", _scenes(tmp_path, "data.val_fraction=1.0")
    )
    with pytest.raises(ValueError, match="val_fraction"):
        DetectionTask(bad)


def test_kitti_is_scored_with_its_thresholds_without_its_config(tmp_path, kitti_root) -> None:
    # no configs/detect_kitti.yaml: the dataset declares the protocol
    over = [f"out_dir={tmp_path}", "data.dataset=kitti", f"data.root={kitti_root}", "data.train_split=train",
            "data.test_split=val"]  # fmt: skip
    _, cfg = load_task_config("detection", None, over)
    iou, sampling = DetectionTask(cfg).protocol()
    assert iou == {"Car": 0.7, "Pedestrian": 0.5, "Cyclist": 0.5} and sampling == "devkit"
    _, exact = load_task_config(
        "detection", None, [*over, "eval.recall_sampling=exact", "eval.iou={Car: 0.5}"]
    )
    iou, sampling = DetectionTask(exact).protocol()
    assert iou["Car"] == 0.5 and iou["Pedestrian"] == 0.5 and sampling == "exact"
    _, scenes = load_task_config("detection", CONFIGS / "detect_modelnet40_scenes.yaml", _scenes(tmp_path))
    iou, sampling = DetectionTask(scenes).protocol()
    assert set(iou.values()) == {0.5} and sampling == "exact"
    _, bad = load_task_config("detection", None, [*over, "eval.recall_sampling=r40"])
    with pytest.raises(ValueError, match="recall_sampling"):
        DetectionTask(bad)


def test_results_record_the_environment(tmp_path, shared_data, svl_cache) -> None:
    _, cfg = load_task_config(
        "segmentation", CONFIGS / "segment_modelnet40_scenes.yaml", _scenes(tmp_path, "train.epochs=1")
    )
    run_task(cfg)
    env = json.loads((tmp_path / "results.json").read_text())["environment"]
    import torch

    assert env["torch"] == torch.__version__ and env["threads"] == torch.get_num_threads()
    assert env["cpu_capability"] and "omp_num_threads" in env
