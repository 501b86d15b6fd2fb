"""Teacher throughput (and the measurements behind the view-embedding defaults).

Prints: MiniLM sentences/s; renderer views/s; render + EfficientNet-Lite0 embed views/s per view
size; the projected time to embed ModelNet40's train split x 4 views; and a quality probe (1-NN
and nearest-centroid accuracy of view embeddings on ModelNet40 train shapes, split in two) per
colour mode and size, to show what the renders buy. Not a test: numbers vary ±30 % run to run.

    .venv/bin/python benchmarks/teachers.py [--quick]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F

from svl.teachers import create_teacher, render_views
from svl.utils import data_root


def _best(fn, repeats: int = 3) -> float:
    fn()  # warm-up
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return min(ts)


def bench_text(n: int) -> None:
    t0 = time.perf_counter()
    teacher = create_teacher("minilm", device="cpu")
    load = time.perf_counter() - t0
    words = ["chair", "airplane", "flower pot", "night stand", "guitar", "bathtub", "laptop", "tv stand"]
    texts = [f"a point cloud model of a {words[i % len(words)]} number {i}." for i in range(n)]
    dt = _best(lambda: teacher.embed_texts(texts), repeats=2)
    print(f"text  minilm: load {load:.1f} s; {n} sentences in {dt:.2f} s -> {n / dt:.0f} sentences/s")


def bench_views(points: np.ndarray, sizes: list[int], views: int, train_shapes: int) -> dict[int, float]:
    teacher = create_teacher("efficientnet-lite0", device="cpu")
    xyz = torch.from_numpy(points[:32].copy())
    rates = {}
    for size in sizes:
        r = _best(lambda s=size: render_views(xyz, num_views=views, size=s))
        imgs = render_views(xyz, num_views=views, size=size).flatten(0, 1)
        e = _best(lambda im=imgs: teacher.embed_images(im), repeats=2)
        n = imgs.shape[0]
        rates[size] = n / (r + e)
        eta = train_shapes * views / rates[size] / 60
        print(
            f"views {size:3d}px: render {n / r:6.0f} views/s, embed {n / e:5.0f} views/s, "
            f"render+embed {rates[size]:5.0f} views/s -> ModelNet40 train ({train_shapes} x {views}) "
            f"in {eta:.1f} min"
        )
    return rates


def probe(points: np.ndarray, labels: np.ndarray, configs: list[tuple[str, int]], n: int, views: int) -> None:
    """1-NN / nearest-centroid accuracy: first half of a random subset vs the second half."""
    teacher = create_teacher("efficientnet-lite0", device="cpu")
    idx = np.random.default_rng(0).permutation(len(labels))[:n]
    pts, lab = torch.from_numpy(points[idx]), labels[idx]
    half = n // 2
    for mode, size in configs:
        t0 = time.perf_counter()
        embs = []
        for i in range(0, n, 32):
            v = render_views(pts[i : i + 32], num_views=views, size=size, color_mode=mode)
            embs.append(teacher.embed_images(v.flatten(0, 1)).view(v.shape[0], views, -1).mean(1))
        emb = F.normalize(torch.cat(embs), dim=-1)
        tr, te = emb[:half], emb[half:]
        nn1 = (lab[:half][(te @ tr.T).argmax(1).numpy()] == lab[half:]).mean()
        cent = torch.zeros(40, emb.shape[1]).index_add_(0, torch.from_numpy(lab[:half]), tr)
        nc = ((te @ F.normalize(cent, dim=-1).T).argmax(1).numpy() == lab[half:]).mean()
        dt = time.perf_counter() - t0
        rate = n * views / dt
        print(f"probe {mode:6s} {size:3d}px x{views}: 1-NN {nn1:.3f} centroid {nc:.3f} ({rate:.0f} views/s)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes only (a smoke run)")
    args = ap.parse_args()
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    bench_text(200 if args.quick else 1000)
    root = data_root(required=True)
    data = np.load(root / "modelnet40" / "modelnet40_pcd1024_train.npz")
    points, labels = data["points"], data["labels"]
    shuffled = points[np.random.default_rng(1).permutation(len(points))[:64]]
    bench_views(shuffled, [96, 128] if args.quick else [96, 128, 160, 224], views=4, train_shapes=len(points))
    if args.quick:
        probe(points, labels, [("shaded", 96)], n=64, views=2)
        return
    configs = [("shaded", 128), ("normal", 128), ("depth", 128), ("shaded", 96), ("shaded", 224)]
    probe(points, labels, configs, n=800, views=2)


if __name__ == "__main__":
    main()
