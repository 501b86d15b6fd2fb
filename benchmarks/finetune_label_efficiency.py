"""Protocol 2 of the fine-tuning issue: label efficiency on ModelNet40, scratch vs SVL-pretrained init.

For each share of the training labels (class-balanced, `data.label_seed` = the seed) and each seed,
one `svl finetune` run from scratch and one from the SVL checkpoint, with the same recipe and the same
budget in training samples (epochs = ceil(budget / labelled shapes)), the last epoch reported on the
full test split. The SVL checkpoint must come from a pretraining that saw no labels:
configs/pretrain_labelfree_modelnet40.yaml (image-teacher alignment + MSE on the train clouds).

    python benchmarks/finetune_label_efficiency.py --init runs/labelfree_modelnet40/final.safetensors \
        --fractions 0.01 0.1 --seeds 0 1 2 --budget 10000
    python benchmarks/finetune_label_efficiency.py --init ... --fractions 1.0 --seeds 0 --budget 10000 --reuse

Prints mean +- sample std per (share, init) and the gain, and writes OUT/summary.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from _summary import write_summary  # benchmarks/_summary.py


def labelled_count(fraction: float, seed: int) -> int:
    from svl.data import build_dataset
    from svl.data.splits import balanced_fraction

    y = build_dataset("modelnet40", "train").labels()
    return len(balanced_fraction(y, np.arange(len(y)), fraction, seed))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--init", required=True, help="SVL checkpoint (label-free pretraining)")
    ap.add_argument("--fractions", nargs="+", type=float, default=[0.01, 0.1, 1.0])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument(
        "--budget", type=int, default=10000, help="training samples per run (same for both inits)"
    )
    ap.add_argument("--model", default="e3dsnn_t")
    ap.add_argument("--out", default="runs/bench_label_efficiency")
    ap.add_argument("--reuse", action="store_true")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for frac in args.fractions:
        for seed in args.seeds:
            n = labelled_count(frac, seed)
            epochs = max(1, math.ceil(args.budget / n))
            for init in ("scratch", args.init):
                tag = "scratch" if init == "scratch" else "svl"
                run_dir = out / f"{args.model}_{tag}_f{frac:g}_s{seed}"
                if not (args.reuse and (run_dir / "results.json").exists()):
                    cmd = [
                        sys.executable, "-m", "svl", "finetune", "--overwrite", f"out_dir={run_dir}",
                        f"model.name={args.model}", f"init={init}", f"data.label_fraction={frac}",
                        f"data.label_seed={seed}", f"train.seed={seed}", f"train.epochs={epochs}",
                        "energy=false", "eval.monitor_test=false", *args.overrides,
                    ]  # fmt: skip
                    print("==", " ".join(cmd), flush=True)
                    t0 = time.perf_counter()
                    subprocess.run(cmd, check=True)
                    print(f"== {run_dir.name}: {time.perf_counter() - t0:.0f}s", flush=True)
                res = json.loads((run_dir / "results.json").read_text())
                rows.append(
                    {"fraction": frac, "seed": seed, "init": tag, "n_train": n, "epochs": epochs,
                     "oa": res["oa"], "macc": res["macc"], "wall_s": res["wall_seconds"]}
                )  # fmt: skip
    lines = [f"Label efficiency, {args.model}, budget {args.budget} training samples per run", ""]
    lines += ["| labels | shapes | epochs | scratch OA | SVL OA | gain | scratch mAcc | SVL mAcc | seeds |"]
    lines += ["|---|---|---|---|---|---|---|---|---|"]
    for frac in args.fractions:
        sel = {t: [r for r in rows if r["fraction"] == frac and r["init"] == t] for t in ("scratch", "svl")}
        if not sel["scratch"] or not sel["svl"]:
            continue

        def ms(rs: list[dict], k: str) -> str:
            v = 100 * np.array([r[k] for r in rs])
            return f"{v.mean():.2f} ± {v.std(ddof=1) if len(v) > 1 else 0:.2f}"

        gain = 100 * (np.mean([r["oa"] for r in sel["svl"]]) - np.mean([r["oa"] for r in sel["scratch"]]))
        r0 = sel["scratch"][0]
        lines.append(
            f"| {frac:.0%} | {r0['n_train']} | {r0['epochs']} | {ms(sel['scratch'], 'oa')} | "
            f"{ms(sel['svl'], 'oa')} | "
            f"{gain:+.2f} | {ms(sel['scratch'], 'macc')} | {ms(sel['svl'], 'macc')} | {len(sel['svl'])} |"
        )
    write_summary(out, "\n".join(lines), rows)


if __name__ == "__main__":
    main()
