"""Where do two `svl pretrain` runs that differ only in the CPU thread count part ways?

Each stage of the main job is run at 1 and at N threads in one process (`torch.set_num_threads`) on
the same inputs, and compared bit for bit:

1. data order: the shuffled index order and the augmented clouds of the first batches;
2. teacher embeddings: MiniLM on the prompted class names, EfficientNet-Lite0 on rendered views;
3. one training step's kernels: E-3DSNN-T forward, the MTA loss and every parameter gradient;
4. training: `steps` optimizer steps from the same start, the first step whose loss differs and how
   far the weights have moved apart at the end.

    OMP_NUM_THREADS=2 python benchmarks/thread_reproducibility.py --threads 2 --steps 30

Prints a table and writes OUT/summary.{md,json}.
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _summary import write_summary  # benchmarks/_summary.py

from svl.data import build_dataset, collate_points
from svl.data.render import render_views
from svl.models import create_model
from svl.teachers import create_teacher
from svl.utils import run_environment, seed_everything


def _diff(a: torch.Tensor, b: torch.Tensor) -> dict[str, Any]:
    a, b = a.detach().double(), b.detach().double()
    return {"identical": bool(torch.equal(a, b)), "max_abs": float((a - b).abs().max()) if a.numel() else 0.0}


def _at(threads: int, fn: Any) -> Any:
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return fn()
    finally:
        torch.set_num_threads(old)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2, help="the thread count compared with 1")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--out", default="runs/bench_thread_reproducibility")
    args = ap.parse_args()
    n = args.threads
    rows: list[dict[str, Any]] = []

    # 1. data order and augmentation
    def batches() -> torch.Tensor:
        ds = build_dataset("modelnet40", "train", num_points=1024, augment=True, seed=0)
        order = np.random.default_rng(0).permutation(len(ds))[: args.batch]
        return torch.as_tensor(np.stack([ds[int(i)]["xyz"] for i in order]))

    rows.append({"stage": "data: order + augmented clouds", **_diff(_at(1, batches), _at(n, batches))})
    xyz = _at(1, batches)

    # 2. teachers
    text = create_teacher("minilm")
    names = [f"a point cloud of a {c}." for c in build_dataset("modelnet40", "test").classes]
    t1, tn = _at(1, lambda: text.embed_texts(names)), _at(n, lambda: text.embed_texts(names))
    rows.append({"stage": "teacher: MiniLM text embeddings (40 prompts)", **_diff(t1, tn)})
    views1 = _at(1, lambda: render_views(xyz[:8], num_views=4, size=224))
    viewsn = _at(n, lambda: render_views(xyz[:8], num_views=4, size=224))
    rows.append({"stage": "renderer: 32 views at 224 px", **_diff(views1, viewsn)})
    image = create_teacher("efficientnet-lite0")
    flat = views1.flatten(0, 1)
    i1, i_n = _at(1, lambda: image.embed_images(flat)), _at(n, lambda: image.embed_images(flat))
    rows.append({"stage": "teacher: EfficientNet-Lite0 view embeddings (32 views)", **_diff(i1, i_n)})

    # 3. one step's kernels
    seed_everything(0)
    model = create_model("e3dsnn_t", out_dim=384, voxel_size=0.02)
    batch = collate_points([{"xyz": x.numpy(), "label": 0} for x in xyz])
    target = torch.nn.functional.normalize(
        torch.randn(len(xyz), 384, generator=torch.Generator().manual_seed(0)), dim=-1
    )

    def step(m: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        m.zero_grad(set_to_none=True)
        out = m(batch)
        emb = out if torch.is_tensor(out) else out["embedding"]
        loss = ((torch.nn.functional.normalize(emb, dim=-1) - target) ** 2).sum(-1).mean()
        loss.backward()
        return emb.detach(), loss.detach(), [p.grad.clone() for p in m.parameters() if p.grad is not None]

    m1, mn = copy.deepcopy(model), copy.deepcopy(model)
    e1, l1, g1 = _at(1, lambda: step(m1))
    en, ln, gn = _at(n, lambda: step(mn))
    rows.append({"stage": "E-3DSNN-T forward (embeddings)", **_diff(e1, en)})
    grads = [_diff(a, b) for a, b in zip(g1, gn, strict=True)]
    rows.append({"stage": f"E-3DSNN-T backward ({len(grads)} parameter gradients)",
                 "identical": all(g["identical"] for g in grads),
                 "max_abs": max(g["max_abs"] for g in grads),
                 "tensors_differing": sum(not g["identical"] for g in grads)})  # fmt: skip

    # where the forward pass first differs: every leaf module's output, in call order
    def leaf_outputs(threads: int) -> list[tuple[str, str, torch.Tensor]]:
        seen: list[tuple[str, str, torch.Tensor]] = []
        hooks = []
        for name, mod in model.named_modules():
            if next(mod.children(), None) is None:

                def hook(m: Any, _inp: Any, out: Any, name: str = name) -> None:
                    t = getattr(out, "feats", out)
                    if torch.is_tensor(t):
                        seen.append((name, type(m).__name__, t.detach().clone()))

                hooks.append(mod.register_forward_hook(hook))
        try:
            with torch.no_grad():
                _at(threads, lambda: model(batch))
        finally:
            for h in hooks:
                h.remove()
        return seen

    for (name, kind, a), (_, _, b) in zip(leaf_outputs(1), leaf_outputs(n), strict=True):
        if not torch.equal(a, b):
            rows.append({"stage": f"first differing layer: {name} ({kind})", **_diff(a, b)})
            break

    # 4. training
    def train(threads: int) -> tuple[list[float], torch.nn.Module]:
        m = copy.deepcopy(model)
        opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
        losses = []
        for _ in range(args.steps):
            _, loss, _ = _at(threads, lambda: step(m))
            opt.step()
            losses.append(float(loss))
        return losses, m

    def compare(ta: int, tb: int) -> dict[str, Any]:
        ca, wa = train(ta)
        cb, wb = train(tb)
        first = next((i for i, (a, b) in enumerate(zip(ca, cb, strict=True)) if a != b), None)
        wd = max(
            float((a - b).detach().abs().max()) for a, b in zip(wa.parameters(), wb.parameters(), strict=True)
        )
        return {
            "stage": f"training: {args.steps} AdamW steps, {ta} vs {tb} threads",
            "identical": first is None,
            "max_abs": wd,
            "first_differing_step": first,
            "final_losses": f"{ca[-1]:.6f} / {cb[-1]:.6f}",
        }

    rows.append(compare(1, n))
    rows.append(compare(n, n))  # the control: the same thread count twice
    rows.append(compare(1, 1))

    env = run_environment()
    lines = [f"1 thread vs {n} threads, torch {env['torch']}, CPU capability {env['cpu_capability']}", "",
             "| stage | bit-identical | max abs difference | notes |", "|---|---|---|---|"]  # fmt: skip
    for r in rows:
        notes = ", ".join(f"{k} {v}" for k, v in r.items() if k not in ("stage", "identical", "max_abs"))
        lines.append(f"| {r['stage']} | {'yes' if r['identical'] else 'no'} | {r['max_abs']:.3g} | {notes} |")
    write_summary(Path(args.out), "\n".join(lines), {"environment": env, "rows": rows})


if __name__ == "__main__":
    main()
