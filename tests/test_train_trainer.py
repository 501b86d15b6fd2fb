"""The generic Trainer: exact resume, logging, best-checkpoint selection, worker-independent data.

Also home of the tiny toy model/dataset that test_train_distributed.py reuses (no dependency on
the real encoders or data pipeline).
"""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path

import pytest
import torch
from torch import nn

from svl.checkpoint import load_checkpoint, load_training_state, read_checkpoint_meta
from svl.spiking import ILIF
from svl.train import TrainConfig, Trainer, TripleAlignment
from svl.train.trainer import TrainingInterrupted

TEXT_DIM, IMAGE_DIM, OUT_DIM = 8, 6, 5


class ToyEncoder(nn.Module):
    """Per-point linear -> (BN) -> I-LIF -> mean over points -> (dropout) -> linear: has `.out_dim`."""

    def __init__(self, out_dim: int = OUT_DIM, bn: bool = True, dropout: float = 0.1) -> None:
        super().__init__()
        self.out_dim = out_dim
        self.inp = nn.Linear(3, 16)
        self.bn = nn.BatchNorm1d(16) if bn else nn.Identity()
        self.sn = ILIF(D=4)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(16, out_dim)

    def forward(self, batch: dict) -> torch.Tensor:
        x = batch["xyz"]
        b, n, _ = x.shape
        h = self.bn(self.inp(x).reshape(b * n, -1) * 3.0).reshape(b, n, -1)
        return self.head(self.drop(self.sn(h).mean(1)))


class ToyPairs(torch.utils.data.Dataset):
    """Fixed random clouds + teacher embeddings; `augment` jitters points with the global RNG."""

    def __init__(self, n: int = 22, points: int = 16, augment: bool = True) -> None:
        g = torch.Generator().manual_seed(123)
        self.xyz = torch.randn(n, points, 3, generator=g)
        self.text = torch.randn(n, TEXT_DIM, generator=g)
        self.image = self.text[:, :IMAGE_DIM] + 0.3 * torch.randn(n, IMAGE_DIM, generator=g)
        self.augment = augment

    def __len__(self) -> int:
        return self.xyz.shape[0]

    def __getitem__(self, i: int) -> dict:
        xyz = self.xyz[i]
        if self.augment:
            xyz = xyz * (0.8 + 0.4 * torch.rand(())) + 0.05 * torch.randn_like(xyz)
        return {"xyz": xyz, "text_emb": self.text[i], "has_text": i % 3 != 0, "image_emb": self.image[i]}


def collate(samples: list[dict]) -> dict:
    return {
        "xyz": torch.stack([s["xyz"] for s in samples]),
        "extras": {
            "text_emb": torch.stack([s["text_emb"] for s in samples]),
            "has_text": torch.tensor([s["has_text"] for s in samples]),
            "image_emb": torch.stack([s["image_emb"] for s in samples]),
        },
    }


def make_model(bn: bool = True, dropout: float = 0.1) -> TripleAlignment:
    torch.manual_seed(0)
    return TripleAlignment(ToyEncoder(bn=bn, dropout=dropout), TEXT_DIM, IMAGE_DIM)


def make_cfg(**kw) -> TrainConfig:
    base = dict(epochs=3, batch_size=4, lr=1e-2, warmup_epochs=1, log_every_steps=2, seed=3)
    base.update(kw)
    return TrainConfig(**base)


def noisy_val(model: nn.Module) -> dict[str, float]:
    """A validation that draws from the global RNG, to prove validation cannot perturb training."""
    torch.rand(5)
    return {"score": float(model.text_proj.weight.sum())}


def _assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs"


