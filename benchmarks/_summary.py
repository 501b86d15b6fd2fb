"""What benchmark scripts share: run one logged job, print the table and keep it with the raw rows."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

from svl.utils import atomic_write


def mean_std(values: list[float], digits: int = 2) -> str:
    """ "m ± s" (sample standard deviation) of a 3-seed column; one value alone as itself, none as "-"."""
    import statistics

    v = [float(x) for x in values]
    if not v:
        return "-"
    if len(v) == 1:
        return f"{v[0]:.{digits}f}"
    return f"{statistics.mean(v):.{digits}f} ± {statistics.stdev(v):.{digits}f}"


def write_summary(out: Path, text: str, rows: Any) -> None:
    """Print `text` and write it to OUT/summary.md, `rows` to OUT/summary.json (both atomically)."""
    print(text)
    with atomic_write(out / "summary.md", "w") as fh:
        fh.write(text + "\n")
    with atomic_write(out / "summary.json", "w") as fh:
        json.dump(rows, fh, indent=2)


def run_logged(cmd: list[str], run_dir: Path, threads: int) -> None:
    """Run `cmd` on `threads` torch threads, its output in RUN_DIR.log; print the command and its time."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    print("==", " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    with open(run_dir.with_suffix(".log"), "w") as log:
        subprocess.run(cmd, check=True, env=env, stdout=log, stderr=subprocess.STDOUT)
    print(f"== {run_dir.name}: {time.perf_counter() - t0:.0f}s", flush=True)
