"""Issue 30's table: scratch vs an SVL init on each downstream task, paired by seed (or fold).

Reads the summary.json of finished benchmark runs (events_classification.py, dense_prediction.py,
finetune_label_efficiency.py), so each row is produced by the task's own benchmark and this script
only pairs and prints. A row is `LABEL=DIR:ARM,DIR:ARM[,METRIC]` (scratch first, then the init):

    python benchmarks/transfer_table.py --out runs/t30/table \
        --row "N-MNIST CV OA=runs/t30/nmnist_cv_scratch:scratch,runs/t30/nmnist_cv:ms" \
        --row "segmentation mIoU=runs/bench_seg27:scratch,runs/t30/seg:ms_xyz3,miou" \
        --row "detection AP BEV=runs/t30/det:scratch,runs/t30/det:ms_xyz3,map_bev" \
        --row "10% labels OA=runs/t30/label:scratch,runs/t30/label:svl,oa@0.1"

METRIC defaults to the first of miou / map_bev / oa the rows hold; `oa@F` picks label share F of a
label-efficiency summary (its `init` column is the arm). Writes OUT/summary.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

from _summary import write_summary  # benchmarks/_summary.py


def _rows(d: str, arm: str, metric: str | None) -> tuple[dict[Any, float], str]:
    path = Path(d) / "summary.json"
    if not path.is_file():
        raise SystemExit(f"transfer_table: {path} does not exist (run that benchmark first)")
    rows = json.loads(path.read_text())
    frac = None
    if metric and "@" in metric:
        metric, f = metric.split("@")
        frac = float(f)
    mine = [r for r in rows if r.get("arm", r.get("init")) == arm and (frac is None or r["fraction"] == frac)]
    if not mine:
        raise SystemExit(
            f"transfer_table: {path} has no rows of arm {arm!r}" + (f" at {frac}" if frac else "")
        )
    metric = metric or next(m for m in ("miou", "map_bev", "oa") if m in mine[0])
    return {r.get("seed", r.get("fold")): 100.0 * float(r[metric]) for r in mine}, metric


def _ms(v: list[float]) -> str:
    return f"{statistics.mean(v):.2f} ± {statistics.stdev(v):.2f}" if len(v) > 1 else f"{v[0]:.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--row", action="append", required=True, metavar="LABEL=DIR:ARM,DIR:ARM[,METRIC]")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    lines = ["| downstream task | metric | scratch | SVL init | gain, paired (mean ± std) | per seed | n |"]
    lines += ["|---|---|---|---|---|---|---|"]
    out_rows = []
    for spec in args.row:
        label, _, rest = spec.partition("=")
        parts = rest.split(",")
        if len(parts) not in (2, 3) or any(":" not in p for p in parts[:2]):
            raise SystemExit(f"transfer_table: --row {spec!r}: give LABEL=DIR:ARM,DIR:ARM[,METRIC]")
        metric = parts[2] if len(parts) == 3 else None
        (sd, sa), (idir, ia) = (p.rsplit(":", 1) for p in parts[:2])
        s, m = _rows(sd, sa, metric)
        i, _ = _rows(idir, ia, metric)
        keys = sorted(set(s) & set(i))
        if not keys:
            raise SystemExit(f"transfer_table: {label}: no seed or fold in common between {sd} and {idir}")
        gains = [i[k] - s[k] for k in keys]
        per = ", ".join(f"{s[k]:.1f} -> {i[k]:.1f}" for k in keys)
        lines.append(
            f"| {label} | {m} | {_ms([s[k] for k in keys])} | {_ms([i[k] for k in keys])} | "
            f"**{_ms(gains)}** | {per} | {len(keys)} |"
        )
        out_rows.append({"row": label, "metric": m, "scratch": [s[k] for k in keys],
                         "init": [i[k] for k in keys], "keys": keys, "gain": gains})  # fmt: skip
    write_summary(Path(args.out), "\n".join(lines), out_rows)


if __name__ == "__main__":
    main()
