"""What the dense-prediction tasks (segmentation, detection) share: an E-3DSNN-based network whose
encoder can start from an SVL checkpoint, a test split watched but never selected on, precise BN
before every evaluation, and the best weights saved as `final.safetensors` with the task's meta.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from svl.tasks.base import Subset, Task
from svl.utils import get_logger

__all__ = ["ENCODER_PREFIXES", "DenseTask", "load_e3dsnn_stages"]

log = get_logger(__name__)

ENCODER_PREFIXES = ("stem.", "stages.")


def load_e3dsnn_stages(net: nn.Module, path: str | Path, arch: str) -> int:
    """Copy an svl checkpoint's E-3DSNN stem and stages into `net` (a model of registered name `arch`
    that keeps E-3DSNN's parameter names); everything else of `net` stays as built. Returns the
    number of tensors loaded.

    The checkpoint must hold the matching encoder (`e3dsnn_unet_t` and `e3dsnn_det_t` take
    `e3dsnn_t`; a run's ``encoder.*`` prefix is dropped) and every encoder tensor `net` has, with its
    shape; otherwise ValueError naming the checkpoint and the tensors, and nothing is loaded.
    """
    from svl.checkpoint import load_checkpoint, read_checkpoint_meta

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"init: checkpoint {p} does not exist")
    held = read_checkpoint_meta(p).get("model") or ""
    want = arch.replace("_unet", "").replace("_det", "")  # e3dsnn_unet_t / e3dsnn_det_t -> e3dsnn_t
    if held and held != want:
        raise ValueError(f"init: {p} holds a {held!r} encoder; {arch} needs {want!r} weights")
    tensors, _ = load_checkpoint(p)
    state = {k.removeprefix("encoder."): v for k, v in tensors.items()}
    own = {k: v for k, v in net.state_dict().items() if k.startswith(ENCODER_PREFIXES)}
    if not any(k in state for k in own):
        raise ValueError(f"init: {p} holds no E-3DSNN stem / stage weights")
    missing = [k for k in own if k not in state]
    misshaped = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
                 if k in state and state[k].shape != v.shape]  # fmt: skip
    if missing or misshaped:
        raise ValueError(f"init: {p} does not fit {arch}'s encoder: {len(missing)} tensors missing "
                         f"{missing[:4]}, {len(misshaped)} of another shape {misshaped[:4]}")  # fmt: skip
    net.load_state_dict({k: state[k] for k in own}, strict=False)
    new = len(net.state_dict()) - len(own)
    log.info("init: %d encoder tensors from %s; %d tensors new", len(own), p, new)
    return len(own)


class DenseTask(Task):
    """Shared steps; a subclass sets `self.train_set`, `self.test_set`, implements `model_cfg()`,
    `meta()` and the loss module, and reads its config's `model`, `init`, `data.*_limit` and `eval`."""

    net: nn.Module
    model: nn.Module

    @staticmethod
    def limit(ds: Any, n: int | None) -> Any:
        """The first `n` items of `ds` (all when None): quick runs."""
        if n is None or n >= len(ds):
            return ds
        view = Subset(ds, np.arange(int(n)))
        view.classes = ds.classes
        return view

    def model_cfg(self) -> dict[str, Any]:
        raise NotImplementedError

    def meta(self) -> dict[str, Any]:
        raise NotImplementedError

    def build_net(self) -> nn.Module:
        """The registered network from `model_cfg()`, its encoder from `init` (or `model.init`) if set."""
        from svl.models import create_model

        net = create_model(self.cfg.model.name, **self.model_cfg())
        init = self.cfg.init if self.cfg.init not in ("", "scratch", None) else self.cfg.model.init
        if init:
            load_e3dsnn_stages(net, init, self.cfg.model.name)
        return net

    @property
    def has_validation(self) -> bool:
        return self.cfg.eval.monitor_test

    def precise_bn(self) -> None:
        from svl.tasks.finetune import precise_bn

        if self.cfg.eval.precise_bn:
            precise_bn(self.net, self.train_set, self.cfg.train.batch_size, self.cfg.eval.precise_bn)

    def restore_best(self, summary: dict[str, Any]) -> Path:
        """The selected (else last) weights back into the model, BN re-estimated, saved as final."""
        from svl.checkpoint import load_checkpoint, load_state_into, save_checkpoint

        path = summary.get("best_path") or summary["last"]
        tensors, _ = load_checkpoint(path)
        load_state_into(self.model, tensors, where=path)
        self.precise_bn()
        final = self.out / "final.safetensors"
        save_checkpoint(final, dict(self.net.state_dict()), {**self.meta(), "source": Path(path).name})
        return final
