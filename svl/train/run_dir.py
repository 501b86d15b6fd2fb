"""Run folders: one run per folder, never destroyed by another run, never shared by two at once.

`claim_run_dir` is what every training task enters before writing anything: a folder that
already holds a run is refused unless the caller resumes it or asks to replace it; a replaced run
is moved aside (to `<folder>.old-<timestamp>/`), never deleted, because nothing the user made may
vanish silently; and an exclusive advisory lock (`flock` on `<folder>/.lock`) keeps a second run off
the folder for the lifetime of the first. The kernel drops a `flock` when its process dies, so a
crashed run leaves no stale lock behind (the lock file stays, and only records who held it last).

A folder holds a run once training has started: a checkpoint, a log record or results exist
(`config.yaml` alone does not count). A start that fails before that (a bad key, a missing file, a
model that cannot be built) releases the claim: what the attempt wrote (`config.yaml`, an empty
`log.jsonl`, `tb/`, the lock file, folders it created) is removed again and a run it moved aside is
moved back, so the folder is left as it was and the corrected command just runs.
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

__all__ = ["LOCK_FILE", "RUN_FILES", "START_FILES", "RunDirInUseError", "claim_run_dir", "run_files"]

log = get_logger(__name__)

LOCK_FILE = ".lock"
# What marks a folder as holding a run: training has started (written by the Trainer or a task;
# log.jsonl counts once it holds a record).
RUN_FILES = (
    "last.safetensors",
    "best.safetensors",
    "final.safetensors",
    "results.json",
    "log.jsonl",
)
# What a start writes before training has begun; removed again when the start fails.
START_FILES = ("config.yaml", "log.jsonl", "tb")


class RunDirInUseError(ValueError):
    """Another live process holds the run folder's lock (a ValueError: one line on the command line)."""


def run_files(path: str | os.PathLike[str]) -> list[str]:
    """The run-marking files present in `path` (empty: no run there)."""
    p = Path(path)
    return [name for name in RUN_FILES if _marks_a_run(p / name)]


def _marks_a_run(f: Path) -> bool:
    try:
        return f.exists() and (f.name != "log.jsonl" or not f.is_file() or f.stat().st_size > 0)
    except OSError:
        return True  # unreadable: assume it is a run rather than treat it as free


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
    path = folder / LOCK_FILE
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        fh = os.fdopen(fd, "r+", encoding="utf-8")  # held open (and locked) for the run's lifetime
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            # A failed start removes its lock file: the file locked here must still be the one there.
            same = _same_file(fh, path)
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
        if same:
            break
        fh.close()
    started = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
    fh.seek(0)
    fh.truncate()
    fh.write(json.dumps({"pid": os.getpid(), "started": started, "host": socket.gethostname()}) + "\n")
    fh.flush()
    return fh


def _same_file(fh: IO[str], path: Path) -> bool:
    try:
        a, b = os.fstat(fh.fileno()), os.stat(path)
    except FileNotFoundError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


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


def _missing_dirs(folder: Path) -> list[Path]:
    """`folder` and those of its parents that do not exist yet, deepest first."""
    missing = []
    p = folder
    while not p.exists() and p != p.parent:
        missing.append(p)
        p = p.parent
    return missing


def _move_back(folder: Path, dest: Path) -> None:
    """Return a run moved aside to `dest` to `folder` (where nothing of the same name is now)."""
    entries = sorted(dest.iterdir())
    clash = [e.name for e in entries if (folder / e.name).exists() or (folder / e.name).is_symlink()]
    if clash:
        log.warning("the earlier run stays in %s: %s now holds %s", dest, folder, ", ".join(clash))
        return
    for entry in entries:
        shutil.move(str(entry), str(folder / entry.name))
    with contextlib.suppress(OSError):
        dest.rmdir()
    log.warning("the start failed: moved the earlier run back from %s to %s", dest, folder)


def _undo_start(folder: Path, before: set[str], moved: Path | None) -> None:
    """Remove what a failed start wrote in `folder` (never what was there before it), restore `moved`."""
    for name in START_FILES:
        entry = folder / name
        if name in before or not (entry.exists() or entry.is_symlink()):
            continue
        with contextlib.suppress(OSError):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    if moved is not None:
        _move_back(folder, moved)


@contextlib.contextmanager
def claim_run_dir(path: str | os.PathLike[str], *, resume: bool, overwrite: bool) -> Iterator[Path]:
    """Own the run folder `path` for the duration of the block; yields it (created if needed).

    - A folder holding a run (any of RUN_FILES: training has started there) is refused with a
      ValueError unless `resume` (continue it) or `overwrite` (replace it).
    - `overwrite` moves the earlier run's contents to `<path>.old-<timestamp>/` once the lock is
      held, and logs where; nothing is deleted. A folder holding no run has nothing moved aside.
    - The lock is exclusive and non-blocking: a second claim while the first block runs (another
      process, or this one) raises `RunDirInUseError` "run folder X is in use by pid N (started T)".
    - A block that raises before training has started (no RUN_FILES in the folder) releases the
      claim: `_undo_start` removes what it wrote (START_FILES that were not there before), a run
      moved aside is moved back, and the lock file and folders the claim created are removed, so
      the folder is left as it was.

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
    created = _missing_dirs(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lock_existed = (folder / LOCK_FILE).exists()
    fh: IO[str] | None = None
    started = True  # until the block raises before training began
    moved: Path | None = None
    try:
        fh = _lock(folder)
        found = run_files(folder)
        if found and not (resume or overwrite):
            raise ValueError(
                f"run folder {folder} already holds a run ({', '.join(found)}); pass --resume "
                "(resume=True) to continue it, or --overwrite (overwrite=True) to replace it "
                f"(the earlier run is then moved to {folder.name}.old-<timestamp>/)"
            )
        if found and overwrite:
            moved = _move_aside(folder)
            log.warning("overwrite: moved the earlier run in %s to %s", folder, moved)
        before = {entry.name for entry in folder.iterdir()}
        try:
            yield folder
        except BaseException:
            started = bool(run_files(folder))
            if not started:
                _undo_start(folder, before, moved)
            raise
    except BaseException:
        if fh is None or not run_files(folder):  # nothing of a run here: the claim leaves no trace
            started = False
        raise
    finally:
        if not started and fh is not None and not lock_existed:
            with contextlib.suppress(OSError):
                (folder / LOCK_FILE).unlink()  # while still locked: see _lock
        _unlock(fh)
        if not started:
            for d in created:  # deepest first; only folders this claim made, and only if empty
                try:
                    d.rmdir()
                except OSError:
                    break
