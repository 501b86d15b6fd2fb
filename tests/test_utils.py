from __future__ import annotations

import errno
import hashlib
import io
import logging
import os
import pickle
import random
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from svl import utils
from svl.utils import (
    DiskFullError,
    atomic_path,
    atomic_write,
    cache_dir,
    data_root,
    file_sha256,
    get_logger,
    progress_bars_enabled,
    seed_everything,
)


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


def test_atomic_write_creates_file_and_parent_dirs(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "out.bin"
    with atomic_write(target) as fh:
        fh.write(b"hello")
        assert not target.exists()  # nothing visible until the block succeeds
    assert target.read_bytes() == b"hello"
    assert _leftovers(target.parent) == []
    # Same permissions a plain open() would give (mkstemp alone would give 0600).
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask


def test_atomic_write_text_mode_utf8(tmp_path: Path) -> None:
    target = tmp_path / "t.txt"
    with atomic_write(target, "w") as fh:
        fh.write("spikes \u26a1\n")
    assert target.read_text(encoding="utf-8") == "spikes \u26a1\n"


def test_atomic_write_failure_keeps_old_file_and_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_write(target, "w") as fh:
            fh.write("new partial content")
            raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert list(tmp_path.iterdir()) == [target]


def test_atomic_write_failure_without_old_file(tmp_path: Path) -> None:
    target = tmp_path / "never.bin"
    with pytest.raises(KeyError):
        with atomic_write(target) as fh:
            fh.write(b"x")
            raise KeyError("x")
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_replaces_existing(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    target.write_text("old")
    with atomic_write(target, "w") as fh:
        fh.write("new")
    assert target.read_text() == "new"
    assert _leftovers(tmp_path) == []


def test_atomic_write_rejects_bad_mode(tmp_path: Path) -> None:
    for mode in ("r", "a", "rb", "xb"):
        with pytest.raises(ValueError, match="mode"):
            with atomic_write(tmp_path / "f", mode):
                pass
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_refuses_directory(tmp_path: Path) -> None:
    with pytest.raises(IsADirectoryError):
        with atomic_write(tmp_path):
            pass


def test_atomic_path_for_filename_writers(tmp_path: Path) -> None:
    target = tmp_path / "w.npy"
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp != target
        with open(tmp, "wb") as fh:  # np.save appends .npy to bare names, so use a handle
            np.save(fh, np.arange(5))
    np.testing.assert_array_equal(np.load(target), np.arange(5))
    assert _leftovers(tmp_path) == []

    with pytest.raises(ValueError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"garbage")
            raise ValueError("writer failed")
    np.testing.assert_array_equal(np.load(target), np.arange(5))
    assert _leftovers(tmp_path) == []


@pytest.fixture
def free_space(monkeypatch: pytest.MonkeyPatch) -> int:
    """Pretend the filesystem has 1,500,000 bytes free (the error reports it)."""
    free = 1_500_000
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9 - free, free))
    return free


@pytest.mark.parametrize(
    ("code", "reason"), [(errno.ENOSPC, "no space left on device"), (errno.EDQUOT, "disk quota exceeded")]
)
def test_atomic_write_full_disk_is_one_line_and_keeps_old_file(
    tmp_path: Path, free_space: int, code: int, reason: str
) -> None:
    target = tmp_path / "results.json"
    target.write_text("x" * 5000)
    with pytest.raises(DiskFullError) as err:
        with atomic_write(target, "w") as fh:
            fh.write("partial")
            fh.flush()
            raise OSError(code, os.strerror(code))
    e = err.value
    assert isinstance(e, ValueError)  # the CLI prints ValueErrors as `svl: error: ...`
    assert (e.path, e.needed, e.free, e.existed) == (target, 5000, free_space, True)
    assert str(e) == (
        f"cannot write {target}: {reason} (about 5.0 KB needed, 1.5 MB free there); "
        "the previous results.json is intact"
    )
    assert "\n" not in str(e)
    assert isinstance(e.__cause__, OSError) and e.__cause__.errno == code
    assert target.read_text() == "x" * 5000 and _leftovers(tmp_path) == []
    assert pickle.loads(pickle.dumps(e)).args == e.args


def test_atomic_path_full_disk_without_old_file(tmp_path: Path, free_space: int) -> None:
    target = tmp_path / "new.bin"
    with pytest.raises(DiskFullError) as err:
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"y" * 2500)
            raise OSError(errno.ENOSPC, "No space left on device")
    assert str(err.value) == (
        f"cannot write {target}: no space left on device (at least 2.5 KB needed, 1.5 MB free there); "
        "nothing was written (there was no earlier new.bin)"
    )
    assert list(tmp_path.iterdir()) == []
    # The size a caller knows beats the partial write; other OSErrors pass through unchanged.
    with pytest.raises(DiskFullError, match="about 9.0 MB needed"):
        with atomic_path(target, expected_bytes=9_000_000):
            raise OSError(errno.ENOSPC, "No space left on device")
    with pytest.raises(PermissionError):
        with atomic_path(target):
            raise PermissionError(errno.EACCES, "denied")
    assert list(tmp_path.iterdir()) == []


def test_seed_everything_reproduces_all_rngs() -> None:
    def draw() -> tuple:
        return random.random(), float(np.random.rand()), torch.rand(3).tolist()

    seed_everything(123)
    a = draw()
    seed_everything(123)
    b = draw()
    seed_everything(124)
    c = draw()
    assert a == b
    assert a[0] != c[0] and a[1] != c[1] and a[2] != c[2]


