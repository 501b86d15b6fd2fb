"""VL2Spike benchmark: CE-only Spikformer vs VL2Spike vs the ANN twin (and ablations), same budget.

Each arm is `name:key=value,key=value` (overrides on the config) run once per seed; `--jobs` runs
that many at once on `--threads` threads each. Reports mean +- sample std of overall accuracy,
class-mean accuracy and view-retrieval Recall@1 (when the data has views), the energy per image
(spiking and ANN-equivalent, and the ratio to the ANN twin's energy when an arm is named `ann`), the
mean firing rate the spiking figure rests on (per layer group in summary.json),
the teacher's own test accuracy, and wall time per run. The arms below are the defaults.

    python benchmarks/vl2spike.py --config configs/distill_modelnet40_views.yaml --seeds 0 1 2 \
        --jobs 2 --out runs/bench_vl2spike_views
    python benchmarks/vl2spike.py --config configs/distill_digits.yaml --out runs/bench_vl2spike_digits
    python benchmarks/vl2spike.py --config configs/distill_modelnet40_views.yaml --ablation \
        --seeds 0 --out runs/ablation_views      # every term switched off in turn

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

OFF = "distill.svs_align=0,distill.svs_temporal=0,distill.spl_proto=0,distill.spl_logit=0"
# The ANN twin runs one step: with direct encoding every step of a ReLU network is the same.
ARMS = [f"ce:{OFF}", "vl2spike:", "ann:model.name={ann},model.T=1"]
ABLATION = [
    "vl2spike:",
    "no_svs_align:distill.svs_align=0",
    "no_svs_temporal:distill.svs_temporal=0",
    "no_spl_proto:distill.spl_proto=0",
    "no_spl_logit:distill.spl_logit=0",
    "svs_pooled_only:distill.svs_level=pooled",
    "svs_contrastive:distill.svs_mode=contrastive",
    f"ce:{OFF}",
]


def _model_name(config: str) -> str:
    import yaml

    return (yaml.safe_load(Path(config).read_text()).get("model") or {}).get("name", "spikformer_t")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True)
    ap.add_argument("--arms", nargs="+", default=None, help="name:key=value,key=value ...")
    ap.add_argument("--ablation", action="store_true", help="run the ablation arms instead")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--ann-seeds", type=int, default=1, help="the ANN twin runs the first N seeds only")
    ap.add_argument("--jobs", type=int, default=1, help="runs at once")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per run")
    ap.add_argument("--out", default="runs/bench_vl2spike")
    ap.add_argument("--reuse", action="store_true")
    ap.add_argument("--no-warm", action="store_true", help="teacher caches exist: no first run alone")
    ap.add_argument("overrides", nargs="*", help="key=value for every arm")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = next((o.split("=", 1)[1] for o in args.overrides if o.startswith("model.name=")), None)
    ann = f"{model or _model_name(args.config)}_ann"
    arms = args.arms or (ABLATION if args.ablation else [a.format(ann=ann) for a in ARMS])
    plan = []
    for arm in arms:
        name, _, extra = arm.partition(":")
        for s in args.seeds[: args.ann_seeds] if name == "ann" else args.seeds:
            run_dir = out / f"{name}_seed{s}"
            cmd = [
                sys.executable, "-m", "svl", "distill", "--overwrite", "--config", args.config,
                f"out_dir={run_dir}", f"train.seed={s}", *args.overrides, *[o for o in extra.split(",") if o],
            ]  # fmt: skip
            plan.append((name, s, run_dir, cmd))
    todo = [p for p in plan if not (args.reuse and (p[2] / "results.json").exists())]
    # Build the teacher caches once before the parallel runs (they would wait on its lock anyway).
    first = [] if args.no_warm else [p for p in todo if p[0] != "ce"][:1]
    for _, _, run_dir, cmd in first:
        run_logged(cmd, run_dir, max(args.threads, args.jobs))
    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        rest = [p for p in todo if p not in first]
        futures = [pool.submit(run_logged, cmd, run_dir, args.threads) for _, _, run_dir, cmd in rest]
        for f in futures:
            f.result()
    rows = []
    for name, s, run_dir, _ in plan:
        res = json.loads((run_dir / "results.json").read_text())
        e = res.get("energy") or {}
        rows.append(
            {
                "arm": name, "seed": s, "oa": res["oa"], "macc": res["macc"], "r1": res.get("recall@1"),
                "energy_snn_mj": e.get("energy_snn_mj"), "energy_ann_mj": e.get("energy_ann_mj"),
                "firing_rate": e.get("firing_rate"), "firing_rates": e.get("firing_rates"),
                "teacher_oa": (res.get("teacher") or {}).get("test_oa"),
                "ms": res.get("ms_per_sample"), "wall_s": res.get("wall_seconds"),
            }
        )  # fmt: skip

    def ms(vals: list[float], scale: float = 100.0, nd: int = 2) -> str:
        v = scale * np.array([x for x in vals if x is not None], float)
        if not len(v):
            return "-"
        return f"{v.mean():.{nd}f} ± {v.std(ddof=1) if len(v) > 1 else 0:.{nd}f}"

    names = [a.partition(":")[0] for a in arms]
    ann_e = [r["energy_snn_mj"] for r in rows if r["arm"] == "ann" and r["energy_snn_mj"] is not None]
    ann_mj = float(np.mean(ann_e)) if ann_e else None
    lines = [f"VL2Spike, {args.config} {' '.join(args.overrides)} (seeds {args.seeds})", ""]
    head = ["OA %", "mAcc %", "R@1 %", "SNN mJ / img", "ANN-eq. mJ", "vs ANN twin", "firing rate",
            "teacher OA %", "wall s"]  # fmt: skip
    lines += ["| arm | " + " | ".join(head) + " |", "|---" * (len(head) + 1) + "|"]
    for name in names:
        rs = [r for r in rows if r["arm"] == name]
        en = float(np.mean([r["energy_snn_mj"] for r in rs]))
        cells = [ms([r["oa"] for r in rs]), ms([r["macc"] for r in rs]), ms([r["r1"] for r in rs]),
                 f"{en:.4f}", f"{np.mean([r['energy_ann_mj'] for r in rs]):.4f}",
                 f"{en / ann_mj:.3f}" if ann_mj else "-", ms([r["firing_rate"] for r in rs], 1.0, 4),
                 ms([r["teacher_oa"] for r in rs]),
                 f"{np.mean([r['wall_s'] for r in rs]):.0f}"]  # fmt: skip
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if "ce" in names and "vl2spike" in names:
        gain = [r["oa"] for r in rows if r["arm"] == "vl2spike"]
        base = [r["oa"] for r in rows if r["arm"] == "ce"]
        lines += ["", f"VL2Spike - CE-only: {100 * (np.mean(gain) - np.mean(base)):+.2f} OA points"]
    write_summary(out, "\n".join(lines), rows)


if __name__ == "__main__":
    main()
