"""Faults on every training command, through the CLI: `svl finetune` (each task) and `svl distill`
behave as `svl pretrain` does (test_train_trainer.py, test_train_run_dir.py, test_checkpoint.py).

- `kill -9` mid-run, then `--resume`: continues from the last periodic checkpoint;
- a second run on a folder in use is refused at once, naming the holder's pid;
- SIGTERM / Ctrl-C: a checkpoint at the step it stopped, exit 128 + signal, the resume command;
- the resumed run ends bit-identical to an uninterrupted one (weights, results, log, TensorBoard);
- a full disk on any file a run writes (the checkpoint pair, log.jsonl, the TensorBoard event file,
  the evaluation's files) is one `svl: error:` line naming the file, the previous file intact.

Tiny settings: every run is a few steps of a small model on a few samples (~1 s each).
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import json
import os
import re
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from svl.checkpoint import load_checkpoint, load_training_state, read_checkpoint_meta
from svl.train.trainer import Trainer

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
COMMON = ["train.epochs=2", "train.ckpt_every_steps=2", "train.log_every_steps=1", "energy=false"]
# (command, config file, overrides); every run has >= 6 steps (checkpoints at 2 and 4).
RUNS: dict[str, tuple[str, str | None, list[str]]] = {
    "classification": ("finetune", None, [
        "data.classes=[airplane,bathtub,guitar,lamp]", "data.train_per_class=2", "data.test_per_class=1",
        "train.batch_size=2",
    ]),
    "event_classification": ("finetune", "finetune_nmnist.yaml", [
        "data.root={data}/events/nmnist_small", "data.train_per_class=1", "data.test_per_class=1",
        "data.num_points=128", "train.batch_size=2",
    ]),
    "segmentation": ("finetune", "segment_modelnet40_scenes.yaml", [
        "data.options.scenes=4", "data.num_points=512", "model.voxel_size=0.2", "train.batch_size=1",
    ]),
    "detection": ("finetune", "detect_modelnet40_scenes.yaml", [
        "data.options.scenes=4", "data.num_points=512", "model.voxel_size=0.2", "train.batch_size=1",
    ]),
    "distill": ("distill", "distill_digits.yaml", [
        "data.train_per_class=1", "data.test_per_class=1", "teacher.image_size=32", "teacher.probe_folds=2",
        "train.batch_size=2",
    ]),
}  # fmt: skip


def _command(task: str, data: Path, out: Path) -> list[str]:
    cmd, config, extra = RUNS[task]
    head = [cmd] + (["--config", str(CONFIGS / config)] if config else [])
    return [*head, f"out_dir={out}", *COMMON, *(e.format(data=data) for e in extra)]


def _one_error(code: int, err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("svl: error:")]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err[-3000:]
    return lines[0]


def _steps(run: Path) -> tuple[int, int]:
    """(step of last.safetensors, step of last.state.pt): a usable resume point has both equal."""
    return read_checkpoint_meta(run / "last.safetensors")["step"], load_training_state(run / "last.state.pt")[
        "step"
    ]


def _no_temp_files(run: Path) -> None:
    assert [p.name for p in run.rglob("*.tmp")] == []


@contextlib.contextmanager
def _at_step(step: int, action: Callable[[], None]) -> Iterator[None]:
    """Run `action` once, in the training loop right after step `step` finished."""
    original = Trainer._interrupt_requested
    done = []

    def hook(self: Trainer) -> int | None:
        if self.step == step and not done:
            done.append(step)
            action()
        return original(self)

    Trainer._interrupt_requested = hook
    try:
        yield
    finally:
        Trainer._interrupt_requested = original


_TIMING = re.compile(r"ms_per|seconds|per_s$|environment")


def _comparable_results(run: Path) -> dict:
    """results.json without timings and with the run folder's own paths made relative."""

    def keep(o):
        if isinstance(o, dict):
            return {k: keep(v) for k, v in o.items() if not _TIMING.search(k)}
        if isinstance(o, list):
            return [keep(v) for v in o]
        return o.replace(str(run), "RUN") if isinstance(o, str) else o

    return keep(json.loads((run / "results.json").read_text()))


