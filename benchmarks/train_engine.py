"""Training-engine cost and sanity on real ModelNet40 clouds.

Trains a small spiking point encoder inside `TripleAlignment` with the generic `Trainer` and with a
bare hand-written loop (same model, data, optimiser, steps) and prints seconds per step and their
ratio (the engine's overhead: per-batch seeding, logging, checkpoints), then zero-shot top-1 on the
ModelNet40 test split against the class embeddings. The "teacher" here is synthetic (a fixed random
vector per class as the text embedding, plus per-shape noise as the image embedding) so the
benchmark runs without teacher weights; the clouds and labels are real.

    .venv/bin/python benchmarks/train_engine.py --shapes 2048 --epochs 2
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from svl.spiking import ILIF
from svl.train import TrainConfig, Trainer, TripleAlignment
from svl.utils import data_root

DIM_T = DIM_I = 64


class SpikePointMLP(nn.Module):
    """Point-wise spiking MLP + mean pooling (a stand-in encoder with `.out_dim`)."""

    def __init__(self, out_dim: int = 64) -> None:
        super().__init__()
        self.out_dim = out_dim
        self.l1, self.b1, self.s1 = nn.Linear(3, 64), nn.BatchNorm1d(64), ILIF(D=4)
        self.l2, self.b2, self.s2 = nn.Linear(64, 128), nn.BatchNorm1d(128), ILIF(D=4)
        self.head = nn.Linear(128, out_dim)

    def forward(self, batch: dict) -> torch.Tensor:
        x = batch["xyz"]
        b, n, _ = x.shape
        h = self.s1(self.b1(self.l1(x.reshape(b * n, 3))))
        h = self.s2(self.b2(self.l2(h)))
        return self.head(h.reshape(b, n, -1).mean(1))


class Shapes(torch.utils.data.Dataset):
    def __init__(
        self, points: np.ndarray, labels: np.ndarray, class_emb: torch.Tensor, augment: bool
    ) -> None:
        self.points, self.labels = torch.from_numpy(points), torch.from_numpy(labels)
        g = torch.Generator().manual_seed(1)
        self.image = class_emb[self.labels] + 0.5 * torch.randn(len(labels), DIM_I, generator=g)
        self.class_emb, self.augment = class_emb, augment

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        xyz = self.points[i]
        if self.augment:
            xyz = xyz * torch.empty(3).uniform_(0.8, 1.25) + torch.empty(3).uniform_(-0.1, 0.1)
        y = int(self.labels[i])
        return {"xyz": xyz, "text": self.class_emb[y], "image": self.image[i], "label": y}


def collate(samples: list[dict]) -> dict:
    return {
        "xyz": torch.stack([s["xyz"] for s in samples]),
        "label": torch.tensor([s["label"] for s in samples]),
        "extras": {
            "text_emb": torch.stack([s["text"] for s in samples]),
            "has_text": torch.ones(len(samples), dtype=torch.bool),
            "image_emb": torch.stack([s["image"] for s in samples]),
        },
    }


def make_model() -> TripleAlignment:
    torch.manual_seed(0)
    return TripleAlignment(SpikePointMLP(), DIM_T, DIM_I)


@torch.no_grad()
def zero_shot_top1(model: TripleAlignment, ds: Shapes, class_emb: torch.Tensor) -> float:
    model.eval()
    w = model.embed_text(class_emb)
    hits = 0
    for lo in range(0, len(ds), 256):
        batch = collate([ds[i] for i in range(lo, min(lo + 256, len(ds)))])
        hits += int((model.embed_points(batch) @ w.T).argmax(1).eq(batch["label"]).sum())
    return hits / len(ds)


def bare_loop(ds: Shapes, cfg: TrainConfig, steps: int) -> float:
    """Seconds per step of a minimal loop: shuffle, forward, backward, clip, AdamW."""
    model = make_model()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    loader = torch.utils.data.DataLoader(ds, cfg.batch_size, shuffle=True, drop_last=True, collate_fn=collate)
    done, t0 = 0, None
    while done < steps:
        for batch in loader:
            if done == 1:
                t0 = time.perf_counter()
            loss = model(batch)["loss"]
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            done += 1
            if done == steps:
                break
    return (time.perf_counter() - t0) / (steps - 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shapes", type=int, default=2048, help="training shapes (a seeded subset)")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    root = data_root(required=True) / "modelnet40"
    train, test = (np.load(root / f"modelnet40_pcd1024_{s}.npz") for s in ("train", "test"))
    sub = np.random.default_rng(0).permutation(len(train["labels"]))[: args.shapes]
    class_emb = torch.randn(40, DIM_T, generator=torch.Generator().manual_seed(0))
    train_ds = Shapes(train["points"][sub], train["labels"][sub], class_emb, augment=True)
    test_ds = Shapes(test["points"], test["labels"], class_emb, augment=False)
    cfg = TrainConfig(
        epochs=args.epochs, batch_size=args.batch_size, lr=2e-3, warmup_epochs=0.5, log_every_steps=10
    )

    with tempfile.TemporaryDirectory() as tmp:
        model = make_model()
        before = zero_shot_top1(model, test_ds, class_emb)
        trainer = Trainer(model, train_ds, collate, cfg, Path(tmp))
        t0 = time.perf_counter()
        trainer.fit()
        engine_s = (time.perf_counter() - t0) / trainer.step
        after = zero_shot_top1(model, test_ds, class_emb)
    bare_s = bare_loop(train_ds, cfg, trainer.step)
    print(
        f"train shapes {len(train_ds)}, batch {cfg.batch_size}, steps {trainer.step}, threads {args.threads}"
    )
    print(f"Trainer.fit  {engine_s * 1e3:8.1f} ms/step (incl. logging, TensorBoard, 2 checkpoints)")
    print(f"bare loop    {bare_s * 1e3:8.1f} ms/step")
    print(f"ratio        {engine_s / bare_s:8.2f}x")
    print(f"zero-shot top-1 on ModelNet40 test (synthetic class teacher): {before:.3f} -> {after:.3f}")


if __name__ == "__main__":
    main()