def test_resume_is_bit_identical_mid_epoch_and_at_epoch_end(tmp_path: Path) -> None:
    ds = ToyPairs()  # 22 samples / batch 4 -> 5 steps per epoch, 15 in all
    full = Trainer(make_model(), ds, collate, make_cfg(), tmp_path / "full", val_fn=noisy_val)
    full.fit()
    assert full.step == 15
    ref = {k: v.clone() for k, v in full.model.state_dict().items()}

    run = tmp_path / "split"
    a = Trainer(make_model(), ds, collate, make_cfg(max_steps=5), run, val_fn=noisy_val)  # stop at epoch end
    a.fit()
    assert (a.step, a.epoch, a.pos) == (5, 1, 0)
    b = Trainer(make_model(), ds, collate, make_cfg(max_steps=12, ckpt_every_steps=3), run, val_fn=noisy_val)
    b.fit(resume=True)  # stop mid-epoch 3 (batch 2 of 5)
    assert (b.step, b.epoch, b.pos) == (12, 2, 2)
    c = Trainer(make_model(), ds, collate, make_cfg(), run, val_fn=noisy_val)
    c.fit(resume=run / "last.safetensors")
    assert c.step == 15
    _assert_same_weights(ref, c.model.state_dict())
    assert c.optimizer.param_groups[0]["lr"] == full.optimizer.param_groups[0]["lr"]

    # A mid-epoch periodic checkpoint is a valid resume point too (weights + state agree).
    tensors, meta = load_checkpoint(run / "last.safetensors")
    assert meta["step"] == 15 and meta["epoch"] == 3
    _assert_same_weights(ref, tensors)

    # Without resume the state restarts: a fresh 5-step run differs from the 15-step one.
    assert not torch.equal(a.model.text_proj.weight, c.model.text_proj.weight)


