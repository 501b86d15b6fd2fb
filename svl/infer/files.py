"""Many files in one call, for `classify`, `segment` and `detect`: where each file's outputs go
(`output_paths`: by the path relative to the files' common folder, so that two `000000.bin` of
different sequences never overwrite each other) and one bad file not losing the others
(`each_file`: with errors="report" a failed file becomes `{"file", "error"}` and the rest go on)."""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from svl.utils import DiskFullError

__all__ = ["FileErrors", "each_file", "make_output_dir", "output_paths"]

FileErrors = Literal["raise", "report"]


def output_paths(
    files: Sequence[str | os.PathLike[str]], out_dir: str | os.PathLike[str], suffixes: Sequence[str]
) -> list[dict[str, Path]]:
    """Per file, its output path for each suffix: OUT/<path relative to the files' common folder,
    extension dropped><suffix>, e.g. `08/velodyne/000000.json` and `09/velodyne/000000.json` for the
    scans `.../08/velodyne/000000.bin` and `.../09/velodyne/000000.bin` (files of one folder: just
    `<stem><suffix>`). Files of one folder sharing a stem (`scan.ply`, `scan.bin`) keep their whole
    name (`scan.ply.json`, `scan.bin.json`).

    Checked before anything is written (ValueError): `out_dir` is not an existing file, no two files
    share an output, and no output is one of the input files.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"output folder {out} is an existing file; give a folder with -o")
    absolute = [Path(os.path.abspath(p)) for p in files]
    if not absolute:
        return []
    root = Path(os.path.commonpath([a.parent for a in absolute]))
    rel = [a.relative_to(root) for a in absolute]
    owners: dict[Path, set[Path]] = defaultdict(set)
    for a, r in zip(absolute, rel):
        owners[r.with_name(Path(r.name).stem)].add(a)
    stems = [
        r.with_name(Path(r.name).stem) if len(owners[r.with_name(Path(r.name).stem)]) == 1 else r for r in rel
    ]
    paths = [{s: out / stem.with_name(stem.name + s) for s in suffixes} for stem in stems]
    inputs = set(absolute)
    written: dict[Path, tuple[Path, str]] = {}
    for f, a, ps in zip(files, absolute, paths):
        for p in ps.values():
            key = Path(os.path.abspath(p))
            if key in inputs:
                raise ValueError(f"{f}: its output {p} would overwrite an input file; give another -o folder")
            if written.setdefault(key, (a, str(f)))[0] != a:
                raise ValueError(f"{written[key][1]} and {f} would both write {p}; nothing was written")
    return paths


def make_output_dir(out_dir: str | os.PathLike[str]) -> Path:
    """Create the output folder (and its parents); one ValueError line when that is impossible."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise ValueError(f"output folder {out} is an existing file; give a folder with -o") from None
    except OSError as e:
        raise ValueError(f"cannot create output folder {out}: {e.strerror or e}") from None
    return out


def _message(e: BaseException) -> str:
    """The problem in one line: an OS error as 'reason: file', anything else as its message."""
    if isinstance(e, OSError) and e.strerror and not isinstance(e, DiskFullError):
        return f"{e.strerror}: {e.filename}" if e.filename else e.strerror
    return str(e) or type(e).__name__


def each_file(
    files: Sequence[str | os.PathLike[str]],
    work: Callable[[int, str | os.PathLike[str]], dict[str, Any]],
    errors: FileErrors = "raise",
) -> list[dict[str, Any]]:
    """`work(i, file)` for each file, in order. errors="raise": the first bad file's error propagates;
    "report": a file whose work raises ValueError or OSError becomes `{"file": str(file), "error":
    message}` and the others go on. A full disk (`DiskFullError`) always stops: every later file
    would fail the same way."""
    if errors not in ("raise", "report"):
        raise ValueError(f"errors must be 'raise' or 'report', got {errors!r}")
    results = []
    for i, p in enumerate(files):
        try:
            results.append(work(i, p))
        except DiskFullError:
            raise
        except (ValueError, OSError) as e:
            if errors == "raise":
                raise
            results.append({"file": str(p), "error": _message(e)})
    return results
