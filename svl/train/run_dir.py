"""Run folders: one run per folder, never destroyed by another run, never shared by two at once.

`claim_run_dir` is what every training task enters before writing anything: a folder that
already holds a run is refused unless the caller resumes it or asks to replace it; a replaced run
is moved aside (to `<folder>.old-<timestamp>/`), never deleted, because nothing the user made may
vanish silently; and an exclusive advisory lock (`flock` on `<folder>/.lock`) keeps a second run off
the folder for the lifetime of the first. The kernel drops a `flock` when its process dies, so a
crashed run leaves no stale lock behind (the lock file stays, and only records who held it last).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from svl.utils import get_logger

__all__ = ["LOCK_FILE", "RUN_FILES", "RunDirInUseError", "claim_run_dir", "run_files"]

log = get_logger(__name__)

LOCK_FILE = ".lock"
# What marks a folder as holding a run (written by the Trainer or a task).
RUN_FILES = (
    "config.yaml",
    "last.safetensors",
    "best.safetensors",
    "final.safetensors",
    "results.json",
    "log.jsonl",
)


class RunDirInUseError(ValueError):
    """Another live process holds the run folder's lock (a ValueError: one line on the command line)."""


def run_files(path: str | os.PathLike[str]) -> list[str]:
    """The run-marking files present in `path` (empty: no run there)."""
    p = Path(path)
    return [name for name in RUN_FILES if (p / name).exists()]


def _holder(fh: IO[str]) -> str:
    """'pid N (started T on host H)' from the lock file, as far as it can be read."""
    with contextlib.suppress(OSError, ValueError):
        fh.seek(0)
        info = json.loads(fh.read() or "{}")
        if isinstance(info, dict) and "pid" in info:
            host = f" on {info['host']}" if info.get("host") and info["host"] != socket.gethostname() else ""
            return f"pid {info['pid']} (started {info.get('started', '?')}{host})"
    return "another process"


def _lock(folder: Path) -> IO[str] | None:
    """Take the folder's exclusive lock at once or raise RunDirInUseError; None where flock is missing."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        log.warning("no fcntl on this platform: %s is not locked against a concurrent run", folder)
        return None
    fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    fh = os.fdopen(fd, "r+", encoding="utf-8")  # held open (and locked) for the run's lifetime
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder(fh)
        fh.close()
        raise RunDirInUseError(
            f"run folder {folder} is in use by {holder}; wait for that run to end, stop it, "
            "or choose another output folder"
        ) from None
    except BaseException:
        fh.close()
        raise
    started = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
    fh.seek(0)
    fh.truncate()
    fh.write(json.dumps({"pid": os.getpid(), "started": started, "host": socket.gethostname()}) + "\n")
    fh.flush()
    return fh


def _unlock(fh: IO[str] | None) -> None:
    if fh is None:
        return
    import fcntl

    with contextlib.suppress(OSError):
        fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
    fh.close()


def _move_aside(folder: Path) -> Path:
    """Move everything in `folder` but the lock into a fresh sibling `<folder>.old-<timestamp>/`."""
    folder = folder.resolve()
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    dest = folder.with_name(f"{folder.name}.old-{stamp}")
    k = 1
    while dest.exists():
        dest = folder.with_name(f"{folder.name}.old-{stamp}-{k}")
        k += 1
    dest.mkdir()
    for entry in sorted(folder.iterdir()):
        if entry.name != LOCK_FILE:
            shutil.move(str(entry), str(dest / entry.name))  # a rename on the same filesystem
    return dest


def _is_main_process() -> bool:
    """Rank 0 of a torchrun job (or a plain process): the one that owns the run folder."""
    try:
        return int(os.environ.get("RANK", "0") or 0) == 0
    except ValueError:
        return True


@contextlib.contextmanager
def claim_run_dir(path: str | os.PathLike[str], *, resume: bool, overwrite: bool) -> Iterator[Path]:
    """Own the run folder `path` for the duration of the block; yields it (created if needed).

    - A folder holding a run (any of RUN_FILES) is refused with a ValueError unless `resume`
      (continue it) or `overwrite` (replace it).
    - `overwrite` moves the earlier run's contents to `<path>.old-<timestamp>/` once the lock is
      held, and logs where; nothing is deleted.
    - The lock is exclusive and non-blocking: a second claim while the first block runs (another
      process, or this one) raises `RunDirInUseError` "run folder X is in use by pid N (started T)".

    Under torchrun only rank 0 claims (checks, moves, locks); other ranks just get the path.
    """
    if resume and overwrite:
        raise ValueError("resume and overwrite exclude each other: continue the run or replace it, not both")
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"run folder {folder} is a file, not a folder")
    if not _is_main_process():
        yield folder
        return
    folder.mkdir(parents=True, exist_ok=True)
    fh = _lock(folder)
    try:
        found = run_files(folder)
        if found and not (resume or overwrite):
            raise ValueError(
                f"run folder {folder} already holds a run ({', '.join(found)}); pass --resume "
                "(resume=True) to continue it, or --overwrite (overwrite=True) to replace it "
                f"(the earlier run is then moved to {folder.name}.old-<timestamp>/)"
            )
        if found and overwrite:
            dest = _move_aside(folder)
            log.warning("overwrite: moved the earlier run in %s to %s", folder, dest)
        yield folder
    finally:
        _unlock(fh)
