"""The `svl` command line: thin subcommands over the library.

Adding a subcommand: write `_add_<name>(sub)` that creates its parser with `sub.add_parser`,
sets `func=<handler>` via `set_defaults`, and call it from `build_parser()`. Handlers take the
parsed `argparse.Namespace` and return an exit code (None = 0). Import heavy modules inside the
handler, never at the top of this file, so `svl --help` stays fast. Handlers signal bad input by
raising ValueError/FileNotFoundError; `main` prints those as `svl: error: ...` (exit code 2).
Commands driven by a dataclass config use `add_config_args(p)` + `parse_overrides(Cfg, args)`.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
from collections.abc import Sequence
from typing import Any, TypeVar

__all__ = ["add_config_args", "build_parser", "main", "parse_overrides"]

C = TypeVar("C")

# Optional backends reported by `svl info` (import name, what it enables). Detected with
# find_spec only: importing transformers & co. would cost seconds.
OPTIONAL_BACKENDS: tuple[tuple[str, str], ...] = (
    ("spconv", "spconv sparse-conv backend"),
    ("fpsample", "fast farthest-point sampling"),
    ("h5py", "HDF5 datasets (ScanObjectNN)"),
    ("trimesh", "mesh loading / sampling"),
    ("open_clip", "OpenCLIP teachers"),
    ("transformers", "Hugging Face CLIP teachers"),
    ("sentence_transformers", "MiniLM text teacher"),
    ("tonic", "event-camera streams"),
    ("spikingjelly", "SpikingJelly interop"),
)


# ----------------------------------------------------------------------------- config helpers
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
    from svl.config import config_to_dict, load_config

    cfg = load_config(cls, getattr(args, "config", None), list(getattr(args, "overrides", None) or []))
    if getattr(args, "print_config", False):
        from omegaconf import OmegaConf

        sys.stdout.write(OmegaConf.to_yaml(OmegaConf.create(config_to_dict(cfg))))
        raise SystemExit(0)
    return cfg


# ----------------------------------------------------------------------------- svl info
def _has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def collect_info() -> dict[str, Any]:
    """Environment report: versions, devices, optional backends, data and cache locations."""
    import numpy
    import torch

    from svl import __version__
    from svl.utils import cache_dir, data_root

    cuda = torch.cuda.is_available()
    mps = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    root = data_root(required=False)
    info: dict[str, Any] = {
        "svl": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda": cuda,
        "cuda_devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        if cuda
        else [],
        "mps": mps,
        "backends": {name: _has(name) for name, _ in OPTIONAL_BACKENDS},
        "torchvision_installed": _has("torchvision"),
        "data_root": str(root) if root else None,
        "data": {d: bool(root and (root / d).is_dir()) for d in ("modelnet40", "labels")},
        "cache_dir": str(cache_dir()),
    }
    return info


def _cmd_info(args: argparse.Namespace) -> int:
    info = collect_info()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    yes = {True: "yes", False: "no"}
    print(f"svl {info['svl']}")
    print(f"python {info['python']} ({info['platform']})")
    print(f"torch {info['torch']}  numpy {info['numpy']}  threads {info['torch_threads']}")
    gpus = ", ".join(info["cuda_devices"])
    print(f"cuda: {yes[info['cuda']]}{f' ({gpus})' if gpus else ''}  mps: {yes[info['mps']]}")
    print("optional backends:")
    for name, what in OPTIONAL_BACKENDS:
        print(f"  {name:<22} {'found' if info['backends'][name] else 'missing':<8} {what}")
    if info["torchvision_installed"]:
        print("warning: torchvision is installed; with a CPU torch it can break transformers imports")
    if info["data_root"]:
        found = ", ".join(f"{d}/ {'found' if ok else 'missing'}" for d, ok in info["data"].items())
        print(f"data root: {info['data_root']} ({found})")
    else:
        print("data root: not found (set SVL_DATA or place the data in ../shared/data)")
    print(f"cache dir: {info['cache_dir']}")
    return 0


def _add_info(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="show versions, devices, optional backends and data locations")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=_cmd_info)


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


# ----------------------------------------------------------------------------- svl energy
def _cmd_energy(args: argparse.Namespace) -> int:
    from svl.energy.command import run_energy_command

    return run_energy_command(args)


def _add_energy(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "energy",
        help="per-layer FLOPs, synaptic operations and energy of a model (SNN vs ANN-equivalent)",
        description="Count FLOPs and synaptic operations per layer from a real forward pass (actual "
        "spike counts, real sparse kernel maps) and price them: E_MAC x FLOPs of real-valued-input "
        "layers + E_AC x SOPs of spiking layers, against the ANN-equivalent E_MAC x FLOPs.",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", metavar="NAME", help="registered model name (see svl.list_models())")
    src.add_argument("--checkpoint", metavar="CKPT", help="svl checkpoint (.safetensors) naming its model")
    p.add_argument("--head", metavar="HEAD", default=None, help="Rep-VLI zero-shot head file to fold in")
    inp = p.add_mutually_exclusive_group(required=True)
    inp.add_argument("--data", metavar="DATASET", help="measure on real clouds of this dataset (modelnet40)")
    inp.add_argument(
        "--random-points",
        metavar="N",
        type=int,
        help="one random input of N points (voxel models: the E-3DSNN release's 64^3 integer grid)",
    )
    p.add_argument("--split", default="test", help="dataset split (default: test)")
    p.add_argument("--batch-size", type=int, default=8, help="samples per batch (default 8)")
    p.add_argument("--batches", type=int, default=1, help="batches to measure (default 1)")
    p.add_argument(
        "--convention",
        default="exact",
        choices=("exact", "e3dsnn-release", "e3dsnn-release-intended"),
        help="exact (default) or count the way the E-3DSNN release does",
    )
    p.add_argument("--energy", default="fp32", choices=("fp32", "int8", "int32"), help="45 nm pJ table")
    p.add_argument("--e-mac", type=float, default=None, help="override E_MAC in pJ")
    p.add_argument("--e-ac", type=float, default=None, help="override E_AC in pJ")
    p.add_argument("--mode", default="integer", choices=("integer", "binary"), help="spike mode to run in")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", metavar="OUT.json", default=None, help="write the report as JSON")
    p.add_argument("--plot", metavar="OUT.png", default=None, help="bar chart of energy and firing rate")
    p.set_defaults(func=_cmd_energy)


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


# ----------------------------------------------------------------------------- svl data
def _cmd_data_info(args: argparse.Namespace) -> int:
    from svl.data.inspect import cmd_data_info

    return cmd_data_info(args)


def _cmd_data_render(args: argparse.Namespace) -> int:
    from svl.data.inspect import cmd_data_render

    return cmd_data_render(args)


def _add_data(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="inspect point-cloud files and datasets (info, render)")
    dsub = p.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)
    pi = dsub.add_parser(
        "info",
        help="what a file (.ply .obj .off .stl .xyz .txt .csv .npy .npz .pcd) or dataset holds",
        description="PATH is a point-cloud/mesh file or a dataset name, e.g. modelnet40, modelnet40_zsl, "
        "modelnet40_zsl:val, scanobjectnn (with --variant).",
    )
    pi.add_argument("path", metavar="PATH", help="file or dataset name[:split]")
    pi.add_argument("--index", type=int, default=None, help="cloud index in a multi-cloud .npz/.npy")
    pi.add_argument("--root", default=None, help="dataset root (default: $SVL_DATA or ../shared/data)")
    pi.add_argument("--variant", default=None, help="ScanObjectNN variant: OBJ_ONLY, OBJ_BG or PB_T50_RS")
    pi.add_argument("--json", action="store_true", help="print as JSON")
    pi.set_defaults(func=_cmd_data_info)
    pr = dsub.add_parser("render", help="render a cloud from several views into a PNG grid")
    pr.add_argument("path", metavar="PATH", help="file or dataset name[:split] (with --index)")
    pr.add_argument("-o", "--output", required=True, metavar="PNG", help="image to write")
    pr.add_argument("--index", type=int, default=None, help="cloud index (multi-cloud file or dataset)")
    pr.add_argument("--views", type=int, default=4, help="views around the gravity axis (default 4)")
    pr.add_argument("--size", type=int, default=256, help="view size in pixels (default 256)")
    pr.add_argument("--up-axis", default="z", help="the file's up axis, rotated to z-up (default z)")
    pr.add_argument("--root", default=None, help="dataset root")
    pr.add_argument("--variant", default=None, help="ScanObjectNN variant")
    pr.set_defaults(func=_cmd_data_render)


# ----------------------------------------------------------------------------- app
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


def build_parser() -> argparse.ArgumentParser:
    """The full `svl` parser; each subcommand registers itself in its own `_add_<name>`."""
    from svl import __version__

    parser = argparse.ArgumentParser(
        prog="svl",
        description="Spike-based vision-language learning: spiking 3D encoders aligned with "
        "vision-language teachers.",
    )
    parser.add_argument("--version", action="version", version=f"svl {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_info(sub)
    _add_pretrain(sub)
    _add_embed(sub)
    _add_energy(sub)
    _add_build_head(sub)
    _add_zeroshot(sub)
    _add_classify(sub)
    _add_models(sub)
    _add_data(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `svl` script; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(func(args) or 0)
    except (ValueError, FileNotFoundError) as e:
        if os.environ.get("SVL_DEBUG", "") not in ("", "0"):
            raise
        print(f"svl: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("svl: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
