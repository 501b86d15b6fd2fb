"""The tasks layer: a new job is one Task class + one registry entry, run by `run_task` on the Trainer."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from svl.checkpoint import save_checkpoint
from svl.data.splits import Subset
from svl.models import load_weights
from svl.tasks import TASKS, ModelSection, Task, TrainParts, load_task_config, register_task, run_task
from svl.tasks.base import write_results
from svl.train.trainer import TrainConfig


@dataclass
class ToyConfig:
    task: str = "toy_classify"
    model: ModelSection = field(default_factory=lambda: ModelSection(name="spike_pointnet", out_dim=4))
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(epochs=2, batch_size=4, lr=1e-3, select_metric="acc")
    )
    out_dir: str = "runs/toy"
    root: str | None = None


class _Classifier(nn.Module):
    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, batch):
        logits = self.encoder(batch)
        return {"loss": nn.functional.cross_entropy(logits, batch.labels), "logits_mean": logits.mean()}


class ToyTask(Task):
    """Four ModelNet40 classes, eight clouds each: the smallest complete recipe."""

    Config = ToyConfig

    def __init__(self, cfg: ToyConfig) -> None:
        from svl.data import build_dataset

        super().__init__(cfg)
        ds = build_dataset("modelnet40", "test", root=cfg.root, num_points=128)
        y = ds.labels()
        idx = np.concatenate([np.flatnonzero(y == c)[:8] for c in range(4)])
        self.data = Subset(ds, idx)  # labels 0..3: the first four classes, as the 4-way head wants

    def setup(self) -> TrainParts:
        from svl.data import collate_points

        self.model = _Classifier(self.cfg.model.build())
        return TrainParts(self.model, self.data, collate_points, {"model": self.cfg.model.name})

    def _accuracy(self, model: nn.Module) -> float:
        from svl.infer import encode

        logits = encode(model.encoder, self.data, batch_size=16)
        return float((logits.argmax(1).numpy() == self.data.labels()).mean())

    def validate(self, model: nn.Module) -> dict[str, float]:
        return {"acc": self._accuracy(model)}

    def evaluate(self, summary: dict) -> dict:
        return {"oa": self._accuracy(self.model)}

    def format_results(self, result: dict) -> str:
        return f"toy accuracy {100 * result['oa']:.1f}"


@pytest.fixture
def toy_task():
    register_task("toy_classify")(ToyTask)
    yield ToyTask
    TASKS.unregister("toy_classify")


def _cfg(tmp_path: Path, shared_data: Path, *over: str) -> ToyConfig:
    return load_task_config(
        "toy_classify", None, [f"out_dir={tmp_path / 'run'}", f"root={shared_data}", *over]
    )[1]


def test_a_registered_task_trains_evaluates_and_writes_results(tmp_path, shared_data, toy_task) -> None:
    cfg = _cfg(tmp_path, shared_data)
    result = run_task(cfg)
    out = tmp_path / "run"
    saved = json.loads((out / "results.json").read_text())
    assert saved["task"] == "toy_classify" and 0.0 <= saved["oa"] <= 1.0
    assert saved["train"]["step"] == 2 * (32 // 4)
    assert (out / "results.txt").read_text().startswith("toy accuracy")
    assert "task: toy_classify" in (out / "config.yaml").read_text()
    assert (out / "best.safetensors").is_file() and (out / "last.safetensors").is_file()
    assert result["table"] == ToyTask.format_results(None, result)  # type: ignore[arg-type]


def test_a_folder_holding_a_run_is_refused_unless_resumed(tmp_path, shared_data, toy_task) -> None:
    run_task(_cfg(tmp_path, shared_data, "train.epochs=1"))
    before = (tmp_path / "run" / "results.json").read_bytes()
    with pytest.raises(ValueError, match="--resume"):
        run_task(_cfg(tmp_path, shared_data, "train.epochs=1"))
    assert (tmp_path / "run" / "results.json").read_bytes() == before  # nothing of the first run lost
    resumed = run_task(_cfg(tmp_path, shared_data, "train.epochs=2"), resume=True)
    assert resumed["train"]["step"] == 2 * (32 // 4)


def test_load_task_config_picks_the_task_from_the_config(tmp_path, toy_task) -> None:
    from svl.tasks.pretrain import PretrainConfig

    cls, cfg = load_task_config("pretrain", None, ["task=toy_classify", "train.epochs=3"])
    assert cls is ToyTask and isinstance(cfg, ToyConfig) and cfg.train.epochs == 3
    yaml = tmp_path / "toy.yaml"
    yaml.write_text("task: toy_classify\ntrain:\n  batch_size: 2\n")
    cls, cfg = load_task_config("pretrain", yaml, [])
    assert cls is ToyTask and cfg.train.batch_size == 2
    cls, cfg = load_task_config("pretrain", None, [])
    assert isinstance(cfg, PretrainConfig) and cfg.task == "pretrain"
    with pytest.raises(ValueError, match="unknown task 'nope'.*registered: .*pretrain"):
        load_task_config("pretrain", None, ["task=nope"])


def test_model_init_loads_encoder_weights_and_refuses_another_architecture(tmp_path) -> None:
    torch.manual_seed(1)
    src = ModelSection(name="spike_pointnet", out_dim=4).build()
    run_ckpt = tmp_path / "pretrain.safetensors"  # a pretraining run keeps the encoder under "encoder."
    tensors = {f"encoder.{k}": v for k, v in src.state_dict().items()} | {
        "text_proj.weight": torch.ones(4, 2)
    }
    save_checkpoint(run_ckpt, tensors, {"model": "spike_pointnet"})
    torch.manual_seed(2)
    dst = ModelSection(name="spike_pointnet", out_dim=4).build(init=str(run_ckpt))
    for k, v in src.state_dict().items():
        assert torch.equal(dst.state_dict()[k], v), k
    with pytest.raises(
        ValueError, match="init: .* holds a 'spike_pointnet' model, not 'e3dsnn_t'; set model.name"
    ):
        load_weights(ModelSection(name="e3dsnn_t").build(), run_ckpt, "e3dsnn_t", key="init")
    with pytest.raises(FileNotFoundError, match="init: checkpoint .*none.safetensors does not exist"):
        ModelSection(name="spike_pointnet").build(init=str(tmp_path / "none.safetensors"))


def test_write_results_turns_non_finite_numbers_into_null(tmp_path) -> None:
    paths = write_results(tmp_path, {"oa": float("nan"), "x": np.float32(0.5), "l": (1, 2)}, "table\n")
    assert json.loads(paths["json"].read_text()) == {"oa": None, "x": 0.5, "l": [1, 2]}
    assert paths["table"].read_text() == "table\n"


def test_svl_pretrain_prints_its_config_and_refuses_a_folder_holding_a_run(tmp_path, run_cli) -> None:
    code, out, _ = run_cli("pretrain", "--print-config", "train.epochs=2")
    assert code == 0 and "task: pretrain" in out and "epochs: 2" in out
    held = tmp_path / "earlier"
    held.mkdir()
    (held / "config.yaml").write_text("task: pretrain\n")
    (held / "results.json").write_text("{}")
    code, _, err = run_cli("pretrain", f"out_dir={held}")
    assert code == 2 and "svl: error:" in err and "--resume" in err and "--overwrite" in err
    assert (held / "results.json").read_text() == "{}"
    code, _, err = run_cli("pretrain", "task=nope")
    assert code == 2 and "unknown task 'nope'" in err


def test_an_interrupted_run_prints_how_to_resume(tmp_path, run_cli, monkeypatch) -> None:
    import signal

    from svl.train.trainer import TrainingInterrupted

    def interrupted(cfg, task=None, resume=False, overwrite=False):
        raise TrainingInterrupted(22, Path(cfg.out_dir) / "last.safetensors", signal.SIGTERM)

    monkeypatch.setattr("svl.tasks.run_task", interrupted)
    monkeypatch.setattr("sys.argv", ["svl", "pretrain", f"out_dir={tmp_path}", "train.epochs=3"])
    code, _, err = run_cli("pretrain", f"out_dir={tmp_path}", "train.epochs=3")
    assert code == 128 + signal.SIGTERM
    assert f"interrupted at step 22; checkpoint saved to {tmp_path / 'last.safetensors'}" in err
    assert f"resume with: svl pretrain out_dir={tmp_path} train.epochs=3 --resume" in err


def test_one_init_key_the_old_model_init_is_read_as_init(tmp_path, caplog) -> None:
    """`init` is the one key that starts a run from a checkpoint; `model.init` (its old second name) in
    an override or a config file lands there with a warning, and a saved null is dropped."""
    cls, cfg = load_task_config("classification", None, ["model.init=/some/ckpt.safetensors"])
    assert cfg.init == "/some/ckpt.safetensors" and not hasattr(cfg.model, "init")
    assert "model.init is now init" in caplog.text
    old = tmp_path / "config.yaml"
    old.write_text("task: segmentation\nmodel: {name: e3dsnn_unet_t, init: null}\n")
    _, cfg = load_task_config("classification", old, [])
    assert cfg.init == "scratch"
    old.write_text("task: pretrain\nmodel: {init: /a.safetensors}\n")
    cls, cfg = load_task_config("classification", old, [])
    assert cls.name == "pretrain" and cfg.init == "/a.safetensors"


# ----------------------------------------------------------------------------- user paths survive mistakes
_TINY = [
    "data.classes=[airplane,bathtub,guitar,lamp]", "data.train_per_class=2", "data.test_per_class=1",
    "train.batch_size=4", "train.max_steps=1", "train.ckpt_every_steps=0", "energy=false",
]  # fmt: skip


def _one_error(code: int, err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("svl: error:")]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_a_failed_start_leaves_the_folder_as_it_was(tmp_path, run_cli, shared_data) -> None:
    """A mistake found before training (a missing init, an unbuildable model) writes nothing, so the
    corrected command runs without --overwrite; config.yaml alone is a failed start, not a run."""
    run = tmp_path / "runs" / "x"  # neither folder exists yet
    for mistake in ("init=/nonexistent.safetensors", "model.voxel_size=0", "model.name=nope"):
        _one_error(*run_cli("finetune", f"out_dir={run}", *_TINY, mistake)[::2])
        assert not (tmp_path / "runs").exists(), mistake  # the folders this start created are gone
    mine = tmp_path / "mine"  # a folder of the user's: kept, with its files
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    _one_error(*run_cli("finetune", f"out_dir={mine}", *_TINY, "model.voxel_size=0")[::2])
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
    code, _, err = run_cli("finetune", f"out_dir={run}", *_TINY)  # corrected: no --overwrite needed
    assert code == 0, err
    assert (run / "final.safetensors").is_file() and (run / "config.yaml").is_file()
    stale = tmp_path / "stale"  # what a failed start left before this fix: config.yaml only
    stale.mkdir()
    (stale / "config.yaml").write_text("task: classification\n")
    code, _, err = run_cli("finetune", f"out_dir={stale}", "--overwrite", *_TINY)
    assert code == 0, err
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("stale.old-")] == []  # nothing moved
    assert (stale / "final.safetensors").is_file()


def test_a_folder_with_a_checkpoint_still_holds_a_run(tmp_path, run_cli) -> None:
    held = tmp_path / "held"
    held.mkdir()
    (held / "last.safetensors").write_bytes(b"weights")
    line = _one_error(*run_cli("finetune", f"out_dir={held}", *_TINY)[::2])
    assert "already holds a run (last.safetensors)" in line and "--resume" in line
    assert (held / "last.safetensors").read_bytes() == b"weights"


@pytest.mark.parametrize("command", ["pretrain", "finetune", "distill"])
def test_flags_may_stand_anywhere_among_overrides(command, run_cli, tmp_path) -> None:
    code, out, err = run_cli(command, "train.epochs=3", "--print-config", f"out_dir={tmp_path / 'r'}")
    assert code == 0, err
    assert "epochs: 3" in out and f"out_dir: {tmp_path / 'r'}" in out
    # `--resume [CKPT]` never takes an override as its checkpoint: `--resume a=1` is `--resume` and a=1.
    argv = ["train.epochs=5", "--resume", "train.seed=7", "--print-config", "init=x", "train.epochs=6"]
    code, out, err = run_cli(command, *argv)
    assert code == 0, err
    assert "epochs: 6" in out and "seed: 7" in out and "init: x" in out  # in order: the last one wins
