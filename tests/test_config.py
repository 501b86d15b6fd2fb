from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from svl.config import config_from_dict, config_to_dict, load_config, save_config
from svl.train.trainer import TrainConfig


class Neuron(enum.Enum):
    ilif = "ilif"
    relu = "relu"


@dataclass
class OptimCfg:
    lr: float = 2e-3
    betas: tuple[float, float] = (0.9, 0.98)
    weight_decay: float = 1e-4


@dataclass
class ModelCfg:
    name: str = "e3dsnn_t"
    neuron: Neuron = Neuron.ilif
    voxel_size: float = 0.02


@dataclass
class TrainCfg:
    epochs: int = 2
    batch_size: int = 8
    out_dir: Path = Path("runs/x")
    resume: str | None = None
    tags: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    model: ModelCfg = field(default_factory=ModelCfg)
    optim: OptimCfg = field(default_factory=OptimCfg)

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")


def _yaml(tmp_path: Path, text: str, name: str = "cfg.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_defaults_are_the_dataclass() -> None:
    cfg = load_config(TrainCfg)
    assert isinstance(cfg, TrainCfg) and cfg == TrainCfg()
    assert isinstance(cfg.model, ModelCfg) and isinstance(cfg.out_dir, Path)


def test_yaml_then_overrides_in_order(tmp_path: Path) -> None:
    p = _yaml(tmp_path, "epochs: 5\nmodel:\n  name: e3dsnn_s\noptim:\n  lr: 0.1\n")
    cfg = load_config(TrainCfg, p, ["optim.lr=0.5", "tags=[a,b]", "model.neuron=relu", "resume=null"])
    assert cfg.epochs == 5  # from the file
    assert cfg.model.name == "e3dsnn_s" and cfg.model.voxel_size == 0.02  # file + untouched default
    assert cfg.optim.lr == 0.5  # override beats the file
    assert cfg.optim.betas == (0.9, 0.98)
    assert cfg.tags == ["a", "b"] and cfg.model.neuron is Neuron.relu and cfg.resume is None


def test_int_promoted_to_float_and_free_dict(tmp_path: Path) -> None:
    cfg = load_config(TrainCfg, None, ["optim.lr=1", "extra.anything.goes=3"])
    assert cfg.optim.lr == 1.0 and isinstance(cfg.optim.lr, float)
    assert cfg.extra == {"anything": {"goes": 3}}


def test_instance_as_base() -> None:
    base = TrainCfg(epochs=9)
    cfg = load_config(base, None, ["batch_size=4"])
    assert cfg.epochs == 9 and cfg.batch_size == 4


def test_unknown_key_in_yaml_names_file_and_suggests(tmp_path: Path) -> None:
    p = _yaml(tmp_path, "optim:\n  lrr: 0.1\n")
    with pytest.raises(ValueError) as err:
        load_config(TrainCfg, p, [])
    msg = str(err.value)
    assert str(p) in msg and "optim.lrr" in msg and "did you mean 'optim.lr'" in msg
    assert "lr, betas, weight_decay" in msg


def test_unknown_top_level_override_lists_valid_keys() -> None:
    with pytest.raises(ValueError) as err:
        load_config(TrainCfg, None, ["epoch=3"])
    msg = str(err.value)
    assert "override 'epoch=3'" in msg and "unknown config key 'epoch'" in msg
    assert "did you mean 'epochs'" in msg and "batch_size" in msg


@pytest.mark.parametrize(
    "override,key,value",
    [
        ("epochs=abc", "epochs", "abc"),
        ("optim.lr=fast", "optim.lr", "fast"),
        ("model.neuron=gelu", "model.neuron", "gelu"),
    ],
)
def test_wrong_type_names_key_and_value(override: str, key: str, value: str) -> None:
    with pytest.raises(ValueError) as err:
        load_config(TrainCfg, None, [override])
    msg = str(err.value)
    assert f"'{key}'" in msg and repr(value) in msg


def test_wrong_type_in_yaml(tmp_path: Path) -> None:
    p = _yaml(tmp_path, "batch_size: 1.5\n")
    with pytest.raises(ValueError, match=r"cfg\.yaml.*1\.5.*batch_size"):
        load_config(TrainCfg, p)


def test_tuple_length_and_nested_type_errors() -> None:
    with pytest.raises(ValueError, match="optim.betas"):
        load_config(TrainCfg, None, ["optim.betas=[1,2,3]"])
    with pytest.raises(ValueError, match="'model'"):
        load_config(TrainCfg, None, ["model=5"])


def test_post_init_validation_becomes_value_error() -> None:
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        load_config(TrainCfg, None, ["batch_size=0"])


@dataclass
class Inner:
    k: int = 1

    def __post_init__(self) -> None:
        if self.k < 0:
            raise ValueError(f"Inner: k must be >= 0, got {self.k}")


@dataclass
class Middle:
    inner: Inner = field(default_factory=Inner)


@dataclass
class Outer:
    middle: Middle = field(default_factory=Middle)
    other: Inner = field(default_factory=Inner)


def test_nested_validator_error_names_its_section(tmp_path: Path) -> None:
    with pytest.raises(ValueError) as err:
        load_config(Outer, None, ["middle.inner.k=-1"])
    assert str(err.value) == (
        "invalid config (override 'middle.inner.k=-1') in section 'middle.inner': "
        "Inner: k must be >= 0, got -1"
    )
    with pytest.raises(ValueError, match=r"\(.*bad\.yaml\) in section 'other': Inner: k must be >= 0"):
        load_config(Outer, _yaml(tmp_path, "other:\n  k: -2\n", "bad.yaml"))


@dataclass
class Job:
    train: TrainConfig = field(default_factory=TrainConfig)


def test_device_options_are_refused_when_the_config_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError) as err:
        load_config(Job, None, ["train.sync_bn=true"])
    assert str(err.value) == (
        "invalid config (override 'train.sync_bn=true') in section 'train': TrainConfig: sync_bn=true needs "
        "CUDA: torch has no SyncBatchNorm on CPU and no CUDA device is visible here; set sync_bn=false"
    )
    with pytest.raises(ValueError, match="sync_bn=true needs CUDA"):
        TrainConfig(sync_bn=True)
    # amp='bf16' without CUDA stays a warning at run time (it falls back to float32, which works).
    assert load_config(Job, None, ["train.amp=bf16"]).train.amp == "bf16"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert load_config(Job, None, ["train.sync_bn=true"]).train.sync_bn


