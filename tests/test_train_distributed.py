"""Two gloo processes under torchrun must reproduce one process on the concatenated global batch.

This file is also the worker script: `torchrun --nproc_per_node 2 tests/test_train_distributed.py OUT`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_train_trainer import ToyPairs, collate, make_cfg, make_model  # noqa: E402

from svl.train import Trainer, clip_loss  # noqa: E402
from svl.train.trainer import TrainingInterrupted  # noqa: E402

GLOBAL_B = 8


def _global_batch() -> dict:
    ds = ToyPairs(n=GLOBAL_B, augment=False)  # has_text = i % 3 != 0: uneven across the two halves
    return collate([ds[i] for i in range(GLOBAL_B)])


def _rows(batch: dict, lo: int, hi: int) -> dict:
    return {"xyz": batch["xyz"][lo:hi], "extras": {k: v[lo:hi] for k, v in batch["extras"].items()}}


def _trainer_cfg(batch_size: int):
    return make_cfg(epochs=2, batch_size=batch_size, max_steps=4, log_every_steps=1, warmup_epochs=0.5)


def _grouped_pairs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A global batch of unit rows with repeated group ids (3 classes over 8 samples)."""
    g = torch.Generator().manual_seed(3)
    a = torch.nn.functional.normalize(torch.randn(GLOBAL_B, 8, generator=g), dim=-1)
    b = torch.nn.functional.normalize(torch.randn(GLOBAL_B, 8, generator=g), dim=-1)
    return a, b, torch.tensor([0, 1, 0, 2, 1, 0, 2, 2])


def _worker(out: Path) -> None:
    from torch.nn.parallel import DistributedDataParallel as DDP

    from svl.train import distributed as D

    torch.set_num_threads(1)
    rank, world, _, device = D.init_distributed()
    assert world == 2 and device.type == "cpu" and D.is_dist()
    local_b = GLOBAL_B // world
    # 1) one forward/backward of the MTA loss through DDP on this rank's half of the batch
    model = make_model(bn=False, dropout=0.0)
    ddp = DDP(model)
    res = ddp(_rows(_global_batch(), rank * local_b, (rank + 1) * local_b))
    res["loss"].backward()
    vals = D.all_reduce_mean({k: float(v) for k, v in res.items()})
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    if D.is_main():
        torch.save({"vals": vals, "grads": grads}, out / "grads.pt")
    # 1b) multi-positive InfoNCE (same-group positives) over the gathered global batch
    a, b, g = _grouped_pairs()
    rows = slice(rank * local_b, (rank + 1) * local_b)
    a_local = a[rows].clone().requires_grad_(True)
    loss_mp, acc_mp = clip_loss(a_local, b[rows], 5.0, None, g[rows])
    loss_mp.backward()
    grad_a = [torch.zeros_like(a_local.grad) for _ in range(world)]
    torch.distributed.all_gather(grad_a, a_local.grad)
    mp = D.all_reduce_mean({"loss": float(loss_mp.detach()), "acc": float(acc_mp)})
    if D.is_main():
        torch.save({"vals": mp, "grad_a": torch.cat(grad_a) / world}, out / "multi_positive.pt")
    # 2) the Trainer end to end (sampler split, DDP, checkpoint on rank 0 only)
    trainer = Trainer(
        make_model(bn=False, dropout=0.0),
        ToyPairs(n=24, augment=False),
        collate,
        _trainer_cfg(local_b),
        out / "run",
    )
    trainer.fit()
    torch.save(trainer.model.state_dict(), out / f"weights_rank{rank}.pt")
    # 3) SIGTERM reaching rank 1 only: every rank stops after the same step, rank 0 saves it
    model = make_model(bn=False, dropout=0.0)
    if rank == 1:
        calls = [0]

        def hook(module: torch.nn.Module, args: tuple) -> None:
            calls[0] += 1
            if calls[0] == 2:
                os.kill(os.getpid(), signal.SIGTERM)

        model.register_forward_pre_hook(hook)
    interrupted = Trainer(model, ToyPairs(n=24, augment=False), collate, _trainer_cfg(local_b), out / "int")
    try:
        interrupted.fit()
        got = {"step": None}
    except TrainingInterrupted as e:
        got = {"step": e.step, "path": None if e.path is None else str(e.path), "signal": e.signal_name}
    torch.save(got, out / f"interrupted_rank{rank}.pt")
    D.cleanup()


def test_two_gloo_processes_match_one_process(tmp_path: Path) -> None:
    if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    env = dict(os.environ)
    repo = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = repo + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    env.pop("CUDA_VISIBLE_DEVICES", None)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(Path(__file__).resolve()),
        str(tmp_path),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, cwd=repo)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    # 1) loss and gradients vs one process on the concatenated global batch
    got = torch.load(tmp_path / "grads.pt")
    model = make_model(bn=False, dropout=0.0)
    res = model(_global_batch())
    res["loss"].backward()
    for k, v in res.items():
        assert got["vals"][k] == pytest.approx(float(v.detach()), rel=1e-5, abs=1e-6), k
    named = dict(model.named_parameters())
    assert set(got["grads"]) == {n for n, p in named.items() if p.grad is not None}
    for n, g in got["grads"].items():
        torch.testing.assert_close(g, named[n].grad, rtol=1e-4, atol=1e-6, msg=n)

    # 1b) multi-positive InfoNCE: DDP share-of-mean == one process on the whole batch
    mp = torch.load(tmp_path / "multi_positive.pt")
    a, b, g = _grouped_pairs()
    a = a.clone().requires_grad_(True)
    loss, acc = clip_loss(a, b, 5.0, None, g)
    loss.backward()
    assert mp["vals"]["loss"] == pytest.approx(float(loss.detach()), rel=1e-5)
    assert mp["vals"]["acc"] == pytest.approx(float(acc), abs=1e-6)
    torch.testing.assert_close(mp["grad_a"], a.grad, rtol=1e-4, atol=1e-6)  # what DDP averages

    # 2) Trainer: ranks stay in sync and match a single process with twice the batch
    w0 = torch.load(tmp_path / "weights_rank0.pt")
    w1 = torch.load(tmp_path / "weights_rank1.pt")
    for k in w0:
        assert torch.equal(w0[k], w1[k]), k
    single = Trainer(
        make_model(bn=False, dropout=0.0),
        ToyPairs(n=24, augment=False),
        collate,
        _trainer_cfg(GLOBAL_B),
        tmp_path / "single",
    )
    single.fit()
    assert single.step == 4
    ref = single.model.state_dict()
    from svl.checkpoint import load_checkpoint

    saved, meta = load_checkpoint(tmp_path / "run" / "last.safetensors")
    assert meta["step"] == 4
    for k in ref:
        torch.testing.assert_close(w0[k], ref[k], rtol=1e-4, atol=1e-5, msg=k)
        assert torch.equal(saved[k], w0[k]), k

    # 3) a signal on one rank stops all of them after the same step, with rank 0's checkpoint
    r0, r1 = (torch.load(tmp_path / f"interrupted_rank{r}.pt") for r in (0, 1))
    run = tmp_path / "int" / "last.safetensors"
    assert r0 == {"step": 2, "path": str(run), "signal": "SIGTERM"}
    assert r1 == {"step": 2, "path": None, "signal": "SIGTERM"}
    assert load_checkpoint(run)[1]["step"] == 2


if __name__ == "__main__":
    _worker(Path(sys.argv[1]))
