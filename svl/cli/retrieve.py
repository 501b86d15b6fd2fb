"""`svl retrieve`: place recognition with an image model's descriptors (Recall@1/5/10)."""

from __future__ import annotations

import argparse
import json
import sys


def _cmd_retrieve(args: argparse.Namespace) -> int:
    from svl.eval.retrieval import format_recalls
    from svl.infer import retrieve

    res = retrieve(
        args.checkpoint, args.root, args.split, threshold=args.threshold, positives_file=args.positives,
        batch_size=args.batch_size,
    )  # fmt: skip
    for w in res.get("warnings", []):
        print(f"svl: warning: {w}", file=sys.stderr)
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        print(f"{res['root']} ({res['split']}): {res['queries']} queries, {res['database']} database images")
        print(format_recalls(res))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "retrieve",
        help="place recognition: Recall@1/5/10 of an image model's descriptors on a VPR dataset",
        description="Rank the database images of a visual place recognition split (the "
        "images/<split>/{database,queries}/@UTM_east@UTM_north@...@.jpg layout of the VPR benchmarks) "
        "for each query by the cosine similarity of an `svl distill` model's pooled spike features; "
        "a database image within --threshold metres (or listed in --positives) is a hit.",
    )
    p.add_argument("--checkpoint", required=True, metavar="CKPT")
    p.add_argument("--root", required=True, metavar="DIR", help="the dataset folder")
    p.add_argument("--split", default="test")
    p.add_argument("--threshold", type=float, default=25.0, help="positive radius in metres (default 25)")
    p.add_argument("--positives", default=None, metavar="FILE", help="ground-truth positives instead")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_retrieve)
