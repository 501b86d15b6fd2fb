"""`svl build-head`, `svl zeroshot`, `svl classify`: Rep-VLI heads and text-free inference."""

from __future__ import annotations

import argparse
import sys

from svl.cli._common import add_sensor_size_arg, print_file_results, resolve_device


# ------------------------------------------------------------------ svl build-head / zeroshot / classify
def _cmd_build_head(args: argparse.Namespace) -> int:
    from svl.infer import read_class_list
    from svl.teachers.heads import build_head_file
    from svl.vocab import read_list_file

    names = read_class_list(args.classes)
    templates = read_list_file(args.templates, "templates file") if args.templates else None
    path, meta = build_head_file(
        args.checkpoint,
        names,
        args.output,
        teacher=args.teacher,
        text_mode=args.text_mode,
        templates=templates,
        device=args.device,
    )
    print(
        f"wrote {path}: {len(names)} classes, teacher {meta['teacher']}, text mode {meta['text_mode']}, "
        f"{meta['num_templates']} templates (sha256 {meta['templates_hash'][:12]}), "
        f"encoder sha256 {meta['encoder_sha256'][:12]}"
    )
    return 0


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
    from svl.eval.zeroshot import format_table, write_report
    from svl.infer import evaluate_checkpoint

    report = evaluate_checkpoint(
        args.checkpoint,
        args.head,
        args.data,
        split=args.split,
        batch_size=args.batch_size,
        device=resolve_device(args.device),
        limit=args.limit,
        gamma=args.gamma,
        calibrate=args.calibrate,
        val_split=args.val_split,
        gzsl=not args.no_gzsl,
    )
    for note in report.pop("notes", []):
        print(f"note: {note}", file=sys.stderr)
    cal = report.get("calibration")
    if cal is not None:
        print(
            f"calibration on {args.data}/{cal['split']} ({cal['samples']} samples, "
            f"pseudo-unseen {cal['pseudo_unseen']}): gamma={cal['gamma']:.4f}  "
            f"val seen={100 * cal['seen']:.2f}%  "
            f"unseen={100 * cal['unseen']:.2f}%  H={100 * cal['H']:.2f}%"
        )
    print(format_table(report, per_class=not args.quiet))
    if args.output:
        paths = write_report(report, args.output)
        print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


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
    from svl.infer import classify

    results = classify(
        args.checkpoint, args.files, head=args.head, topk=args.topk, num_points=args.num_points,
        up_axis=args.up_axis, format=args.format, device=resolve_device(args.device),
        sensor_size=args.sensor_size, errors="report",
    )  # fmt: skip
    return _print_results(results, args)


def _classified(r: dict) -> str:
    tops = "  ".join(f"{t['class']} {t['score']:.3f}" for t in r["top"])
    return f"{r['file']}: {r['label']}    [{tops}]"


def _print_results(results: list[dict], args: argparse.Namespace) -> int:
    good = [r for r in results if "error" not in r]
    notes = []
    if not args.json and good and "gravity_axis" in good[0]["prepared"]:  # point clouds: what was assumed
        p = good[0]["prepared"]
        how = "as given by --up-axis" if args.up_axis else "assumed; pass --up-axis y for y-up files"
        notes.append(
            f"inputs: {p['up_axis']}-up ({how}) -> {p['gravity_axis']}-up, centred and scaled to the unit "
            f"sphere, {p['num_points']} points, colour {p['color'] or 'as loaded'}"
        )
    return print_file_results(results, _classified, args.json, notes=notes)


def _add_classify(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "classify",
        help="label point-cloud files with a checkpoint + Rep-VLI head, or a fine-tuned classifier "
        "(no text model loaded)",
    )
    p.add_argument("--checkpoint", required=True, metavar="CKPT")
    p.add_argument(
        "--head",
        default=None,
        metavar="HEAD",
        help="Rep-VLI head file (zero-shot); omit for a checkpoint written by `svl finetune`",
    )
    p.add_argument(
        "files", nargs="+", metavar="FILE",
        help="point-cloud files (any format svl.data reads), event files for an event classifier, or "
        "PNG/JPEG images for an image classifier (`svl distill`); a bad file is reported and the others "
        "go on (exit 2 at the end when any failed)",
    )  # fmt: skip
    p.add_argument("--topk", type=int, default=5, help="scores to show per file (default 5)")
    p.add_argument("--num-points", type=int, default=None, help="resample to N points (default: model's)")
    p.add_argument(
        "--up-axis",
        choices=("z", "y"),
        default=None,
        help="the files' up axis (default z; OpenShape, Objaverse and ShapeNet files are y-up)",
    )
    p.add_argument(
        "--format",
        default=None,
        help="event files only (a classifier fine-tuned on events): nmnist, aedat, aedat4, prophesee, "
        "npy, npz; default: by extension and content",
    )
    add_sensor_size_arg(p)
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true", help="print results as JSON")
    p.set_defaults(func=_cmd_classify)


def register(sub: argparse._SubParsersAction) -> None:
    _add_build_head(sub)
    _add_zeroshot(sub)
    _add_classify(sub)
