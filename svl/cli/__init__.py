"""The `svl` command line: the app layer over the svl library (like `open_clip_train` over `open_clip`).

One module per command family (info, train, embed, energy, zeroshot, models, data); each has
`register(sub)` that adds its subparsers with `set_defaults(func=handler)`. Handlers take the parsed
`argparse.Namespace`, call typed library functions, print, and return an exit code (None = 0).
Heavy modules are imported inside handlers so `svl --help` stays fast. Bad input raises
ValueError/FileNotFoundError; `main` prints it as `svl: error: ...` (exit code 2). Only this
package parses argv or prints results; the library returns data.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
import warnings
from collections.abc import Iterator, Sequence

from svl.cli._common import Parser, add_config_args, parse_overrides

__all__ = ["add_config_args", "build_parser", "main", "parse_overrides"]

# Command families, in the order `svl --help` lists them.
COMMAND_MODULES = (
    "info", "train", "embed", "energy", "transfer", "zeroshot", "segment", "detect", "retrieve", "language",
    "models", "data",
)  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    """The full `svl` parser; each subcommand registers itself in its own `_add_<name>`."""
    from svl import __version__

    parser = Parser(  # subcommand parsers are Parsers too: flags may stand among overrides
        prog="svl",
        description="Spike-based vision-language learning: spiking 3D encoders aligned with "
        "vision-language teachers.",
    )
    parser.add_argument("--version", action="version", version=f"svl {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"svl.cli.{name}").register(sub)
    return parser


@contextlib.contextmanager
def _user_warnings() -> Iterator[None]:
    """svl's own warnings (an unsorted event file, a degenerate cloud) as one `svl: warning: ...` line
    each, once per message, without the Python source line that `warnings` prints; others as usual."""
    shown = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001, ANN202
        if getattr(category, "__module__", "").split(".")[0] == "svl":
            print(f"svl: warning: {message}", file=sys.stderr if file is None else file)
        else:
            shown(message, category, filename, lineno, file, line)

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `svl` script; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        with _user_warnings():
            return int(func(args) or 0)
    except (ValueError, FileNotFoundError) as e:
        if os.environ.get("SVL_DEBUG", "") not in ("", "0"):
            raise
        print(f"svl: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("svl: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `svl models | head`: the reader left; not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