def _log_records(run: Path) -> list[dict]:
    recs = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "train/samples_per_s"} for r in recs]


def _tb_losses(run: Path) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tb"))
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars("train/loss")]


@pytest.fixture(autouse=True)
def _one_thread():
    """Every run here on one torch thread: a forked child of a process whose OpenMP pool holds several
    threads hangs in its first parallel region (libgomp), and the reference, the killed run and the
    resumed runs must all reduce in the same order to be compared bit for bit."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.mark.parametrize(
    ("task", "signum"),
    [
        ("classification", signal.SIGTERM),
        ("event_classification", signal.SIGINT),
        ("segmentation", signal.SIGTERM),
        ("detection", signal.SIGINT),
        ("distill", signal.SIGTERM),
    ],
)
def test_kill_9_a_second_run_and_a_signal_then_resume_is_bit_identical(
    task: str, signum: int, tmp_path: Path, shared_data: Path, run_cli
) -> None:
    ref, run = tmp_path / "ref", tmp_path / "run"
    code, _, err = run_cli(*_command(task, shared_data, ref))
    assert code == 0, err[-3000:]

    # kill -9 after step 3 (the last checkpoint is step 2's); meanwhile a second run is refused.
    # The run is a forked copy of this process (no second start-up of Python and torch).
    ready, argv = tmp_path / "ready", _command(task, shared_data, run)
    pid = os.fork()
    if pid == 0:  # the child: train to step 3, then wait there for the kill
        try:
            with _at_step(3, lambda: (ready.write_text(""), time.sleep(300))):
                from svl import cli

                cli.main(argv)
        finally:
            os._exit(1)
    try:
        deadline = time.monotonic() + 120
        while not ready.exists() and os.waitpid(pid, os.WNOHANG) == (0, 0) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ready.exists(), "the run did not reach step 3"
        for extra in ([], ["--resume"]):
            t0 = time.monotonic()
            line = _one_error(*run_cli(*argv, *extra)[::2])
            assert f"run folder {run} is in use by pid {pid} (started " in line, line
            assert time.monotonic() - t0 < 10  # refused at once, not after waiting for the lock
    finally:
        os.kill(pid, signal.SIGKILL)  # nothing of svl runs in the killed process
        _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    assert _steps(run) == (2, 2)

    # Resume; a signal after step 5 saves step 5 and prints how to continue.
    with _at_step(5, lambda: os.kill(os.getpid(), signum)):
        code, _, err = run_cli(*argv, "--resume")
    assert code == 128 + signum, err[-3000:]
    assert f"svl: interrupted at step 5; checkpoint saved to {run / 'last.safetensors'}" in err
    assert "resume with: svl " in err and "--resume" in err
    assert _steps(run) == (5, 5) and not (run / "results.json").exists()

    code, _, err = run_cli(*argv, "--resume")
    assert code == 0, err[-3000:]
    for name in ("final.safetensors", "last.safetensors"):
        want, got = load_checkpoint(ref / name)[0], load_checkpoint(run / name)[0]
        assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want), name
    assert _comparable_results(run) == _comparable_results(ref)
    assert _log_records(run) == _log_records(ref)  # records past step 2 and 5 were dropped on resume
    assert _tb_losses(run) == _tb_losses(ref)  # TensorBoard purged them too
    _no_temp_files(run)


# ----------------------------------------------------------------------------- a full disk
class _FullFile:
    """A file open for writing on a full disk: half of the first write lands, then ENOSPC."""

    def __init__(self, fh) -> None:
        self._fh = fh

    def write(self, data):
        self._fh.write(data[: len(data) // 2])
        self._fh.flush()
        raise OSError(errno.ENOSPC, "No space left on device")

    def __getattr__(self, name):
        return getattr(self._fh, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self._fh.close()


@contextlib.contextmanager
def _full_disk(name: str, from_step: int = 0) -> Iterator[None]:
    """Writes to files named `name` (or their temporaries) fail with ENOSPC once the run reached
    `from_step`: Python writers through `open`, the safetensors (Rust) writer through its message."""
    import safetensors.torch
    from safetensors import SafetensorError

    trainer: list[Trainer] = []
    real_open, real_save, real_init = builtins.open, safetensors.torch.save_file, Trainer.__init__

    def armed(path) -> bool:
        return name in Path(str(path)).name and (not trainer or trainer[-1].step >= from_step)

    def full_open(file, mode="r", *args, **kwargs):
        fh = real_open(file, mode, *args, **kwargs)
        if isinstance(file, str | os.PathLike) and any(c in mode for c in "wax") and armed(file):
            return _FullFile(fh)
        return fh

    def full_save(tensors, filename, metadata=None):
        if armed(filename):
            Path(filename).write_bytes(b"partial")
            raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
        return real_save(tensors, filename, metadata=metadata)

    def init(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        trainer.append(self)

    builtins.open, safetensors.torch.save_file, Trainer.__init__ = full_open, full_save, init
    try:
        yield
    finally:
        builtins.open, safetensors.torch.save_file, Trainer.__init__ = real_open, real_save, real_init


def _disk_full_line(line: str, path: Path | str, existed: bool = True) -> None:
    """`line` is the one disk-full error for `path` (a regex where a str: the TensorBoard file)."""
    where, name = (re.escape(str(path)), re.escape(path.name)) if isinstance(path, Path) else (path, r"\S+")
    kept = f"the previous {name} is intact" if existed else rf"there was no earlier {name}\)"
    pattern = rf"svl: error: cannot write {where}: no space left on device \(.*\); .*{kept}"
    assert re.fullmatch(pattern, line), line


# What each task's evaluation writes after training (each write may meet a full disk).
_EVAL_FILES = {"classification": ["final.safetensors", "confusion.png", "results.json"]}


@pytest.mark.parametrize("task", list(RUNS))
def test_a_full_disk_is_one_line_naming_the_file_and_the_run_resumes(
    task: str, tmp_path: Path, shared_data: Path, run_cli
) -> None:
    run = tmp_path / "run"
    argv = _command(task, shared_data, run)
    # The step-4 checkpoint: either file of the pair fails, the step-2 pair stays a resume point.
    for i, name in enumerate(("last.safetensors", "last.state.pt")):
        with _full_disk(name, from_step=4):
            line = _one_error(*run_cli(*argv, *(["--resume"] if i else []))[::2])
        _disk_full_line(line, run / name)
        assert _steps(run) == (2, 2)
        _no_temp_files(run)
    # The appends after step 3: log.jsonl and the TensorBoard event file are cut back to what they held.
    for name in ("log.jsonl", "events.out.tfevents"):
        with _full_disk(name, from_step=3):
            line = _one_error(*run_cli(*argv, "--resume")[::2])
        tb = re.escape(str(run / "tb")) + r"/events\.out\.tfevents\.\S+"
        _disk_full_line(line, run / name if name == "log.jsonl" else tb)
        assert all(json.loads(r)["step"] <= 2 for r in (run / "log.jsonl").read_text().splitlines())
        assert _steps(run) == (2, 2)
    _tb_losses(run)
    # The evaluation's files once training is done.
    for name in _EVAL_FILES.get(task, ["final.safetensors", "results.json"]):
        with _full_disk(name):
            line = _one_error(*run_cli(*argv, "--resume")[::2])
        _disk_full_line(line, run / name, existed=False)
        assert not (run / name).exists()
        _no_temp_files(run)
    code, _, err = run_cli(*argv, "--resume")
    assert code == 0, err[-3000:]
    assert (run / "final.safetensors").is_file() and (run / "results.json").is_file()
