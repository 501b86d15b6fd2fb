"""Event-stream classification benchmarks (the events issue): arms side by side, several seeds or k folds.

Each arm is `name:key=value,key=value` (overrides on the config); every arm runs once per seed (test
split) or once per fold (stratified k-fold cross-validation on the training split, `--cv K`), with
the same recipe otherwise. Reports mean +- sample std of overall / class-mean accuracy, energy per
sample (spiking and ANN-equivalent), inference time per sample and wall time.

    python benchmarks/events_classification.py --config configs/finetune_nmnist.yaml \
        --arms snn: ann:model.name=e3dsnn_t_ann --seeds 0 1 2 --out runs/bench_nmnist
    python benchmarks/events_classification.py --config configs/finetune_nmnist.yaml --arms snn: \
        --cv 5 --out runs/bench_nmnist_cv
    python benchmarks/events_classification.py --config configs/finetune_modelnet40_dvs.yaml \
        --arms scratch: svl:init=runs/labelfree_modelnet40/final.safetensors --seeds 0 1 2

Writes OUT/summary.{md,json}; `--reuse` keeps finished runs.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from _summary import write_summary  # benchmarks/_summary.py


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True)
    ap.add_argument("--arms", nargs="+", default=["snn:"], help="name:key=value,key=value ...")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--cv", type=int, default=0, help="k-fold cross-validation on the training split")
    ap.add_argument("--out", default="runs/bench_events")
    ap.add_argument("--reuse", action="store_true")
    ap.add_argument("overrides", nargs="*", help="key=value for every arm")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs = [("fold", k) for k in range(args.cv)] if args.cv else [("seed", s) for s in args.seeds]
    rows = []
    for arm in args.arms:
        name, _, extra = arm.partition(":")
        arm_over = [o for o in extra.split(",") if o]
        for kind, k in runs:
            run_dir = out / f"{name}_{kind}{k}"
            over = (
                [f"train.seed={k}"] if kind == "seed" else [f"data.cv_folds={args.cv}", f"data.cv_fold={k}"]
            )
            if not (args.reuse and (run_dir / "results.json").exists()):
                cmd = [
                    sys.executable, "-m", "svl", "finetune", "--overwrite", "--config", args.config,
                    f"out_dir={run_dir}", *over, *args.overrides, *arm_over,
                ]  # fmt: skip
                print("==", " ".join(cmd), flush=True)
                t0 = time.perf_counter()
                subprocess.run(cmd, check=True)
                print(f"== {run_dir.name}: {time.perf_counter() - t0:.0f}s", flush=True)
            res = json.loads((run_dir / "results.json").read_text())
            e = res.get("energy") or {}
            rows.append(
                {"arm": name, kind: k, "oa": res["oa"], "macc": res["macc"], "n_test": res["n_test"],
                 "n_train": res["n_train"], "energy_snn_mj": e.get("energy_snn_mj"),
                 "energy_ann_mj": e.get("energy_ann_mj"), "ms_per_sample": res.get("ms_per_sample"),
                 "wall_s": res.get("wall_seconds")}
            )  # fmt: skip

    def ms(vals: list[float], scale: float = 100.0, nd: int = 2) -> str:
        v = scale * np.array(vals, float)
        return f"{v.mean():.{nd}f} ± {v.std(ddof=1) if len(v) > 1 else 0:.{nd}f}"

    what = f"{args.cv}-fold CV on the training split" if args.cv else f"seeds {args.seeds}, test split"
    lines = [f"Event classification, {args.config} ({what})", ""]
    lines += ["| arm | OA % | mAcc % | n test | SNN mJ | ANN-eq. mJ | ms / sample | wall s / run |"]
    lines += ["|---|---|---|---|---|---|---|---|"]
    for arm in args.arms:
        name = arm.partition(":")[0]
        rs = [r for r in rows if r["arm"] == name]
        en = [r["energy_snn_mj"] for r in rs if r["energy_snn_mj"] is not None]
        ea = [r["energy_ann_mj"] for r in rs if r["energy_ann_mj"] is not None]
        lines.append(
            f"| {name} | {ms([r['oa'] for r in rs])} | {ms([r['macc'] for r in rs])} | "
            f"{sum(r['n_test'] for r in rs) if args.cv else rs[0]['n_test']} | "
            f"{f'{np.mean(en):.4f}' if en else '-'} | {f'{np.mean(ea):.4f}' if ea else '-'} | "
            f"{ms([r['ms_per_sample'] for r in rs], 1.0, 1)} | {np.mean([r['wall_s'] for r in rs]):.0f} |"
        )
    write_summary(out, "\n".join(lines), rows)


if __name__ == "__main__":
    main()
