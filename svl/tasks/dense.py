"""What the dense-prediction tasks (segmentation, detection) share: an E-3DSNN-based network whose
encoder can start from an SVL checkpoint, a held-out validation share of the training scenes
(`data.val_fraction`: the only split checkpoints may be selected on), a test split watched but never
selected on, precise BN before every evaluation, and the best weights saved as `final.safetensors`
with the task's meta.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from torch import nn

from svl.checkpoint import load_checkpoint, load_state_into, save_checkpoint
from svl.data.splits import Subset
from svl.models import create_model, list_models, load_weights, model_info
from svl.tasks.base import SCRATCH, Task
from svl.train.bn import precise_bn
from svl.utils import get_logger

__all__ = ["DenseTask", "SceneData"]

log = get_logger(__name__)


@dataclass
class SceneData:
    """The `data` section segmentation and detection share (each adds its own keys and augmentation)."""

    dataset: str = "modelnet40_scenes"
    root: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    num_points: int = 8192
    train_split: str = "train"
    test_split: str = "test"
    train_limit: int | None = None  # first N training scenes / frames (quick runs)
    test_limit: int | None = None
    # A share of the training scenes held out (un-augmented) for validation curves and checkpoint
    # selection (`train.select_metric=val/...`), drawn with val_seed; 0 = train on all of them.
    val_fraction: float = 0.0
    val_seed: int = 0
    # training transforms before the cap to num_points, e.g. [{name: voxel_sample, voxel_size: 0.05},
    # {name: sphere_crop, max_points: 40000}] for dense LiDAR or room scans
    presample: list[Any] = field(default_factory=list)
    augment: list[Any] = field(default_factory=list)

    def __post_init__(self) -> None:
        if isinstance(self.num_points, bool) or not isinstance(self.num_points, int) or self.num_points < 1:
            raise ValueError(f"num_points must be an integer >= 1, got {self.num_points!r}")


class DenseTask(Task):
    """Shared steps; a subclass sets `self.train_set`, `self.test_set`, implements `model_cfg()`,
    `meta()` and the loss module, and reads its config's `model`, `init`, `data.*_limit` and `eval`."""

    net: nn.Module
    model: nn.Module
    val_set: Any = None
    family: ClassVar[str] = ""  # the registry family this task trains (model_info(name).family)

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self.check_model_family(cfg.model.name)

    def check_model_family(self, name: str) -> None:
        """Refuse a registered model of another family in one line that lists the ones that fit."""
        if not self.family or model_info(name).family == self.family:
            return
        fits = [n for n in list_models() if model_info(n).family == self.family]
        raise ValueError(
            f"model.name={name} is not a {self.name} model (its family is {model_info(name).family}); "
            f"use one of {', '.join(fits)}"
        )

    @staticmethod
    def view(ds: Any, indices: np.ndarray) -> Any:
        out = Subset(ds, indices)
        out.classes = ds.classes
        return out

    @classmethod
    def limit(cls, ds: Any, n: int | None) -> Any:
        """The first `n` items of `ds` (all when None): quick runs."""
        if n is None or n >= len(ds):
            return ds
        return cls.view(ds, np.arange(int(n)))

    def split_train(self, train: Any, plain: Callable[[], Any]) -> Any:
        """The training scenes (`data.train_limit` applied) less a `data.val_fraction` share, which
        becomes `self.val_set`, read from `plain()` (the same split without augmentation; built only
        when a share is held out)."""
        d = self.cfg.data
        if not 0.0 <= d.val_fraction < 1.0:
            raise ValueError(f"data.val_fraction must be in [0, 1), got {d.val_fraction}")
        n = len(train) if d.train_limit is None else min(int(d.train_limit), len(train))
        keep = np.arange(n)
        if d.val_fraction > 0:
            n_val = max(1, round(d.val_fraction * n))
            if n_val >= n:
                raise ValueError(f"data.val_fraction={d.val_fraction} of {n} training scenes leaves none to "
                                 "train on")  # fmt: skip
            perm = np.random.default_rng(d.val_seed).permutation(n)
            self.val_set = self.view(plain(), np.sort(perm[:n_val]))
            keep = np.sort(perm[n_val:])
        return train if len(keep) == len(train) else self.view(train, keep)

    def score(self, net: nn.Module, ds: Any, desc: str) -> dict[str, float]:
        """The task's headline metrics on a dataset (validation curves)."""
        raise NotImplementedError

    def validate(self, model: nn.Module) -> dict[str, float]:
        """`val/...` on the held-out share (selectable) and `test/...` when monitored (curve only)."""
        self.precise_bn()
        out: dict[str, float] = {}
        if self.val_set is not None:
            out.update({f"val/{k}": v for k, v in self.score(model.net, self.val_set, "val").items()})
        if self.cfg.eval.monitor_test:
            out.update({f"test/{k}": v for k, v in self.score(model.net, self.test_set, "test").items()})
        return out

    def model_cfg(self) -> dict[str, Any]:
        raise NotImplementedError

    def meta(self) -> dict[str, Any]:
        raise NotImplementedError

    def build_net(self) -> nn.Module:
        """The registered network from `model_cfg()`; with `init`, its encoder part (the E-3DSNN stem
        and stages its registry entry declares) from an svl checkpoint of that encoder."""
        net = create_model(self.cfg.model.name, **self.model_cfg())
        if self.cfg.init not in SCRATCH:
            load_weights(
                net, self.cfg.init, self.cfg.model.name, part="stem", key="init", **self.cfg.transfer.kwargs()
            )
        return net

    @property
    def has_validation(self) -> bool:
        return self.cfg.eval.monitor_test or self.val_set is not None

    def precise_bn(self) -> None:
        if self.cfg.eval.precise_bn:
            precise_bn(self.net, self.train_set, self.cfg.train.batch_size, self.cfg.eval.precise_bn)

    def restore_best(self, summary: dict[str, Any]) -> Path:
        """The weights the run ships (`final_path`) back into the model, BN re-estimated, saved as final."""
        path = summary["final_path"]
        tensors, _ = load_checkpoint(path)
        load_state_into(self.model, tensors, where=path)
        self.precise_bn()
        final = self.out / "final.safetensors"
        meta = {**self.meta(), **self.files_meta(), "source": Path(path).name}
        save_checkpoint(final, dict(self.net.state_dict()), meta)
        return final
