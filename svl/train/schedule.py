"""Per-iteration learning-rate schedules: linear warm-up + cosine decay (docs/SPEC.md §4), and step decay
(docs/SPEC.md §9).

Both are `torch.optim.lr_scheduler.LRScheduler` subclasses, so `state_dict()` / `load_state_dict()`
and `scheduler.step()` once per optimiser step work as with LambdaLR; every parameter group keeps
its own base lr.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

__all__ = ["StepDecayLR", "WarmupCosineLR", "warmup_cosine"]


def warmup_cosine(
    step: int,
    total_steps: int,
    warmup_steps: int,
    base_lr: float,
    start_lr: float = 1e-6,
    min_lr: float = 1e-5,
) -> float:
    """lr at iteration `step`: linear start_lr -> base_lr over warm-up, then cosine base_lr -> min_lr.

    `step == warmup_steps` gives base_lr, `step >= total_steps` gives min_lr.
    """
    if total_steps <= 0 or warmup_steps < 0:
        raise ValueError(f"need total_steps > 0 and warmup_steps >= 0, got {total_steps=}, {warmup_steps=}")
    if step < warmup_steps:
        return start_lr + (base_lr - start_lr) * step / warmup_steps
    decay = max(total_steps - warmup_steps, 1)
    progress = min(max((step - warmup_steps) / decay, 0.0), 1.0)
    return min_lr + 0.5 * (base_lr - min_lr) * (1.0 + math.cos(math.pi * progress))


class WarmupCosineLR(LRScheduler):
    """`warmup_cosine` applied to each parameter group's initial lr, stepped per iteration."""

    def __init__(
        self,
        optimizer: Optimizer,
        total_steps: int,
        warmup_steps: int = 0,
        start_lr: float = 1e-6,
        min_lr: float = 1e-5,
        last_epoch: int = -1,
    ) -> None:
        if total_steps <= 0 or warmup_steps < 0:
            raise ValueError(
                f"need total_steps > 0 and warmup_steps >= 0, got {total_steps=}, {warmup_steps=}"
            )
        self.total_steps, self.warmup_steps = int(total_steps), int(warmup_steps)
        self.start_lr, self.min_lr = float(start_lr), float(min_lr)
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        return [
            warmup_cosine(
                self.last_epoch, self.total_steps, self.warmup_steps, base, self.start_lr, self.min_lr
            )
            for base in self.base_lrs
        ]


class StepDecayLR(LRScheduler):
    """Multiply the lr by `gamma` at fixed fractions of training (e.g. 60% and 80%), per iteration."""

    def __init__(
        self,
        optimizer: Optimizer,
        total_steps: int,
        milestones: Sequence[float] = (0.6, 0.8),
        gamma: float = 0.1,
        warmup_steps: int = 0,
        start_lr: float = 1e-6,
        last_epoch: int = -1,
    ) -> None:
        if total_steps <= 0:
            raise ValueError(f"need total_steps > 0, got {total_steps}")
        if any(not 0 < m <= 1 for m in milestones):
            raise ValueError(f"milestones are fractions of training in (0, 1], got {list(milestones)}")
        self.total_steps, self.warmup_steps = int(total_steps), int(warmup_steps)
        self.milestone_steps = sorted(round(m * total_steps) for m in milestones)
        self.gamma, self.start_lr = float(gamma), float(start_lr)
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        step = self.last_epoch
        if step < self.warmup_steps:
            return [self.start_lr + (b - self.start_lr) * step / self.warmup_steps for b in self.base_lrs]
        k = sum(step >= m for m in self.milestone_steps)
        return [b * self.gamma**k for b in self.base_lrs]
