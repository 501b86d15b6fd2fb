"""`svl info`: versions, devices, optional backends, data and cache locations."""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
from typing import Any

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


def register(sub: argparse._SubParsersAction) -> None:
    _add_info(sub)
