"""Data-layer throughput: ModelNet40 samples/s (plain, augmented), collate+voxelize, FPS backends."""

from __future__ import annotations

import time

import numpy as np
import torch

from svl.data import build_dataset
from svl.data.batch import collate_points
from svl.data.transforms import farthest_point_sample


def timeit(fn, reps: int = 3) -> float:
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    torch.set_num_threads(1)
    plain = build_dataset("modelnet40", "train")
    aug = build_dataset("modelnet40", "train", num_points=1024, augment=True)
    n = 512
    t_plain = timeit(lambda: [plain[i] for i in range(n)])
    t_aug = timeit(lambda: [aug[i] for i in range(n)])
    print(f"modelnet40 items: plain {n / t_plain:,.0f}/s, OpenShape-augmented {n / t_aug:,.0f}/s")
    items = [aug[i] for i in range(32)]
    t_col = timeit(lambda: collate_points(items))
    t_vox = timeit(lambda: collate_points(items, voxel_size=0.02))
    print(f"collate 32x1024: {t_col * 1e3:.1f} ms; with voxelize(0.02): {t_vox * 1e3:.1f} ms")
    x = np.random.default_rng(0).random((10000, 3)).astype(np.float32)
    t_fp = timeit(lambda: farthest_point_sample(x, 1024, backend="fpsample"))
    t_th = timeit(lambda: farthest_point_sample(x, 1024, backend="torch"), reps=1)
    print(f"FPS 1024 of 10k: fpsample {t_fp * 1e3:.1f} ms, torch fallback {t_th * 1e3:.1f} ms")
    print(f"  fallback / fpsample: {t_th / t_fp:.0f}x")


if __name__ == "__main__":
    main()