def test_malformed_overrides() -> None:
    with pytest.raises(ValueError, match="key=value"):
        load_config(TrainCfg, None, ["epochs"])
    with pytest.raises(ValueError, match="empty key"):
        load_config(TrainCfg, None, ["=3"])


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_config(TrainCfg, tmp_path / "nope.yaml")
    with pytest.raises(ValueError, match="not valid YAML"):
        load_config(TrainCfg, _yaml(tmp_path, "epochs: [1\n", "broken.yaml"))
    with pytest.raises(ValueError, match="mapping"):
        load_config(TrainCfg, _yaml(tmp_path, "- 1\n- 2\n", "list.yaml"))
    assert load_config(TrainCfg, _yaml(tmp_path, "", "empty.yaml")) == TrainCfg()


def test_missing_required_value() -> None:
    from omegaconf import MISSING

    @dataclass
    class Needs:
        path: str = MISSING
        n: int = 1

    with pytest.raises(ValueError, match="'path' is required.*path=VALUE"):
        load_config(Needs, None, ["n=2"])
    assert load_config(Needs, None, ["path=/x"]).path == "/x"


def test_not_a_dataclass() -> None:
    with pytest.raises(TypeError):
        load_config(dict, None, [])


def test_save_and_reload_round_trip(tmp_path: Path) -> None:
    cfg = load_config(TrainCfg, None, ["model.neuron=relu", "tags=[x]", "extra.k=[1,2]", "out_dir=/tmp/o"])
    out = save_config(cfg, tmp_path / "sub" / "saved.yaml")
    raw = yaml.safe_load(out.read_text())
    assert (
        raw["model"]["neuron"] == "relu"
        and raw["out_dir"] == "/tmp/o"
        and raw["optim"]["betas"] == [0.9, 0.98]
    )
    assert load_config(TrainCfg, out) == cfg
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["saved.yaml"]


def test_config_to_dict_is_json_safe_and_round_trips() -> None:
    import json

    cfg = TrainCfg(model=ModelCfg(neuron=Neuron.relu))
    d = config_to_dict(cfg)
    assert json.loads(json.dumps(d)) == d
    assert d["model"] == {"name": "e3dsnn_t", "neuron": "relu", "voxel_size": 0.02}
    assert d["out_dir"] == "runs/x" and d["optim"]["betas"] == [0.9, 0.98]
    assert config_from_dict(TrainCfg, d) == cfg
    with pytest.raises(ValueError, match="ckpt.*unknown config key 'model.nam'"):
        config_from_dict(TrainCfg, {"model": {"nam": "x"}}, source="ckpt")
