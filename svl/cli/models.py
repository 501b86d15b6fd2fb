"""`svl models`: registered encoders and pretrained tags."""

from __future__ import annotations

import argparse


# ----------------------------------------------------------------------------- svl models
def _cmd_models(args: argparse.Namespace) -> int:
    from svl.models import count_params, create_model, list_models, list_pretrained

    names = list_models(args.pattern)
    tags = list_pretrained(args.pattern if "." in args.pattern else args.pattern + "*")
    if not names and not tags:
        raise ValueError(f"no registered model matches {args.pattern!r} (try `svl models`)")
    for name in names:
        if args.params:
            n = count_params(create_model(name))
            print(f"{name:28s} {n / 1e6:8.2f} M  ({n:,} parameters, 40-way head)")
        else:
            print(name)
    if tags:
        print("\npretrained (weights under $SVL_CACHE/models or ~/.cache/svl/models):")
        for e in tags:
            c = e.contract
            state = "present" if e.path().exists() else "absent"
            print(
                f"  {e.name:36s} {c.gravity_axis}-up color={c.color} pts={c.num_points} "
                f"voxel={c.voxel_size} TxD={c.T}x{c.D} teacher={c.teacher} dim={c.embed_dim} [{state}]"
            )
    return 0


def _add_models(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list registered models and pretrained tags (with --params: sizes)")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style name filter, e.g. 'e3dsnn_*'")
    p.add_argument("--params", action="store_true", help="build each model and print its parameter count")
    p.set_defaults(func=_cmd_models)


def register(sub: argparse._SubParsersAction) -> None:
    _add_models(sub)
