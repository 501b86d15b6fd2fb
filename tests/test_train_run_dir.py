"""Run folders: a run is never destroyed by another, and never shared by two at once."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from svl.train.run_dir import LOCK_FILE, RUN_FILES, RunDirInUseError, claim_run_dir, run_files


def _fake_run(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "last.safetensors").write_bytes(b"weights")
    (folder / "log.jsonl").write_text('{"step": 1}\n')
    (folder / "tb").mkdir()
    (folder / "tb" / "events").write_text("e")
    (folder / "my_notes.txt").write_text("the user's own file")


def test_fresh_folder_is_created_locked_and_released(tmp_path: Path) -> None:
    run = tmp_path / "a" / "run"
    with claim_run_dir(run, resume=False, overwrite=False) as got:
        assert got == run and run.is_dir()
        info = json.loads((run / LOCK_FILE).read_text())
        assert info["pid"] == os.getpid() and "T" in info["started"]
    with claim_run_dir(run, resume=False, overwrite=False):  # released on exit: claimable again
        pass
    assert sorted(p.name for p in run.iterdir()) == [LOCK_FILE]


@pytest.mark.parametrize("name", RUN_FILES)
def test_folder_holding_a_run_is_refused(tmp_path: Path, name: str) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / name).write_text("x")
    with pytest.raises(ValueError) as err:
        with claim_run_dir(run, resume=False, overwrite=False):
            pytest.fail("entered a folder holding a run")
    msg = str(err.value)
    assert msg.startswith(f"run folder {run} already holds a run ({name}); ")
    assert "--resume" in msg and "--overwrite" in msg
    assert run_files(run) == [name] and (run / name).read_text() == "x"
    with claim_run_dir(run, resume=True, overwrite=False):  # the refused claim did not keep the lock
        pass


def test_resume_keeps_everything_and_other_files_do_not_count(tmp_path: Path) -> None:
    run = tmp_path / "run"
    _fake_run(run)
    with claim_run_dir(run, resume=True, overwrite=False):
        assert (run / "last.safetensors").read_bytes() == b"weights"
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "readme.txt").write_text("not a run")
    with claim_run_dir(notes, resume=False, overwrite=False):
        assert (notes / "readme.txt").read_text() == "not a run"


def test_overwrite_moves_the_old_run_aside(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="svl")
    run = tmp_path / "run"
    _fake_run(run)
    with claim_run_dir(run, resume=False, overwrite=True):
        assert sorted(p.name for p in run.iterdir()) == [LOCK_FILE]
        (run / "config.yaml").write_text("new run")
    old = [p for p in tmp_path.iterdir() if p.name.startswith("run.old-")]
    assert len(old) == 1
    assert (old[0] / "last.safetensors").read_bytes() == b"weights"
    assert (old[0] / "tb" / "events").read_text() == "e"
    assert (old[0] / "my_notes.txt").read_text() == "the user's own file"
    assert any(str(old[0]) in r.getMessage() for r in caplog.records)
    # Overwriting again within the same second gets a fresh name, never merges into the first.
    _fake_run(run)
    with claim_run_dir(run, resume=False, overwrite=True):
        pass
    assert len([p for p in tmp_path.iterdir() if p.name.startswith("run.old-")]) == 2


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="exclude each other"):
        with claim_run_dir(tmp_path, resume=True, overwrite=True):
            pass
    (tmp_path / "f").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        with claim_run_dir(tmp_path / "f", resume=False, overwrite=False):
            pass


def test_second_claim_in_this_process_fails_at_once(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with claim_run_dir(run, resume=False, overwrite=False):
        _fake_run(run)
        with pytest.raises(RunDirInUseError) as err:  # even --overwrite may not touch a live run
            with claim_run_dir(run, resume=False, overwrite=True):
                pass
        assert isinstance(err.value, ValueError)
        assert str(err.value).startswith(f"run folder {run} is in use by pid {os.getpid()} (started 20")
        assert (run / "last.safetensors").exists()
    with pytest.raises(RuntimeError):
        with claim_run_dir(run, resume=True, overwrite=False):
            raise RuntimeError("the run failed")
    with claim_run_dir(run, resume=True, overwrite=False):  # an error inside still released the lock
        pass


def test_other_ranks_do_not_claim(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = tmp_path / "run"
    _fake_run(run)
    with claim_run_dir(run, resume=True, overwrite=False):
        monkeypatch.setenv("RANK", "1")
        with claim_run_dir(run, resume=False, overwrite=False) as got:  # rank 0 owns it
            assert got == run


_HOLDER = """
import sys
from svl.train.run_dir import claim_run_dir
with claim_run_dir(sys.argv[1], resume=False, overwrite=False):
    print("claimed", flush=True)
    sys.stdin.readline()
