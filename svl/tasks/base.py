"""The tasks layer: one file per job, run by the generic `Trainer` through one `run_task`.

A task is a `Task` subclass registered with `@register_task("name")` whose `Config` dataclass
holds `model`, `train` and `out_dir` sections (plus its own) and whose methods read like a recipe:

- `__init__(cfg)`: seed, resolve the data and splits (cheap, no teachers, no model);
- `setup() -> TrainParts`: teachers/targets, the model, the training set and how to batch it;
- `validate(model) -> {metric: float}`: run by the Trainer on validation data (never test data);
- `evaluate(summary) -> dict`: the final report after training (rank 0 only);
- `format_results(result) -> str`: the table printed at the end and saved as results.txt.

The steps every task needs are written once here: `ModelSection` (a registered encoder from a config
section, optionally initialised from a checkpoint), `Subset` / `cap_per_class` (views of a dataset),
`encode` (a model over a dataset, in order), `write_results` (results.json + results.txt) and
`run_task` (claim the run folder, save the config, train, evaluate, write). A new job is one file
in svl/tasks/ plus its import in svl/tasks/__init__.py (or an entry point in group "svl.tasks").
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from torch import nn

from svl.config import load_config, save_config
from svl.data.base import files_up_axis
from svl.models import create_model, load_weights, model_info
from svl.registry import Registry
from svl.train import distributed as D
from svl.train.run_dir import claim_run_dir
from svl.train.trainer import Trainer
from svl.utils import atomic_write, get_logger, run_environment

__all__ = [
    "TASKS",
    "SCRATCH",
    "ModelSection",
    "Task",
    "TransferSection",
    "TrainParts",
    "load_task_config",
    "register_task",
    "run_task",
    "write_results",
]

log = get_logger(__name__)

TASKS: Registry[type[Task]] = Registry("task", group="svl.tasks", hint="see svl.tasks.TASKS.names()")


def register_task(name: str) -> Callable[[type[Task]], type[Task]]:
    """Class decorator: register a `Task` subclass under `name` (also its `.name`)."""

    def deco(cls: type[Task]) -> type[Task]:
        cls.name = name
        return TASKS.register(name, cls)

    return deco


# ----------------------------------------------------------------------------- config sections
SCRATCH = ("", "scratch", None)


@dataclass
class TransferSection:
    """How much of the `init` encoder a fine-tune carries over, and in which frame (issue 30's levers;
    benchmarks/RESULTS.md): `stages` = the stem plus the first k encoder stages (None = all, 0 = stem
    only; the rest start as built), `xyz_scale` = how many times the pretraining frame the downstream
    coordinates are (the input convolution's coordinate weights are divided by it)."""

    stages: int | None = None
    xyz_scale: float = 1.0
    # The loaded weights (stem and stages) train at this multiple of train.lr; the rest at train.lr.
    lr_scale: float = 1.0

    def __post_init__(self) -> None:
        if self.stages is not None and (isinstance(self.stages, bool) or int(self.stages) < 0):
            raise ValueError(f"transfer.stages must be None (all) or >= 0, got {self.stages!r}")
        if not (math.isfinite(float(self.xyz_scale)) and float(self.xyz_scale) > 0):
            raise ValueError(f"transfer.xyz_scale must be a positive number, got {self.xyz_scale!r}")
        if not (math.isfinite(float(self.lr_scale)) and float(self.lr_scale) > 0):
            raise ValueError(f"transfer.lr_scale must be a positive number, got {self.lr_scale!r}")

    def kwargs(self) -> dict[str, Any]:
        """What `load_weights` takes."""
        return {"stages": self.stages, "xyz_scale": float(self.xyz_scale)}

    def lr_scale_of(self, model: nn.Module, encoder: nn.Module, init: str | None) -> dict[str, float]:
        """{name in `model`: lr_scale} for each parameter of the `encoder` part loaded from `init`
        (its stem and its first `stages` stages); {} at lr_scale 1. Without an init there is nothing
        to carry over, so a transfer setting then is refused rather than ignored."""
        if init in SCRATCH:
            base = TransferSection()
            set_ = [f"transfer.{k}={v}" for k, v in vars(self).items() if v != getattr(base, k)]
            if set_:
                what = ", ".join(set_)
                raise ValueError(f"{what}: sets how an init checkpoint is carried over; give init=PATH")
            return {}
        if float(self.lr_scale) == 1.0:
            return {}
        if not (hasattr(encoder, "stem") and hasattr(encoder, "stages")):
            raise ValueError(
                f"transfer.lr_scale: {type(encoder).__name__} has no E-3DSNN stem / stages to train "
                "more gently"
            )
        stages = list(encoder.stages)[: self.stages]  # stages None: all of them
        loaded = {id(p) for m in (encoder.stem, *stages) for p in m.parameters()}
        return {n: float(self.lr_scale) for n, p in model.named_parameters() if id(p) in loaded}


@dataclass
class ModelSection:
    """A registered model and the overrides it is built with (the run's `init` key loads weights)."""

    name: str = "e3dsnn_t"
    out_dim: int = 384
    T: int = 1
    D: int = 4
    voxel_size: float = 0.02
    in_channels: int | None = None  # None: the model's default (6 = xyz + rgb); event tasks use 4
    options: dict[str, Any] = field(default_factory=dict)  # other builder arguments (img_size=..., head=...)

    def builder_kwargs(self) -> dict[str, Any]:
        """What goes to the model builder (and into checkpoint metadata as `model_cfg`)."""
        cfg: dict[str, Any] = {"out_dim": self.out_dim, "T": self.T, "D": self.D}
        if self.in_channels is not None:
            cfg["in_channels"] = int(self.in_channels)
        if model_info(self.name).voxel:  # voxel encoders; point encoders have no voxel size
            cfg["voxel_size"] = self.voxel_size
        return {**cfg, **dict(self.options)}

    def build(self, init: str | None = None) -> nn.Module:
        """The model, with every weight of the svl checkpoint `init` when set (same architecture)."""
        model = create_model(self.name, **self.builder_kwargs())
        if init not in SCRATCH:
            load_weights(model, init, self.name, key="init")
        return model


# ----------------------------------------------------------------------------- results
def _jsonable(o: Any) -> Any:
    if isinstance(o, float) and not math.isfinite(o):
        return None
    if isinstance(o, dict):
        return {str(k): _jsonable(v) for k, v in o.items()}
    if isinstance(o, list | tuple):
        return [_jsonable(v) for v in o]
    if isinstance(o, np.generic):
        return o.item()
    return o


def write_results(out_dir: str | os.PathLike[str], result: Mapping[str, Any], table: str) -> dict[str, Path]:
    """`results.json` (NaN/inf -> null) and `results.txt` (the printed table), written atomically."""
    out = Path(out_dir)
    paths = {"json": out / "results.json", "table": out / "results.txt"}
    with atomic_write(paths["json"], "w") as fh:
        json.dump(_jsonable(dict(result)), fh, indent=2)
    with atomic_write(paths["table"], "w") as fh:
        fh.write(table.rstrip("\n") + "\n")
    return paths


# ----------------------------------------------------------------------------- the task protocol
@dataclass
class TrainParts:
    """What a task hands to the `Trainer`."""

    model: nn.Module
    train_set: Any
    collate_fn: Callable[[list[Any]], Any]
    checkpoint_meta: dict[str, Any] = field(default_factory=dict)
    batch_sampler_fn: Callable[[int, int], Any] | None = None
    lr_scale: dict[str, float] = field(default_factory=dict)  # {parameter name: lr multiplier}


class Task:
    """Base class of a job; see the module docstring for the recipe each subclass fills in."""

    name: ClassVar[str] = ""
    Config: ClassVar[type] = object

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg
        self.out = Path(cfg.out_dir)

    def setup(self) -> TrainParts:  # pragma: no cover - abstract
        raise NotImplementedError

    def announce(self, logger: logging.Logger, msg: str, *args: Any) -> None:
        """Hold the summary of what the run trains on until its start succeeded (`run_task` logs it
        after the model and trainer are built): a failed start's error is then the first line."""
        self._announcement = (logger, msg, args)

    def log_announcement(self) -> None:
        """Log the summary `announce` held, once."""
        held = getattr(self, "_announcement", None)
        if held is not None:
            self._announcement = None
            held[0].info(held[1], *held[2])

    def files_meta(self) -> dict[str, Any]:
        """How the training files stood on disk (`files_up_axis`), for every checkpoint the run writes:
        inference warns when a file is read otherwise."""
        up = files_up_axis(getattr(self, "train_set", None))
        return {"files_up_axis": up} if up else {}

    def validate(self, model: nn.Module) -> dict[str, float] | None:
        return None

    def evaluate(self, summary: dict[str, Any]) -> dict[str, Any]:
        return {}

    def format_results(self, result: Mapping[str, Any]) -> str:
        return json.dumps(_jsonable(dict(result)), indent=2)

    @property
    def has_validation(self) -> bool:
        return type(self).validate is not Task.validate

    @classmethod
    def recipe(cls, cfg: Any) -> type[Task]:
        """The recipe that runs `cfg`: this one, unless a task hands some data to another recipe
        (`svl pretrain` on a dataset other than the zero-shot protocol runs aligned pretraining)."""
        return cls


def load_task_config(
    default: str, config: str | os.PathLike[str] | None = None, overrides: list[str] | None = None
) -> tuple[type[Task], Any]:
    """(task class, its typed config) from a YAML file + `key=value` overrides.

    The task is the config's `task` key (an override `task=...` wins over the file), else `default`,
    so `svl finetune task=segmentation` and a config file naming its task pick the right recipe
    (`run_task` then runs `cls.recipe(cfg)`, the recipe for that data).
    """
    name = default
    if config is not None:
        from omegaconf import OmegaConf

        p = Path(config)
        if not p.is_file():
            raise FileNotFoundError(f"config file {p} does not exist")
        try:
            raw = OmegaConf.to_container(OmegaConf.load(p))
        except Exception as e:  # omegaconf raises several yaml/parser types
            raise ValueError(f"{p}: cannot read the config ({e})") from None
        if isinstance(raw, dict) and isinstance(raw.get("task"), str):
            name = raw["task"]
    for item in overrides or []:
        key, sep, value = str(item).partition("=")
        if sep and key.strip() == "task":
            name = value.strip()
    cls = TASKS.get(name)
    return cls, load_config(cls.Config, config, list(overrides or []))


def run_task(
    cfg: Any,
    task: str | type[Task] | None = None,
    resume: bool | str = False,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Train and evaluate one task into `cfg.out_dir`: the one path every training command takes.

    The run folder is claimed first (a folder holding another run is refused unless `resume` or
    `overwrite`, and locked against a concurrent run); the task, its parts and the Trainer are built
    before `config.yaml` is written, and a start that fails before training began leaves the folder
    as it was. `config.yaml`, checkpoints, `log.jsonl`, TensorBoard logs, `results.json` and
    `results.txt` go there. Returns the result dict (on non-zero DDP ranks only the training summary).
    """
    cls = TASKS.get(task or getattr(cfg, "task", "")) if not isinstance(task, type) else task
    asked, cls = cls, cls.recipe(cfg)  # results name the task asked for (`svl pretrain` stays "pretrain")
    t0 = time.perf_counter()
    out = Path(cfg.out_dir)
    D.init_distributed()  # join the process group first, so only rank 0 writes the config
    with claim_run_dir(out, resume=bool(resume), overwrite=overwrite):  # rank 0 claims; others pass
        # Everything that can fail on a bad config fails before anything is written: a failed
        # start leaves the folder as it was (claim_run_dir removes what it wrote).
        job = cls(cfg)
        parts = job.setup()
        parts.checkpoint_meta.update(job.files_meta())
        trainer = Trainer(
            parts.model,
            parts.train_set,
            parts.collate_fn,
            cfg.train,
            out,
            val_fn=job.validate if job.has_validation else None,
            checkpoint_meta=parts.checkpoint_meta,
            batch_sampler_fn=parts.batch_sampler_fn,
            lr_scale=parts.lr_scale,
        )
        job.log_announcement()
        if D.is_main():
            save_config(cfg, out / "config.yaml")
        summary = trainer.fit(resume=resume)
        result: dict[str, Any] = {"task": asked.name, "train": summary}
        if D.is_main():
            result.update(job.evaluate(summary))
            result["wall_seconds"] = time.perf_counter() - t0
            result["environment"] = run_environment()
            result["table"] = job.format_results(result)
            write_results(out, {k: v for k, v in result.items() if k != "table"}, result["table"])
    return result
