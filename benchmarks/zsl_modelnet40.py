"""ModelNet40 unseen-class zero-shot: spiking vs ANN twin, the MTA ablation and T x D settings.

Each variant is one `svl pretrain` run (a subprocess, so runs cannot leak state into each other)
with the embedded default protocol plus the listed overrides; the teacher embedding cache is shared.
Prints one table (ZSL top-1, GZSL seen/unseen/H with and without calibration, wall time, energy)
and writes it with the raw results to OUT/summary.{md,json}.

    python benchmarks/zsl_modelnet40.py                       # every variant, default length
    python benchmarks/zsl_modelnet40.py --epochs 4 --only spiking ann
    python benchmarks/zsl_modelnet40.py --epochs 6 --reuse   # pick up where an interrupted run stopped
    python benchmarks/zsl_modelnet40.py --seeds 0 1 2 --only spiking TxD_1x2 --reuse

With several seeds each variant runs once per seed (`seed=S train.seed=S`: the pseudo-unseen pick,
shuffling, augmentation and target draws all change) and the table gives mean +- sample std.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from svl.utils import atomic_write

VARIANTS: dict[str, list[str]] = {
    "spiking": [],  # E-3DSNN-T, T x D = 1 x 4, text + image + MSE (the default)
    "ann": ["model.name=e3dsnn_t_ann"],
    "text_only": ["loss.l_image=0", "loss.l_mse=0"],
    "image_only": ["loss.l_text=0", "loss.l_mse=0"],
    "both": ["loss.l_mse=0"],
    "TxD_1x2": ["model.T=1", "model.D=2"],
    "TxD_2x2": ["model.T=2", "model.D=2"],
    "label_pos": ["loss.text_positives=label"],
    "view_mean": ["teacher.view_target=mean"],
    "views224": ["teacher.view_size=224"],
    "no_mse": ["loss.l_mse=0"],
}


def run(
    name: str, overrides: list[str], out: Path, epochs: int | None, reuse: bool, seed: int | None
) -> dict:
    run_dir = out / (name if seed is None else f"{name}_s{seed}")
    if seed is not None:
        overrides = [*overrides, f"seed={seed}", f"train.seed={seed}"]
    if reuse and (run_dir / "summary_entry.json").exists():
        print(f"== {name}: reusing {run_dir}", flush=True)
        return json.loads((run_dir / "summary_entry.json").read_text())
    if reuse and (run_dir / "results.json").exists():  # finished, but its driver did not record it
        res = json.loads((run_dir / "results.json").read_text())
        res["name"], res["wall_s"], res["overrides"], res["seed"] = name, res["wall_seconds"], overrides, seed
        print(f"== {name}: reusing {run_dir}/results.json", flush=True)
        return res
    cmd = [sys.executable, "-m", "svl", "pretrain", f"out_dir={run_dir}", *overrides]
    if epochs:
        cmd.append(f"train.epochs={epochs}")
    if (run_dir / "config.yaml").exists():  # svl refuses a folder holding a run without one of these
        cmd.append("--resume" if reuse else "--overwrite")
    t0 = time.perf_counter()
    print(f"== {name}: {' '.join(cmd[3:])}", flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        print(proc.stdout[-3000:], proc.stderr[-3000:], sep="\n")
        return {"name": name, "error": proc.returncode, "wall_s": wall}
    res = json.loads((run_dir / "results.json").read_text())
    res["name"], res["wall_s"], res["overrides"], res["seed"] = name, wall, overrides, seed
    with atomic_write(run_dir / "summary_entry.json", "w") as f:  # --reuse trusts only complete entries
        json.dump(res, f, indent=2)
    return res


def row(r: dict) -> str:
    if "error" in r:
        return f"| {r['name']} | failed (rc {r['error']}) |" + " |" * 9
    n = r["names"]
    g0, g1 = n["gzsl"], n["gzsl_calibrated"]
    d = r.get("descriptions", {})
    e = r.get("energy", {})
    pct = lambda v: f"{100 * v:.1f}"  # noqa: E731
    return (
        f"| {r['name']} | {pct(n['zsl_top1'])} | {pct(d.get('zsl_top1', float('nan')))} | "
        f"{pct(g0['seen'])} / {pct(g0['unseen'])} / {pct(g0['H'])} | "
        f"{pct(g1['seen'])} / {pct(g1['unseen'])} / {pct(g1['H'])} | "
        f"{r['wall_s'] / 60:.1f} | {e.get('energy_snn_mj', float('nan')):.4f} | "
        f"{e.get('energy_ann_mj', float('nan')):.4f} |"
    )


def _aggregate(runs: list[dict]) -> dict:
    """Mean and sample std over seeds of every number in the table (runs that failed are dropped)."""
    ok = [r for r in runs if "error" not in r]
    if not ok:
        return runs[0]
    keys = [
        ("names", "zsl_top1"), ("descriptions", "zsl_top1"), ("names", "gzsl", "seen"),
        ("names", "gzsl", "unseen"), ("names", "gzsl", "H"), ("names", "gzsl_calibrated", "seen"),
        ("names", "gzsl_calibrated", "unseen"), ("names", "gzsl_calibrated", "H"),
        ("descriptions", "gzsl_calibrated", "H"), ("energy", "energy_snn_mj"), ("energy", "energy_ann_mj"),
    ]  # fmt: skip

    def get(r: dict, path: tuple) -> float:
        for k in path:
            r = r.get(k, {}) if isinstance(r, dict) else {}
        return float(r) if isinstance(r, (int, float)) else float("nan")

    stats = {}
    for path in keys:
        v = np.array([get(r, path) for r in ok])
        stats[".".join(path)] = (float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0)
    stats["wall_s"] = (float(np.mean([r["wall_s"] for r in ok])), 0.0)
    return {"name": ok[0]["name"], "n": len(ok), "seeds": [r.get("seed") for r in ok], "stats": stats}


def seed_row(a: dict) -> str:
    if "stats" not in a:
        return row(a)
    s = a["stats"]
    pm = lambda k, f=100: f"{f * s[k][0]:.1f} ± {f * s[k][1]:.1f}"  # noqa: E731
    return (
        f"| {a['name']} (n={a['n']}) | {pm('names.zsl_top1')} | {pm('descriptions.zsl_top1')} | "
        f"{pm('names.gzsl.H')} | {pm('names.gzsl_calibrated.seen')} / {pm('names.gzsl_calibrated.unseen')} / "
        f"**{pm('names.gzsl_calibrated.H')}** | {pm('descriptions.gzsl_calibrated.H')} | "
        f"{s['wall_s'][0] / 60:.1f} | {s['energy.energy_snn_mj'][0]:.4f} |"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/bench_zsl", help="folder for the runs and the summary")
    ap.add_argument("--epochs", type=int, default=None, help="override train.epochs for every variant")
    ap.add_argument("--only", nargs="*", default=None, choices=sorted(VARIANTS), help="run these variants")
    ap.add_argument("--reuse", action="store_true", help="keep variants that already finished in OUT")
    ap.add_argument("--seeds", nargs="*", type=int, default=None, help="run each variant once per seed")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    names = args.only or list(VARIANTS)
    results = []
    header = (
        "| variant | ZSL top-1 (names) | ZSL top-1 (descr.) | GZSL seen / unseen / H | "
        "GZSL calibrated seen / unseen / H | wall (min) | energy SNN (mJ) | energy ANN-eq. (mJ) |\n"
        "|---|---|---|---|---|---|---|---|"
    )
    if args.seeds:
        header = (
            "| variant | ZSL top-1 (names) | ZSL top-1 (descr.) | GZSL H (plain) | "
            "GZSL calibrated seen / unseen / H (names) | calibrated H (descr.) | wall (min) | "
            "energy SNN (mJ) |\n"
            "|---|---|---|---|---|---|---|---|"
        )
    groups: dict[str, list[dict]] = {}
    for seed in args.seeds or [None]:  # seed-major: every variant gets its first seed early
        for name in names:
            r = run(name, VARIANTS[name], out, args.epochs, args.reuse, seed)
            results.append(r)
            groups.setdefault(name, []).append(r)
            if args.seeds:
                table = header + "\n" + "\n".join(seed_row(_aggregate(g)) for g in groups.values())
            else:
                table = header + "\n" + "\n".join(row(r) for r in results)
            print(table, flush=True)
            (out / "summary.md").write_text(table + "\n")
            (out / "summary.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
