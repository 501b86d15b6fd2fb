"""`svl build-head`, `svl zeroshot`, `svl classify`: Rep-VLI heads and text-free inference."""

from __future__ import annotations

import argparse


# ------------------------------------------------------------------ svl build-head / zeroshot / classify
def _cmd_build_head(args: argparse.Namespace) -> int:
    from svl.eval.commands import run_build_head

    return run_build_head(args)


def _add_build_head(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "build-head",
        help="build a Rep-VLI zero-shot head: embed a vocabulary and fold it into the encoder's last layer",
        description="Embed class names (or their shipped shape descriptions) with the text teacher over "
        "the prompt templates, pass them through the checkpoint's trained text projection, L2-normalise "
        "and fold them into the encoder's final 1x1 layer. A new vocabulary is a new head file.",
    )
    p.add_argument(
        "--checkpoint", required=True, metavar="CKPT", help="pretraining checkpoint (.safetensors)"
    )
    p.add_argument(
        "--classes",
        required=True,
        metavar="FILE|DATASET",
        help="class list (.txt one per line, or .json list) or a dataset name, e.g. modelnet40, "
        "modelnet40_zsl:unseen",
    )
    p.add_argument(
        "--teacher", default=None, help="text teacher (default: the one the checkpoint was trained with)"
    )
    p.add_argument(
        "--text-mode",
        default="names",
        choices=("names", "descriptions"),
        help="embed class names in the 64 prompt templates, or the shipped one-sentence descriptions",
    )
    p.add_argument(
        "--templates", default=None, metavar="FILE", help="custom templates (.txt/.json, one '{}' each)"
    )
    p.add_argument("--device", default=None, help="device for the text teacher (default: cuda if available)")
    p.add_argument("-o", "--output", required=True, metavar="HEAD", help="head file to write (.safetensors)")
    p.set_defaults(func=_cmd_build_head)


def _cmd_zeroshot(args: argparse.Namespace) -> int:
    from svl.eval.commands import run_zeroshot

    return run_zeroshot(args)


def _add_zeroshot(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "zeroshot",
        help="text-free zero-shot evaluation of a checkpoint + Rep-VLI head on a dataset split",
        description="Top-1/3/5 and class-mean accuracy, a per-class table, a confusion matrix and, for "
        "zero-shot splits, generalized zero-shot accuracy with and without calibrated stacking.",
    )
    p.add_argument("--checkpoint", required=True, metavar="CKPT")
    p.add_argument("--head", required=True, metavar="HEAD", help="head file from `svl build-head`")
    p.add_argument("--data", required=True, metavar="DATASET", help="modelnet40 | modelnet40_zsl | ...")
    p.add_argument("--split", default="test", help="split to evaluate (default: test)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--limit", type=int, default=None, help="only the first N samples")
    p.add_argument("--device", default="auto", help="torch device (default: cuda if available)")
    p.add_argument("--gamma", type=float, default=None, help="calibrated-stacking bias for seen classes")
    p.add_argument(
        "--calibrate",
        action="store_true",
        help="choose gamma on --val-split with the checkpoint's pseudo-unseen classes (never on test)",
    )
    p.add_argument("--val-split", default="val", help="split used by --calibrate (default: val)")
    p.add_argument("--no-gzsl", action="store_true", help="skip the generalized zero-shot section")
    p.add_argument("-o", "--output", default=None, metavar="DIR", help="write JSON, table and confusion PNG")
    p.add_argument("-q", "--quiet", action="store_true", help="print the summary without the per-class table")
    p.set_defaults(func=_cmd_zeroshot)


def _cmd_classify(args: argparse.Namespace) -> int:
    from svl.eval.commands import run_classify

    return run_classify(args)


def _add_classify(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "classify",
        help="label point-cloud files with a checkpoint + Rep-VLI head (no text model loaded)",
    )
    p.add_argument("--checkpoint", required=True, metavar="CKPT")
    p.add_argument("--head", required=True, metavar="HEAD")
    p.add_argument("files", nargs="+", metavar="FILE", help="point-cloud files (any format svl.data reads)")
    p.add_argument("--topk", type=int, default=5, help="scores to show per file (default 5)")
    p.add_argument("--num-points", type=int, default=None, help="resample to N points (default: model's)")
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true", help="print results as JSON")
    p.set_defaults(func=_cmd_classify)


def register(sub: argparse._SubParsersAction) -> None:
    _add_build_head(sub)
    _add_zeroshot(sub)
    _add_classify(sub)