def test_logs_tensorboard_best_and_summary(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = make_cfg(epochs=2, select_metric="score", select_mode="min")
    t = Trainer(
        make_model(), ToyPairs(), collate, cfg, tmp_path, val_fn=noisy_val, checkpoint_meta={"model": "toy"}
    )
    summary = t.fit()

    events = list((tmp_path / "tb").glob("events.out.tfevents.*"))
    assert events
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    for tag in (
        "train/loss",
        "train/loss_text",
        "train/loss_image",
        "train/loss_mse",
        "train/acc_text",
        "train/lr",
        "train/logit_scale",
        "train/grad_norm",
        "spikes/encoder.sn",
        "val/score",
    ):
        assert tag in tags, tag
    rates = [e.value for e in acc.Scalars("spikes/encoder.sn")]
    assert all(0.0 <= r <= 4.0 for r in rates) and any(r > 0 for r in rates)
    assert len(acc.Scalars("train/loss")) == 5  # 10 steps, one record every 2

    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    vals = [r for r in records if r["kind"] == "val"]
    assert [r["step"] for r in vals] == [5, 10]  # once per epoch, none repeated at the end
    best_val = min(r["val/score"] for r in vals)
    assert summary["best"] == pytest.approx(best_val)
    tensors, meta = load_checkpoint(tmp_path / "best.safetensors")
    assert meta["model"] == "toy" and meta["select_value"] == pytest.approx(best_val)
    assert set(tensors) == set(t.model.state_dict())
    assert {"encoder.inp.weight", "text_proj.weight", "image_proj.bias", "logit_scale"} <= set(tensors)
    assert json.loads((tmp_path / "summary.json").read_text())["step"] == 10


def test_data_randomness_does_not_depend_on_workers(tmp_path: Path) -> None:
    ds = ToyPairs()
    w0 = Trainer(make_model(), ds, collate, make_cfg(max_steps=3), tmp_path / "w0")
    w0.fit()
    w2 = Trainer(make_model(), ds, collate, make_cfg(max_steps=3, num_workers=2), tmp_path / "w2")
    w2.fit()
    _assert_same_weights(w0.model.state_dict(), w2.model.state_dict())


class ToyClassifier(nn.Module):
    """A fine-tuning style model: forward returns {"loss", "acc"} (no logit scale, no extras)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(3, 16), nn.ReLU(), nn.Linear(16, 2))

    def forward(self, batch: dict) -> dict:
        logits = self.net(batch["xyz"].mean(1))
        return {
            "loss": nn.functional.cross_entropy(logits, batch["label"]),
            "acc": (logits.argmax(1) == batch["label"]).float().mean(),
        }


class ToyLabels(torch.utils.data.Dataset):
    def __init__(self, n: int = 64) -> None:
        g = torch.Generator().manual_seed(5)
        self.label = torch.randint(0, 2, (n,), generator=g)
        self.xyz = torch.randn(n, 8, 3, generator=g) + 1.5 * (2 * self.label[:, None, None] - 1)

    def __len__(self) -> int:
        return len(self.label)

    def __getitem__(self, i: int) -> dict:
        return {"xyz": self.xyz[i], "label": self.label[i]}


def test_generic_classifier_with_sgd_step_schedule(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = ToyClassifier()
    ds = ToyLabels()
    cfg = TrainConfig(
        epochs=4,
        batch_size=8,
        lr=0.1,
        optimizer="sgd",
        schedule="step",
        weight_decay=1e-3,
        log_every_steps=8,
        seed=0,
    )

    def val(m: nn.Module) -> dict[str, float]:
        return {"acc": float(m(torch.utils.data.default_collate([ds[i] for i in range(len(ds))]))["acc"])}

    t = Trainer(model, ds, torch.utils.data.default_collate, cfg, tmp_path, val_fn=val)
    out = t.fit()
    assert out["last_val"]["val/acc"] > 0.9  # separable toy problem
    # step decay: x0.1 at 60% and 80% of 32 steps
    assert t.optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * 0.1**2)
    assert isinstance(t.optimizer, torch.optim.SGD) and t.optimizer.param_groups[0]["nesterov"]


def test_no_weight_decay_on_biases_norms_and_scale() -> None:
    t_model = make_model()
    from svl.train.trainer import param_groups

    groups = param_groups(t_model, 0.1)
    names = {id(p): n for n, p in t_model.named_parameters()}
    decayed = {names[id(p)] for p in groups[0]["params"]}
    undecayed = {names[id(p)] for p in groups[1]["params"]}
    assert groups[0]["weight_decay"] == 0.1 and groups[1]["weight_decay"] == 0.0
    assert decayed == {"encoder.inp.weight", "encoder.head.weight", "text_proj.weight", "image_proj.weight"}
    assert {"logit_scale", "encoder.bn.weight", "encoder.bn.bias", "text_proj.bias"} <= undecayed


def test_bad_inputs_raise(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="amp"):
        Trainer(make_model(), ToyPairs(), collate, make_cfg(amp="fp8"), tmp_path)
    with pytest.raises(ValueError, match="select_metric"):
        Trainer(make_model(), ToyPairs(), collate, make_cfg(select_metric="x"), tmp_path)
    with pytest.raises(FileNotFoundError, match="last.safetensors"):
        Trainer(make_model(), ToyPairs(), collate, make_cfg(), tmp_path / "empty").fit(resume=True)
    t = Trainer(
        make_model(), ToyPairs(), collate, make_cfg(select_metric="missing"), tmp_path / "m", val_fn=noisy_val
    )
    with pytest.raises(ValueError, match="missing"):
        t.fit()

    class NoLoss(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.ones(1))

        def forward(self, batch: dict) -> torch.Tensor:
            return self.w * 2

    with pytest.raises(ValueError, match="'loss'"):
        Trainer(NoLoss(), ToyPairs(), collate, make_cfg(), tmp_path / "n").fit()


def test_resume_rejects_mismatched_weight_and_state_files(tmp_path: Path) -> None:
    a = Trainer(make_model(), ToyPairs(), collate, make_cfg(max_steps=2), tmp_path)
    a.fit()
    a.step = 7  # simulate a crash between writing the weights and the state
    from svl.checkpoint import save_checkpoint

    save_checkpoint(tmp_path / "last.safetensors", a.model.state_dict(), a._meta())
    b = Trainer(make_model(), ToyPairs(), collate, make_cfg(), tmp_path)
    with pytest.raises(ValueError, match="different steps"):
        b.fit(resume=True)


# ----------------------------------------------------------------------------- builders
def test_build_optimizer_and_scheduler_match_the_recipe() -> None:
    import math

    from svl.train.trainer import build_optimizer, build_scheduler

    model = make_model()
    cfg = make_cfg(epochs=2, lr=0.01, warmup_epochs=1, start_lr=1e-4, min_lr=1e-3)
    opt = build_optimizer(model, cfg)
    assert isinstance(opt, torch.optim.AdamW) and opt.param_groups[0]["betas"] == (0.9, 0.98)
    assert [g["weight_decay"] for g in opt.param_groups] == [cfg.weight_decay, 0.0]
    sched = build_scheduler(opt, cfg, steps_per_epoch=4)  # 8 steps, 4 of warm-up
    lrs = []
    for _ in range(9):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    # Independent reference: linear 1e-4 -> 1e-2 over 4 steps, then half a cosine down to 1e-3.
    ref = [1e-4 + (1e-2 - 1e-4) * s / 4 for s in range(4)]
    ref += [1e-3 + 0.5 * (1e-2 - 1e-3) * (1 + math.cos(math.pi * (s - 4) / 4)) for s in range(4, 9)]
    assert lrs == pytest.approx(ref, rel=1e-12)

    sgd = build_optimizer(model, make_cfg(optimizer="sgd", lr=0.1, momentum=0.8, nesterov=False))
    assert isinstance(sgd, torch.optim.SGD) and sgd.param_groups[0]["momentum"] == 0.8
    step = build_scheduler(
        sgd, make_cfg(optimizer="sgd", lr=0.1, schedule="step", epochs=10, warmup_epochs=0), 1
    )
    seen = []
    for _ in range(10):
        seen.append(sgd.param_groups[0]["lr"])
        sgd.step()
        step.step()
    assert seen == pytest.approx([0.1] * 6 + [0.01] * 2 + [0.001] * 2)

    frozen = nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        build_optimizer(frozen, make_cfg())


# ----------------------------------------------------------------------------- progress off a terminal
class _Stream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def _epoch_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch ")]


def test_one_log_line_per_epoch_off_a_terminal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("SVL_PROGRESS", raising=False)
    monkeypatch.setattr(sys, "stderr", _Stream(tty=False))
    caplog.set_level(logging.INFO, logger="svl")
    cfg = make_cfg(epochs=2, log_every_steps=1, select_metric="score")
    Trainer(make_model(), ToyPairs(), collate, cfg, tmp_path, val_fn=noisy_val).fit()
    lines = _epoch_lines(caplog)
    assert len(lines) == 2 and lines[0].startswith("epoch 1/2  ") and lines[1].startswith("epoch 2/2  ")
    # The printed losses are the epoch means of the per-step losses (log.jsonl has one record a step).
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    for k, line in enumerate(lines):
        steps = [r for r in records if r["kind"] == "train" and 5 * k < r["step"] <= 5 * (k + 1)]
        val = [r for r in records if r["kind"] == "val" and r["step"] == 5 * (k + 1)]
        for key in ("loss", "loss_text", "loss_image", "loss_mse"):
            mean = sum(r[f"train/{key}"] for r in steps) / len(steps)
            assert f"  {key} {mean:.4f}  " in line, (key, line)
        assert f"val/score {val[0]['val/score']:.4f}" in line
        assert "acc_text" not in line and "/epoch  ETA " in line
    assert lines[1].endswith("ETA 0s")

    # A run stopped by max_steps mid-epoch says where it stopped.
    caplog.clear()
    Trainer(make_model(), ToyPairs(), collate, make_cfg(max_steps=3), tmp_path / "short").fit()
    assert _epoch_lines(caplog)[0].startswith("epoch 1/3 (stopped at batch 3/5)  loss ")


@pytest.mark.parametrize(("tty", "flag", "lines"), [(True, None, 0), (False, "1", 0), (True, "0", 1)])
def test_terminal_keeps_bars_and_svl_progress_decides(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    tty: bool,
    flag: str | None,
    lines: int,
) -> None:
    if flag is None:
        monkeypatch.delenv("SVL_PROGRESS", raising=False)
    else:
        monkeypatch.setenv("SVL_PROGRESS", flag)
    stream = _Stream(tty=tty)
    monkeypatch.setattr(sys, "stderr", stream)
    caplog.set_level(logging.INFO, logger="svl")
    Trainer(make_model(), ToyPairs(), collate, make_cfg(epochs=1), tmp_path).fit()
    assert len(_epoch_lines(caplog)) == lines
    assert ("epoch 1/1:" in stream.getvalue()) == (lines == 0)  # the tqdm bar instead


# ----------------------------------------------------------------------------- preemption
def _signal_at(model: nn.Module, step: int, *signums: int) -> nn.Module:
    """Send `signums` to this process during the `step`-th training forward (1-based)."""
    calls = [0]

    def hook(module: nn.Module, args: tuple) -> None:
        if module.training:
            calls[0] += 1
            if calls[0] == step:
                for s in signums:
                    os.kill(os.getpid(), s)

    model.register_forward_pre_hook(hook)
    return model


def _run_files(run: Path) -> dict:
    tensors, meta = load_checkpoint(run / "last.safetensors")
    return {"tensors": tensors, "meta": meta, "best": load_checkpoint(run / "best.safetensors")}


@pytest.mark.parametrize(("signum", "at"), [(signal.SIGTERM, 7), (signal.SIGINT, 5)])
def test_signal_saves_the_finished_step_and_resume_is_bit_identical(
    tmp_path: Path, signum: int, at: int
) -> None:
    """SIGTERM mid-epoch 2; Ctrl-C on epoch 1's last step (its validation is still due on resume)."""
    ds = ToyPairs()  # 5 steps an epoch, 15 in all
    cfg = make_cfg(select_metric="score", select_mode="min", ckpt_every_steps=4)
    full = Trainer(make_model(), ds, collate, cfg, tmp_path / "full", val_fn=noisy_val)
    ref_summary = full.fit()

    run = tmp_path / "run"
    before = (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT))
    a = Trainer(_signal_at(make_model(), at, signum), ds, collate, cfg, run, val_fn=noisy_val)
    with pytest.raises(TrainingInterrupted) as err:
        a.fit()
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
    e = err.value
    name = signal.Signals(signum).name
    assert (e.step, e.path, e.signal_name, e.exit_code) == (at, run / "last.safetensors", name, 128 + signum)
    assert (
        str(e)
        == f"training interrupted by {name} at step {at}; checkpoint saved to {run / 'last.safetensors'}"
    )
    assert read_checkpoint_meta(run / "last.safetensors")["step"] == at
    assert load_training_state(run / "last.state.pt")["step"] == at
    assert not (run / "summary.json").exists()

    b = Trainer(make_model(), ds, collate, cfg, run, val_fn=noisy_val)
    summary = b.fit(resume=True)
    assert b.step == 15
    for key in ("step", "epoch", "best", "best_step", "last_val"):
        assert summary[key] == ref_summary[key], key
    got, want = _run_files(run), _run_files(tmp_path / "full")
    _assert_same_weights(want["tensors"], got["tensors"])
    _assert_same_weights(want["best"][0], got["best"][0])
    assert got["best"][1]["step"] == want["best"][1]["step"]

    def vals(path: Path) -> list:
        return [
            r for r in map(json.loads, (path / "log.jsonl").read_text().splitlines()) if r["kind"] == "val"
        ]

    assert vals(run) == vals(tmp_path / "full")


