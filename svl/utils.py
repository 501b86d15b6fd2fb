"""Small shared helpers: atomic writes, seeding, logging, data/cache locations, progress bars.

Everything here is cheap to import (no torch at module level) so `svl --help` stays fast.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import random
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any, TypeVar

__all__ = [
    "DiskFullError",
    "append_file",
    "atomic_path",
    "cached_arrays",
    "atomic_write",
    "cache_dir",
    "data_root",
    "file_sha256",
    "get_logger",
    "progress",
    "progress_bars_enabled",
    "quiet_hf_progress",
    "repo_root",
    "seed_everything",
    "set_offline",
]

T = TypeVar("T")

# Temp files from mkstemp are 0600; give the final file the permissions a plain open() would.
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def _fsync_dir(directory: Path) -> None:
    """Persist the rename itself (best effort: not every OS/filesystem allows opening a dir)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class DiskFullError(ValueError):
    """A write ran out of disk space (or quota); the earlier file at that path is intact.

    A ValueError so that command-line callers print it as a one-line error, not a traceback.
    """

    def __init__(
        self,
        path: Path,
        needed: int | None,
        free: int | None,
        existed: bool,
        reason: str,
        lower_bound: bool = False,
    ) -> None:
        self.path, self.needed, self.free, self.existed, self.reason = path, needed, free, existed, reason
        self.lower_bound = lower_bound
        need = (
            f"{'at least' if lower_bound else 'about'} {_human_bytes(needed)} needed"
            if needed
            else "size needed unknown"
        )
        have = f"{_human_bytes(free)} free there" if free is not None else "free space unknown"
        kept = (
            f"the previous {path.name} is intact"
            if existed
            else f"nothing was written (there was no earlier {path.name})"
        )
        super().__init__(f"cannot write {path}: {reason} ({need}, {have}); {kept}")

    def __reduce__(self) -> tuple[Any, ...]:  # picklable across processes despite the custom __init__
        return (type(self), (self.path, self.needed, self.free, self.existed, self.reason, self.lower_bound))


def _human_bytes(n: int | None) -> str:
    if n is None:
        return "?"
    size = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"  # pragma: no cover


_DISK_FULL = {errno.ENOSPC: "no space left on device"}
if hasattr(errno, "EDQUOT"):
    _DISK_FULL[errno.EDQUOT] = "disk quota exceeded"


def _disk_full_reason(exc: BaseException) -> str | None:
    """Why `exc` is a full disk or quota, else None.

    Writers in other languages (safetensors is Rust) report the OS error only in their message,
    as "... (os error 28)", so that form counts too.
    """
    seen: BaseException | None = exc
    for _ in range(4):  # the error itself, or what it was raised from (wrapping writers)
        if seen is None:
            break
        code = seen.errno if isinstance(seen, OSError) else None
        if code is None:
            m = re.search(r"\(os error (\d+)\)", str(seen))
            code = int(m.group(1)) if m else None
        if code in _DISK_FULL:
            return _DISK_FULL[code]
        seen = seen.__cause__ or seen.__context__
    return None


