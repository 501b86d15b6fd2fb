"""`svl detect`: 3D boxes in point-cloud files with a `svl finetune task=detection` checkpoint."""

from __future__ import annotations

import argparse
from typing import Any

from svl.cli._common import add_point_file_args, print_file_results


def _line(r: dict[str, Any]) -> str:
    top = ", ".join(f"{d['class']} {d['score']:.2f}" for d in r["detections"][:5])
    return f"{r['file']}: {r['boxes']} boxes -> {r['json']}, {r['png']}" + (f"  [{top}]" if top else "")


def _cmd_detect(args: argparse.Namespace) -> int:
    from svl.infer import detect

    results = detect(
        args.checkpoint, args.files, args.output, format=args.format, score_threshold=args.score_threshold,
        errors="report",
    )  # fmt: skip
    return print_file_results(results, _line, args.json)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("detect", help="3D boxes in point-cloud files (a detection checkpoint)")
    p.add_argument("--checkpoint", required=True, metavar="CKPT", help="final.safetensors of a detection run")
    add_point_file_args(p, "json/.png")
    p.add_argument("--score-threshold", type=float, default=None, help="drop boxes scored below this")
    p.set_defaults(func=_cmd_detect)
