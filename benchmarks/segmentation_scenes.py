"""Segmentation benchmarks (the segmentation issue): arms side by side over seeds, runs in parallel.

Each arm is `name:key=value,key=value` (overrides on the config) and runs once per seed with the
same recipe otherwise; `--jobs` runs that many at once, each on `--threads` threads (2 cores: 2 x 1).
Reports mean +- sample std of mIoU / OA / mAcc, the IoU of each arm's best classes, energy per
scene (spiking and ANN-equivalent), inference time per scene and wall time per run.

    python benchmarks/segmentation_scenes.py --config configs/segment_modelnet40_scenes.yaml \
        --arms scratch: svl:init=runs/labelfree_scenes/final.safetensors ann:model.name=e3dsnn_unet_t_ann \
        --seeds 0 1 2 --jobs 2 --out runs/bench_seg train.epochs=12

Writes OUT/summary.{md,json}; `--reuse` keeps finished runs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from _summary import write_summary  # benchmarks/_summary.py


def _run(cmd: list[str], run_dir: Path, threads: int) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    print("==", " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    with open(run_dir.with_suffix(".log"), "w") as log:
        subprocess.run(cmd, check=True, env=env, stdout=log, stderr=subprocess.STDOUT)
    print(f"== {run_dir.name}: {time.perf_counter() - t0:.0f}s", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True)
    ap.add_argument("--arms", nargs="+", default=["scratch:"], help="name:key=value,key=value ...")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--jobs", type=int, default=1, help="runs at once")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per run")
    ap.add_argument("--out", default="runs/bench_seg")
    ap.add_argument("--reuse", action="store_true")
    ap.add_argument("overrides", nargs="*", help="key=value for every arm")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    plan = []
    for arm in args.arms:
        name, _, extra = arm.partition(":")
        for s in args.seeds:
            run_dir = out / f"{name}_seed{s}"
            cmd = [
                sys.executable, "-m", "svl", "finetune", "--overwrite", "--config", args.config,
                f"out_dir={run_dir}", f"train.seed={s}", *args.overrides, *[o for o in extra.split(",") if o],
            ]  # fmt: skip
            plan.append((name, s, run_dir, cmd))
    todo = [p for p in plan if not (args.reuse and (p[2] / "results.json").exists())]
    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        for f in [pool.submit(_run, cmd, run_dir, args.threads) for _, _, run_dir, cmd in todo]:
            f.result()
    rows = []
    for name, s, run_dir, _ in plan:
        res = json.loads((run_dir / "results.json").read_text())
        e = res.get("energy") or {}
        rows.append(
            {"arm": name, "seed": s, "miou": res["miou"], "oa": res["oa"], "macc": res["macc"],
             "per_class": {c["class"]: c["iou"] for c in res["per_class"] if c.get("iou") is not None},
             "energy_snn_mj": e.get("energy_snn_mj"), "energy_ann_mj": e.get("energy_ann_mj"),
             "ms_per_scene": res.get("ms_per_scene"), "wall_s": res.get("wall_seconds")}
        )  # fmt: skip

    def ms(vals: list[float], scale: float = 100.0, nd: int = 2) -> str:
        v = scale * np.array(vals, float)
        return f"{v.mean():.{nd}f} ± {v.std(ddof=1) if len(v) > 1 else 0:.{nd}f}"

    lines = [f"Segmentation, {args.config} {' '.join(args.overrides)} (seeds {args.seeds})", ""]
    lines += ["| arm | mIoU % | OA % | mAcc % | best classes (IoU %) | SNN mJ / scene | ANN-eq. mJ | "
              "ms / scene | wall s / run |", "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for arm in args.arms:
        name = arm.partition(":")[0]
        rs = [r for r in rows if r["arm"] == name]
        classes = rs[0]["per_class"]
        mean_iou = {c: np.mean([r["per_class"].get(c, 0.0) for r in rs]) for c in classes}
        best = ", ".join(f"{c} {100 * v:.0f}" for c, v in sorted(mean_iou.items(), key=lambda kv: -kv[1])[:4])
        en = [r["energy_snn_mj"] for r in rs if r["energy_snn_mj"] is not None]
        ea = [r["energy_ann_mj"] for r in rs if r["energy_ann_mj"] is not None]
        lines.append(
            f"| {name} | {ms([r['miou'] for r in rs])} | {ms([r['oa'] for r in rs])} | "
            f"{ms([r['macc'] for r in rs])} | {best} | {f'{np.mean(en):.4f}' if en else '-'} | "
            f"{f'{np.mean(ea):.4f}' if ea else '-'} | {ms([r['ms_per_scene'] for r in rs], 1.0, 1)} | "
            f"{np.mean([r['wall_s'] for r in rs]):.0f} |"
        )
    write_summary(out, "\n".join(lines), rows)


if __name__ == "__main__":
    main()
