"""Before/after fingerprints of one short run per task, for refactors that must move no number.

Each run is an `svl` command at a CPU-sized budget (seconds to a minute). For each it prints three
sha256 fingerprints:
  results  results.json less paths, wall times and throughput (the numbers a user reads),
  log      every log.jsonl record less its timing fields,
  weights  every tensor of every .safetensors file in the run folder (names, dtypes, shapes, bytes).
Run it on two checkouts with the same install and compare the lines:

    python benchmarks/refactor_hashes.py --out /tmp/h_after
    PYTHONPATH=/path/to/old/checkout python benchmarks/refactor_hashes.py --out /tmp/h_before

`--keep DIR` copies each run's final checkpoint (and head files) to DIR/<run>/, which is how the
checkpoints of tests/data/legacy/ were written by the code before a change.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

# name -> svl argv (out_dir is appended). Small, deterministic, and each writes a checkpoint kind.
RUNS: dict[str, list[str]] = {
    "pretrain": [
        "pretrain", "train.epochs=1", "train.batch_size=8", "data.num_points=256", "data.train_per_class=4",
        "data.test_per_class=2", "data.calib_per_class=2", "teacher.views=1", "train.ckpt_every_steps=0",
    ],
    "classification": [
        "finetune", "data.classes=[airplane,bathtub,guitar,lamp]", "data.train_per_class=12",
        "data.test_per_class=6", "data.num_points=256", "train.batch_size=8", "train.epochs=1",
        "train.ckpt_every_steps=0",
    ],
    "event_classification": [
        "finetune", "--config", "configs/finetune_nmnist.yaml", "data.train_per_class=6",
        "data.test_per_class=3", "data.num_points=256", "model.voxel_size=0.0625", "train.batch_size=8",
        "train.epochs=1", "train.ckpt_every_steps=0", "eval.monitor_test=false",
    ],
    "segmentation": [
        "finetune", "task=segmentation", "data.dataset=shapenetpart", "data.root={data}/shapenetpart_samples",
        "data.options.skip_missing=true", "data.num_points=512", "model.voxel_size=0.04", "train.epochs=1",
        "train.batch_size=4", "train.ckpt_every_steps=0", "eval.monitor_test=false",
    ],
    "detection": [
        "finetune", "--config", "configs/detect_modelnet40_scenes.yaml", "data.options.scenes=4",
        "data.num_points=1024", "train.epochs=1", "train.batch_size=2", "train.ckpt_every_steps=0",
        "eval.monitor_test=false", "eval.precise_bn=1",
    ],
    "distill": [
        "distill", "--config", "configs/distill_digits.yaml", "model.name=spikformer_tiny", "model.T=2",
        "train.epochs=1", "train.batch_size=16", "data.train_per_class=6", "data.test_per_class=3",
        "teacher.image_size=32",
    ],
    "aligned_pretraining": [
        "pretrain", "data.dataset=folder", "data.root={folder}", "data.val_fraction=0.25", "teacher.views=1",
        "teacher.text=none", "loss.l_text=0", "train.epochs=1", "train.batch_size=4", "data.num_points=256",
    ],
}  # fmt: skip

DROP_KEYS = {"wall_seconds", "seconds", "time", "elapsed", "samples_per_s", "it_per_s", "lr_time", "out_dir",
             "path", "checkpoint", "table", "wall", "when", "date", "timestamp", "created",
             "environment"}  # fmt: skip


def _timing(key: str) -> bool:
    k = key.rsplit("/", 1)[-1]
    return k in DROP_KEYS or "second" in k or k.endswith("per_s") or k.startswith("ms_")


def _clean(obj, out_dir: str):
    """JSON less timings and paths: what must not move when only the code's layout changes."""
    if isinstance(obj, dict):
        return {k: _clean(v, out_dir) for k, v in sorted(obj.items()) if not _timing(k)}
    if isinstance(obj, list):
        return [_clean(v, out_dir) for v in obj]
    if isinstance(obj, str) and (out_dir in obj or obj.startswith("/")):
        return "<path>"
    return obj


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def fingerprints(run_dir: Path) -> dict[str, str]:
    from safetensors import safe_open

    out = str(run_dir)
    res = _clean(json.loads((run_dir / "results.json").read_text()), out)
    h = {"results": _sha(json.dumps(res, sort_keys=True).encode())}
    log = run_dir / "log.jsonl"
    if log.exists():
        recs = [_clean(json.loads(line), out) for line in log.read_text().splitlines() if line.strip()]
        h["log"] = _sha(json.dumps(recs, sort_keys=True).encode())
    w = hashlib.sha256()
    for f in sorted(run_dir.glob("*.safetensors")):
        with safe_open(str(f), "pt") as st:
            for k in sorted(st.keys()):
                t = st.get_tensor(k).contiguous()
                w.update(f"{f.name}:{k}:{t.dtype}:{tuple(t.shape)}".encode())
                w.update(t.view(-1).view(dtype=__import__("torch").uint8).numpy().tobytes())
    h["weights"] = w.hexdigest()[:16]
    return h


def _class_folder(dst: Path, data: Path) -> Path:
    """Eight real ModelNet40 training clouds of two classes as .npy files: the `folder` dataset."""
    import numpy as np

    if not dst.is_dir():
        z = np.load(data / "modelnet40" / "modelnet40_pcd1024_train.npz")
        names = [str(c) for c in z["classes"]]
        for c in ("chair", "lamp"):
            (dst / c).mkdir(parents=True)
            for j, i in enumerate(np.flatnonzero(z["labels"] == names.index(c))[:8]):
                np.save(dst / c / f"{j}.npy", z["points"][i])
    return dst


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="folder for the run folders (wiped per run)")
    ap.add_argument("--runs", nargs="*", default=list(RUNS), help=f"subset of {list(RUNS)}")
    ap.add_argument("--keep", default=None, help="copy each run's final checkpoint + heads here")
    ap.add_argument("--rehash", action="store_true", help="only fingerprint the run folders already in --out")
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "data"))
    args = ap.parse_args()
    repo = Path(__file__).resolve().parents[1]
    report = {}
    for name in args.runs:
        run_dir = Path(args.out) / name
        if args.rehash:
            report[name] = fingerprints(run_dir)
            print(f"{name:22s} " + "  ".join(f"{k}={v}" for k, v in report[name].items()), flush=True)
            continue
        shutil.rmtree(run_dir, ignore_errors=True)
        folder = _class_folder(Path(args.out) / "_folder", Path(args.data))
        argv = [a.format(data=args.data, folder=folder) for a in RUNS[name]]
        argv += [f"out_dir={run_dir}", "train.log_every_steps=1"]
        t0 = time.time()
        p = subprocess.run([sys.executable, "-m", "svl", *argv], cwd=repo, capture_output=True, text=True,
                           env={**os.environ, "PYTHONHASHSEED": "0"})  # fmt: skip
        if p.returncode != 0:
            print(f"{name}: FAILED (exit {p.returncode})\n{p.stderr[-3000:]}", flush=True)
            report[name] = {"error": p.returncode}
            continue
        report[name] = fingerprints(run_dir)
        print(f"{name:22s} " + "  ".join(f"{k}={v}" for k, v in report[name].items())
              + f"   ({time.time() - t0:.0f} s)", flush=True)  # fmt: skip
        if args.keep:
            dst = Path(args.keep) / name
            dst.mkdir(parents=True, exist_ok=True)
            for f in [run_dir / "final.safetensors", *run_dir.glob("head_*.safetensors")]:
                if f.exists():
                    shutil.copy2(f, dst / f.name)
    (Path(args.out) / "hashes.json").write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
