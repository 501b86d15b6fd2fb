"""Benchmark svl's sparse convs against spconv (CPU, single thread) side by side. Not a test.

(a) 3 submanifold layers, 32 channels, 8 clouds x 10,000 points at voxel 0.02 (points on jittered
    sphere surfaces, so sites have surface-like neighbourhoods);
(b) an E-3DSNN-T-shaped stack (stem + 4 stages [16, 32, 64, 128], depth 1, I-LIF neurons) on 16
    ModelNet40 test clouds from ../shared/data at voxel 0.02.
Each (workload, backend) runs in its own subprocess so peak RSS is measured per configuration.
Figures: forward+backward median with kernel maps cached, cold kernel-map build, peak memory.

Usage: python benchmarks/sparse_conv.py [--runs 5] [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


def _peak_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def sphere_clouds(
    n_clouds: int = 8, n_points: int = 10_000, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    d = torch.randn(n_clouds, n_points, 3, generator=g)
    radius = 0.5 + 0.5 * torch.rand(n_clouds, 1, 1, generator=g)
    pts = d / d.norm(dim=-1, keepdim=True) * radius + 0.01 * torch.randn(n_clouds, n_points, 3, generator=g)
    return pts.reshape(-1, 3), torch.arange(n_clouds).repeat_interleave(n_points)


def modelnet_clouds(data: Path, n: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    path = data / "modelnet40" / "modelnet40_pcd1024_test.npz"
    if not path.exists():
        raise FileNotFoundError(f"{path}: ModelNet40 test npz not found (pass --data)")
    with np.load(path) as z:
        pts = torch.from_numpy(z["points"][:n].astype(np.float32))
    return pts.reshape(-1, 3), torch.arange(n).repeat_interleave(pts.shape[1])


def build(workload: str, backend: str) -> nn.Module:
    from svl import sparse as S

    if backend == "spconv":
        from svl.sparse import spconv_backend as B

        subm, down = B.SpconvSubMConv3d, B.SpconvSparseConv3d
    else:
        subm, down = S.SubMConv3d, S.SparseConv3d
    torch.manual_seed(0)
    if workload == "a":
        return nn.Sequential(subm(32, 32), subm(32, 32), subm(32, 32))
    from svl.spiking.neuron import ILIF

    e, chans = 16, [16, 32, 64, 128]
    layers: list[nn.Module] = [
        subm(3, e),
        S.SparseBatchNorm(e),
        ILIF(),
        subm(e, e),
        S.SparseBatchNorm(e),
        ILIF(),
    ]
    layers += [subm(e, e), S.SparseBatchNorm(e)]
    prev = e
    for c in chans:  # residual-free but otherwise T-shaped: SN -> down -> BN -> 2 x (SN -> SubM -> BN)
        layers += [ILIF(), down(prev, c), S.SparseBatchNorm(c)]
        layers += [ILIF(), subm(c, c), S.SparseBatchNorm(c), ILIF(), subm(c, c), S.SparseBatchNorm(c)]
        prev = c
    layers += [ILIF(), S.SparseLinear(prev, 40)]
    return nn.Sequential(*layers)


def worker(workload: str, backend: str, runs: int, data: Path) -> dict:
    from svl.sparse import voxelize

    if backend == "svl-1t":  # same thread count as spconv: the like-for-like comparison
        torch.set_num_threads(1)
        backend = "svl"

    xyz, batch = sphere_clouds() if workload == "a" else modelnet_clouds(data)
    st0, _ = voxelize(xyz, xyz, batch, 0.02)
    feats = torch.randn(st0.num_sites, 32) if workload == "a" else st0.features
    net = build(workload, backend)
    base = _rss_mb()

    def step(st):
        x = st.replace(features=feats.clone().requires_grad_(True))
        out = net(x)
        out.features.float().square().mean().backward()

    def cold():  # same sites, empty kernel-map cache
        from svl.sparse import SparseTensor

        return SparseTensor(st0.features, st0.coords, st0.batch_size)

    step(cold())  # warm-up (allocator, spconv JIT tables)
    cold_times, warm_times, build_times = [], [], []
    for _ in range(runs):
        st = cold()
        t0 = time.perf_counter()
        step(st)
        cold_times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        step(st)  # kernel maps already cached on st.kmaps
        warm_times.append(time.perf_counter() - t0)
        if backend == "svl":
            from svl.sparse.kmap import cached_strided_map, cached_submanifold_map

            st = cold()
            t0 = time.perf_counter()
            cached_submanifold_map(st, 3)
            cur = st
            if workload == "b":  # every stride of the stack
                for _ in range(4):
                    _, oc = cached_strided_map(cur, 2, 2)
                    cur = cur.replace(coords=oc, stride=cur.stride * 2)
                    cached_submanifold_map(cur, 3)
            build_times.append(time.perf_counter() - t0)
    res = {
        "sites": st0.num_sites,
        "fwd_bwd_ms": 1e3 * statistics.median(warm_times),
        "fwd_bwd_with_build_ms": 1e3 * statistics.median(cold_times),
        "peak_mb": _peak_mb() - base,
    }
    if build_times:
        res["kmap_build_ms"] = 1e3 * statistics.median(build_times)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--worker", nargs=2, metavar=("WORKLOAD", "BACKEND"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker[0], args.worker[1], args.runs, args.data)))
        return
    try:
        import spconv.pytorch  # noqa: F401

        backends = ["svl", "svl-1t", "spconv"]
    except Exception:
        backends = ["svl", "svl-1t"]
        print("spconv not installed: svl (2 threads and 1 thread) only")
    print(
        f"torch {torch.__version__}: svl with {torch.get_num_threads()} threads, "
        "svl-1t and spconv with 1 thread "
        "(spconv is forced to 1 thread because it is wrong with 2)"
    )
    for wl, name in [("a", "3 x SubM3 32ch, 8 x 10k pts"), ("b", "E-3DSNN-T stack, 16 ModelNet40")]:
        res = {}
        for be in backends:
            cmd = [
                sys.executable,
                __file__,
                "--worker",
                wl,
                be,
                "--runs",
                str(args.runs),
                "--data",
                str(args.data),
            ]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            res[be] = json.loads(out.strip().splitlines()[-1])
        s = res["svl"]
        print(f"({wl}) {name}: {s['sites']} sites")
        for be, r in res.items():
            line = f"  {be:7s} fwd+bwd {r['fwd_bwd_ms']:7.1f} ms"
            line += f" | incl. map build {r['fwd_bwd_with_build_ms']:7.1f} ms"
            line += f" | peak +{r['peak_mb']:.0f} MB"
            if "kmap_build_ms" in r:
                share = r["kmap_build_ms"] / r["fwd_bwd_ms"]
                line += f" | kmap build {r['kmap_build_ms']:.1f} ms ({share:.0%} of layers)"
            print(line)
        if "spconv" in res:
            p = res["spconv"]
            for name in ("svl", "svl-1t"):
                r = res[name]
                print(
                    f"  ratio {name}/spconv: fwd+bwd {r['fwd_bwd_ms'] / p['fwd_bwd_ms']:.2f}, "
                    f"incl. build {r['fwd_bwd_with_build_ms'] / p['fwd_bwd_with_build_ms']:.2f}"
                )


if __name__ == "__main__":
    main()
