"""Protocol 1 of the fine-tuning issue: full ModelNet40 classification, E-3DSNN-T, 1,024 points, xyz.

Each model is one `svl finetune` run (a subprocess) with the E-3DSNN recipe (SGD nesterov lr 0.1,
wd 1e-3, step decay at 60% / 80%, label smoothing 0.2) at the epoch budget given, all 9,843 training
shapes, no checkpoint selection (the last epoch is reported). Test accuracy is logged after every
epoch for the curve only (`eval.monitor_test`). Prints the curve and a summary table (OA, class-mean,
energy per sample, wall time) and writes OUT/summary.{md,json}.

    python benchmarks/finetune_modelnet40.py --epochs 12 --models e3dsnn_t e3dsnn_t_ann
    python benchmarks/finetune_modelnet40.py --epochs 12 --models e3dsnn_t --init runs/x/final.safetensors

The 300-epoch GPU preset is configs/finetune_modelnet40_full.yaml.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from _summary import write_summary  # benchmarks/_summary.py


def curve(run_dir: Path) -> list[dict]:
    rows = []
    for line in (run_dir / "log.jsonl").read_text().splitlines():
        r = json.loads(line)
        if r.get("kind") == "val" and "test/oa" in r:
            rows.append({"epoch": r["epoch"], "step": r["step"], "oa": r["test/oa"], "macc": r["test/macc"]})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--models", nargs="+", default=["e3dsnn_t", "e3dsnn_t_ann"])
    ap.add_argument("--init", default="scratch")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="runs/bench_finetune_modelnet40")
    ap.add_argument("--reuse", action="store_true", help="keep finished runs")
    ap.add_argument("overrides", nargs="*", help="extra key=value overrides for every run")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in args.models:
        run_dir = out / f"{name}_{'scratch' if args.init == 'scratch' else 'svl'}_s{args.seed}"
        if not (args.reuse and (run_dir / "results.json").exists()):
            cmd = [
                sys.executable, "-m", "svl", "finetune", "--overwrite", f"out_dir={run_dir}",
                f"model.name={name}", f"init={args.init}", f"train.epochs={args.epochs}",
                f"train.seed={args.seed}", "eval.monitor_test=true", *args.overrides,
            ]  # fmt: skip
            print("==", " ".join(cmd), flush=True)
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True)
            print(f"== {name}: {time.perf_counter() - t0:.0f}s", flush=True)
        res = json.loads((run_dir / "results.json").read_text())
        rows.append(
            {"model": name, "init": args.init, "oa": res["oa"], "macc": res["macc"],
             "energy": res.get("energy"), "wall_s": res["wall_seconds"], "curve": curve(run_dir)}
        )  # fmt: skip
    lines = [f"Full ModelNet40, {args.epochs} epochs, init {args.init}, seed {args.seed}", ""]
    lines += ["| model | OA | class-mean | SNN mJ | ANN-equiv. mJ | wall |", "|---|---|---|---|---|---|"]
    for r in rows:
        e = r["energy"] or {}
        lines.append(
            f"| {r['model']} | {100 * r['oa']:.2f} | {100 * r['macc']:.2f} | "
            f"{e.get('energy_snn_mj', 0):.4f} | "
            f"{e.get('energy_ann_mj', 0):.4f} | {r['wall_s'] / 60:.1f} min |"
        )
    lines += ["", "test OA after each epoch (curve only, never selected on):", ""]
    for r in rows:
        lines.append(f"{r['model']}: " + ", ".join(f"{100 * c['oa']:.1f}" for c in r["curve"]))
    write_summary(out, "\n".join(lines), rows)


if __name__ == "__main__":
    main()
