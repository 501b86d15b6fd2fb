"""`svl segment`: per-point labels of point-cloud files with a `svl finetune task=segmentation` checkpoint."""

from __future__ import annotations

import argparse
from typing import Any

from svl.cli._common import add_point_file_args, print_file_results


def _line(r: dict[str, Any]) -> str:
    top = sorted(r["classes"].items(), key=lambda kv: -kv[1])[:5]
    return (
        f"{r['file']}: {r['points']} points -> {r['ply']}, {r['npy']}, {r['png']}  ["
        + ", ".join(f"{c} {n}" for c, n in top)
        + "]"
    )


def _cmd_segment(args: argparse.Namespace) -> int:
    from svl.infer import segment

    results = segment(args.checkpoint, args.files, args.output, format=args.format, errors="report")
    return print_file_results(results, _line, args.json)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("segment", help="label every point of point-cloud files (a segmentation checkpoint)")
    p.add_argument(
        "--checkpoint", required=True, metavar="CKPT", help="final.safetensors of a segmentation run"
    )
    add_point_file_args(p, "ply/.npy/.png")
    p.set_defaults(func=_cmd_segment)
