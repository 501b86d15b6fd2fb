"""What every benchmark script ends with: print its table and keep it with the raw rows."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from svl.utils import atomic_write


def write_summary(out: Path, text: str, rows: Any) -> None:
    """Print `text` and write it to OUT/summary.md, `rows` to OUT/summary.json (both atomically)."""
    print(text)
    with atomic_write(out / "summary.md", "w") as fh:
        fh.write(text + "\n")
    with atomic_write(out / "summary.json", "w") as fh:
        json.dump(rows, fh, indent=2)
