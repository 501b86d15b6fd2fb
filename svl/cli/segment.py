"""`svl segment`: per-point labels of point-cloud files with a `svl finetune task=segmentation` checkpoint."""

from __future__ import annotations

import argparse
import json
import sys


def _cmd_segment(args: argparse.Namespace) -> int:
    from svl.infer import segment

    results = segment(args.checkpoint, args.files, args.output, format=args.format)
    for w in (w for r in results for w in r.get("warnings", ())):
        print(f"svl: warning: {w}", file=sys.stderr)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for r in results:
        top = sorted(r["classes"].items(), key=lambda kv: -kv[1])[:5]
        print(f"{r['file']}: {r['points']} points -> {r['ply']}, {r['png']}  ["
              + ", ".join(f"{c} {n}" for c, n in top) + "]")  # fmt: skip
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("segment", help="label every point of point-cloud files (a segmentation checkpoint)")
    p.add_argument(
        "--checkpoint", required=True, metavar="CKPT", help="final.safetensors of a segmentation run"
    )
    p.add_argument("files", nargs="+", metavar="FILE", help="point-cloud files (any format svl.data reads)")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="writes <name>.ply/.npy/.png here")
    p.add_argument("--format", default=None, help="force a point-cloud reader (.bin: kitti, nuscenes, waymo)")
    p.add_argument("--json", action="store_true", help="print results as JSON")
    p.set_defaults(func=_cmd_segment)
