"""`svl transfer`: what a pretrained encoder sees on your data vs its pretraining data (issue 30)."""

from __future__ import annotations

import argparse
import json
from typing import Any


def parse_options(items: list[str] | None) -> dict[str, Any]:
    """`key=value` strings -> a dict; values read as YAML (numbers, booleans, lists, dicts), so
    `T=6`, `encoding=bins` and `transforms=[{name: random_scale, low: 10, high: 10}]` all work."""
    import yaml

    out: dict[str, Any] = {}
    for item in items or []:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise ValueError(f"--option {item!r}: give key=value, e.g. --option T=6")
        try:
            out[key.strip()] = yaml.safe_load(value) if value else None
        except yaml.YAMLError as e:
            raise ValueError(f"--option {item!r}: the value is not readable ({e})") from None
    return out


def run_transfer_command(args: argparse.Namespace) -> int:
    """Handler of ``svl transfer``: measure both datasets, print the table (or the JSON report)."""
    from svl.infer.transfer import format_transfer, transfer_report

    if args.samples < 1 or args.batch_size < 1:
        raise ValueError(f"--samples and --batch-size must be >= 1, got {args.samples}, {args.batch_size}")
    report = transfer_report(
        args.checkpoint,
        args.data,
        split=args.split,
        samples=args.samples,
        batch_size=args.batch_size,
        reference=args.reference,
        options=parse_options(args.option),
        seed=args.seed,
        voxel_size=args.voxel_size,
        xyz_scale=args.xyz_scale,
    )
    print(json.dumps(report, indent=2) if args.json else format_transfer(report))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "transfer",
        help="what a pretrained encoder sees on your data vs its pretraining data (sites, firing, BN shift)",
        description="Run a checkpoint's spiking encoder (eval mode, nothing updated) over seeded samples of "
        "your dataset and of the reference (its pretraining data) and report per layer group: occupied "
        "sites per sample, firing rate, and how far each BN layer's input sits from its running statistics "
        "(what pretraining saw), with a verdict line for each figure past its threshold.",
    )
    p.add_argument("--checkpoint", required=True, metavar="CKPT", help="svl checkpoint of an E-3DSNN encoder")
    p.add_argument(
        "--data", required=True, metavar="NAME", help="registered dataset (nmnist, modelnet40_scenes, ...)"
    )
    p.add_argument("--split", default="train", help="split of both datasets (default: train)")
    p.add_argument("--samples", type=int, default=64, help="samples drawn from each dataset (default 64)")
    p.add_argument("--batch-size", type=int, default=16, help="samples per forward pass (default 16)")
    p.add_argument(
        "--reference",
        metavar="NAME",
        default=None,
        help="reference dataset (default: the checkpoint's pretraining data, else modelnet40)",
    )
    p.add_argument(
        "--option",
        action="append",
        metavar="key=value",
        help="dataset build option, repeatable; values read as YAML (T=6, encoding=bins, root=DIR)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--voxel-size", type=float, default=None, metavar="M",
        help="the voxel size your fine-tuning run uses (model.voxel_size; default: the checkpoint's)",
    )  # fmt: skip
    p.add_argument(
        "--xyz-scale", type=float, default=1.0, metavar="S",
        help="your fine-tune's transfer.xyz_scale: the encoder as that run starts (default 1: as pretrained)",
    )  # fmt: skip
    p.add_argument("--json", action="store_true", help="print the report as JSON instead of the table")
    p.set_defaults(func=run_transfer_command)
