"""`svl data info` and `svl data render`: look at what a file or dataset holds."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["cmd_data_info", "cmd_data_render", "dataset_info", "file_info"]


def _npz_summary(path: Path) -> dict[str, Any] | None:
    """Multi-cloud npz archives (like the shared ModelNet40 files): list arrays without loading them."""
    import zipfile

    try:
        out = {}
        with zipfile.ZipFile(path) as zf:
            for member in zf.namelist():
                if not member.endswith(".npy"):
                    continue
                with zf.open(member) as fh:
                    version = np.lib.format.read_magic(fh)
                    read = (
                        np.lib.format.read_array_header_1_0
                        if version == (1, 0)
                        else (np.lib.format.read_array_header_2_0)
                    )
                    shape, _, dtype = read(fh)
                out[member[:-4]] = {"shape": list(shape), "dtype": str(dtype)}
        return out
    except Exception:  # noqa: BLE001 - fall back to the generic reader, which reports errors properly
        return None


def file_info(path: str | Path, index: int | None = None) -> dict[str, Any]:
    """What a point-cloud file holds: format, counts, channels, bounds, colour range."""
    from svl.data.io import load_points

    p = Path(path)
    if p.suffix.lower() == ".npz" and index is None and p.is_file():
        arrays = _npz_summary(p)
        if arrays and any(len(a["shape"]) == 3 for a in arrays.values()):
            return {"path": str(p), "format": "npz", "arrays": arrays, "note": "several clouds; pass --index"}
    s = load_points(p, index=index)
    xyz = s["xyz"]
    info = dict(s["meta"])
    info["channels"] = ["xyz"] + [k for k in ("rgb", "normals") if k in s]
    info["bounds_min"] = np.round(xyz.min(0), 5).tolist()
    info["bounds_max"] = np.round(xyz.max(0), 5).tolist()
    info["centroid"] = np.round(xyz.mean(0), 5).tolist()
    info["max_radius_from_centroid"] = round(float(np.linalg.norm(xyz - xyz.mean(0), axis=1).max()), 5)
    if "rgb" in s:
        info["rgb_mean"] = np.round(s["rgb"].mean(0), 4).tolist()
    return info


def dataset_info(spec: str, root: str | None = None, **kwargs: Any) -> dict[str, Any]:
    """Per-split sizes and class counts of a registered dataset ('name' or 'name:split')."""
    from svl.data.datasets import build_dataset

    name, _, split = spec.partition(":")
    splits = [split] if split else (
        ["train", "val", "test_unseen", "test"] if name == "modelnet40_zsl" else ["train", "test"]
    )  # fmt: skip
    out: dict[str, Any] = {"dataset": name, "splits": {}}
    for sp in splits:
        ds = build_dataset(name, sp, root=root, **kwargs)
        labels = ds.labels()
        counts = np.bincount(labels, minlength=len(ds.classes))
        out["classes"] = list(ds.classes)
        out["splits"][sp] = {
            "samples": len(ds),
            "classes_present": int((counts > 0).sum()),
            "per_class": {c: int(n) for c, n in zip(ds.classes, counts) if n},
        }
        first = ds[0]
        out["splits"][sp]["sample_keys"] = {
            k: list(np.shape(v)) for k, v in first.items() if isinstance(v, np.ndarray)
        }
        for attr in ("seen_classes", "unseen_classes"):
            if hasattr(ds, attr):
                out[attr] = list(getattr(ds, attr))
    return out


def _is_file_like(spec: str) -> bool:
    return Path(spec).exists() or Path(spec).suffix != "" or "/" in spec


def cmd_data_info(args: argparse.Namespace) -> int:
    kwargs = {"variant": args.variant} if getattr(args, "variant", None) else {}
    if _is_file_like(args.path):
        info = file_info(args.path, index=args.index)
    else:
        info = dataset_info(args.path, root=args.root, **kwargs)
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return 0
    if "dataset" in info:
        print(f"dataset {info['dataset']}: {len(info['classes'])} classes")
        for sp, d in info["splits"].items():
            keys = ", ".join(f"{k} {tuple(v)}" for k, v in d["sample_keys"].items())
            print(f"  {sp:<12} {d['samples']:>6} samples, {d['classes_present']} classes; sample: {keys}")
        for attr in ("seen_classes", "unseen_classes"):
            if attr in info:
                print(f"  {attr} ({len(info[attr])}): {', '.join(info[attr])}")
        return 0
    for k, v in info.items():
        print(f"{k}: {v}")
    return 0


def cmd_data_render(args: argparse.Namespace) -> int:
    """Render one cloud (file, or dataset sample) from several views into a PNG grid."""
    import torch

    if _is_file_like(args.path):
        from svl.data.io import load_points

        s = load_points(args.path, index=args.index, up_axis=args.up_axis)
        title = Path(args.path).name
    else:
        from svl.data.datasets import build_dataset

        name, _, split = args.path.partition(":")
        kwargs = {"variant": args.variant} if args.variant else {}
        ds = build_dataset(name, split or "test", root=args.root, **kwargs)
        s = ds[args.index or 0]
        title = f"{name}:{split or 'test'}[{args.index or 0}] {ds.classes[s['label']]}"
    xyz = torch.as_tensor(s["xyz"])[None]
    rgb = torch.as_tensor(s["rgb"])[None] if s.get("rgb") is not None else None
    out = Path(args.output)
    try:
        from svl.teachers.render import render_views, save_view_grid
    except ImportError:  # teachers not installed: a plain matplotlib scatter
        return _render_matplotlib(s, out, title)
    images = render_views(xyz, rgb, num_views=args.views, size=args.size)
    save_view_grid(images, out)
    print(f"wrote {out} ({args.views} views of {title}, {len(s['xyz'])} points)")
    return 0


def _render_matplotlib(s: dict[str, Any], out: Path, title: str) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from svl.utils import atomic_write

    xyz = s["xyz"]
    fig = plt.figure(figsize=(5, 5))
    ax = fig.add_subplot(projection="3d")
    ax.scatter(xyz[:, 0], xyz[:, 1], xyz[:, 2], s=1, c=s.get("rgb", xyz[:, 2]))
    ax.set_title(title)
    with atomic_write(out) as fh:
        fig.savefig(fh, format="png", dpi=100)
    plt.close(fig)
    print(f"wrote {out} (matplotlib scatter of {title})")
    return 0
