"""Learning-rate schedules: values at the key steps, per-group base lrs, state round trip."""

from __future__ import annotations

import math

import pytest
import torch

from svl.train import StepDecayLR, WarmupCosineLR, warmup_cosine


def test_warmup_cosine_key_steps() -> None:
    kw = dict(total_steps=100, warmup_steps=10, base_lr=2e-3, start_lr=1e-6, min_lr=1e-5)
    assert warmup_cosine(0, **kw) == pytest.approx(1e-6)
    assert warmup_cosine(5, **kw) == pytest.approx(1e-6 + 0.5 * (2e-3 - 1e-6))
    assert warmup_cosine(10, **kw) == pytest.approx(2e-3)  # peak right after warm-up
    assert warmup_cosine(55, **kw) == pytest.approx(1e-5 + 0.5 * (2e-3 - 1e-5))  # half-way: midpoint
    q = 1e-5 + 0.5 * (2e-3 - 1e-5) * (1 + math.cos(math.pi * 0.25))
    assert warmup_cosine(32.5, **kw) == pytest.approx(q)
    assert warmup_cosine(100, **kw) == pytest.approx(1e-5)
    assert warmup_cosine(250, **kw) == pytest.approx(1e-5)  # clamped past the end
    assert warmup_cosine(0, 100, 0, 2e-3) == pytest.approx(2e-3)  # no warm-up: start at the peak
    lrs = [warmup_cosine(s, **kw) for s in range(101)]
    assert all(x < y for x, y in zip(lrs[:10], lrs[1:11]))  # rising
    assert all(x >= y for x, y in zip(lrs[10:], lrs[11:]))  # then non-increasing
    with pytest.raises(ValueError):
        warmup_cosine(0, 0, 0, 1.0)


def test_scheduler_per_group_and_state_dict() -> None:
    w = torch.nn.Parameter(torch.zeros(2))
    b = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.AdamW([{"params": [w], "lr": 1e-3}, {"params": [b], "lr": 4e-3}])
    sched = WarmupCosineLR(opt, total_steps=20, warmup_steps=4, start_lr=0.0, min_lr=0.0)
    assert [g["lr"] for g in opt.param_groups] == [0.0, 0.0]
    for _ in range(4):
        opt.step()
        sched.step()
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([1e-3, 4e-3])
    for _ in range(3):
        opt.step()
        sched.step()
    state = sched.state_dict()
    opt2 = torch.optim.AdamW([{"params": [w], "lr": 1e-3}, {"params": [b], "lr": 4e-3}])
    sched2 = WarmupCosineLR(opt2, total_steps=20, warmup_steps=4, start_lr=0.0, min_lr=0.0)
    sched2.load_state_dict(state)
    opt.step()
    sched.step()
    opt2.step()
    sched2.step()
    assert [g["lr"] for g in opt2.param_groups] == pytest.approx([g["lr"] for g in opt.param_groups])
    assert opt.param_groups[0]["lr"] == pytest.approx(warmup_cosine(8, 20, 4, 1e-3, 0.0, 0.0))


def test_step_decay_at_fractions() -> None:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    sched = StepDecayLR(opt, total_steps=10, milestones=(0.6, 0.8), gamma=0.1)
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([0.1] * 6 + [0.01] * 2 + [0.001] * 2)
    with pytest.raises(ValueError, match="fractions"):
        StepDecayLR(opt, total_steps=10, milestones=(60,))
