"""Issue 30, the zero-shot spread: how much of it is the checkpoint selection path, not the seed.

For each finished `svl pretrain` run (the embedded default), the test-split zero-shot figures of
three checkpoints of the same training run, scored by the run's own evaluation (the task rebuilt from
its config.yaml): `best` (what the run ships: the epoch `val/score` picked),
`last` (the end of the schedule) and `average` (the element-wise mean of best and last, a two-point
weight average; BN running statistics averaged too), and for a run trained with `train.ema` also `ema`
(the run's final weight average; `best` is then the epoch picked on the average's validation score).
Class names in the 64 templates; gamma calibrated
on the validation split's pseudo-unseen classes (never on test). No training: minutes per run.

    python benchmarks/zsl_selection.py --runs runs/readme27/t1_s0 runs/readme27/t1_s1 runs/readme27/t1_s2 \
        --out runs/bench_zsl_selection
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from _summary import mean_std, write_summary  # benchmarks/_summary.py

from svl.checkpoint import load_checkpoint, save_checkpoint


def averaged(best: Path, last: Path, out: Path) -> Path:
    a, meta = load_checkpoint(best)
    b, _ = load_checkpoint(last)
    avg = {
        k: (v.double() + b[k].double()).div(2).to(v.dtype) if v.is_floating_point() else v
        for k, v in a.items()
    }
    return save_checkpoint(out, avg, {**meta, "averaged": [str(best), str(last)]})


def evaluate(run: Path, ckpt: Path, out: Path) -> dict:
    """The run's own final evaluation (calibration on validation, test via the folded head) on `ckpt`:
    the pretraining task rebuilt from the run's config.yaml, teacher targets from the cache."""
    from svl.tasks import load_task_config

    out.mkdir(parents=True, exist_ok=True)
    cls, cfg = load_task_config("pretrain", run / "config.yaml", [f"out_dir={out}", "energy=false"])
    job = cls.recipe(cfg)(cfg)
    job.setup()
    return job.evaluate({"final_path": str(ckpt)})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", nargs="+", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    rows = []
    for run in map(Path, args.runs):
        summary = json.loads((run / "results.json").read_text())
        ckpts = {"best": run / "best.safetensors", "last": run / "last.safetensors"}
        ckpts["average"] = averaged(ckpts["best"], ckpts["last"], out / f"{run.name}_average.safetensors")
        if (run / "ema.safetensors").exists():
            ckpts["ema"] = run / "ema.safetensors"
        for variant, ckpt in ckpts.items():
            res = evaluate(run, ckpt, out / f"{run.name}_{variant}")["names"]
            row = {
                "run": run.name,
                "variant": variant,
                "best_step": summary.get("best_step"),
                "last_step": summary["train"]["step"],
                "zsl_top1": res["zsl_top1"],
                "H_calibrated": res["gzsl_calibrated"]["H"],
                "gamma": res["gamma"],
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    lines = [
        "| checkpoint | ZSL top-1 per run | mean ± std | calibrated H per run | mean ± std |",
        "|---|---|---|---|---|",
    ]
    for variant in ("best", "last", "average", "ema"):
        rs = [r for r in rows if r["variant"] == variant]
        if not rs:
            continue
        z, h = [100 * r["zsl_top1"] for r in rs], [100 * r["H_calibrated"] for r in rs]

        lines.append(
            f"| {variant} | {' / '.join(f'{x:.2f}' for x in z)} | {mean_std(z)} | "
            f"{' / '.join(f'{x:.2f}' for x in h)} | {mean_std(h)} |"
        )
    write_summary(out, "\n".join(lines), rows)


if __name__ == "__main__":
    main()
