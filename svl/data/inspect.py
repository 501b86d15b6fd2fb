"""What a point-cloud file or a dataset holds (the library side of `svl data info|render`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["dataset_info", "file_info", "is_file_like", "load_sample"]


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
    from svl.data.readers import load_points

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
    from svl.data import build_dataset

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


def is_file_like(spec: str) -> bool:
    """A path (exists, has an extension or a folder) rather than a dataset name like 'modelnet40:test'."""
    return Path(spec).exists() or Path(spec).suffix != "" or "/" in spec


def load_sample(
    spec: str,
    index: int | None = None,
    up_axis: str = "z",
    root: str | None = None,
    variant: str | None = None,
) -> tuple[dict[str, Any], str]:
    """One cloud from a file or a dataset spec ('name[:split]', sample `index`), and a title for it."""
    if is_file_like(spec):
        from svl.data.readers import load_points

        return load_points(spec, index=index, up_axis=up_axis), Path(spec).name
    from svl.data import build_dataset

    name, _, split = spec.partition(":")
    kwargs = {"variant": variant} if variant else {}
    ds = build_dataset(name, split or "test", root=root, **kwargs)
    s = ds[index or 0]
    return s, f"{name}:{split or 'test'}[{index or 0}] {ds.classes[s['label']]}"
