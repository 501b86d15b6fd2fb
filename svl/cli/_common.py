"""Shared pieces of the commands: config files with key=value overrides, devices, many files' results."""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

C = TypeVar("C")

# What a `key=value` override looks like (dotted key of words, then '='): not a path, not an option.
_OVERRIDE = re.compile(r"\w+(\.\w+)*=")


def _is_override(token: str) -> bool:
    return bool(_OVERRIDE.match(token))


class Parser(argparse.ArgumentParser):
    """The `svl` parser (its subcommands' too): flags may stand anywhere among `key=value` overrides.

    Plain argparse takes a command's trailing `overrides` only from the first run of positionals, so
    `svl finetune out_dir=X --resume a.b=1` ended in "unrecognized arguments", and an option with an
    optional value (`--resume [CKPT]`) took the override after it as its value. Here an override
    is never an optional value (`--resume=CKPT` gives one explicitly), and every later run of
    overrides joins `overrides` in the order given (the intermixed parse, as
    `parse_intermixed_args` does, which argparse refuses on a parser with subcommands).
    """

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        takes = any(a.dest == "overrides" and not a.option_strings for a in self._actions)
        if not takes or args is None:
            return super().parse_known_args(args, namespace)
        ns, extras = super().parse_known_args(self._flags_after_overrides(list(args)), namespace)
        later = [a for a in extras if not a.startswith("-")]
        if later:
            ns.overrides = [*(ns.overrides or []), *later]
            extras = [a for a in extras if a.startswith("-") and a != "--"]
        return ns, extras

    def _flags_after_overrides(self, args: list[str]) -> list[str]:
        """Move each optional-value flag that an override follows past that run of overrides."""
        optional_value = {s for a in self._actions if a.nargs == "?" for s in a.option_strings}
        out: list[str] = []
        i = 0
        while i < len(args):
            token = args[i]
            if token == "--":
                out.extend(args[i:])
                break
            if token in optional_value and i + 1 < len(args) and _is_override(args[i + 1]):
                j = i + 1
                while j < len(args) and _is_override(args[j]):
                    j += 1
                out.extend([*args[i + 1 : j], token])
                i = j
                continue
            out.append(token)
            i += 1
        return out


def add_config_args(p: argparse.ArgumentParser) -> None:
    """Give a subcommand `--config FILE`, `--print-config` and `key=value` overrides (among the flags)."""
    p.add_argument("--config", "-c", metavar="FILE", default=None, help="YAML config file")
    p.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="config overrides applied after the file, e.g. train.lr=0.001 model.name=e3dsnn_s",
    )


def add_sensor_size_arg(p: argparse.ArgumentParser) -> None:
    """`--sensor-size W H` on a command that reads event files (-> args.sensor_size, a pair or None)."""
    p.add_argument(
        "--sensor-size",
        type=int,
        nargs=2,
        default=None,
        metavar=("W", "H"),
        help="event files: the sensor's width and height in pixels, overriding the format's or header's "
        "(default: those, else the largest x and y + 1)",
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


def print_file_results(
    results: list[dict[str, Any]],
    line: Callable[[dict[str, Any]], str],
    as_json: bool,
    notes: Sequence[str] = (),
) -> int:
    """Print what `classify`, `segment` or `detect` did with each file (library calls made with
    errors="report") and return the exit code.

    In order: for each good file its "warnings" (inputs unlike the training data) as `svl: warning:`
    lines on stderr, then `line(result)` on stdout (with `as_json`, all results, failures included,
    as one JSON list instead; the warnings are still printed) and `svl: error: FILE: problem` on
    stderr for each failed one; then the `notes` on stderr; then, when any failed, `svl: K of N files
    failed` (N > 1: one file's error line says it all) and exit code 2 (0 when none failed).
    """
    if as_json:
        print(json.dumps(results, indent=2))
    for r in results:
        if "error" in r:
            sys.stdout.flush()  # keep the lines in file order on a terminal
            msg, file = str(r["error"]), str(r["file"])
            print(f"svl: error: {msg if msg.startswith(file) else f'{file}: {msg}'}", file=sys.stderr)
            continue
        if r.get("warnings"):
            sys.stdout.flush()
            for w in r["warnings"]:
                print(f"svl: warning: {w}", file=sys.stderr)
        if not as_json:
            print(line(r))
    sys.stdout.flush()
    for note in notes:
        print(note, file=sys.stderr)
    failed = sum("error" in r for r in results)
    if not failed:
        return 0
    if len(results) > 1:
        print(f"svl: {failed} of {len(results)} files failed", file=sys.stderr)
    return 2


def add_point_file_args(p: argparse.ArgumentParser, writes: str) -> None:
    """FILE..., -o DIR, --format and --json: what the commands over point-cloud files share."""
    p.add_argument(
        "files", nargs="+", metavar="FILE",
        help="point-cloud files (any format svl.data reads); a bad file is reported and the others go on "
        "(exit 2 at the end when any failed)",
    )  # fmt: skip
    p.add_argument(
        "-o", "--output", required=True, metavar="DIR",
        help=f"writes <name>.{writes} here, <name> the file's path below the files' common folder",
    )  # fmt: skip
    p.add_argument("--format", default=None, help="force a point-cloud reader (.bin: kitti, nuscenes, waymo)")
    p.add_argument("--json", action="store_true", help="print results as JSON")
