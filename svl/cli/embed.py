"""`svl embed`: precompute teacher embeddings of texts or rendered views."""

from __future__ import annotations

import argparse


# ----------------------------------------------------------------------------- svl embed
def _cmd_embed(args: argparse.Namespace) -> int:
    from svl.teachers.store import run_embed_command

    return run_embed_command(args)


def _add_embed(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "embed",
        help="precompute teacher embeddings of texts or rendered point-cloud views (cached on disk)",
        description="Embed texts (--texts FILE: one per line or a JSON list) or multi-view renders of "
        "point clouds (--dataset modelnet40 | --points FILE.npz) with a frozen teacher. Results are "
        "cached under the teacher id + a content hash; an interrupted run resumes.",
    )
    p.add_argument(
        "--teacher",
        default=None,
        help="minilm | efficientnet-lite0 | openclip:PATH | hf-clip:PATH "
        "(default: minilm for texts, efficientnet-lite0 for views)",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--texts", metavar="FILE", help="text file, one text per line (or .json list)")
    src.add_argument("--dataset", metavar="NAME", help="shared dataset to render (modelnet40)")
    src.add_argument("--points", metavar="FILE", help=".npz with points/xyz (+ rgb) or .npy (shapes, N, 3)")
    p.add_argument("--split", default="train", help="dataset split (default: train)")
    p.add_argument("--views", type=int, default=4, help="views per shape around the gravity axis (default 4)")
    p.add_argument("--size", type=int, default=128, help="rendered view size in pixels (default 128)")
    p.add_argument("--color-mode", default="shaded", choices=("shaded", "normal", "depth", "flat"))
    p.add_argument("--batch-size", type=int, default=32, help="shapes per chunk (default 32)")
    p.add_argument("--limit", type=int, default=None, help="only the first N shapes")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available)")
    p.add_argument(
        "--cache-dir", default=None, help="embedding store folder (default: $SVL_CACHE/embeddings)"
    )
    p.add_argument("--no-cache", action="store_true", help="compute without reading or writing the store")
    p.add_argument("--out", metavar="FILE.npy", default=None, help="also write the array to this .npy file")
    p.add_argument(
        "--grid", metavar="FILE.png", default=None, help="save a PNG grid of the first shapes' views"
    )
    p.set_defaults(func=_cmd_embed)


def register(sub: argparse._SubParsersAction) -> None:
    _add_embed(sub)
