"""`svl caption` (one caption per point-cloud file) and `svl chat` (questions about one file) with a
language-bridge checkpoint from `svl finetune task=language`."""

from __future__ import annotations

import argparse
import signal
import sys
from typing import Any

from svl.cli._common import print_file_results


def _decoding(p: argparse.ArgumentParser, max_new: int) -> None:
    p.add_argument(
        "--max-new-tokens", type=int, default=max_new, help=f"answer length limit (default {max_new})"
    )
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default); > 0 samples")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass when sampling (default 1)")
    p.add_argument("--up-axis", choices=("z", "y"), default=None, help="the files' up axis (default z)")
    p.add_argument("--lm", default=None, metavar="DIR", help="the checkpoint's language model, moved to DIR")


def _cmd_caption(args: argparse.Namespace) -> int:
    from svl.infer.language import caption

    results = caption(
        args.checkpoint, args.files, prompt=args.prompt, max_new_tokens=args.max_new_tokens,
        temperature=args.temperature, top_p=args.top_p, seed=args.seed, up_axis=args.up_axis, lm=args.lm,
        errors="report",
    )  # fmt: skip
    return print_file_results(results, lambda r: f"{r['file']}: {r['caption']}", args.json)


def _cmd_chat(args: argparse.Namespace) -> int:
    from svl.infer.language import ChatSession
    from svl.utils import progress

    chat = ChatSession(args.checkpoint, args.file, up_axis=args.up_axis, lm=args.lm)
    for w in chat.warnings:
        print(f"svl: warning: {w}", file=sys.stderr)
    print(f"chatting about {args.file}; `exit` (or Ctrl-D) leaves, Ctrl-C ends an answer", file=sys.stderr)
    stopped = {"flag": False}

    def interrupt(signum: int, frame: Any) -> None:
        stopped["flag"] = True

    while True:
        try:
            question = input("you> ")
        except EOFError:
            print(file=sys.stderr)
            return 0
        except KeyboardInterrupt:  # as in Python's prompt: Ctrl-C drops the line, `exit` leaves
            print(file=sys.stderr)
            continue
        if question.strip().lower() in ("exit", "quit"):
            return 0
        if not question.strip():
            continue
        stopped["flag"] = False
        previous = signal.signal(signal.SIGINT, interrupt)  # Ctrl-C ends this answer, not the program
        bar = progress(range(args.max_new_tokens), desc="answering", leave=False, log_every=None)
        try:
            answer = chat.ask(
                question, max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p,
                stop=lambda: stopped["flag"], on_token=lambda step, b=bar: b.update(1),
            )  # fmt: skip
        except ValueError as e:  # e.g. a question longer than the model's context: say so, ask again
            print(f"svl: error: {e}", file=sys.stderr)
            continue
        finally:
            bar.close()
            signal.signal(signal.SIGINT, previous)
        print(f"svl> {answer}" + (" [stopped]" if stopped["flag"] else ""), flush=True)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("caption", help="one caption per point-cloud file (a language-bridge checkpoint)")
    p.add_argument("--checkpoint", required=True, metavar="CKPT", help="final.safetensors of a language run")
    p.add_argument(
        "files", nargs="+", metavar="FILE",
        help="point-cloud files (any format svl.data reads); a bad file is reported and the others go on",
    )  # fmt: skip
    p.add_argument("--prompt", default="Describe this shape.", help="the instruction (default: %(default)r)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (with --temperature > 0)")
    p.add_argument("--json", action="store_true", help="print results as JSON")
    _decoding(p, 48)
    p.set_defaults(func=_cmd_caption)

    c = sub.add_parser("chat", help="ask questions about one point-cloud file (a language-bridge checkpoint)")
    c.add_argument("--checkpoint", required=True, metavar="CKPT", help="final.safetensors of a language run")
    c.add_argument("file", metavar="FILE", help="a point-cloud file")
    _decoding(c, 64)
    c.set_defaults(func=_cmd_chat)