def test_seed_everything_deterministic_flag() -> None:
    before = torch.are_deterministic_algorithms_enabled()
    try:
        assert seed_everything(7, deterministic=True) == 7
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    finally:
        torch.use_deterministic_algorithms(before)
        torch.backends.cudnn.deterministic = False


@pytest.mark.parametrize("bad", [-1, 2**32, 1.5, "3", True])
def test_seed_everything_rejects_bad_seed(bad) -> None:
    with pytest.raises(ValueError, match="seed"):
        seed_everything(bad)


def test_get_logger_namespacing(caplog: pytest.LogCaptureFixture) -> None:
    assert get_logger("train").name == "svl.train"
    assert get_logger("svl.models.e3dsnn").name == "svl.models.e3dsnn"
    assert get_logger("svl").name == "svl"
    with caplog.at_level(logging.INFO, logger="svl"):
        get_logger("foo").info("hello %d", 3)
    assert any(r.name == "svl.foo" and r.getMessage() == "hello 3" for r in caplog.records)


def test_data_root_env_var(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SVL_DATA", str(tmp_path))
    assert data_root() == tmp_path.resolve()
    monkeypatch.setenv("SVL_DATA", str(tmp_path / "missing"))
    assert data_root() is None
    with pytest.raises(FileNotFoundError, match="missing"):
        data_root(required=True)


def test_data_root_relative_to_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SVL_DATA", raising=False)
    (tmp_path / "shared" / "data").mkdir(parents=True)
    (tmp_path / "proj").mkdir()
    monkeypatch.chdir(tmp_path / "proj")
    assert data_root() == (tmp_path / "shared" / "data").resolve()


def test_data_root_relative_to_repo_and_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SVL_DATA", raising=False)
    monkeypatch.chdir(tmp_path)  # tmp_path/../shared/data does not exist
    fake_repo = tmp_path / "a" / "repo"
    fake_repo.mkdir(parents=True)
    monkeypatch.setattr(utils, "repo_root", lambda: fake_repo)
    assert data_root() is None
    with pytest.raises(FileNotFoundError) as err:
        data_root(required=True)
    msg = str(err.value)
    assert "SVL_DATA" in msg and str((tmp_path / ".." / "shared" / "data").resolve()) in msg
    assert str(tmp_path / "a" / "shared" / "data") in msg
    (tmp_path / "a" / "shared" / "data").mkdir(parents=True)
    assert data_root(required=True) == (tmp_path / "a" / "shared" / "data").resolve()


def test_repo_root_is_checkout() -> None:
    assert (utils.repo_root() / "svl" / "utils.py").is_file()


def test_cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SVL_CACHE", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c" and (tmp_path / "c").is_dir()
    assert cache_dir("emb", "minilm") == tmp_path / "c" / "emb" / "minilm"
    assert (tmp_path / "c" / "emb" / "minilm").is_dir()
    monkeypatch.delenv("SVL_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "svl"


def test_cache_dir_is_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "f").write_text("x")
    monkeypatch.setenv("SVL_CACHE", str(tmp_path / "f"))
    with pytest.raises(ValueError, match="not a directory"):
        cache_dir()


def test_progress(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SVL_PROGRESS", raising=False)
    bar = utils.progress(range(5), desc="x")
    assert list(bar) == [0, 1, 2, 3, 4]
    assert bar.disable  # pytest's stdout/stderr are not a tty
    monkeypatch.setenv("SVL_PROGRESS", "1")
    bar = utils.progress(range(3))
    assert not bar.disable and list(bar) == [0, 1, 2]
    bar.close()
    monkeypatch.setenv("SVL_PROGRESS", "0")
    assert utils.progress(range(3)).disable


def test_progress_bars_enabled(monkeypatch: pytest.MonkeyPatch) -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.delenv("SVL_PROGRESS", raising=False)
    assert not progress_bars_enabled()  # pytest's stderr is not a tty
    assert progress_bars_enabled(Tty()) and not progress_bars_enabled(io.StringIO())
    monkeypatch.setattr(sys, "stderr", Tty())
    assert progress_bars_enabled()
    closed = io.StringIO()
    closed.close()
    assert not progress_bars_enabled(closed)
    for flag, on in (("1", True), ("yes", True), ("0", False), ("off", False), ("", False)):
        monkeypatch.setenv("SVL_PROGRESS", flag)
        assert progress_bars_enabled() is on and progress_bars_enabled(io.StringIO()) is on
        assert utils.progress(range(1)).disable is (not on)


def test_file_sha256(tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 + 17)
    (tmp_path / "x").write_bytes(data)
    assert file_sha256(tmp_path / "x", chunk_size=1000) == hashlib.sha256(data).hexdigest()
    with pytest.raises(FileNotFoundError, match="nope"):
        file_sha256(tmp_path / "nope")


def test_progress_off_a_terminal_logs_long_loops(monkeypatch, caplog) -> None:
    import logging

    from svl.utils import progress

    monkeypatch.setenv("SVL_PROGRESS", "0")
    with caplog.at_level(logging.INFO, logger="svl.progress"):
        assert list(progress(range(5), desc="embed views", log_every=0.0)) == list(range(5))
    lines = [r.getMessage() for r in caplog.records if r.name == "svl.progress"]
    assert len(lines) == 5 and lines[0].startswith("embed views: 1/5") and "ETA" in lines[0]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="svl.progress"):
        assert list(progress(range(3), desc="quiet", log_every=None)) == [0, 1, 2]
        assert list(progress(range(3), desc="rank 1", disable=True, log_every=0.0)) == [0, 1, 2]
        assert list(progress(range(3), desc="fast loop")) == [0, 1, 2]  # under a minute: no line
    assert not [r for r in caplog.records if r.name == "svl.progress"]
