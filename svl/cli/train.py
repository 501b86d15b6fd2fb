"""Training commands (`svl pretrain`, ...): a config plus overrides, run as a task."""

from __future__ import annotations

import argparse

from svl.cli._common import add_config_args, parse_overrides


# ----------------------------------------------------------------------------- svl pretrain
def _cmd_pretrain(args: argparse.Namespace) -> int:
    from svl.train.pretrain import PretrainConfig, format_results, run_pretrain

    cfg = parse_overrides(PretrainConfig, args)
    resume: bool | str = args.resume if args.resume not in (None, "") else False
    result = run_pretrain(cfg, resume=resume)
    if "names" in result:
        print(format_results(result))
        print(f"results: {cfg.out_dir}/results.json   wall time: {result['wall_seconds'] / 60:.1f} min")
    return 0


def _add_pretrain(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "pretrain",
        help="Multi-scale Triple Alignment pretraining + Rep-VLI zero-shot evaluation",
        description=(
            "Pretrain a spiking 3D encoder against frozen text/image teachers, then calibrate on "
            "validation and report zero-shot on the test split. With no arguments: the embedded "
            "ModelNet40 unseen-class protocol (E-3DSNN-T, MiniLM + EfficientNet-Lite0). "
            "Launch with torchrun for DDP."
        ),
    )
    add_config_args(p)
    p.add_argument(
        "--resume",
        nargs="?",
        const="auto",
        default=None,
        metavar="CKPT",
        help="continue exactly from out_dir/last.safetensors (or CKPT)",
    )
    p.set_defaults(func=_cmd_pretrain)


def register(sub: argparse._SubParsersAction) -> None:
    _add_pretrain(sub)
