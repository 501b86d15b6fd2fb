"""A generic, exactly-resumable training loop (pretraining and fine-tuning share it).

(Over 600 lines because exact resume, signals, DDP and disk-full handling touch the same state; they
are kept in one class so that a change to one cannot silently break another.)

Any `model(batch) -> {"loss": Tensor, **scalar logs}` trains here: AdamW (or SGD) with no decay on
biases / norm parameters / temperatures, per-iteration warm-up + cosine (or step decay), gradient
clipping, optional bf16 autocast, an optional weight average (`ema`) that validation, selection and
the final weights use, DDP under torchrun. A run can stop anywhere and resume bit-for-bit:
weights, optimizer, scheduler, every RNG and the position inside the epoch are saved, and data
randomness (augmentation, collation) is seeded per batch from (seed, epoch, batch, rank), so it
does not depend on the number of workers or on where the run was interrupted.

SIGTERM (what cluster schedulers send before killing a job) or Ctrl-C during `fit` finishes the
current step, writes last.safetensors + its state and raises `TrainingInterrupted`; a second
signal stops at once. Off a terminal, progress is one log line per epoch instead of a tqdm bar.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from svl.checkpoint import (
    load_checkpoint,
    load_state_into,
    load_training_state,
    save_checkpoint,
    save_checkpoint_and_state,
    training_state_path,
)
from svl.spiking import record_spikes, spike_stats
from svl.train import distributed as D
from svl.train.sampler import ResumableBatchSampler, ResumableSampler
from svl.train.schedule import StepDecayLR, WarmupCosineLR
from svl.train.tblog import ScalarLog
from svl.utils import (
    append_file,
    atomic_write,
    get_logger,
    progress,
    progress_bars_enabled,
    seed_everything,
)

__all__ = [
    "TrainConfig",
    "Trainer",
    "TrainingInterrupted",
    "build_optimizer",
    "build_scheduler",
    "param_groups",
]

log = get_logger(__name__)

LAST = "last.safetensors"
LAST_STATE = "last.state.pt"
BEST = "best.safetensors"
EMA = "ema.safetensors"
LOG_FILE = "log.jsonl"
STATE_VERSION = 1


@dataclass
class TrainConfig:
    """Optimisation recipe; defaults follow the E-3DSNN pretraining recipe (docs/SPEC.md §4).

    Checked when built (so a config file is refused when it is read, not mid-run) and again by
    the Trainer (fields may be set after construction).
    """

    epochs: int = 1
    batch_size: int = 32  # per process
    lr: float = 2e-3
    weight_decay: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-8
    warmup_epochs: float = 0.0
    start_lr: float = 1e-6
    min_lr: float = 1e-5
    grad_clip: float | None = 1.0  # max global grad norm; None or 0 = off
    amp: str = "auto"  # "auto" (bf16 on CUDA where supported), "bf16", "off"
    seed: int = 0
    num_workers: int = 0
    ckpt_every_steps: int = 0  # 0 = only at epoch ends and at the end
    log_every_steps: int = 20
    sync_bn: bool = False
    max_steps: int | None = None  # stop early (smoke runs, tests); the schedule still spans `epochs`
    select_metric: str | None = None  # validation metric that picks best.safetensors
    select_mode: str = "max"
    optimizer: str = "adamw"  # "adamw" | "sgd"
    momentum: float = 0.9  # sgd only
    nesterov: bool = True  # sgd only
    schedule: str = "cosine"  # "cosine" (warm-up + cosine) | "step" (x gamma at milestones)
    milestones: list[float] = field(default_factory=lambda: [0.6, 0.8])  # fractions of training
    gamma: float = 0.1
    shuffle: bool = True
    drop_last: bool = True
    val_every_epochs: int = 1
    find_unused_parameters: bool = False
    # Exponential moving average of the weights (0 = off): validation, selection and the final weights
    # use the average; training steps the raw weights. Warmed up as timm's ModelEmaV3 does (decay
    # min(ema, 1 - (1 + step)^-3/4)), so the random init never weighs on it.
    ema: float = 0.0

    def __post_init__(self) -> None:
        # YAML reads `amp: off` as a boolean, which reaches this str field as "False".
        if str(self.amp).lower() in ("false", "no", "0"):
            self.amp = "off"
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the first bad field, or an option this machine cannot run."""
        checks = [
            (self.epochs >= 1, "epochs must be >= 1"),
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.lr > 0, "lr must be > 0"),
            (self.weight_decay >= 0, "weight_decay must be >= 0"),
            (
                len(tuple(self.betas)) == 2 and all(0 <= b < 1 for b in self.betas),
                "betas must be 2 values in [0, 1)",
            ),
            (self.warmup_epochs >= 0, "warmup_epochs must be >= 0"),
            (self.grad_clip is None or self.grad_clip >= 0, "grad_clip must be >= 0 or None"),
            (self.amp in ("auto", "bf16", "off"), "amp must be 'auto', 'bf16' or 'off'"),
            (self.num_workers >= 0, "num_workers must be >= 0"),
            (self.ckpt_every_steps >= 0, "ckpt_every_steps must be >= 0"),
            (self.log_every_steps >= 1, "log_every_steps must be >= 1"),
            (self.max_steps is None or self.max_steps >= 1, "max_steps must be >= 1 or None"),
            (self.select_mode in ("max", "min"), "select_mode must be 'max' or 'min'"),
            (self.optimizer in ("adamw", "sgd"), "optimizer must be 'adamw' or 'sgd'"),
            (self.schedule in ("cosine", "step"), "schedule must be 'cosine' or 'step'"),
            (self.val_every_epochs >= 1, "val_every_epochs must be >= 1"),
            (0 <= self.ema < 1, "ema must be in [0, 1) (0 = off)"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ValueError(f"TrainConfig: {msg}")
        if self.select_metric and _val_key(self.select_metric).split("/")[0] == "test":
            # one rule for every task: checkpoints are never picked by a test-split score
            raise ValueError(
                f"train.select_metric={self.select_metric!r} would pick checkpoints on the test split; "
                "select on a validation metric (val/..., e.g. with data.val_fraction > 0) or leave it unset"
            )
        if self.sync_bn and not torch.cuda.is_available():
            raise ValueError(
                "TrainConfig: sync_bn=true needs CUDA: torch has no SyncBatchNorm on CPU and no CUDA "
                "device is visible here; set sync_bn=false"
            )


class TrainingInterrupted(Exception):
    """`fit` stopped on SIGTERM / SIGINT after finishing a step and saving a resumable checkpoint.

    `step`: optimiser steps done (= the checkpoint's step); `path`: the checkpoint written (None on
    ranks other than 0); `signal_name`: "SIGTERM" or "SIGINT"; `exit_code`: 128 + signal number,
    the shell's convention for a process ended by that signal.
    """

    def __init__(self, step: int, path: Path | None, signum: int) -> None:
        self.step, self.path, self.signum = step, path, signum
        self.signal_name = signal.Signals(signum).name
        self.exit_code = 128 + int(signum)
        where = f"checkpoint saved to {path}" if path is not None else "checkpoint saved by rank 0"
        super().__init__(f"training interrupted by {self.signal_name} at step {step}; {where}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.step, self.path, self.signum))


def param_groups(
    model: nn.Module, weight_decay: float, lr_scale: Mapping[str, float] | None = None, lr: float = 1.0
) -> list[dict[str, Any]]:
    """AdamW groups: decayed weight matrices/kernels, and undecayed biases, norm params, scales.

    Decaying a bias, a BatchNorm affine or a learned temperature only pulls it towards an
    arbitrary 0, so every parameter with < 2 dims (or named *logit_scale*) goes undecayed.
    lr_scale: {parameter name: multiplier of `lr`} (a pretrained encoder fine-tuned more gently);
    each multiplier other than 1 gets its own pair of groups with its own "lr".
    """
    scales = dict(lr_scale or {})
    groups: dict[tuple[bool, float], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        decayed = not (p.ndim < 2 or name.endswith("logit_scale") or name.endswith("bias"))
        s = float(scales.get(name.removeprefix("module."), 1.0))  # DDP names its module "module"
        groups.setdefault((decayed, s), []).append(p)
    out = []
    for (decayed, s), params in sorted(groups.items(), key=lambda kv: (kv[0][1] != 1.0, not kv[0][0])):
        g: dict[str, Any] = {"params": params, "weight_decay": weight_decay if decayed else 0.0}
        if s != 1.0:
            g["lr"] = lr * s
        out.append(g)
    return out


def build_optimizer(
    model: nn.Module, cfg: TrainConfig, lr_scale: Mapping[str, float] | None = None
) -> torch.optim.Optimizer:
    """AdamW (or SGD with momentum) over `param_groups(model, cfg.weight_decay, lr_scale, cfg.lr)`."""
    params = param_groups(model, cfg.weight_decay, lr_scale, cfg.lr)
    if not params:
        raise ValueError("the model has no trainable parameters")
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """The per-iteration schedule over `cfg.epochs * steps_per_epoch` steps (warm-up in epochs)."""
    total_steps = steps_per_epoch * cfg.epochs
    warmup = round(cfg.warmup_epochs * steps_per_epoch)
    if cfg.schedule == "cosine":
        return WarmupCosineLR(optimizer, total_steps, warmup, cfg.start_lr, cfg.min_lr)
    return StepDecayLR(optimizer, total_steps, cfg.milestones, cfg.gamma, warmup, cfg.start_lr)


def _derive_seed(*parts: int) -> int:
    """A well-mixed 63-bit seed from several integers (seed, epoch, batch, rank...)."""
    return int(
        np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(2, np.uint64)[0] >> 1
    )


@contextlib.contextmanager
def _rng_isolated(seed: int | None = None) -> Iterator[None]:
    """Run a block on its own RNG stream (optionally seeded) and restore torch/numpy/python RNGs after."""
    t, n, p = torch.get_rng_state(), np.random.get_state(), random.getstate()
    cuda = (
        torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    )
    try:
        if seed is not None:
            torch.manual_seed(seed)
            np.random.seed(seed % 2**32)
            random.seed(seed)
        yield
    finally:
        torch.set_rng_state(t)
        np.random.set_state(n)
        random.setstate(p)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)


class _SeededBatch(list):
    """A batch of dataset indices carrying the seed its samples are loaded (augmented) with."""

    seed: int | None = None


class _SeededBatches:
    """Wrap a resumable batch sampler so each batch carries seed(seed, epoch, batch index, rank)."""

    def __init__(self, inner: Any, seed: int, rank: int) -> None:
        self.inner, self.seed, self.rank = inner, seed, rank
        self.epoch = 0

    def __iter__(self) -> Iterator[_SeededBatch]:
        for k, idx in enumerate(self.inner, start=int(getattr(self.inner, "start", 0))):
            b = _SeededBatch(int(i) for i in idx)
            b.seed = _derive_seed(self.seed, self.epoch, k, self.rank)
            yield b

    def __len__(self) -> int:
        return len(self.inner)


class _SeededFetch(torch.utils.data.Dataset):
    """Load and collate a whole batch under that batch's seed (in the main process or a worker)."""

    def __init__(self, dataset: Any, collate_fn: Callable[[list[Any]], Any]) -> None:
        self.dataset, self.collate_fn = dataset, collate_fn

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> Any:
        return self.dataset[i]

    def __getitems__(self, idx: list[int]) -> list[Any]:
        with _rng_isolated(getattr(idx, "seed", None)):
            getitems = getattr(self.dataset, "__getitems__", None)
            samples = getitems(list(idx)) if getitems else [self.dataset[i] for i in idx]
            return [self.collate_fn(samples)]


def _first(x: list[Any]) -> Any:
    return x[0]


def _seed_worker(worker_id: int) -> None:
    """Seed numpy/python in a worker from torch's per-worker seed (derived from the loader generator)."""
    s = torch.initial_seed() % 2**32
    np.random.seed(s)
    random.seed(s)


def _to_device(batch: Any, device: torch.device) -> Any:
    non_blocking = device.type == "cuda"
    if isinstance(batch, Tensor):
        return batch.to(device, non_blocking=non_blocking)
    if hasattr(batch, "to") and callable(batch.to):
        return batch.to(device)
    if isinstance(batch, Mapping):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, list | tuple):
        return type(batch)(_to_device(v, device) for v in batch)
    return batch


def _scalars(out: Mapping[str, Any]) -> dict[str, Tensor]:
    """The loggable scalars of a model output (0-d / 1-element tensors and numbers)."""
    res = {}
    for k, v in out.items():
        if isinstance(v, Tensor) and v.numel() == 1:
            res[k] = v.detach().float().reshape(())
        elif isinstance(v, int | float) and not isinstance(v, bool):
            res[k] = torch.tensor(float(v))
    return res


def _val_key(key: str) -> str:
    return key if "/" in key else f"val/{key}"


def _fmt_duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"


class Trainer:
    """Train `model` on `train_set` batches made by `collate_fn`, logging and checkpointing to `out_dir`.

    `val_fn(model) -> {metric: float}` runs on rank 0 (collectives disabled) each
    `cfg.val_every_epochs` epochs and at the end; keys without a "/" are logged as "val/<key>".
    `checkpoint_meta` (JSON-able) goes into every saved checkpoint's metadata.
    `batch_sampler_fn(rank, world_size)` may supply a batch sampler with the resumable protocol of
    `svl.train.sampler` (e.g. `KNNGroupedBatchSampler`); the default shuffles with `ResumableSampler`.
    `lr_scale`: {parameter name: learning-rate multiplier} (`param_groups`).
    """

    def __init__(
        self,
        model: nn.Module,
        train_set: Any,
        collate_fn: Callable[[list[Any]], Any],
        cfg: TrainConfig,
        out_dir: str | Path,
        val_fn: Callable[[nn.Module], Mapping[str, float]] | None = None,
        checkpoint_meta: Mapping[str, Any] | None = None,
        batch_sampler_fn: Callable[[int, int], Any] | None = None,
        lr_scale: Mapping[str, float] | None = None,
    ) -> None:
        cfg.validate()
        self.cfg = cfg
        self.out_dir = Path(out_dir)
        self.val_fn = val_fn
        self.checkpoint_meta = dict(checkpoint_meta or {})
        try:
            json.dumps(self.checkpoint_meta)
        except (TypeError, ValueError) as e:
            raise ValueError(f"checkpoint_meta must be JSON-serialisable: {e}") from None
        if cfg.select_metric and val_fn is None:
            raise ValueError(f"select_metric={cfg.select_metric!r} needs a val_fn")
        self.rank, self.world_size, self.local_rank, self.device = D.init_distributed()
        self.is_main = self.rank == 0

        self.model, self.engine = self._wrap_model(model)
        self.train_set = train_set
        inner = self._batch_sampler(batch_sampler_fn)
        self.batches = _SeededBatches(inner, cfg.seed, self.rank)
        self.fetch = _SeededFetch(train_set, collate_fn)
        self.steps_per_epoch = int(inner.num_batches)
        if self.steps_per_epoch < 1:
            raise ValueError("the training set gives no batch: lower batch_size or set drop_last=False")
        self.total_steps = self.steps_per_epoch * cfg.epochs
        self.loader_gen = torch.Generator()
        self.loader_gen.manual_seed(_derive_seed(cfg.seed, self.rank, 7))

        self.optimizer = build_optimizer(self.model, cfg, lr_scale)
        self.scheduler = build_scheduler(self.optimizer, cfg, self.steps_per_epoch)
        self.amp_dtype = self._amp_dtype()

        self.step = 0
        self.epoch = 0
        self.pos = 0  # batches done in the current epoch
        self.best: float | None = None
        self.best_step: int | None = None
        self.last_val: dict[str, float] = {}
        self._val_step: int | None = None
        self._saved_step: int | None = None
        self._writer: Any = None
        self._window: dict[str, Tensor] = {}
        self._window_n = 0
        self._window_t = time.perf_counter()
        self._epoch_sums: dict[str, Tensor] = {}
        self._epoch_n = 0
        self._signal: int | None = None
        self.ema: dict[str, Tensor] | None = self._ema_copy() if cfg.ema else None

    # ------------------------------------------------------------------ weight averaging
    def _ema_copy(self) -> dict[str, Tensor]:
        return {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    @torch.no_grad()
    def _ema_update(self) -> None:
        """Average the weights after step `self.step` (BN running statistics too, as timm does)."""
        decay = min(self.cfg.ema, 1.0 - (1.0 + self.step) ** -0.75)
        for k, v in self.model.state_dict().items():
            e = self.ema[k]
            if e.is_floating_point():
                e.lerp_(v.detach().to(e.dtype), 1.0 - decay)
            else:
                e.copy_(v)

    @contextlib.contextmanager
    def _averaged_weights(self) -> Iterator[None]:
        """The model holds the averaged weights inside the block (a no-op without EMA)."""
        if self.ema is None:
            yield
            return
        raw = self._ema_copy()
        self.model.load_state_dict(self.ema)
        try:
            yield
        finally:
            self.model.load_state_dict(raw)

    # ------------------------------------------------------------------ setup helpers
    def _wrap_model(self, model: nn.Module) -> tuple[nn.Module, nn.Module]:
        """(the model on this process's device, the module to call: DDP-wrapped under torchrun)."""
        model = model.to(self.device)
        if self.cfg.sync_bn and self.world_size > 1:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        if self.world_size == 1:
            return model, model
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [self.device.index] if self.device.type == "cuda" else None
        return model, DDP(model, device_ids=ids, find_unused_parameters=self.cfg.find_unused_parameters)

    def _batch_sampler(self, batch_sampler_fn: Callable[[int, int], Any] | None) -> Any:
        cfg = self.cfg
        if batch_sampler_fn is not None:
            inner = batch_sampler_fn(self.rank, self.world_size)
            for attr in ("set_epoch", "set_start", "num_batches", "__iter__", "__len__"):
                if not hasattr(inner, attr):
                    raise ValueError(f"batch_sampler_fn returned {type(inner).__name__} without `{attr}`")
            return inner
        n = len(self.train_set)
        sampler = ResumableSampler(n, cfg.shuffle, cfg.seed, self.rank, self.world_size, cfg.drop_last)
        return ResumableBatchSampler(sampler, cfg.batch_size, cfg.drop_last)

    def _amp_dtype(self) -> torch.dtype | None:
        if self.cfg.amp == "off" or self.device.type != "cuda":
            if self.cfg.amp == "bf16" and self.device.type != "cuda":
                log.warning(
                    "amp='bf16' requested on %s: autocast is CUDA-only here, training in float32", self.device
                )
            return None
        if self.cfg.amp == "auto" and not torch.cuda.is_bf16_supported():
            return None
        return torch.bfloat16

    def _loader(self) -> torch.utils.data.DataLoader:
        return torch.utils.data.DataLoader(
            self.fetch,
            batch_sampler=self.batches,
            collate_fn=_first,
            num_workers=self.cfg.num_workers,
            worker_init_fn=_seed_worker,
            generator=self.loader_gen,
            pin_memory=self.device.type == "cuda",
        )

    @property
    def unwrapped(self) -> nn.Module:
        return self.model

    # ------------------------------------------------------------------ state
    def _rng_state(self) -> dict[str, Any]:
        return {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "numpy": np.random.get_state(),
            "python": random.getstate(),
            "loader": self.loader_gen.get_state(),
        }

    def _set_rng_state(self, s: Mapping[str, Any]) -> None:
        torch.set_rng_state(s["torch"])
        if s.get("cuda") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(s["cuda"])
        np.random.set_state(s["numpy"])
        random.setstate(s["python"])
        self.loader_gen.set_state(s["loader"])

    def save(self, name: str = "last") -> Path | None:
        """Write `<name>.safetensors` + `<name>.state.pt` (rank 0; every rank must call it)."""

        rngs = [self._rng_state()]
        if D.is_dist():
            rngs = [None] * self.world_size
            torch.distributed.all_gather_object(rngs, self._rng_state())
        path = None
        if self.is_main:
            path = self.out_dir / f"{name}.safetensors"
            state = {
                "version": STATE_VERSION,
                "step": self.step,
                "epoch": self.epoch,
                "pos": self.pos,
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "rng": rngs,
                "best": self.best,
                "best_step": self.best_step,
                "last_val": self.last_val,
                "world_size": self.world_size,
                "config": dataclasses.asdict(self.cfg),
                "ema": self.ema,
            }
            # Both files or neither: a full disk keeps the previous pair, still a resume point.
            save_checkpoint_and_state(path, self.model.state_dict(), self._meta(), state)
        self._saved_step = self.step
        D.barrier()
        return path

    def _meta(self) -> dict[str, Any]:
        meta = dict(self.checkpoint_meta)
        meta.update(step=self.step, epoch=self.epoch, metrics=dict(self.last_val))
        return meta

    def _resolve_resume(self, resume: bool | str | Path) -> Path | None:
        if resume is False or resume is None:
            return None
        if resume is True or resume == "auto":
            path = self.out_dir / LAST
            if not path.exists():
                if resume == "auto":
                    return None
                raise FileNotFoundError(f"cannot resume: {path} does not exist (train without resume first)")
            return path
        path = Path(resume)
        if path.name.endswith(".state.pt"):
            path = path.with_name(path.name[: -len(".state.pt")] + ".safetensors")
        if not path.exists():
            raise FileNotFoundError(f"cannot resume: checkpoint {path} does not exist")
        return path

    def load(self, path: str | Path) -> None:
        """Restore weights, optimizer, scheduler, RNGs and data position from a `save()` pair."""

        path = Path(path)
        tensors, meta = load_checkpoint(path)
        state_path = training_state_path(path)
        state = load_training_state(state_path)
        if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
            raise ValueError(f"{state_path}: not a training state written by this Trainer")
        if meta.get("step") != state["step"]:
            raise ValueError(
                f"{path} (step {meta.get('step')}) and {state_path} (step {state['step']}) are from "
                "different steps: the run was interrupted between the two writes; resume from an earlier pair"
            )
        load_state_into(self.model, {k: v.to(self.device) for k, v in tensors.items()}, where=path)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step, self.epoch, self.pos = int(state["step"]), int(state["epoch"]), int(state["pos"])
        self.best, self.best_step = state["best"], state["best_step"]
        self.last_val = dict(state["last_val"])
        self._warn_changed_config(state.get("config", {}))
        if self.ema is not None:
            if state.get("ema") is None:
                log.warning("%s has no weight average (trained without train.ema): it starts here", path)
                self.ema = self._ema_copy()
            else:
                self.ema = {k: v.to(self.device) for k, v in state["ema"].items()}
        rngs = state["rng"]
        if len(rngs) == self.world_size:
            self._set_rng_state(rngs[self.rank])
        else:
            log.warning(
                "checkpoint written by %d processes, resuming on %d: RNG streams are re-seeded",
                len(rngs),
                self.world_size,
            )
            torch.manual_seed(_derive_seed(self.cfg.seed, self.rank, self.step))
        if self.pos > self.steps_per_epoch:
            raise ValueError(
                f"{state_path}: position {self.pos} is beyond this epoch's {self.steps_per_epoch} batches"
            )
        self._saved_step = self.step

    def _warn_changed_config(self, old: Mapping[str, Any]) -> None:
        for key in ("batch_size", "epochs", "seed", "drop_last", "shuffle", "ema"):
            if key in old and old[key] != getattr(self.cfg, key):
                log.warning(
                    "resuming with %s=%r (was %r): the run will not match an uninterrupted one",
                    key,
                    getattr(self.cfg, key),
                    old[key],
                )

    # ------------------------------------------------------------------ logging
    def _open_logs(self, resumed: bool) -> None:
        if not self.is_main:
            return

        self.out_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.out_dir / LOG_FILE
        kept = []
        if resumed and log_path.exists():  # drop records from beyond the resumed step
            for line in log_path.read_text().splitlines():
                with contextlib.suppress(json.JSONDecodeError):
                    if json.loads(line).get("step", 0) <= self.step:
                        kept.append(line)
        with atomic_write(log_path, "w") as fh:
            fh.write("".join(line + "\n" for line in kept))
        # What was logged after the checkpoint's step is dropped, as from log.jsonl above.
        self._writer = ScalarLog(self.out_dir / "tb", purge_step=self.step + 1 if resumed else None)

    def _close_logs(self) -> None:
        self._writer = None  # ScalarLog writes each record through; nothing is left to flush

    def _record(self, kind: str, values: Mapping[str, float]) -> None:
        """One record in log.jsonl and TensorBoard; a full disk is a DiskFullError naming the file."""
        if not self.is_main:
            return
        self._writer.add({k: v for k, v in values.items() if math.isfinite(v)}, self.step)
        rec = {"kind": kind, "step": self.step, "epoch": self.epoch, **values}
        append_file(self.out_dir / LOG_FILE, json.dumps(rec) + "\n")

    def _log_train(self, spikes: Mapping[str, dict[str, float]]) -> dict[str, float]:
        elapsed = max(time.perf_counter() - self._window_t, 1e-9)
        values = {f"train/{k}": float(v.item()) / self._window_n for k, v in self._window.items()}
        values.update({f"spikes/{name}": s["rate"] for name, s in spikes.items()})
        values = D.all_reduce_mean(values, self.device)
        values["train/lr"] = float(self.optimizer.param_groups[0]["lr"])
        values["train/samples_per_s"] = self._window_n * self.cfg.batch_size * self.world_size / elapsed
        self._record("train", values)
        self._window, self._window_n, self._window_t = {}, 0, time.perf_counter()
        return values

    def _log_epoch(self, epoch_t0: float, stopped_at: int | None) -> None:
        """One line per epoch where no progress bar shows (a log file, a batch job).

        Every rank computes the epoch means (one all-reduce), so the collective never depends on
        which rank's stderr is a terminal.
        """
        if self._epoch_n == 0:
            return
        means = {k: float(v.item()) / self._epoch_n for k, v in self._epoch_sums.items()}
        means = D.all_reduce_mean(means, self.device)
        n_steps = self._epoch_n
        self._epoch_sums, self._epoch_n = {}, 0
        if not self.is_main or progress_bars_enabled():
            return
        elapsed = time.perf_counter() - epoch_t0
        per_step = elapsed / n_steps
        end = self.total_steps if self.cfg.max_steps is None else min(self.total_steps, self.cfg.max_steps)
        epoch_no = self.epoch if stopped_at is None else self.epoch + 1
        parts = [f"epoch {epoch_no}/{self.cfg.epochs}"]
        if stopped_at is not None:
            parts[0] += f" (stopped at batch {stopped_at}/{self.steps_per_epoch})"
        parts += [f"{k} {v:.4f}" for k, v in means.items() if "loss" in k]
        if self._val_step == self.step and self.last_val:
            key = _val_key(self.cfg.select_metric) if self.cfg.select_metric else None
            shown = {key: self.last_val[key]} if key in self.last_val else self.last_val
            parts += [f"{k} {v:.4f}" for k, v in shown.items()]
        parts.append(f"{_fmt_duration(per_step * self.steps_per_epoch)}/epoch")
        parts.append(f"ETA {_fmt_duration(per_step * max(end - self.step, 0))}")
        log.info("  ".join(parts))

    # ------------------------------------------------------------------ validation
    def validate(self) -> dict[str, float]:
        """Run val_fn on rank 0 (RNG-isolated, eval mode, no grad), log it and keep the best weights."""
        metrics: dict[str, float] = {}
        if self.val_fn is not None and self.is_main:
            was_training = self.model.training
            with self._averaged_weights():
                self.model.eval()
                try:
                    with _rng_isolated(), torch.no_grad(), D.local_only():
                        raw = self.val_fn(self.model)
                finally:
                    self.model.train(was_training)
                metrics = {_val_key(k): float(v) for k, v in dict(raw or {}).items()}
                self.last_val = metrics
                self._record("val", metrics)
                self._select(metrics)
        self._val_step = self.step
        D.barrier()
        return metrics

    def _select(self, metrics: Mapping[str, float]) -> None:
        if not self.cfg.select_metric:
            return
        key = _val_key(self.cfg.select_metric)
        if key not in metrics:
            raise ValueError(f"select_metric {key!r} is not among the validation metrics {sorted(metrics)}")
        value = metrics[key]
        if not math.isfinite(value):
            return
        if self.best is None:
            better = True
        else:
            better = value > self.best if self.cfg.select_mode == "max" else value < self.best
        if better:
            self.best, self.best_step = value, self.step
            meta = self._meta()
            meta.update(select_metric=key, select_value=value)
            save_checkpoint(self.out_dir / BEST, self.model.state_dict(), meta)
            log.info("step %d: new best %s = %.4f -> %s", self.step, key, value, self.out_dir / BEST)

    # ------------------------------------------------------------------ interruption
    @contextlib.contextmanager
    def _interrupt_handlers(self) -> Iterator[None]:
        """While fitting, SIGTERM / SIGINT only ask to stop after the current step; restored after.

        Only the main thread may set signal handlers; elsewhere (a fit in a worker thread) the
        process's own handling applies unchanged. A second signal stops at once.
        """
        self._signal = None
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous: dict[int, Any] = {}

        def restore() -> None:
            for sig, handler in previous.items():
                signal.signal(sig, handler if handler is not None else signal.SIG_DFL)

        def request_stop(signum: int, frame: Any) -> None:
            if self._signal is not None:  # asked twice: give up on the clean stop
                restore()
                if signum == signal.SIGINT:
                    raise KeyboardInterrupt
                raise SystemExit(128 + signum)
            self._signal = signum
            log.warning(
                "%s: finishing step %d, then saving a checkpoint (send it again to stop at once)",
                signal.Signals(signum).name,
                self.step + 1,
            )

        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(ValueError, OSError):  # not settable on this platform
                previous[sig] = signal.signal(sig, request_stop)
        try:
            yield
        finally:
            restore()

    def _interrupt_requested(self) -> int | None:
        """The signal to stop on, agreed by every rank (all must save the same step together)."""
        if self.world_size == 1:
            return self._signal
        return D.all_reduce_max(self._signal or 0, self.device) or None

    def _stop_interrupted(self, signum: int) -> None:
        """Save where the run stands (every rank takes part) and leave `fit` by TrainingInterrupted."""
        path = self.save()
        if self.is_main:
            log.warning("interrupted at step %d: wrote %s", self.step, path)
        raise TrainingInterrupted(self.step, path, signum)

    # ------------------------------------------------------------------ training
    def _train_step(self, batch: Any, log_now: bool) -> dict[str, Any]:

        self.model.train()
        batch = _to_device(batch, self.device)
        if log_now:
            record_spikes(self.model, True)
        autocast = (
            torch.autocast("cuda", dtype=self.amp_dtype)
            if self.amp_dtype is not None
            else contextlib.nullcontext()
        )
        with autocast:
            out = self.engine(batch)
        if not isinstance(out, Mapping) or "loss" not in out:
            raise ValueError(f"the model must return a dict with a 'loss' entry, got {type(out).__name__}")
        loss = out["loss"]
        if not torch.isfinite(loss.detach()).all():
            raise FloatingPointError(
                f"non-finite loss {float(loss.detach())} at step {self.step} (epoch {self.epoch})"
            )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        scalars = _scalars(out)
        if self.cfg.grad_clip:
            params = [p for g in self.optimizer.param_groups for p in g["params"]]
            scalars["grad_norm"] = torch.nn.utils.clip_grad_norm_(params, self.cfg.grad_clip).detach().float()
        self.optimizer.step()
        self.scheduler.step()
        if self.ema is not None:
            self._ema_update()
        spikes = {}
        if log_now:
            spikes = spike_stats(self.model)
            record_spikes(self.model, False)
        for k, v in scalars.items():
            self._window[k] = self._window.get(k, torch.zeros((), device=v.device)) + v
            self._epoch_sums[k] = self._epoch_sums.get(k, torch.zeros((), device=v.device)) + v
        self._window_n += 1
        self._epoch_n += 1
        return spikes

    def _begin_epoch(self) -> None:
        """Point the sampler, the dataset's augmentation stream and the batch seeds at this epoch."""
        self.batches.inner.set_epoch(self.epoch)
        if hasattr(self.train_set, "set_epoch"):  # per-epoch augmentation streams
            self.train_set.set_epoch(self.epoch)
        self.batches.epoch = self.epoch
        if self.pos:
            self.batches.inner.set_start(self.pos)

    def _run_epoch(self) -> bool:
        """Train the rest of the current epoch; True when `max_steps` stopped it early."""
        cfg = self.cfg
        epoch_t0 = time.perf_counter()
        stop = False
        if self.pos < self.steps_per_epoch:  # == only after an interrupt on an epoch's last step
            self._begin_epoch()
            # Off a terminal the epoch line (_log_epoch) reports instead of periodic loop lines.
            bar_kw: dict[str, Any] = {"log_every": None} if self.is_main else {"disable": True}
            bar = progress(
                self._loader(), total=len(self.batches), desc=f"epoch {self.epoch + 1}/{cfg.epochs}", **bar_kw
            )
            self._window_t = time.perf_counter()
            for batch in bar:
                log_now = (self.step + 1) % cfg.log_every_steps == 0
                spikes = self._train_step(batch, log_now)
                self.step += 1
                self.pos += 1
                if log_now:
                    values = self._log_train(spikes)
                    if hasattr(bar, "set_postfix"):
                        bar.set_postfix(loss=f"{values.get('train/loss', float('nan')):.4f}")
                signum = self._interrupt_requested()
                if signum is not None:
                    self._stop_interrupted(signum)
                if cfg.max_steps is not None and self.step >= cfg.max_steps:
                    stop = True
                    break
                if (
                    cfg.ckpt_every_steps
                    and self.step % cfg.ckpt_every_steps == 0
                    and self.pos < self.steps_per_epoch
                ):
                    self.save()
        stopped_at = None
        if self.pos >= self.steps_per_epoch:
            self._end_epoch()
        else:
            stopped_at = self.pos
        self._log_epoch(epoch_t0, stopped_at)
        return stop

    def _end_epoch(self) -> None:
        self.epoch += 1
        self.pos = 0
        if self.epoch % self.cfg.val_every_epochs == 0:
            self.validate()
        self.save()

    def _finish(self) -> None:
        """Validate and save the final state unless the last epoch end already did."""
        if self._val_step != self.step and self.val_fn is not None:
            self.validate()
        if self._saved_step != self.step or not (self.out_dir / LAST).exists():
            self.save()

    def _start(self, resume: bool | str | Path) -> None:
        """Restore a checkpoint (or seed a fresh run) and open the logs."""

        path = self._resolve_resume(resume)
        if path is not None:
            self.load(path)
            log.info("resumed from %s at step %d (epoch %d, batch %d)", path, self.step, self.epoch, self.pos)
        else:
            seed_everything(_derive_seed(self.cfg.seed, self.rank) % 2**32)
        self._epoch_sums, self._epoch_n = {}, 0
        self._open_logs(resumed=path is not None)

    def fit(self, resume: bool | str | Path = False) -> dict[str, Any]:
        """Train to `cfg.epochs` (or `cfg.max_steps`); `resume` = True / "auto" / a checkpoint path.

        On SIGTERM / SIGINT: finishes the step, saves last.safetensors + state, raises
        `TrainingInterrupted` (resume with `resume=True`).
        """
        cfg = self.cfg
        self._start(resume)
        stop = cfg.max_steps is not None and self.step >= cfg.max_steps
        with self._interrupt_handlers():
            try:
                # An interrupt on an epoch's last step saved pos == steps_per_epoch: that epoch's
                # end (validation, checkpoint) is still due, even when max_steps was reached.
                while self.epoch < cfg.epochs and (not stop or self.pos >= self.steps_per_epoch):
                    stop = self._run_epoch() or stop
                self._finish()
                signum = self._interrupt_requested()
                if signum is not None:  # arrived during the final validation: training is complete
                    raise TrainingInterrupted(
                        self.step, self.out_dir / LAST if self.is_main else None, signum
                    )
            finally:
                self._close_logs()
        return self._write_summary()

    def _write_summary(self) -> dict[str, Any]:
        ema_path = None
        if self.ema is not None:
            ema_path = self.out_dir / EMA
            if self.is_main:
                save_checkpoint(ema_path, self.ema, {**self._meta(), "ema": self.cfg.ema})
        best_path = self.out_dir / BEST if self.best is not None else None
        summary = {
            "step": self.step,
            "epoch": self.epoch,
            "best": self.best,
            "best_step": self.best_step,
            "select_metric": self.cfg.select_metric,
            "last_val": self.last_val,
            "last": str(self.out_dir / LAST),
            "best_path": str(best_path) if best_path else None,
            "ema_path": str(ema_path) if ema_path else None,
            # what a task evaluates and ships: the selected weights, else the average, else the last
            "final_path": str(best_path or ema_path or self.out_dir / LAST),
        }
        if self.is_main:
            with atomic_write(self.out_dir / "summary.json", "w") as fh:
                json.dump(summary, fh, indent=2)
        return summary