"""


def test_two_processes_and_a_crashed_holder(tmp_path: Path) -> None:
    run = tmp_path / "run"
    child = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(run)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout.readline().strip() == "claimed", child.stderr.read()
        t0 = time.monotonic()
        with pytest.raises(
            RunDirInUseError, match=rf"run folder .*run is in use by pid {child.pid} \(started "
        ):
            with claim_run_dir(run, resume=True, overwrite=False):
                pass
        assert time.monotonic() - t0 < 5  # refused at once, not after waiting
    finally:
        child.kill()  # a crash: no cleanup code runs in the holder
        child.communicate(timeout=60)
    assert json.loads((run / LOCK_FILE).read_text())["pid"] == child.pid  # the stale record stays...
    with claim_run_dir(run, resume=False, overwrite=False):  # ...but the kernel dropped the lock
        assert json.loads((run / LOCK_FILE).read_text())["pid"] == os.getpid()


def test_a_failed_start_removes_what_it_wrote_and_nothing_else(tmp_path: Path) -> None:
    run = tmp_path / "new" / "run"
    with pytest.raises(RuntimeError):
        with claim_run_dir(run, resume=False, overwrite=False):
            (run / "config.yaml").write_text("cfg")
            (run / "log.jsonl").write_text("")  # opened by the Trainer, no record yet
            (run / "tb").mkdir()
            (run / "tb" / "events").write_text("e")
            raise RuntimeError("the first step failed")
    assert not (tmp_path / "new").exists()  # the folders the claim created are gone too
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    (mine / "config.yaml").write_text("an earlier failed start")  # not a run: claimed without a flag
    with pytest.raises(ValueError):
        with claim_run_dir(mine, resume=False, overwrite=False):
            (mine / "config.yaml").write_text("this start's")
            raise ValueError("bad key")
    assert sorted(p.name for p in mine.iterdir()) == ["config.yaml", "notes.txt"]  # there before: kept


def test_a_failed_start_after_a_checkpoint_keeps_the_run(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with pytest.raises(RuntimeError):
        with claim_run_dir(run, resume=False, overwrite=False):
            (run / "config.yaml").write_text("cfg")
            (run / "last.safetensors").write_bytes(b"weights")
            raise RuntimeError("crashed at step 9")
    assert run_files(run) == ["last.safetensors"] and (run / "config.yaml").read_text() == "cfg"


def test_a_failed_overwrite_moves_the_earlier_run_back(tmp_path: Path) -> None:
    run = tmp_path / "run"
    _fake_run(run)
    with pytest.raises(ValueError):
        with claim_run_dir(run, resume=False, overwrite=True):
            assert run_files(run) == []
            (run / "config.yaml").write_text("new")
            raise ValueError("unknown model")
    assert [p.name for p in tmp_path.iterdir()] == ["run"]
    assert (run / "last.safetensors").read_bytes() == b"weights" and not (run / "config.yaml").exists()
    assert (run / "my_notes.txt").read_text() == "the user's own file"
