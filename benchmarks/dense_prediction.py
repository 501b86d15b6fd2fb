"""Dense-prediction benchmarks (segmentation, detection): arms side by side over seeds, in parallel.

Each arm is `name:key=value,key=value` (overrides on the config) and runs once per seed with the
same recipe otherwise; `--jobs` runs that many at once, each on `--threads` threads (2 cores: 2 x 1).
Reports mean +- sample std of the task's metrics (segmentation: mIoU / OA / mAcc and the IoU of each
arm's best classes; detection: mAP in BEV and 3D and the AP of the best classes), energy per scene
(spiking and ANN-equivalent), inference time per scene and wall time per run.

    python benchmarks/dense_prediction.py --config configs/segment_modelnet40_scenes.yaml \
        --arms scratch: svl:init=runs/labelfree_v08/final.safetensors ann:model.name=e3dsnn_unet_t_ann \
        --seeds 0 1 2 --jobs 2 --out runs/bench_seg train.epochs=12
    python benchmarks/dense_prediction.py --config configs/detect_modelnet40_scenes.yaml \
        --arms scratch: ann:model.name=e3dsnn_det_t_ann --jobs 2 --out runs/bench_det data.agnostic=true

Writes OUT/summary.{md,json}; `--reuse` keeps finished runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from _summary import run_logged, write_summary  # benchmarks/_summary.py


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
        for f in [pool.submit(run_logged, cmd, run_dir, args.threads) for _, _, run_dir, cmd in todo]:
            f.result()
    rows = []
    for name, s, run_dir, _ in plan:
        res = json.loads((run_dir / "results.json").read_text())
        e = res.get("energy") or {}
        row = {"arm": name, "seed": s, "energy_snn_mj": e.get("energy_snn_mj"),
               "energy_ann_mj": e.get("energy_ann_mj"), "wall_s": res.get("wall_seconds"),
               "ms": res.get("ms_per_scene", res.get("ms_per_frame"))}  # fmt: skip
        if "miou" in res:
            per = {c["class"]: c["iou"] for c in res["per_class"] if c.get("iou") is not None}
            row.update(miou=res["miou"], oa=res["oa"], macc=res["macc"], per_class=per,
                       points_scored=res.get("points_scored"))  # fmt: skip
        else:
            lv = res["map_level"]
            per = {c: v[lv] for c, v in res["ap_bev"].items() if v.get(lv) == v.get(lv)}  # not NaN
            row.update(map_bev=res["map_bev"], map3d=res["map3d"], per_class=per)
        rows.append(row)

    def ms(vals: list[float], scale: float = 100.0, nd: int = 2) -> str:
        v = scale * np.array(vals, float)
        return f"{v.mean():.{nd}f} ± {v.std(ddof=1) if len(v) > 1 else 0:.{nd}f}"

    seg = "miou" in rows[0]
    metrics = [("miou", "mIoU %"), ("oa", "OA %"), ("macc", "mAcc %")] if seg else [
        ("map_bev", "mAP BEV %"), ("map3d", "mAP 3D %")]  # fmt: skip
    best_what = "best classes (IoU %)" if seg else "best classes (AP BEV %)"
    lines = [f"{'Segmentation' if seg else 'Detection'}, {args.config} {' '.join(args.overrides)} "
             f"(seeds {args.seeds})", ""]  # fmt: skip
    head = [m for _, m in metrics] + [best_what, "SNN mJ / scene", "ANN-eq. mJ", "ms / scene", "wall s / run"]
    lines += ["| arm | " + " | ".join(head) + " |", "|---" * (len(head) + 1) + "|"]
    for arm in args.arms:
        name = arm.partition(":")[0]
        rs = [r for r in rows if r["arm"] == name]
        classes = rs[0]["per_class"]
        mean = {c: np.mean([r["per_class"].get(c, 0.0) for r in rs]) for c in classes}
        best = ", ".join(f"{c} {100 * v:.0f}" for c, v in sorted(mean.items(), key=lambda kv: -kv[1])[:4])
        en = [r["energy_snn_mj"] for r in rs if r["energy_snn_mj"] is not None]
        ea = [r["energy_ann_mj"] for r in rs if r["energy_ann_mj"] is not None]
        cells = [ms([r[k] for r in rs]) for k, _ in metrics]
        cells += [best, f"{np.mean(en):.4f}" if en else "-", f"{np.mean(ea):.4f}" if ea else "-",
                  ms([r["ms"] for r in rs], 1.0, 1), f"{np.mean([r['wall_s'] for r in rs]):.0f}"]  # fmt: skip
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if seg:  # every labelled test point is scored (None: a run from before that protocol)
        scored = sorted({r.get("points_scored") for r in rows}, key=str)
        lines += ["", f"test points scored per run: {', '.join(map(str, scored))}"]
    write_summary(out, "\n".join(lines), rows)


if __name__ == "__main__":
    main()