def test_second_signal_stops_at_once_and_handlers_are_restored(tmp_path: Path) -> None:
    before = signal.getsignal(signal.SIGINT)
    t = Trainer(
        _signal_at(make_model(), 2, signal.SIGINT, signal.SIGINT), ToyPairs(), collate, make_cfg(), tmp_path
    )
    with pytest.raises(KeyboardInterrupt):
        t.fit()
    assert t.step == 1  # the second Ctrl-C did not wait for step 2 to finish
    assert signal.getsignal(signal.SIGINT) is before
    Trainer(make_model(), ToyPairs(), collate, make_cfg(max_steps=2), tmp_path / "ok").fit()
    assert signal.getsignal(signal.SIGINT) is before


def test_fit_in_a_worker_thread_leaves_signals_alone(tmp_path: Path) -> None:
    before = signal.getsignal(signal.SIGTERM)
    seen: list = []

    def work() -> None:
        t = Trainer(make_model(), ToyPairs(), collate, make_cfg(max_steps=2), tmp_path)
        seen.append(signal.getsignal(signal.SIGTERM))
        seen.append(t.fit()["step"])

    th = threading.Thread(target=work)
    th.start()
    th.join(60)
    assert seen == [before, 2] and signal.getsignal(signal.SIGTERM) is before


