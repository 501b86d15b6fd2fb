"""Weight averaging (`train.ema`): the closed-form recursion, an untouched raw trajectory, exact resume."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_train_trainer import ToyPairs, collate, make_cfg, make_model

from svl.checkpoint import load_checkpoint
from svl.train import TrainConfig, Trainer


def _fit(out: Path, resume: bool = False, **kw) -> dict:
    cfg = make_cfg(epochs=2, **kw)
    return Trainer(make_model(), ToyPairs(), collate, cfg, out).fit(resume=resume)


def _weights(path: str | Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)[0]


def test_ema_is_the_warmed_up_recursion_over_the_raw_weights(tmp_path: Path) -> None:
    """Reference: the raw weights after every step (runs stopped at each step), averaged by hand."""
    decay = 0.9
    steps = 2 * (len(ToyPairs()) // 4)  # 2 epochs of 5 batches
    raw = [_weights(_fit(tmp_path / f"raw{s}", max_steps=s)["last"]) for s in range(1, steps + 1)]
    ref = {k: v.clone() for k, v in raw[0].items()}  # step 0: decay 1 - 1^-0.75 = 0
    for t in range(1, steps):
        d = min(decay, 1.0 - (1.0 + t) ** -0.75)
        for k, v in raw[t].items():
            ref[k] = d * ref[k] + (1 - d) * v if v.is_floating_point() else v
    summary = _fit(tmp_path / "ema", ema=decay)
    ema = _weights(summary["ema_path"])
    assert summary["final_path"] == summary["ema_path"]  # no selection: the average is what ships
    for k in ref:
        torch.testing.assert_close(ema[k], ref[k], rtol=1e-5, atol=1e-6, msg=k)
    # the average never feeds back: the raw trajectory is the run without it, bit for bit
    last = _weights(summary["last"])
    for k, v in raw[-1].items():
        assert torch.equal(last[k], v), k
    assert not torch.equal(ema["encoder.inp.weight"], last["encoder.inp.weight"])


def test_validation_and_selection_see_the_average(tmp_path: Path) -> None:
    seen = []

    def val_fn(model):
        seen.append(model.encoder.inp.weight.detach().clone())
        return {"score": float(len(seen))}  # rises every epoch: the last validation is the best

    cfg = make_cfg(epochs=2, ema=0.9, select_metric="score")
    trainer = Trainer(make_model(), ToyPairs(), collate, cfg, tmp_path, val_fn=val_fn)
    summary = trainer.fit()
    ema, best = _weights(summary["ema_path"]), _weights(summary["best_path"])
    assert summary["final_path"] == summary["best_path"]
    assert torch.equal(seen[-1], ema["encoder.inp.weight"])
    assert torch.equal(best["encoder.inp.weight"], ema["encoder.inp.weight"])
    # outside validation the model trains on (and holds) its raw weights
    assert torch.equal(trainer.model.encoder.inp.weight, _weights(summary["last"])["encoder.inp.weight"])


def test_resume_restores_the_average_exactly(tmp_path: Path) -> None:
    full = _fit(tmp_path / "full", ema=0.9)
    _fit(tmp_path / "cut", ema=0.9, max_steps=3)
    resumed = _fit(tmp_path / "cut", resume=True, ema=0.9)
    a, b = _weights(full["ema_path"]), _weights(resumed["ema_path"])
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_bad_decay_is_refused() -> None:
    with pytest.raises(ValueError, match="ema must be in"):
        TrainConfig(ema=1.0)
