"""Energy per sample of every registered spiking model vs its ANN twin on real ModelNet40 clouds.

Firing rates of an untrained network mean little, so each model (and its ANN twin) is first trained
briefly for classification (the encoder plus a linear probe, AdamW, a few hundred clouds), then
measured on held-out test clouds with the exact counting convention, in one unit for both sides
(``--unit flops``, the default: ANN FLOPs and SOP = rate x FLOPs x T; ``--unit macs``: ANN MACs and
synaptic events).

    .venv/bin/python benchmarks/energy.py --steps 30 --batch-size 8 --eval-batches 2
    .venv/bin/python benchmarks/energy.py --models e3dsnn_t spike_pointnet   # only these models
    .venv/bin/python benchmarks/energy.py --release   # E-3DSNN release input: release vs exact counts
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from torch import nn

from svl.energy import EnergyTable, dataset_batches, measure_energy, merge_reports
from svl.models import create_model, list_models
from svl.utils import seed_everything


def train_briefly(model: nn.Module, batches: list, lr: float) -> tuple[float, float]:
    """Encoder + linear probe trained on ``batches`` (one pass); returns (first loss, last-5 mean loss)."""
    probe = nn.Linear(model.out_dim, 40)
    opt = torch.optim.AdamW([*model.parameters(), *probe.parameters()], lr=lr, weight_decay=1e-4)
    model.train()
    losses = []
    for b in batches:
        loss = nn.functional.cross_entropy(probe(model(b)), b.labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    model.eval()
    tail = losses[-5:]
    return losses[0], sum(tail) / len(tail)


RELEASE = {"e3dsnn_t": 2.92e7, "e3dsnn_s": 6.52e7, "e3dsnn_l": 4.58e8, "e3dsnn_h": 4.68e8}


def release_table(seed: int) -> None:
    """E-3DSNN T/S/L/H on the release's random input: its convention, what it describes, our exact count."""
    from svl.energy import random_voxel_input, sparse_point_batch

    batch = sparse_point_batch(random_voxel_input(9830, grid=64, channels=6, seed=seed))
    head = ("model", "release", "ours(rel)", "diff", "intended", "exact", "exact mJ")
    print("{:<10} {:>10} {:>10} {:>7} {:>10} {:>10} {:>9}".format(*head))
    for name, ref in RELEASE.items():
        model = create_model(name).eval()
        rel = measure_energy(model, batch, convention="e3dsnn-release")
        intended = measure_energy(model, batch, convention="e3dsnn-release-intended")
        print(f"{name:<10} {ref:10.3e} {rel.ann_flops:10.3e} {rel.ann_flops / ref - 1:+7.1%} "
              f"{intended.ann_flops:10.3e} {rel.exact_ann_flops:10.3e} "
              f"{rel.exact_ann_flops * 4.6e-9:9.3f}")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", default=None, help="default: every registered spiking model")
    ap.add_argument("--unit", default="flops", choices=("flops", "macs"), help="what both sides count")
    ap.add_argument("--steps", type=int, default=30, help="training steps (batches) per model")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--eval-batches", type=int, default=2)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="also write all figures to this JSON file")
    ap.add_argument("--release", action="store_true", help="only the E-3DSNN release comparison")
    args = ap.parse_args()
    if args.release:
        release_table(args.seed)
        return

    names = args.models or [n for n in list_models() if not n.endswith("_ann")]
    train = dataset_batches("modelnet40", "train", args.batch_size, args.steps, args.seed)
    test = dataset_batches("modelnet40", "test", args.batch_size, args.eval_batches, args.seed + 1)
    table = EnergyTable()
    results = []
    ops, mac = ("SOPs", "MAC FLOPs") if args.unit == "flops" else ("ACs", "MACs")
    print(f"unit {args.unit}")
    print(f"{'model':<22} {'SNN mJ':>9} {'ANN-eq mJ':>10} {'SNN/ANN':>8} {'twin mJ':>9} {ops:>10} "
          f"{mac:>10} {'rate':>6} {'loss':>12} {'s':>6}")  # fmt: skip
    for name in names:
        seed_everything(args.seed)
        t0 = time.perf_counter()
        snn = create_model(name)
        first, last = train_briefly(snn, train, args.lr)
        rep = merge_reports([measure_energy(snn, b, energy=table, name=name, unit=args.unit) for b in test])
        twin_name = f"{name}_ann"
        twin_mj = float("nan")
        if twin_name in list_models():
            seed_everything(args.seed)
            twin = create_model(twin_name)
            train_briefly(twin, train, args.lr)
            twin_rep = merge_reports(
                [measure_energy(twin, b, energy=table, name=twin_name, unit=args.unit) for b in test]
            )
            twin_mj = twin_rep.energy_snn_mj  # a ReLU network: every layer is charged as MACs
        dt = time.perf_counter() - t0
        rates = [r.rate for r in rep.layers if r.rate is not None]
        rate = sum(rates) / max(len(rates), 1)
        results.append(
            {
                "model": name,
                "unit": args.unit,
                "energy_snn_mj": rep.energy_snn_mj,
                "energy_ann_mj": rep.energy_ann_mj,
                "ratio": rep.ratio,
                "twin_energy_mj": twin_mj,
                "sops": rep.sops,
                "synaptic_events": rep.synaptic_events,
                "mac_ops": rep.mac_ops,
                "mac_flops": rep.mac_flops,
                "ann_flops": rep.ann_flops,
                "ann_macs": rep.ann_macs,
                "mean_firing_rate": rate,
                "points": rep.points,
                "loss_first": first,
                "loss_last5": last,
                "seconds": dt,
            }
        )
        print(f"{name:<22} {rep.energy_snn_mj:9.4f} {rep.energy_ann_mj:10.4f} {rep.ratio:8.4f} "
              f"{twin_mj:9.4f} {rep.sops:10.3e} {rep.mac_ops:10.3e} {rate:6.3f} "
              f"{first:5.2f}->{last:5.2f} {dt:6.1f}")  # fmt: skip
    if args.json:
        from svl.utils import atomic_write

        with atomic_write(args.json, "w") as fh:
            json.dump(results, fh, indent=2)


if __name__ == "__main__":
    main()