_PREEMPT_CHILD = """
import sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from test_train_trainer import ToyPairs, collate, make_cfg, make_model
from svl.train import Trainer
from svl.train.trainer import TrainingInterrupted

run = Path(sys.argv[2])
model = make_model()
calls = [0]

def slow(module, args):
    calls[0] += 1
    if calls[0] == 3:
        (run.parent / "ready").write_text("")
    time.sleep(0.1)

model.register_forward_pre_hook(slow)
try:
    Trainer(model, ToyPairs(n=400), collate, make_cfg(epochs=1), run).fit()
except TrainingInterrupted as e:
    print(e.step)
    sys.exit(e.exit_code)
"""


def test_sigterm_from_outside_saves_and_exits_with_143(tmp_path: Path) -> None:
    """A real scheduler's SIGTERM to a training process: checkpoint at the step reached, exit 128+15."""
    import subprocess
    import time

    script = tmp_path / "child.py"
    script.write_text(_PREEMPT_CHILD)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SVL_LOG_LEVEL": "WARNING"}
    proc = subprocess.Popen(
        [sys.executable, str(script), str(Path(__file__).parent), str(tmp_path / "run")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    deadline = time.monotonic() + 120
    while not (tmp_path / "ready").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err[-3000:]
    step = int(out.strip())
    assert 3 <= step < 100  # stopped soon after the signal, not at the end of the 100-step epoch
    assert read_checkpoint_meta(tmp_path / "run" / "last.safetensors")["step"] == step
    assert "SIGTERM: finishing step" in err
