"""Training commands: a config file plus `key=value` overrides, run as a task on the shared Trainer.

Each command is one row of `COMMANDS` (name -> default task, help, description); the task itself
may be chosen by the config's `task` key, so later jobs (`svl finetune task=segmentation`) plug in here
without a new handler.
"""

from __future__ import annotations

import argparse
import shlex
import sys

from svl.cli._common import add_config_args, print_config

COMMANDS: dict[str, tuple[str, str, str]] = {
    "pretrain": (
        "pretrain",
        "Multi-scale Triple Alignment pretraining + Rep-VLI zero-shot evaluation",
        "Pretrain a spiking 3D encoder against frozen text/image teachers, then calibrate on "
        "validation and report zero-shot on the test split. With no arguments: the embedded "
        "ModelNet40 unseen-class protocol (E-3DSNN-T, MiniLM + EfficientNet-Lite0). "
        "Launch with torchrun for DDP.",
    ),
    "finetune": (
        "classification",
        "fine-tune an encoder on a labelled dataset (task=classification; from scratch or an SVL checkpoint)",
        "Fine-tune a registered encoder for a downstream task (the config's `task` key: "
        "classification (default), event_classification, segmentation, detection): from scratch "
        "(init=scratch), from an `svl pretrain` checkpoint's encoder "
        "(init=PATH), or from its Rep-VLI zero-shot head too (init=PATH head=HEAD). With no arguments: "
        "E-3DSNN-T on ModelNet40 with the E-3DSNN recipe at a CPU-sized budget. Writes OA, class-mean "
        "accuracy, a per-class table, confusion.png and energy per sample to out_dir/results.json "
        "(segmentation: mIoU, OA, per-class IoU; detection: AP in BEV and 3D per class and level). "
        "Launch with torchrun for DDP.",
    ),
    "distill": (
        "distill",
        "VL2Spike: distil a vision-language teacher into an image Spikformer (SVS + SPL terms)",
        "Train a spiking image transformer on a labelled image dataset with cross-entropy plus the "
        "VL2Spike distillation terms (docs/SPEC.md §11), each switched by its weight in the `distill` "
        "section: SVS feature alignment (pooled / token, cosine or contrastive) and temporal "
        "consistency, SPL prototype-text alignment and logit distillation. Teachers: EfficientNet-Lite0 "
        "+ MiniLM offline, or a local CLIP checkpoint (teacher.image=openclip:PATH teacher.text=null). "
        "With no arguments: spikformer_s (T=2, binary spikes) on rendered ModelNet40 views, 20 labelled "
        "shapes per class. Writes OA, class-mean accuracy, "
        "view-retrieval Recall@1/5/10, energy per image and the teacher's own scores to "
        "out_dir/results.json; final.safetensors is read by `svl classify IMAGE...`.",
    ),
}


def _run(args: argparse.Namespace) -> int:
    from svl.tasks import load_task_config, run_task
    from svl.train.trainer import TrainingInterrupted

    cls, cfg = load_task_config(args.default_task, args.config, list(args.overrides or []))
    if args.print_config:
        print_config(cfg)
        return 0
    resume: bool | str = args.resume if args.resume not in (None, "") else False
    try:
        result = run_task(cfg, cls, resume=resume, overwrite=args.overwrite)
    except TrainingInterrupted as e:
        print(f"svl: interrupted at step {e.step}; checkpoint saved to {e.path}", file=sys.stderr)
        print(f"resume with: {_resume_command(args, cfg.out_dir)}", file=sys.stderr)
        return e.exit_code
    if "table" in result:
        print(result["table"])
        print(f"results: {cfg.out_dir}/results.json   wall time: {result['wall_seconds'] / 60:.1f} min")
    return 0


def _resume_command(args: argparse.Namespace, out_dir: str) -> str:
    """The command line that continues this run (the user's own, with --resume and no --overwrite)."""
    argv = [a for a in sys.argv[1:] if a != "--overwrite"]
    if not argv or argv[0] != args.command:
        argv = [args.command, f"out_dir={out_dir}"]
    if not any(a == "--resume" or a.startswith("--resume=") for a in argv):
        argv.append("--resume")
    return "svl " + " ".join(shlex.quote(a) for a in argv)


def _add(sub: argparse._SubParsersAction, name: str, task: str, help: str, description: str) -> None:
    p = sub.add_parser(name, help=help, description=description)
    add_config_args(p)
    p.add_argument(
        "--resume",
        nargs="?",
        const="auto",
        default=None,
        metavar="CKPT",
        help="continue exactly from out_dir/last.safetensors (or CKPT)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="start afresh in an out_dir that holds an earlier run (the earlier run is moved aside)",
    )
    p.set_defaults(func=_run, default_task=task)


def register(sub: argparse._SubParsersAction) -> None:
    for name, (task, help, description) in COMMANDS.items():
        _add(sub, name, task, help, description)
