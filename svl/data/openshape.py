"""OpenShape's data: training triplets (per-shape npy dicts with teacher features) and its test sets.

Names: openshape (per-shape npy dicts for training; a text and an image target drawn per sample
and epoch the way OpenShape's trainer draws them), openshape_modelnet40, openshape_scanobjectnn,
objaverse_lvis (OpenShape's test sets, y-up on disk, swapped to z-up). `check_openshape_file`
reads every feature of a file up front, so a bad entry stops a run before training, not hours in.
"""

from __future__ import annotations

import glob
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from svl.data.base import ArrayDataset, PointDataset, register_dataset, resolve_root
from svl.data.transforms import Compose
from svl.utils import progress
from svl.vocab import display_name, load_class_names

__all__ = [
    "OPENSHAPE_FEATURE_KEYS",
    "OPENSHAPE_TEXT_SOURCES",
    "OpenShapeDataset",
    "check_openshape_file",
    "load_openshape_shape",
]

OPENSHAPE_TEXT_SOURCES = ("text", "caption", "retrieval_text")


def _feature(entry: Any, version: str, path: Path, key: str) -> np.ndarray:
    """One OpenShape feature vector: an array, or a {'original': arr, 'prompt_avg': arr} dict."""
    if isinstance(entry, dict):
        if version not in entry:
            raise ValueError(f"{path}: '{key}' has no '{version}' feature (it has {sorted(entry)})")
        entry = entry[version]
    arr = np.asarray(entry, dtype=np.float32).reshape(-1)
    if arr.size == 0 or not np.isfinite(arr).all():
        raise ValueError(f"{path}: '{key}' is empty or holds NaN/inf values")
    return arr


def _openshape_texts(
    d: dict[str, Any], path: Path, rng: np.random.Generator, objaverse: bool, version: str,
    sources: Sequence[str], keep_name: bool,
) -> list[tuple[str, np.ndarray]]:  # fmt: skip
    """The candidate (text, feature) pairs of one shape, one per source, as OpenShape's trainer
    draws them: Objaverse's first name (unless the GPT filter dropped it) or a random name elsewhere;
    a BLIP or an MSFT caption (50/50); one random retrieved text (its 'original' feature)."""
    out = []
    names, feats = list(d.get("text") or []), list(d.get("text_feat") or [])
    if "text" in sources and names and keep_name:
        if len(names) != len(feats):
            raise ValueError(f"{path}: {len(names)} 'text' entries but {len(feats)} 'text_feat' entries")
        k = 0 if objaverse else int(rng.integers(len(names)))
        out.append((str(names[k]), _feature(feats[k], version, path, "text_feat")))
    if "caption" in sources:
        key = "blip_caption" if rng.random() < 0.5 else "msft_caption"
        if d.get(key) is not None and len(d[key]) > 0:
            if d.get(f"{key}_feat") is None:
                raise ValueError(f"{path}: '{key}' has no '{key}_feat'")
            out.append((str(d[key]), _feature(d[f"{key}_feat"], version, path, f"{key}_feat")))
    ret, ret_f = list(d.get("retrieval_text") or []), list(d.get("retrieval_text_feat") or [])
    if "retrieval_text" in sources and ret:
        if len(ret) != len(ret_f):
            raise ValueError(f"{path}: {len(ret)} 'retrieval_text' but {len(ret_f)} 'retrieval_text_feat'")
        k = int(rng.integers(len(ret)))
        out.append((str(ret[k]), _feature(ret_f[k], "original", path, "retrieval_text_feat")))
    return out


