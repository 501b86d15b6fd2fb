"""Protocol 3 of the fine-tuning issue: few-shot ModelNet40, the standard point-cloud protocol.

N-way K-shot episodes (N in {5, 10}, K in {10, 20}): N classes drawn, K training shapes of each as the
support set, 20 test shapes of each as queries; 10 fixed episodes per setting (`data.few_shot.episode`
0..9, `few_shot.seed` fixed), mean +- std over episodes. Each episode is one `classification` task run
in this process (no per-run start-up): a linear probe on the frozen encoder and/or a full fine-tune,
from scratch and from the SVL checkpoint.

    python benchmarks/finetune_fewshot.py --init runs/labelfree_modelnet40/final.safetensors \
        --settings 5x10 5x20 10x10 10x20 --modes linear_probe
    python benchmarks/finetune_fewshot.py --init ... --settings 5x10 --modes full --epochs 40

Writes OUT/summary.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
from _summary import write_summary  # benchmarks/_summary.py


def main() -> None:
    from svl.tasks import load_task_config, run_task

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--init", required=True)
    ap.add_argument("--settings", nargs="+", default=["5x10", "5x20", "10x10", "10x20"], help="WAYSxSHOTS")
    ap.add_argument("--modes", nargs="+", default=["linear_probe", "full"])
    ap.add_argument("--episodes", type=int, default=10)
    ap.add_argument("--epochs", type=int, default=40, help="full fine-tune epochs over the support set")
    ap.add_argument("--probe-epochs", type=int, default=100)
    ap.add_argument("--model", default="e3dsnn_t")
    ap.add_argument("--out", default="runs/bench_fewshot")
    ap.add_argument("--precise-bn", type=int, default=8, help="eval.precise_bn batches (0 = off)")
    ap.add_argument("--reuse", action="store_true")
    args = ap.parse_args()
    logging.getLogger("svl").setLevel(logging.WARNING)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for setting in args.settings:
        ways, shots = (int(v) for v in setting.split("x"))
        for mode in args.modes:
            for init in ("scratch", args.init):
                tag = "scratch" if init == "scratch" else "svl"
                for ep in range(args.episodes):
                    run_dir = out / f"{setting}_{mode}_{tag}_e{ep}"
                    if args.reuse and (run_dir / "results.json").exists():
                        res = json.loads((run_dir / "results.json").read_text())
                    else:
                        epochs = args.probe_epochs if mode == "linear_probe" else args.epochs
                        pbn = args.precise_bn
                        _, cfg = load_task_config("classification", None, [
                            f"out_dir={run_dir}", f"model.name={args.model}", f"init={init}", f"mode={mode}",
                            f"data.few_shot.ways={ways}", f"data.few_shot.shots={shots}",
                            f"data.few_shot.episode={ep}", f"train.epochs={epochs}", "train.batch_size=16",
                            "train.drop_last=false", "train.ckpt_every_steps=0", "energy=false",
                            "eval.monitor_test=false", f"eval.precise_bn={pbn}",
                        ])  # fmt: skip
                        t0 = time.perf_counter()
                        res = run_task(cfg, overwrite=True)
                        res = {k: v for k, v in res.items() if k != "table"}
                        print(f"{setting} {mode} {tag} episode {ep}: OA {100 * res['oa']:.1f} "
                              f"({time.perf_counter() - t0:.0f}s)", flush=True)  # fmt: skip
                    rows.append(
                        {"setting": setting, "mode": mode, "init": tag, "episode": ep, "oa": res["oa"]}
                    )
    lines = ["Few-shot ModelNet40 (queries: 20 test shapes per class; mean ± std over episodes)", ""]
    lines += ["| setting | mode | scratch | SVL | gain | episodes |", "|---|---|---|---|---|---|"]
    for setting in args.settings:
        for mode in args.modes:
            key = (setting, mode)
            v = {
                t: 100
                * np.array([r["oa"] for r in rows if (r["setting"], r["mode"]) == key and r["init"] == t])
                for t in ("scratch", "svl")
            }
            if not len(v["scratch"]) or not len(v["svl"]):
                continue
            s, p = v["scratch"], v["svl"]
            lines.append(
                f"| {setting.replace('x', '-way ')}-shot | {mode} | {s.mean():.1f} ± {s.std(ddof=1):.1f} | "
                f"{p.mean():.1f} ± {p.std(ddof=1):.1f} | {p.mean() - s.mean():+.1f} | {len(p)} |"
            )
    write_summary(out, "\n".join(lines), rows)


if __name__ == "__main__":
    main()
