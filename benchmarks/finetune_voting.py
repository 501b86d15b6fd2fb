"""Test-time voting on a fine-tuned checkpoint: OA / class-mean with 1 pass and with N passes
(the plain pass plus N-1 anisotropically scaled ones, softmax averaged), side by side.

    python benchmarks/finetune_voting.py runs/bench_finetune_modelnet40/e3dsnn_t_scratch_s0 --votes 10
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def main() -> None:
    from svl.eval.zeroshot import class_mean_accuracy
    from svl.models import load_model
    from svl.tasks import load_task_config

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", help="an `svl finetune` output folder (config.yaml + final.safetensors)")
    ap.add_argument("--votes", type=int, default=10)
    args = ap.parse_args()
    run = Path(args.run_dir)
    cls, cfg = load_task_config("classification", run / "config.yaml", [f"eval.votes={args.votes}"])
    task = cls(cfg)
    encoder = load_model(run / "final.safetensors", kind="svl-classifier").model
    y = task.test_set.labels()
    for votes in (1, args.votes):
        cfg.eval.votes = votes
        t0 = time.perf_counter()
        p = task.predict(encoder).numpy()
        oa = float((p.argmax(1) == y).mean())
        macc = class_mean_accuracy(p, y, len(task.classes))
        dt = time.perf_counter() - t0
        print(f"votes {votes:>2}: OA {100 * oa:.2f}  class-mean {100 * macc:.2f}  ({dt:.0f}s)", flush=True)


if __name__ == "__main__":
    main()