def load_openshape_shape(
    path: Path,
    rng: np.random.Generator,
    *,
    objaverse: bool = True,
    text_sources: Sequence[str] = OPENSHAPE_TEXT_SOURCES,
    text_version: str = "original",
    keep_name: bool = True,
) -> dict[str, Any]:
    """One OpenShape per-shape npy dict -> sample: y-up swapped to z-up, one text and one image target.

    Targets are drawn as OpenShape's trainer draws them (`rng` seeded per sample and epoch): one
    candidate text per source (see `_openshape_texts`), then one of them uniformly; the image is
    Objaverse's thumbnail with p = 0.5, else one random rendered view (other sources: a random view).
    `keep_name=False` drops the name text (the GPT-filter flag "N"). Bad features (missing keys,
    NaN, ragged dimensions) raise a ValueError naming the file and the key.
    """
    bad = [t for t in text_sources if t not in OPENSHAPE_TEXT_SOURCES]
    if bad:
        raise ValueError(f"unknown OpenShape text sources {bad}; use some of {OPENSHAPE_TEXT_SOURCES}")
    try:
        d = np.load(path, allow_pickle=True).item()  # trusted dataset files (OpenShape release)
    except Exception as e:  # noqa: BLE001 - corrupt archive of any kind
        raise ValueError(f"{path}: not an OpenShape per-shape npy dict ({type(e).__name__}: {e})") from None
    if not isinstance(d, dict) or "xyz" not in d:
        raise ValueError(f"{path}: expected a dict with 'xyz' (OpenShape per-shape format)")
    xyz = np.asarray(d["xyz"], np.float32)
    if xyz.ndim != 2 or xyz.shape[1] != 3 or len(xyz) == 0 or not np.isfinite(xyz).all():
        raise ValueError(f"{path}: xyz must be a finite non-empty (N, 3) array, got {xyz.shape}")
    s: dict[str, Any] = {"xyz": xyz[:, [0, 2, 1]]}
    if d.get("rgb") is not None:
        rgb = np.asarray(d["rgb"], np.float32)
        s["rgb"] = rgb / 255.0 if rgb.size and rgb.max() > 1 else rgb
    if d.get("image_feat") is None:
        raise ValueError(f"{path}: missing 'image_feat' (the rendered-view features of the shape)")
    views = np.asarray(d["image_feat"], np.float32)
    views = views.reshape(-1, views.shape[-1]) if views.ndim else views.reshape(0, 0)
    if views.size == 0 or not np.isfinite(views).all():
        raise ValueError(f"{path}: 'image_feat' is empty or holds NaN/inf values")
    if objaverse and d.get("thumbnail_feat") is not None and rng.random() < 0.5:
        s["image_emb"] = _feature(d["thumbnail_feat"], "original", path, "thumbnail_feat")
    else:
        s["image_emb"] = views[int(rng.integers(len(views)))]
    cands = _openshape_texts(d, path, rng, objaverse, text_version, text_sources, keep_name)
    for _, f in cands:
        if f.shape != s["image_emb"].shape:
            raise ValueError(
                f"{path}: text features are {f.shape[0]}-d but image features {s['image_emb'].shape[0]}-d "
                "(OpenShape stores both from one CLIP model)"
            )
    if cands:
        s["text"], s["text_emb"] = cands[int(rng.integers(len(cands)))]
        s["has_text"] = True
    else:
        s["text_emb"], s["text"], s["has_text"] = np.zeros_like(s["image_emb"]), "", False
    return s


class OpenShapeDataset(PointDataset):
    """OpenShape training triplets: per-shape npy dicts located by a split json or a folder glob."""

    name = "openshape"
    up_axis_on_disk = "y"  # swapped to z-up on reading
    provides_targets = True  # samples carry text_emb / image_emb: no teacher runs at training time

    def __init__(
        self, files: list[Path], classes, labels, split, transforms, seed, ids=None, name="openshape",
        sources: Sequence[str] | None = None, dropped_names: set[str] | None = None,
        text_sources: Sequence[str] = OPENSHAPE_TEXT_SOURCES, text_version: str = "original",
    ):  # fmt: skip
        super().__init__(split, classes, transforms, seed)
        self.files, self._labels, self.ids, self.name = files, labels, ids, name
        self.sources = list(sources) if sources is not None else ["Objaverse"] * len(files)
        self.dropped_names = dropped_names or set()
        self.text_sources, self.text_version = tuple(text_sources), text_version

    def __len__(self) -> int:
        return len(self.files)

    def labels(self) -> np.ndarray:
        if self._labels is None:
            raise ValueError(f"{self.name}: this split has no labels")
        return np.asarray(self._labels, np.int64)

    def check(self) -> int:
        """Check every file's features before training (see `check_openshape_file`); returns their dim."""

        dim = None
        for f in progress(self.files, desc="check OpenShape files", unit="file"):
            dim = check_openshape_file(f, dim)
        return int(dim or 0)

    def _load(self, i: int) -> dict[str, Any]:
        uid = self.ids[i] if self.ids is not None else None
        s = load_openshape_shape(
            self.files[i],
            self.sample_rng(i, 1),
            objaverse=self.sources[i] == "Objaverse",
            text_sources=self.text_sources,
            text_version=self.text_version,
            keep_name=uid not in self.dropped_names,
        )
        if self._labels is not None:
            s["label"] = int(self._labels[i])
        return s


def _locate(root: Path, data_path: str) -> Path:
    p = Path(data_path)
    for cand in (p, root / data_path.lstrip("/"), root / Path(*p.parts[-3:]), root / Path(*p.parts[-2:])):
        if cand.exists():
            return cand
    raise FileNotFoundError(f"OpenShape shape file {data_path} not found as given or under {root}")


