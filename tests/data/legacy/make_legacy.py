"""Writes the legacy checkpoints of tests/test_legacy_checkpoints.py: one small file of each kind.

Run with the code whose files must keep loading (the files here were written by main at f125d5e,
before the second architecture step), from the repository root:

    PYTHONPATH=/path/to/old/checkout python tests/data/legacy/make_legacy.py            # the files
    PYTHONPATH=/path/to/old/checkout python tests/data/legacy/make_legacy.py --outputs  # expected.npz

Each file comes from a real `svl` command at a tiny model size (a few kB to a few hundred kB), so it
holds exactly the metadata and tensor names that version wrote.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
DATA = REPO.parent / "shared" / "data"
TINY_E3 = "model.options={stem_channels: 4, channels: [4, 8, 8, 8], depth: 1}"
COMMON = ["train.epochs=1", "train.ckpt_every_steps=0", "train.log_every_steps=1"]
SPP = f"data.root={DATA}/shapenetpart_samples"
RUNS = {
    "pretrain": ["pretrain", TINY_E3, "model.out_dim=16", "train.batch_size=8", "data.num_points=128",
                 "data.train_per_class=2", "data.test_per_class=1", "data.calib_per_class=1",
                 "teacher.views=1", "energy=false"],
    "classifier": ["finetune", TINY_E3, "data.classes=[airplane,lamp]", "data.train_per_class=4",
                   "data.test_per_class=2", "data.num_points=128", "train.batch_size=4", "energy=false"],
    "events": ["finetune", "--config", "configs/finetune_nmnist.yaml", TINY_E3, "data.train_per_class=2",
               "data.test_per_class=1", "data.num_points=128", "model.voxel_size=0.0625",
               "train.batch_size=4", "eval.monitor_test=false", "energy=false"],
    "segmenter": ["finetune", "task=segmentation", "data.dataset=shapenetpart", SPP,
                  "data.options.skip_missing=true", "data.num_points=128", "model.voxel_size=0.04", TINY_E3,
                  "train.batch_size=4", "eval.monitor_test=false", "energy=false", "data.train_limit=4",
                  "data.test_limit=2"],
    "detector": ["finetune", "--config", "configs/detect_modelnet40_scenes.yaml", "data.options.scenes=2",
                 "data.num_points=256", "train.batch_size=2", "eval.monitor_test=false", "eval.precise_bn=1",
                 "model.options={stem_channels: 4, channels: [4, 8, 8, 8], depth: 1, neck_channels: 8, "
                 "head_channels: 8}", "energy=false", "data.test_limit=1"],
    "image_student": ["distill", "--config", "configs/distill_digits.yaml", "model.name=spikformer_tiny",
                      "model.T=2", "model.options={embed_dim: 16, num_heads: 2, head: prototype}",
                      "train.batch_size=16", "data.train_per_class=3", "data.test_per_class=1",
                      "teacher.image_size=32", "energy=false"],
}  # fmt: skip


# The dense tasks of f125d5e passed no model.options to the builder, so their tiny networks are made by
# running the same task in-process with its model_cfg() widened by these (the file is still written by
# that code's own save path, with its metadata).
DENSE_TINY = {
    "segmenter": {"stem_channels": 4, "channels": [4, 8, 8, 8], "depth": 1},
    "detector": {
        "stem_channels": 4,
        "channels": [4, 8, 8, 8],
        "depth": 1,
        "neck_channels": 8,
        "head_channels": 8,
    },
}


def _dense(name: str, argv: list[str], out: Path) -> None:
    from svl.tasks import load_task_config, run_task

    config = argv[argv.index("--config") + 1] if "--config" in argv else None
    over = [a for a in argv[1:] if "=" in a and not a.startswith("model.options")]
    cls, cfg = load_task_config("classification", config, [*over, *COMMON, f"out_dir={out}"])
    base = cls.model_cfg
    cls.model_cfg = lambda self: {**base(self), **DENSE_TINY[name]}
    run_task(cfg, cls)


def main() -> int:
    only = [a for a in sys.argv[1:] if not a.startswith("--")]
    for name, argv in RUNS.items():
        if only and name not in only:
            continue
        if name in DENSE_TINY:
            with tempfile.TemporaryDirectory() as tmp:
                _dense(name, argv, Path(tmp) / "run")
                shutil.copy2(Path(tmp) / "run" / "final.safetensors", HERE / f"{name}.safetensors")
                print(name, "ok", (HERE / f"{name}.safetensors").stat().st_size, "bytes")
            continue
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "run"
            cmd = [sys.executable, "-m", "svl", *argv, *COMMON, f"out_dir={out}"]
            p = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=dict(os.environ))
            if p.returncode != 0:
                print(f"{name}: FAILED\n{p.stderr[-2000:]}")
                continue
            shutil.copy2(out / "final.safetensors", HERE / f"{name}.safetensors")
            for head in out.glob("head_*names*.safetensors"):
                shutil.copy2(head, HERE / f"{name}_head.safetensors")
            print(name, "ok", (HERE / f"{name}.safetensors").stat().st_size, "bytes")
    return 0


if __name__ == "__main__" and "--outputs" not in sys.argv:
    raise SystemExit(main())


def inputs() -> dict[str, object]:
    """Fixed inputs per kind of input: two real ModelNet40 clouds, an N-MNIST window, two digits."""
    import numpy as np
    import torch

    from svl.data import build_dataset, collate_points

    clouds = build_dataset("modelnet40", "test", root=DATA, num_points=128)
    pts = collate_points([clouds[0], clouds[100]])
    ev = build_dataset(
        "nmnist", "test", root=DATA / "events" / "nmnist_small", num_points=128, encoding="cloud"
    )
    events = collate_points([ev[0], ev[1]])
    from sklearn.datasets import load_digits

    d = load_digits()
    images = torch.as_tensor(np.stack([d.images[0], d.images[1]])[:, None] / 16.0, dtype=torch.float32)
    return {"points": pts, "events": events, "images": images}


def expected_outputs() -> None:
    """Each legacy file's model output on the fixed inputs, computed by the code that wrote the file."""
    import numpy as np
    import torch

    from svl.models import create_model

    x = inputs()
    out: dict[str, np.ndarray] = {}
    kinds = {"pretrain": "points", "classifier": "points", "events": "events", "segmenter": "points",
             "detector": "points", "image_student": "images"}  # fmt: skip
    for name, kind in kinds.items():
        f = HERE / f"{name}.safetensors"
        if not f.exists():
            continue
        model = create_model(None, pretrained=f).eval()
        with torch.no_grad():
            y = model(x[kind]) if kind != "images" else model(_image_batch(x[kind]))
        if isinstance(y, dict):
            for k, v in y.items():
                out[f"{name}.{k}"] = v.numpy()
        else:
            out[name] = y.numpy()
    np.savez(HERE / "expected.npz", **out)
    print("expected outputs:", sorted(out))


def _image_batch(images):  # the image batch type of the code that runs this
    from svl.data.images import collate_images

    return collate_images([{"image": im, "label": 0, "index": i} for i, im in enumerate(images)])


if __name__ == "__main__" and "--outputs" in sys.argv:
    expected_outputs()
