"""Shared pieces of the commands: config files with key=value overrides, devices."""

from __future__ import annotations

import argparse
import sys
from typing import TypeVar

C = TypeVar("C")


def add_config_args(p: argparse.ArgumentParser) -> None:
    """Give a subcommand `--config FILE`, `--print-config` and trailing `key=value` overrides."""
    p.add_argument("--config", "-c", metavar="FILE", default=None, help="YAML config file")
    p.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="config overrides applied after the file, e.g. train.lr=0.001 model.name=e3dsnn_s",
    )


def parse_overrides(cls: type[C] | C, args: argparse.Namespace) -> C:
    """Build the command's config from `args.config` and `args.overrides` (see add_config_args).

    With `--print-config` the resolved YAML is printed and the command exits with 0.
    """
    from svl.config import load_config

    cfg = load_config(cls, getattr(args, "config", None), list(getattr(args, "overrides", None) or []))
    if getattr(args, "print_config", False):
        print_config(cfg)
        raise SystemExit(0)
    return cfg


def print_config(cfg: object) -> None:
    """Write a resolved config to stdout as YAML (`--print-config`)."""
    from omegaconf import OmegaConf

    from svl.config import config_to_dict

    sys.stdout.write(OmegaConf.to_yaml(OmegaConf.create(config_to_dict(cfg))))


def resolve_device(name: str | None) -> str:
    """'auto' / None -> cuda when available, else cpu; anything else as given."""
    import torch

    if name in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name