@register_dataset("openshape", takes=())
def _build_openshape(
    split: str,
    root: Any,
    transforms: Compose,
    seed: int,
    split_file: str | None = None,
    gpt_filter: str | None = None,
    text_sources: Sequence[str] = OPENSHAPE_TEXT_SOURCES,
    text_version: str = "original",
) -> PointDataset:
    """Training data: `split_file` (OpenShape json list of {'data_path', 'id', 'dataset'}) or
    root/meta_data/split/<split>.json, else every *.npy under root/<split>. `gpt_filter`: OpenShape's
    GPT-4 filtering json ({uid: {"flag": "Y"|"N"}}); shapes flagged "N" lose their name text."""
    base = resolve_root(root, "openshape")
    sf = Path(split_file) if split_file else base / "meta_data" / "split" / f"{split}.json"
    if sf.exists():
        try:
            items = json.loads(sf.read_text())
            files = [_locate(base, it["data_path"]) for it in items]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise ValueError(f"{sf}: not an OpenShape split list of {{'data_path': ...}} ({e})") from None
        ids = [it.get("id", it.get("uid")) for it in items]
        sources = [str(it.get("dataset", "Objaverse")) for it in items]
    else:
        folder = base / split
        files = sorted(Path(f) for f in glob.glob(str(folder / "**" / "*.npy"), recursive=True))
        if not files:
            raise FileNotFoundError(f"openshape/{split}: neither {sf} nor any .npy under {folder}")
        ids = [f.stem for f in files]
        sources = ["Objaverse"] * len(files)
    dropped: set[str] = set()
    if gpt_filter:
        gp = Path(gpt_filter)
        try:
            flags = json.loads(gp.read_text())
            dropped = {uid for uid, v in flags.items() if isinstance(v, dict) and v.get("flag") == "N"}
        except (OSError, json.JSONDecodeError, AttributeError) as e:
            raise ValueError(
                f"{gp}: not an OpenShape GPT-filter json of {{uid: {{'flag': ...}}}} ({e})"
            ) from None
    return OpenShapeDataset(
        files, [], None, split, transforms, seed, ids=ids, sources=sources, dropped_names=dropped,
        text_sources=text_sources, text_version=text_version,
    )  # fmt: skip


@register_dataset("openshape_modelnet40", takes=())
def _build_openshape_modelnet40(split: str, root: Any, transforms: Compose, seed: int) -> PointDataset:
    """OpenShape's ModelNet40 test set: meta_data/modelnet40/test_pc.npy + test_split.json (y-up)."""
    if split != "test":
        raise ValueError(f"openshape_modelnet40 has only a 'test' split, got {split!r}")
    base = resolve_root(root, "openshape")
    folder = base / "meta_data" / "modelnet40"
    pcs = np.load(folder / "test_pc.npy", allow_pickle=True)  # trusted OpenShape release file
    meta = json.loads((folder / "test_split.json").read_text())
    classes = load_class_names("modelnet40_openshape")
    if len(meta) != len(pcs):
        raise ValueError(f"{folder}: {len(meta)} split entries for {len(pcs)} clouds")
    lab = np.asarray([classes.index(display_name(m["category"])) for m in meta])
    xyz = np.stack([np.asarray(p["xyz"], np.float32) for p in pcs])
    rgb = np.stack([np.asarray(p["rgb"], np.float32) / 255.0 for p in pcs]) if "rgb" in pcs[0] else None
    return ArrayDataset(xyz, lab, classes, split, transforms, seed, rgb=rgb, swap_yz=True,
                        name="openshape_modelnet40")  # fmt: skip


@register_dataset("openshape_scanobjectnn", takes=())
def _build_openshape_scanobjectnn(split: str, root: Any, transforms: Compose, seed: int) -> PointDataset:
    """OpenShape's ScanObjectNN test set: meta_data/scanobjectnn/xyz_label.npy dict (y-up)."""
    if split != "test":
        raise ValueError(f"openshape_scanobjectnn has only a 'test' split, got {split!r}")
    path = resolve_root(root, "openshape") / "meta_data" / "scanobjectnn" / "xyz_label.npy"
    d = np.load(path, allow_pickle=True).item()
    if not isinstance(d, dict) or "xyz" not in d or "label" not in d:
        raise ValueError(f"{path}: expected a dict with 'xyz' and 'label'")
    rgb = np.asarray(d["rgb"], np.float32) if "rgb" in d else None
    return ArrayDataset(
        np.asarray(d["xyz"], np.float32),
        np.asarray(d["label"]),
        load_class_names("scanobjnn_openshape"),
        split,
        transforms,
        seed,
        rgb=rgb,
        swap_yz=True,
        name="openshape_scanobjectnn",
    )