def _free_bytes(directory: Path) -> int | None:
    try:
        return shutil.disk_usage(directory).free
    except OSError:
        return None


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, expected_bytes: int | None = None) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path` in one step.

    For writers that insist on a file name (h5py, safetensors.save_file). Readers never see a
    half-written file, and on error the old file (if any) is left untouched. A full disk or quota
    becomes a `DiskFullError` naming the file, the space needed (`expected_bytes`, else the larger
    of what was written and the earlier file) and the space free.
    """
    target = Path(path)
    if target.is_dir():
        raise IsADirectoryError(f"{target}: is a directory, cannot write a file there")
    target.parent.mkdir(parents=True, exist_ok=True)
    existed = target.exists()
    tmp: Path | None = None
    try:
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        os.close(fd)
        tmp = Path(tmp_name)
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"{target}: the writer did not create the temporary file {tmp}")
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, target)
    except BaseException as e:
        written = _file_size(tmp) if tmp is not None else 0
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        reason = _disk_full_reason(e)
        if reason is None or isinstance(e, DiskFullError):  # a nested write already named its file
            raise
        previous = _file_size(target)
        needed = expected_bytes or max(written, previous) or None
        lower_bound = not expected_bytes and written >= previous  # only what got written before the error
        raise DiskFullError(target, needed, _free_bytes(target.parent), existed, reason, lower_bound) from e
    _fsync_dir(target.parent)


@contextlib.contextmanager
def atomic_write(
    path: str | os.PathLike[str],
    mode: str = "wb",
    encoding: str | None = None,
    newline: str | None = None,
    *,
    expected_bytes: int | None = None,
) -> Iterator[IO[Any]]:
    """Open a temp file beside `path` for writing; rename it over `path` only if the block succeeds.

    A crash or exception mid-write leaves the previous file intact and no temp file behind; a full
    disk raises `DiskFullError` (see `atomic_path`; `expected_bytes` is the size to report).
    """
    if not mode.startswith("w") or any(c in mode for c in "arx"):
        raise ValueError(f"atomic_write: mode must be a write mode like 'w', 'wb' or 'w+b', got {mode!r}")
    if "b" in mode and encoding is not None:
        raise ValueError("atomic_write: encoding is only valid in text mode")
    if "b" not in mode and encoding is None:
        encoding = "utf-8"
    with atomic_path(path, expected_bytes=expected_bytes) as tmp:
        with open(tmp, mode, encoding=encoding, newline=newline) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())


def append_file(path: str | os.PathLike[str], data: str | bytes) -> None:
    """Append `data` to `path` (created if missing), flushed to the OS; for logs that grow by records.

    A full disk or quota raises `DiskFullError` naming the file, after cutting the file back to what
    it held before, so no half record is left and the earlier records are intact.
    """
    target = Path(path)
    raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    existed = target.exists()
    before = _file_size(target)
    try:
        with open(target, "ab") as fh:
            fh.write(raw)
            fh.flush()
    except OSError as e:
        reason = _disk_full_reason(e)
        if reason is None:
            raise
        with contextlib.suppress(OSError):
            if existed:
                os.truncate(target, before)
            else:
                target.unlink()
        raise DiskFullError(target, len(raw), _free_bytes(target.parent), existed, reason) from e


def seed_everything(seed: int, deterministic: bool = False) -> int:
    """Seed python, numpy and torch (all devices); optionally force deterministic kernels.

    `deterministic=True` trades speed for bitwise-repeatable runs (cuDNN autotuning off,
    deterministic algorithms where torch has them, warnings where it does not).
    """
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an int, got {seed!r}")
    if not 0 <= seed < 2**32:
        raise ValueError(f"seed must be in [0, 2**32), got {seed}")
    os.environ["PYTHONHASHSEED"] = str(seed)  # inherited by worker subprocesses
    random.seed(seed)
    try:
        import numpy as np

        np.random.seed(seed)
    except ImportError:  # pragma: no cover - numpy is a hard dependency
        pass
    import torch

    torch.manual_seed(seed)  # also seeds every CUDA device
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    return seed


_LOG_FORMAT = "%(asctime)s svl %(levelname)s %(name)s: %(message)s"
_configured = False


def _configure_logging() -> None:
    """Give the `svl` logger a stderr handler once, unless the application configured logging."""
    global _configured
    if _configured:
        return
    _configured = True
    base = logging.getLogger("svl")
    level = os.environ.get("SVL_LOG_LEVEL", "INFO").upper()
    base.setLevel(level if level in logging.getLevelNamesMapping() else logging.INFO)
    if not logging.getLogger().handlers and not base.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(_LOG_FORMAT, datefmt="%H:%M:%S"))
        base.addHandler(handler)


def get_logger(name: str) -> logging.Logger:
    """Logger under the `svl.` namespace (so one switch, SVL_LOG_LEVEL, controls all of svl)."""
    _configure_logging()
    if name != "svl" and not name.startswith("svl."):
        name = f"svl.{name}"
    return logging.getLogger(name)


def repo_root() -> Path:
    """The source checkout holding this package (meaningful for editable installs)."""
    return Path(__file__).resolve().parents[1]


def data_root(required: bool = False) -> Path | None:
    """Locate the shared data folder: $SVL_DATA, else ../shared/data from the cwd or the repo root.

    Returns None when nothing is found and `required` is False; otherwise raises a
    FileNotFoundError that names every place searched.
    """
    env = os.environ.get("SVL_DATA")
    if env:
        root = Path(env).expanduser()
        if root.is_dir():
            return root.resolve()
        if required:
            raise FileNotFoundError(f"$SVL_DATA={env!r} is not an existing directory")
        return None
    candidates = [Path.cwd() / ".." / "shared" / "data", repo_root().parent / "shared" / "data"]
    for cand in candidates:
        if cand.is_dir():
            return cand.resolve()
    if required:
        searched = ", ".join(str(c.resolve()) for c in candidates)
        raise FileNotFoundError(
            f"svl data root not found: $SVL_DATA is not set and none of these exist: {searched}. "
            "Set SVL_DATA=/path/to/data."
        )
    return None


def cached_arrays(
    name: str,
    settings: dict[str, Any],
    make: Any,
    valid: Any = None,
    enabled: bool = True,
) -> dict[str, Any]:
    """Arrays built once by `make()` and kept under cache_dir(name) as one .npz keyed by `settings`.

    A cache whose stored settings differ, that cannot be read, or that `valid(arrays)` rejects is
    built again and overwritten (atomically); `enabled=False` always builds and writes nothing.
    """
    import json

    import numpy as np

    if not enabled:
        return make()
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    path = cache_dir(name) / f"{settings.get('split', 'data')}-{key}.npz"
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                if json.loads(str(z["settings"])) == json.loads(json.dumps(settings)):
                    data = {k: z[k] for k in z.files if k != "settings"}
                    if valid is None or valid(data):
                        return data
        except (OSError, ValueError, KeyError):  # unreadable or foreign: build again and overwrite
            pass
    data = make()
    nbytes = sum(getattr(a, "nbytes", 0) for a in data.values())
    with atomic_path(path, expected_bytes=nbytes + 1024) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, settings=np.array(json.dumps(settings, sort_keys=True)), **data)
    return data


def cache_dir(*parts: str) -> Path:
    """Cache folder ($SVL_CACHE or ~/.cache/svl), optionally a sub-folder of it; created on demand."""
    base = os.environ.get("SVL_CACHE")
    root = Path(base).expanduser() if base else Path.home() / ".cache" / "svl"
    path = root.joinpath(*parts)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError as e:
        raise ValueError(f"svl cache dir {path} exists but is not a directory") from e
    return path


_OFF = ("0", "false", "no", "off", "")


def progress_bars_enabled(stream: IO[Any] | None = None) -> bool:
    """Whether `progress` shows bars: SVL_PROGRESS=1/0 decides, else whether `stream` (stderr) is a tty.

    Where bars are off (a log file, a batch job), long loops report in plain log lines instead.
    """
    flag = os.environ.get("SVL_PROGRESS")
    if flag is not None:
        return flag.strip().lower() not in _OFF
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def progress(iterable: Iterable[T], *, log_every: float | None = 60.0, **kwargs: Any) -> Iterable[T]:
    """A tqdm bar that shows only on a terminal (SVL_PROGRESS=1 forces it on, =0 off).

    Where bars are off (a log file, a batch job), a loop that runs longer than `log_every` seconds
    logs a line at most that often (done/total, elapsed, ETA), so a first run that embeds thousands
    of views is not silent for minutes. `log_every=None`, or `disable=True` from the caller (e.g. on
    DDP ranks other than 0), keeps it quiet.
    """
    from tqdm.auto import tqdm

    silenced = kwargs.get("disable") is True
    flag = os.environ.get("SVL_PROGRESS")
    if flag is not None and "disable" not in kwargs:
        kwargs["disable"] = flag.strip().lower() in _OFF
    kwargs.setdefault("disable", None)  # tqdm: None = disable when not a tty
    kwargs.setdefault("mininterval", 1.0)
    kwargs.setdefault("dynamic_ncols", True)
    bar = tqdm(iterable, **kwargs)
    if not bar.disable or silenced or log_every is None:
        return bar
    return _LoggedBar(bar, str(kwargs.get("desc") or "progress"), float(log_every))


class _LoggedBar:
    """A disabled tqdm bar that logs progress at most every `every` seconds while iterated."""

    def __init__(self, bar: Any, desc: str, every: float) -> None:
        self.bar, self.desc, self.every = bar, desc, every

    def __getattr__(self, name: str) -> Any:  # disable, total, set_postfix, close... of the bar
        return getattr(self.bar, name)

    def __len__(self) -> int:
        return len(self.bar)

    def __iter__(self) -> Iterator[Any]:
        log = get_logger("svl.progress")
        total = self.bar.total
        t0 = last = time.perf_counter()
        try:
            for i, item in enumerate(self.bar, 1):
                yield item
                now = time.perf_counter()
                if now - last < self.every:
                    continue
                last = now
                elapsed = now - t0
                done = f"{i}/{total}" if total else str(i)
                eta = f", ETA {elapsed / i * (total - i):.0f}s" if total else ""
                log.info("%s: %s (%.0fs elapsed%s)", self.desc, done, elapsed, eta)
        finally:
            self.bar.close()


def run_environment() -> dict[str, Any]:
    """What a run's numbers depend on besides its config: the CPU thread count changes the order of
    float reductions (and so the trained weights), as do the torch build and the CPU's vector unit."""
    import platform

    import torch

    return {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "machine": platform.machine(),
    }


def file_sha256(path: str | os.PathLike[str], chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks so large checkpoints do not load into memory."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such file")
    h = hashlib.sha256()
    with open(p, "rb") as fh:
        while chunk := fh.read(chunk_size):
            h.update(chunk)
    return h.hexdigest()


def set_offline() -> None:
    """Forbid Hugging Face network access: teachers must load from local files only.

    Must run before `transformers` / `sentence_transformers` are imported, because both read
    these variables at import time.
    """
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
    quiet_hf_progress()


def quiet_hf_progress() -> None:
    """No Hugging Face tqdm bars ("Loading weights", downloads) where svl's own bars are off (not a
    terminal, SVL_PROGRESS=0): they would fill a log file with carriage-return lines."""
    if progress_bars_enabled():
        return
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"  # read when huggingface_hub / transformers load
    for name in ("transformers", "huggingface_hub"):  # already imported: switch their bars off now
        mod = sys.modules.get(name)
        try:
            if name == "transformers" and mod is not None:
                mod.utils.logging.disable_progress_bar()
            elif mod is not None:
                mod.utils.disable_progress_bars()
        except AttributeError:  # an old release without the switch: the variable above still counts
            pass
