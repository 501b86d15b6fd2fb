"""Size, forward time per cloud and peak memory of every registered model, spiking vs ANN twin.

Each (model, points) configuration runs in its own subprocess so peak memory (RSS growth during the
timed forward passes over the state after building the model and its input) is not polluted by
earlier runs. Inputs: batch 16 of real ModelNet40 test clouds; the 1024-point clouds are used as
they are, 10,000-point clouds are made by resampling each real cloud with replacement plus 5 mm
Gaussian jitter (ModelNet40 here ships only 1024 points per shape). Eval mode, no grad, integer
spike mode, models built with their 40-way head. Also times an E-3DSNN-T training step
(forward + backward + AdamW on 32 clouds), the pretraining job's inner loop.

    .venv/bin/python benchmarks/models.py                       # everything
    .venv/bin/python benchmarks/models.py --models 'e3dsnn_t*' --points 1024 --repeats 3
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def _clouds(n_points: int, batch: int, seed: int = 0) -> torch.Tensor:
    from svl.utils import data_root

    root = data_root(required=True)
    with np.load(root / "modelnet40" / "modelnet40_pcd1024_test.npz") as z:
        idx = np.linspace(0, len(z["labels"]) - 1, batch).astype(int)
        pts = z["points"][idx].astype(np.float32)
    if n_points == pts.shape[1]:
        return torch.from_numpy(pts)
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, pts.shape[1], size=(batch, n_points))
    out = np.take_along_axis(pts, pick[..., None], 1) + rng.normal(0, 0.005, (batch, n_points, 3))
    return torch.from_numpy(out.astype(np.float32))


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def child(name: str, clouds: str, repeats: int) -> dict:
    from svl.models import count_params, create_model

    torch.manual_seed(0)
    model = create_model(name).eval()
    x = torch.from_numpy(np.load(clouds))  # small file written by the parent: no large transient
    batch, n_points = x.shape[:2]
    base = _rss_mb()
    times = []
    with torch.no_grad():
        model(x)  # warm-up (allocator, kernel maps, FPS code paths)
        for _ in range(repeats):
            t = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - t)
    return {
        "model": name,
        "points": n_points,
        "params": count_params(model),
        "ms_per_cloud": 1000 * min(times) / batch,
        "peak_mb": _rss_mb() - base,
    }


def train_step(batch: int = 32, steps: int = 4) -> float:
    from svl.models import create_model

    torch.manual_seed(0)
    model = create_model("e3dsnn_t", out_dim=384).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = _clouds(1024, batch)
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        model(x).pow(2).mean().backward()
        opt.step()
        opt.zero_grad()
        times.append(time.perf_counter() - t)
    return min(times[1:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="*", help="shell pattern over registered names")
    ap.add_argument("--points", type=int, nargs="+", default=[1024, 10000])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--child", nargs=2, metavar=("MODEL", "CLOUDS_NPY"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], args.child[1], args.repeats)))
        return
    tmp = Path(tempfile.mkdtemp(prefix="svl-bench-models-"))
    from svl.models import list_models

    names = [n for n in list_models() if not n.endswith("_ann") and fnmatch.fnmatchcase(n, args.models)]
    threads = torch.get_num_threads()
    print(f"torch {torch.__version__}, {threads} threads, batch {args.batch}, best of {args.repeats}")
    print(f"{'model':22s} {'points':>6s} {'params':>8s} | {'SNN ms/cloud':>12s} {'peak MB':>8s} | "
          f"{'ANN ms/cloud':>12s} {'peak MB':>8s} | SNN/ANN time")  # fmt: skip
    for name in names:
        for n in args.points:
            clouds = tmp / f"clouds{n}.npy"
            if not clouds.exists():
                np.save(clouds, _clouds(n, args.batch).numpy())
            row = {}
            for m in (name, name + "_ann"):
                cmd = [sys.executable, __file__, "--child", m, str(clouds), "--repeats", str(args.repeats)]
                res = subprocess.run(cmd, capture_output=True, text=True)
                if res.returncode != 0:
                    raise SystemExit(f"{m} @ {n} points failed:\n{res.stderr[-2000:]}")
                row[m] = json.loads(res.stdout.strip().splitlines()[-1])
            s, a = row[name], row[name + "_ann"]
            ts, ta = s["ms_per_cloud"], a["ms_per_cloud"]
            print(
                f"{name:22s} {n:6d} {s['params'] / 1e6:7.2f}M | {ts:12.2f} {s['peak_mb']:8.0f} | "
                f"{ta:12.2f} {a['peak_mb']:8.0f} | {ts / ta:.2f}",
                flush=True,
            )
    if fnmatch.fnmatchcase("e3dsnn_t", args.models):
        t = train_step()
        print(f"e3dsnn_t train step (fwd+bwd+AdamW, 32 clouds x 1024 pts, out_dim 384): {t:.3f} s")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