@register_dataset("objaverse_lvis", takes=())
def _build_objaverse_lvis(
    split: str,
    root: Any,
    transforms: Compose,
    seed: int,
    annotations: str | None = None,
    missing: str = "error",
) -> PointDataset:
    """Objaverse-LVIS test set from the LVIS annotations (labels/objaverse_lvis_annotations.json:
    category -> object ids), with per-shape OpenShape npy files '<uid>.npy' found under root."""
    if split != "test":
        raise ValueError(f"objaverse_lvis has only a 'test' split, got {split!r}")
    if missing not in ("error", "skip"):
        raise ValueError(f"objaverse_lvis: missing must be 'error' or 'skip', got {missing!r}")
    ann_path = (
        Path(annotations) if annotations else resolve_root(None, "labels") / "objaverse_lvis_annotations.json"
    )
    ann = json.loads(Path(ann_path).read_text())
    classes = load_class_names("objaverse_lvis")
    if sorted(ann) != sorted(classes):
        raise ValueError(f"{ann_path}: categories differ from the shipped 1156 LVIS categories")
    base = resolve_root(root, "openshape")
    index = {Path(f).stem: Path(f) for f in glob.glob(str(base / "**" / "*.npy"), recursive=True)}
    files, labels, ids, lost = [], [], [], 0
    for c, cls in enumerate(classes):
        for uid in sorted(ann[cls]):
            f = index.get(uid)
            if f is None:
                lost += 1
                continue
            files.append(f)
            labels.append(c)
            ids.append(uid)
    if lost and missing == "error":
        raise FileNotFoundError(
            f"objaverse_lvis: {lost} of {lost + len(files)} annotated shapes have no <uid>.npy under {base} "
            "(pass missing='skip' to evaluate on the ones present)"
        )
    if not files:
        raise FileNotFoundError(f"objaverse_lvis: no annotated shape found under {base}")
    return OpenShapeDataset(files, classes, labels, split, transforms, seed, ids=ids, name="objaverse_lvis")


# ----------------------------------------------------------------------------- file checks
OPENSHAPE_FEATURE_KEYS = (
    "image_feat",
    "thumbnail_feat",
    "text_feat",
    "blip_caption_feat",
    "msft_caption_feat",
    "retrieval_text_feat",
)


def check_openshape_file(path: Path, dim: int | None = None) -> int:
    """Every feature of one OpenShape per-shape file, checked: present, finite, one dimension.

    Returns that dimension. Training draws one text and one view per sample and epoch, so a bad
    entry could otherwise surface hours into a run; this reads them all up front.
    """
    try:
        d = np.load(path, allow_pickle=True).item()  # trusted dataset files (OpenShape release)
    except Exception as e:  # noqa: BLE001 - corrupt archive of any kind
        raise ValueError(f"{path}: not an OpenShape per-shape npy dict ({type(e).__name__}: {e})") from None
    if not isinstance(d, dict):
        raise ValueError(f"{path}: expected a dict (OpenShape per-shape format), got {type(d).__name__}")
    for key in ("xyz", "image_feat"):
        if d.get(key) is None:
            raise ValueError(f"{path}: missing key '{key}'")
    xyz = np.asarray(d["xyz"])
    if xyz.ndim != 2 or xyz.shape[1] != 3 or len(xyz) == 0 or not np.isfinite(xyz.astype(np.float64)).all():
        raise ValueError(f"{path}: 'xyz' must be a finite non-empty (N, 3) array, got shape {xyz.shape}")
    for key in OPENSHAPE_FEATURE_KEYS:
        entry = d.get(key)
        if entry is None:
            continue
        entries = list(entry) if key in ("text_feat", "retrieval_text_feat") else [entry]
        if key == "image_feat":
            arr = np.asarray(entry, np.float32)
            entries = list(arr.reshape(-1, arr.shape[-1])) if arr.ndim and arr.size else []
            if not entries:
                raise ValueError(f"{path}: 'image_feat' is empty")
        for e in entries:
            versions = list(e.values()) if isinstance(e, dict) else [e]
            for v in versions:
                arr = np.asarray(v, np.float32).reshape(-1)
                if arr.size == 0 or not np.isfinite(arr).all():
                    raise ValueError(f"{path}: '{key}' is empty or holds NaN/inf values")
                if dim is None:
                    dim = int(arr.size)
                elif arr.size != dim:
                    raise ValueError(
                        f"{path}: '{key}' is {arr.size}-d, expected {dim}-d like the other features"
                    )
    return int(dim) if dim is not None else 0
