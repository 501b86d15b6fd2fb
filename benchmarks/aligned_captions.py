"""Aligned pretraining on a user-style captioned folder made of real ModelNet40 shapes.

Writes N training shapes per seen class (the 30 non-ModelNet10 classes) as PLY files with a
captions.csv (two captions per file: a prompted name and the class's shape description), then runs
`svl pretrain data.dataset=captions ...` (MiniLM + EfficientNet-Lite0 teachers) with zero-shot on
the ModelNet40 test split: 40-way, and 10-way on the unseen ModelNet10 classes, which no caption
names. Prints the run's results table and the unseen-class accuracy.

    python benchmarks/aligned_captions.py --per-class 20 --epochs 6 --out runs/aligned_captions
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from svl.utils import data_root
from svl.vocab import MODELNET10_CLASSES, class_texts, display_name, load_class_names


def write_ply(path: Path, xyz: np.ndarray) -> None:
    header = f"ply\nformat binary_little_endian 1.0\nelement vertex {len(xyz)}\n"
    header += "property float x\nproperty float y\nproperty float z\nend_header\n"
    path.write_bytes(header.encode() + np.ascontiguousarray(xyz, "<f4").tobytes())


def build_folder(folder: Path, per_class: int) -> int:
    classes = load_class_names("modelnet40")
    desc = dict(zip(classes, class_texts(classes, "descriptions"), strict=True))
    with np.load(data_root(required=True) / "modelnet40" / "modelnet40_pcd1024_train.npz") as z:
        pts, labels = z["points"], z["labels"]
    rows = ["file,caption"]
    n = 0
    for c, name in enumerate(classes):
        if name in MODELNET10_CLASSES:
            continue
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in np.flatnonzero(labels == c)[:per_class]:
            rel = f"{name}/{i}.ply"
            write_ply(folder / rel, pts[i])
            rows += [f'{rel},"a 3D model of a {display_name(name)}"', f'{rel},"{desc[name]}"']
            n += 1
    (folder / "captions.csv").write_text("\n".join(rows) + "\n")
    return n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/aligned_captions")
    ap.add_argument("--per-class", type=int, default=20)
    ap.add_argument("--epochs", type=int, default=6)
    args = ap.parse_args()
    out = Path(args.out)
    folder = out / "shapes"
    n = build_folder(folder, args.per_class)
    print(f"{n} captioned PLY files in {folder}", flush=True)
    unseen = ", ".join(MODELNET10_CLASSES)
    zs = "[{name: modelnet40, dataset: modelnet40}, "
    zs += f"{{name: unseen10, dataset: modelnet40, classes: [{unseen}]}}]"
    cmd = [sys.executable, "-m", "svl", "pretrain", "--overwrite", f"out_dir={out / 'run'}"]
    cmd += ["data.dataset=captions", f"data.root={folder}", f"train.epochs={args.epochs}", f"zeroshot={zs}"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, text=True)
    if proc.returncode:
        return proc.returncode
    res = json.loads((out / "run" / "results.json").read_text())
    print(f"wall {time.perf_counter() - t0:.0f} s; results in {out / 'run' / 'results.json'}")
    for name, r in res["zeroshot"].items():
        accs = f"top-1 {100 * r['top1']:.2f}  top-5 {100 * r['top5']:.2f}"
        accs += f"  class-mean {100 * r['class_mean']:.2f}"
        print(f"{name} ({r['classes']} classes, {r['n']} shapes): {accs}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
