"""The built-in shape datasets, registered by name (registry and base class: svl/data/base.py).

Every dataset returns sample dicts (DESIGN.md): ``xyz (N, 3)`` float32 z-up, optional ``rgb``
in [0, 1] and ``normals``, ``label`` (int, in the dataset's ``classes`` order), ``index``, plus
extras. Randomness in transforms comes from a generator seeded by (seed, epoch, index), so a
run is repeatable with any number of DataLoader workers; call ``set_epoch`` each epoch.

Names: modelnet40 (the shared 1024-point npz, z-up), modelnet40_zsl (the 3D zero-shot split:
seen = 30 non-ModelNet10 classes, unseen = the 10 ModelNet10 classes), modelnet40_h5
(modelnet40_ply_hdf5_2048, y-up on disk), modelnet40_normal (modelnet40_normal_resampled txt
with normals, y-up on disk), scanobjectnn (h5; ``variant`` OBJ_ONLY | OBJ_BG | PB_T50_RS is
required), openshape (per-shape npy dicts for training), openshape_modelnet40,
openshape_scanobjectnn, objaverse_lvis (OpenShape test sets), captions (files + captions),
aligned_npz (arrays + targets), folder (one sub-folder of files per class: users' labelled
data). y-up data is swapped to z-up the way OpenShape does (exchange of the y and z columns)
unless ``up_axis="z"`` says otherwise.
"""

from __future__ import annotations

import glob
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from svl.data.base import PointDataset, register_dataset, resolve_root
from svl.data.readers import load_points
from svl.data.transforms import Compose
from svl.vocab import MODELNET10_CLASSES, display_name, load_class_names

__all__ = [
    "PointDataset",
    "register_dataset",
    "resolve_root",
]

SCANOBJECTNN_VARIANTS = {
    # variant -> (folder, file suffix)
    "OBJ_ONLY": ("main_split_nobg", ""),
    "OBJ_BG": ("main_split", ""),
    "PB_T50_RS": ("main_split", "_augmentedrot_scale75"),
}


class ArrayDataset(PointDataset):
    """Clouds held in (S, N, 3) arrays (mmapped when possible) with integer labels."""

    def __init__(
        self,
        points: np.ndarray,
        labels: np.ndarray,
        classes: Sequence[str],
        split: str,
        transforms: Compose,
        seed: int = 0,
        indices: np.ndarray | None = None,
        rgb: np.ndarray | None = None,
        normals: np.ndarray | None = None,
        swap_yz: bool = False,
        name: str = "points",
        shape_ids: np.ndarray | None = None,
    ) -> None:
        super().__init__(split, classes, transforms, seed)
        self.points, self._labels, self.rgb, self.normals = (
            points,
            np.asarray(labels).reshape(-1),
            rgb,
            normals,
        )
        self.indices = np.arange(len(points)) if indices is None else np.asarray(indices, dtype=np.int64)
        self.swap_yz = swap_yz
        self.name = name
        self.shape_ids = shape_ids

    def __len__(self) -> int:
        return len(self.indices)

    def labels(self) -> np.ndarray:
        return self._labels[self.indices].astype(np.int64)

    def _load(self, i: int) -> dict[str, Any]:
        j = int(self.indices[i])
        xyz = np.array(self.points[j, :, :3], dtype=np.float32)
        s: dict[str, Any] = {"xyz": xyz, "label": int(self._labels[j])}
        if self.rgb is not None:
            s["rgb"] = np.array(self.rgb[j], dtype=np.float32)
        if self.normals is not None:
            s["normals"] = np.array(self.normals[j], dtype=np.float32)
        if self.swap_yz:
            for k in ("xyz", "normals"):
                if k in s:
                    s[k] = s[k][:, [0, 2, 1]]
        return s


# ----------------------------------------------------------------------------- npz mmap cache
def _npz_mmap(path: Path, keys: Sequence[str]) -> dict[str, np.ndarray]:
    """Arrays of a (compressed) npz, extracted once to the svl cache as .npy and memory-mapped.

    Memory maps let DataLoader workers share the page cache instead of each holding a copy.
    Falls back to loading into memory when the cache is not writable.
    """
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    st = path.stat()
    key = hashlib.sha256(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:16]
    out: dict[str, np.ndarray] = {}
    try:
        from svl.utils import atomic_path, cache_dir

        folder = cache_dir("npz", f"{path.stem}-{key}")
        with np.load(path, allow_pickle=False) as z:
            for k in keys:
                if k not in z.files:
                    raise ValueError(f"{path}: missing array {k!r} (has {z.files})")
                f = folder / f"{k}.npy"
                if not f.exists():
                    with atomic_path(f) as tmp:
                        with open(tmp, "wb") as fh:
                            np.save(fh, z[k])
                out[k] = np.load(f, mmap_mode="r")
        return out
    except (OSError, PermissionError):
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in keys}


def _check_classes(path: Path, stored: np.ndarray, expected: list[str]) -> None:
    names = [str(c) for c in stored]
    if names != expected:
        raise ValueError(f"{path}: class list differs from modelnet40_shape_names.txt: {names[:5]}...")


# ----------------------------------------------------------------------------- ModelNet40
def _modelnet40_arrays(root: Any, split: str) -> tuple[dict[str, np.ndarray], Path]:
    if split not in ("train", "test"):
        raise ValueError(f"modelnet40: split must be 'train' or 'test', got {split!r}")
    folder = resolve_root(root, "modelnet40")
    path = folder / f"modelnet40_pcd1024_{split}.npz"
    arrs = _npz_mmap(path, ["points", "labels", "names", "classes"])
    if arrs["points"].ndim != 3 or arrs["points"].shape[2] != 3:
        raise ValueError(f"{path}: points must be (S, N, 3), got {arrs['points'].shape}")
    if len(arrs["labels"]) != len(arrs["points"]):
        raise ValueError(f"{path}: {len(arrs['labels'])} labels for {len(arrs['points'])} clouds")
    _check_classes(path, arrs["classes"], load_class_names("modelnet40"))
    return arrs, path


@register_dataset("modelnet40")
def _build_modelnet40(split: str, root: Any, transforms: Compose, seed: int) -> PointDataset:
    """The shared ModelNet40 (1024 points, z-up, unit sphere, xyz only), official split."""
    arrs, _ = _modelnet40_arrays(root, split)
    return ArrayDataset(
        arrs["points"], arrs["labels"], load_class_names("modelnet40"), split, transforms, seed,
        name="modelnet40", shape_ids=arrs["names"],
    )  # fmt: skip


class ZeroShotSplit(ArrayDataset):
    """ModelNet40 with the 3D zero-shot class split; labels stay in the 40-class space."""

    seen_classes: list[str]
    unseen_classes: list[str]


def zsl_indices(
    labels_train: np.ndarray, classes: list[str], val_fraction: float = 0.1, seed: int = 0
) -> dict:
    """Seen-class train/val indices: a fixed seeded ~val_fraction per class (at least one shape)."""
    unseen = {classes.index(c) for c in MODELNET10_CLASSES}
    train, val = [], []
    for c in range(len(classes)):
        if c in unseen:
            continue
        idx = np.flatnonzero(labels_train == c)
        perm = np.random.default_rng([seed, c]).permutation(idx)
        k = max(1, int(round(val_fraction * len(idx))))
        val.append(np.sort(perm[:k]))
        train.append(np.sort(perm[k:]))
    return {"train": np.sort(np.concatenate(train)), "val": np.sort(np.concatenate(val))}


@register_dataset("modelnet40_zsl")
def _build_modelnet40_zsl(
    split: str, root: Any, transforms: Compose, seed: int, val_fraction: float = 0.1, split_seed: int = 0
) -> PointDataset:
    """Splits: train (seen-class train shapes minus val), val (~10% of each seen class's train
    shapes, fixed by split_seed), test_unseen (908), test_seen (1560), test (all 2468)."""
    classes = load_class_names("modelnet40")
    splits = ("train", "val", "test_unseen", "test_seen", "test")
    if split not in splits:
        raise ValueError(f"modelnet40_zsl: split must be one of {splits}, got {split!r}")
    arrs, _ = _modelnet40_arrays(root, "train" if split in ("train", "val") else "test")
    labels = np.asarray(arrs["labels"])
    unseen_ids = np.array([classes.index(c) for c in MODELNET10_CLASSES])
    if split in ("train", "val"):
        idx = zsl_indices(labels, classes, val_fraction, split_seed)[split]
    elif split == "test_unseen":
        idx = np.flatnonzero(np.isin(labels, unseen_ids))
    elif split == "test_seen":
        idx = np.flatnonzero(~np.isin(labels, unseen_ids))
    else:
        idx = np.arange(len(labels))
    ds = ZeroShotSplit(
        arrs["points"], labels, classes, split, transforms, seed, indices=idx, name="modelnet40_zsl",
        shape_ids=arrs["names"],
    )  # fmt: skip
    ds.unseen_classes = list(MODELNET10_CLASSES)
    ds.seen_classes = [c for c in classes if c not in MODELNET10_CLASSES]
    return ds


def _swap(up_axis: str) -> bool:
    if up_axis not in ("y", "z"):
        raise ValueError(f"up_axis must be 'y' (swap to z-up) or 'z' (keep), got {up_axis!r}")
    return up_axis == "y"


@register_dataset("modelnet40_h5")
def _build_modelnet40_h5(
    split: str, root: Any, transforms: Compose, seed: int, up_axis: str = "y"
) -> PointDataset:
    """PointNet's modelnet40_ply_hdf5_2048 (2048 points, y-up on disk)."""
    import h5py

    if split not in ("train", "test"):
        raise ValueError(f"modelnet40_h5: split must be 'train' or 'test', got {split!r}")
    folder = resolve_root(root, "modelnet40_ply_hdf5_2048")
    files = sorted(folder.glob(f"ply_data_{split}*.h5"))
    if not files:
        raise FileNotFoundError(f"{folder}: no ply_data_{split}*.h5 files")
    pts, lab = [], []
    for f in files:
        try:
            with h5py.File(f, "r") as h:
                pts.append(np.asarray(h["data"], dtype=np.float32))
                lab.append(np.asarray(h["label"]).reshape(-1).astype(np.int64))
        except (OSError, KeyError) as e:
            raise ValueError(f"{f}: not a ModelNet40 h5 file with 'data' and 'label' ({e})") from None
    names_file = folder / "shape_names.txt"
    classes = names_file.read_text().split() if names_file.exists() else load_class_names("modelnet40")
    return ArrayDataset(
        np.concatenate(pts), np.concatenate(lab), classes, split, transforms, seed, swap_yz=_swap(up_axis),
        name="modelnet40_h5",
    )  # fmt: skip


class _FileListDataset(PointDataset):
    """One file per shape, read on access (modelnet40_normal_resampled)."""

    def __init__(self, files: list[Path], labels: list[int], classes, split, transforms, seed, swap, name):
        super().__init__(split, classes, transforms, seed)
        self.files, self._labels, self.swap_yz, self.name = files, np.asarray(labels, np.int64), swap, name

    def __len__(self) -> int:
        return len(self.files)

    def labels(self) -> np.ndarray:
        return self._labels

    def _load(self, i: int) -> dict[str, Any]:
        s = load_points(self.files[i], columns="xyznxnynz")
        out = {"xyz": s["xyz"], "normals": s["normals"], "label": int(self._labels[i])}
        if self.swap_yz:
            out = {k: (v[:, [0, 2, 1]] if k != "label" else v) for k, v in out.items()}
        return out


@register_dataset("modelnet40_normal")
def _build_modelnet40_normal(
    split: str, root: Any, transforms: Compose, seed: int, up_axis: str = "y"
) -> PointDataset:
    """modelnet40_normal_resampled: 10k points + normals per shape as 'x,y,z,nx,ny,nz' text."""
    if split not in ("train", "test"):
        raise ValueError(f"modelnet40_normal: split must be 'train' or 'test', got {split!r}")
    folder = resolve_root(root, "modelnet40_normal_resampled")
    names_file = folder / "modelnet40_shape_names.txt"
    classes = names_file.read_text().split() if names_file.exists() else load_class_names("modelnet40")
    listing = folder / f"modelnet40_{split}.txt"
    if not listing.exists():
        raise FileNotFoundError(f"{listing}: split list not found")
    files, labels = [], []
    for sid in listing.read_text().split():
        cls = sid.rsplit("_", 1)[0]
        if cls not in classes:
            raise ValueError(f"{listing}: shape id {sid!r} has unknown class {cls!r}")
        files.append(folder / cls / f"{sid}.txt")
        labels.append(classes.index(cls))
    return _FileListDataset(
        files, labels, classes, split, transforms, seed, _swap(up_axis), "modelnet40_normal"
    )


@register_dataset("scanobjectnn")
def _build_scanobjectnn(
    split: str, root: Any, transforms: Compose, seed: int, variant: str | None = None, up_axis: str = "y"
) -> PointDataset:
    """ScanObjectNN h5 (2048 points). The variant must be named: OBJ_ONLY, OBJ_BG or PB_T50_RS."""
    import h5py

    if variant is None or str(variant).upper() not in SCANOBJECTNN_VARIANTS:
        raise ValueError(
            f"scanobjectnn: name the variant explicitly (variant= one of {sorted(SCANOBJECTNN_VARIANTS)}), "
            f"got {variant!r}; results differ a lot between them, so svl does not guess"
        )
    if split not in ("train", "test"):
        raise ValueError(f"scanobjectnn: split must be 'train' or 'test', got {split!r}")
    sub, suffix = SCANOBJECTNN_VARIANTS[str(variant).upper()]
    base = resolve_root(root, "scanobjectnn")
    stem = f"{'training' if split == 'train' else 'test'}_objectdataset{suffix}.h5"
    cands = [base / sub / stem, base / "h5_files" / sub / stem]
    path = next((c for c in cands if c.exists()), None)
    if path is None:
        raise FileNotFoundError(f"scanobjectnn {variant}: none of {[str(c) for c in cands]} exists")
    try:
        with h5py.File(path, "r") as h:
            pts = np.asarray(h["data"], dtype=np.float32)
            lab = np.asarray(h["label"]).reshape(-1).astype(np.int64)
    except (OSError, KeyError) as e:
        raise ValueError(f"{path}: not a ScanObjectNN h5 file with 'data' and 'label' ({e})") from None
    classes = load_class_names("scanobjectnn")
    ds = ArrayDataset(pts, lab, classes, split, transforms, seed, swap_yz=_swap(up_axis),
                      name=f"scanobjectnn_{str(variant).upper()}")  # fmt: skip
    return ds


# ----------------------------------------------------------------------------- OpenShape format
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
        from svl.utils import progress

        dim = None
        for f in progress(self.files, desc="check OpenShape files", unit="file"):
            dim = check_openshape_file(f, dim)
        return int(dim or 0)

    def _load(self, i: int) -> dict[str, Any]:
        uid = self.ids[i] if self.ids is not None else None
        s = load_openshape_shape(
            self.files[i],
            np.random.default_rng([self.seed, self.epoch, i, 1]),
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


@register_dataset("openshape")
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


@register_dataset("openshape_modelnet40")
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


@register_dataset("openshape_scanobjectnn")
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


@register_dataset("objaverse_lvis")
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


# -- aligned data: OpenShape file checks, a user's folder with captions ----------------------------
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


def read_captions(path: Path) -> list[tuple[str, str, str | None]]:
    """(file, caption, split or None) rows of a CSV (header with `file`, `caption`, optional `split`)
    or JSON file ([{file, caption, split?}] or {file: caption | [captions]})."""
    import csv

    if not path.is_file():
        raise FileNotFoundError(f"captions file {path} does not exist")
    rows: list[tuple[str, str, str | None]] = []
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{path}: not valid JSON ({e})") from None
        if isinstance(data, dict):
            for f, caps in data.items():
                listed = [caps] if isinstance(caps, str) else caps if isinstance(caps, list) else [None]
                rows += [(str(f), c, None) for c in listed]
        elif isinstance(data, list):
            for k, it in enumerate(data):
                if not isinstance(it, dict) or "file" not in it or "caption" not in it:
                    raise ValueError(f"{path}: entry {k} must be an object with 'file' and 'caption'")
                rows.append((str(it["file"]), it["caption"], it.get("split")))
        else:
            raise ValueError(f"{path}: expected a list of {{file, caption}} or a {{file: caption}} object")
    else:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            fields = [f.strip().lower() for f in reader.fieldnames or []]
            if "file" not in fields or "caption" not in fields:
                raise ValueError(
                    f"{path}: the CSV header must name 'file' and 'caption' columns, got {fields}"
                )
            for k, rec in enumerate(reader, start=2):
                rec = {str(a).strip().lower(): b for a, b in rec.items() if a is not None}
                split = (rec.get("split") or "").strip() or None
                rows.append((str(rec["file"] or "").strip(), rec["caption"], split))
                if not rows[-1][0]:
                    raise ValueError(f"{path}: line {k} has an empty 'file'")
    for k, (f, c, _) in enumerate(rows):
        if not isinstance(c, str) or not c.strip():
            raise ValueError(f"{path}: the caption of {f!r} (entry {k + 1}) is empty or not a string")
    if not rows:
        raise ValueError(f"{path}: no captions")
    return rows


class CaptionedFolder(PointDataset):
    """A user's point-cloud or mesh files with captions: pretraining pairs for the offline teachers.

    Each sample is the file's cloud (up axis rotated to z, centred, scaled to the unit sphere) with
    ``text`` (one of its captions, drawn per epoch) and ``text_id`` (that caption's row in `texts`).
    """

    name = "captions"

    def __init__(
        self, files: list[Path], captions: list[list[int]], texts: list[str], split: str, transforms: Compose,
        seed: int, up_axis: str = "z", num_points: int = 10000,
    ) -> None:  # fmt: skip
        super().__init__(split, [], transforms, seed)
        self.files, self.captions, self.texts = files, captions, texts
        self.up_axis, self.num_points = up_axis, num_points

    def __len__(self) -> int:
        return len(self.files)

    def labels(self) -> np.ndarray:
        raise ValueError(f"captions dataset ({self.files[0].parent}): captioned files have no class labels")

    def _load(self, i: int) -> dict[str, Any]:
        s = load_points(self.files[i], self.num_points, up_axis=self.up_axis, seed=self.seed + i)
        xyz = s["xyz"] - s["xyz"].mean(0)
        r = float(np.linalg.norm(xyz, axis=1).max())
        out: dict[str, Any] = {"xyz": xyz / r if r > 0 else xyz}
        if "rgb" in s:
            out["rgb"] = s["rgb"]
        ids = self.captions[i]
        k = ids[int(np.random.default_rng([self.seed, self.epoch, i, 3]).integers(len(ids)))]
        out["text"], out["text_id"] = self.texts[k], k
        return out

    def check(self) -> None:
        """Read every file once, so an unreadable one stops the run before training, naming it."""
        from svl.utils import progress

        for i in progress(range(len(self)), desc="check files", unit="file"):
            if not np.isfinite(self._load(i)["xyz"]).all():
                raise ValueError(f"{self.files[i]}: the cloud holds NaN/inf coordinates")


@register_dataset("captions")
def _build_captions(
    split: str,
    root: Any,
    transforms: Compose,
    seed: int,
    captions: str | None = None,
    up_axis: str = "z",
    num_points: int = 10000,
) -> PointDataset:
    """A folder of point-cloud / mesh files (any format `svl.data.load_points` reads) plus a captions
    file (`captions=`, default root/captions.csv or .json). Rows with a `split` column go to that
    split; rows without one belong to 'train'. Several rows may caption one file."""
    if root is None:
        raise ValueError("dataset 'captions' needs data.root: the folder holding the point-cloud files")
    base = Path(root).expanduser()
    if not base.is_dir():
        raise FileNotFoundError(f"captions dataset: folder {base} does not exist")
    if captions is None:
        found = [base / n for n in ("captions.csv", "captions.json") if (base / n).is_file()]
        if not found:
            raise FileNotFoundError(
                f"captions dataset: no captions.csv or captions.json in {base} (pass captions=)"
            )
        cap_path = found[0]
    else:
        cap_path = Path(captions).expanduser()
        cap_path = cap_path if cap_path.is_absolute() or cap_path.exists() else base / cap_path
    rows = [r for r in read_captions(cap_path) if (r[2] or "train") == split]
    if not rows:
        raise ValueError(f"{cap_path}: no captions for split {split!r}")
    index: dict[str, int] = {}
    files: list[Path] = []
    caps: list[list[int]] = []
    texts: list[str] = []
    missing = []
    for f, c, _ in rows:
        p = Path(f) if Path(f).is_absolute() else base / f
        if not p.is_file():
            missing.append(f)
            continue
        if f not in index:
            index[f] = len(files)
            files.append(p)
            caps.append([])
        caps[index[f]].append(len(texts))
        texts.append(c.strip())
    if missing:
        raise FileNotFoundError(
            f"{cap_path}: {len(missing)} captioned file(s) not found under {base}: {missing[:5]}"
        )
    return CaptionedFolder(files, caps, texts, split, transforms, seed, up_axis, num_points)


class AlignedArrays(PointDataset):
    """Clouds with precomputed teacher targets held in arrays: one (or a random one of V) image
    embedding and one text embedding per shape, of any dimension."""

    name = "aligned_npz"
    provides_targets = True

    def __init__(self, arrays: dict[str, np.ndarray], path: Path, split: str, transforms: Compose, seed: int):
        super().__init__(split, [], transforms, seed)
        self.a, self.path = arrays, path

    def __len__(self) -> int:
        return len(self.a["points"])

    def labels(self) -> np.ndarray:
        if "labels" not in self.a:
            raise ValueError(f"{self.path}: no 'labels' array")
        return np.asarray(self.a["labels"], np.int64)

    def _load(self, i: int) -> dict[str, Any]:
        img = np.asarray(self.a["image_emb"][i], np.float32)
        if img.ndim == 2:  # several views: one per sample and epoch, as for OpenShape
            img = img[int(np.random.default_rng([self.seed, self.epoch, i, 1]).integers(len(img)))]
        s: dict[str, Any] = {
            "xyz": np.array(self.a["points"][i], np.float32),
            "image_emb": img,
            "text_emb": np.array(self.a["text_emb"][i], np.float32),
            "has_text": np.ones((), np.float32),
        }
        if "rgb" in self.a:
            s["rgb"] = np.array(self.a["rgb"][i], np.float32)
        if "labels" in self.a:
            s["label"] = int(self.a["labels"][i])
        return s

    def check(self) -> int:
        """Finite arrays, one row per shape (checked in chunks, before training)."""
        n = len(self)
        for key in ("points", "text_emb", "image_emb", *[k for k in ("rgb", "labels") if k in self.a]):
            arr = self.a[key]
            if len(arr) != n:
                raise ValueError(f"{self.path}: '{key}' has {len(arr)} rows for {n} clouds")
            for a in range(0, n, 4096):
                if not np.isfinite(np.asarray(arr[a : a + 4096], np.float64)).all():
                    raise ValueError(
                        f"{self.path}: '{key}' holds NaN/inf values (rows {a}..{min(a + 4096, n) - 1})"
                    )
        return int(self.a["text_emb"].shape[-1])


@register_dataset("aligned_npz")
def _build_aligned_npz(
    split: str, root: Any, transforms: Compose, seed: int, file: str | None = None
) -> PointDataset:
    """`file` (default root/<split>.npz): `points` (S, N, 3) z-up, `text_emb` (S, Dt), `image_emb`
    (S, Di) or (S, V, Di), optional `rgb` (S, N, 3) in [0, 1] and `labels` (S,). Any dimensions."""
    base = Path(root).expanduser() if root is not None else None
    path = Path(file).expanduser() if file else (base / f"{split}.npz" if base else None)
    if path is None:
        raise ValueError("dataset 'aligned_npz' needs data.root (holding <split>.npz) or file=")
    if not path.is_file() and base is not None and file:
        path = base / file
    if not path.is_file():
        raise FileNotFoundError(f"aligned_npz: {path} does not exist")
    try:
        z = np.load(path, mmap_mode="r", allow_pickle=False)
        arrays = {k: z[k] for k in z.files}
    except Exception as e:  # noqa: BLE001 - any unreadable archive is bad input
        raise ValueError(f"{path}: not a readable .npz archive ({type(e).__name__}: {e})") from None
    missing = [k for k in ("points", "text_emb", "image_emb") if k not in arrays]
    if missing:
        raise ValueError(f"{path}: missing array(s) {missing} (has {sorted(arrays)})")
    pts = arrays["points"]
    if pts.ndim != 3 or pts.shape[-1] != 3:
        raise ValueError(f"{path}: 'points' must be (S, N, 3), got {pts.shape}")
    if arrays["text_emb"].ndim != 2 or arrays["image_emb"].ndim not in (2, 3):
        raise ValueError(
            f"{path}: 'text_emb' must be (S, D) and 'image_emb' (S, D) or (S, V, D), got "
            f"{arrays['text_emb'].shape} and {arrays['image_emb'].shape}"
        )
    return AlignedArrays(arrays, path, split, transforms, seed)


# ----------------------------------------------------------------------------- users' own labelled data
class ClassFolder(PointDataset):
    """One class per folder of point-cloud or mesh files: a user's own labelled data.

    Clouds are read on access with the up axis rotated to z, centred and scaled to the unit sphere,
    like every other svl dataset, so a model fine-tuned here takes the same inputs as `svl classify`.
    """

    name = "folder"

    def __init__(
        self, files: list[Path], labels: list[int], classes: list[str], split: str, transforms: Compose,
        seed: int, up_axis: str = "z", num_points: int = 10000,
    ) -> None:  # fmt: skip
        super().__init__(split, classes, transforms, seed)
        self.files, self._labels = files, np.asarray(labels, dtype=np.int64)
        self.up_axis, self.num_points = up_axis, num_points

    def __len__(self) -> int:
        return len(self.files)

    def labels(self) -> np.ndarray:
        return self._labels

    def _load(self, i: int) -> dict[str, Any]:
        s = load_points(self.files[i], self.num_points, up_axis=self.up_axis, seed=self.seed + i)
        xyz = s["xyz"] - s["xyz"].mean(0)
        r = float(np.linalg.norm(xyz, axis=1).max())
        out: dict[str, Any] = {"xyz": xyz / r if r > 0 else xyz, "label": int(self._labels[i])}
        for k in ("rgb", "normals"):
            if k in s:
                out[k] = s[k]
        return out


def _class_files(folder: Path, suffixes: set[str]) -> dict[str, list[Path]]:
    """{class name: its readable files} for the sub-folders of `folder`; an empty class is an error."""
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise ValueError(f"{folder}: no class folders (expected {folder}/<class name>/<files>)")
    out = {}
    for c in classes:
        files = sorted(f for f in (folder / c).rglob("*") if f.is_file() and f.suffix.lower() in suffixes)
        if not files:
            raise ValueError(
                f"{folder / c}: class folder {c!r} holds no point-cloud files (readable: {sorted(suffixes)})"
            )
        out[c] = files
    return out


@register_dataset("folder")
def _build_folder(
    split: str,
    root: Any,
    transforms: Compose,
    seed: int,
    up_axis: str = "z",
    num_points: int = 10000,
    test_fraction: float = 0.2,
    split_seed: int = 0,
) -> PointDataset:
    """Labelled files, one folder per class: `root/<class>/*` (a seeded `test_fraction` of each
    class is the test split), or `root/train/<class>/*` and `root/test/<class>/*` (the given split).

    Any format `svl.data.load_points` reads; `up_axis="y"` for y-up files (ShapeNet, Objaverse).
    """
    from svl.data.readers import list_readers

    if root is None:
        raise ValueError("folder dataset: give data.root, the folder holding one sub-folder per class")
    if split not in ("train", "test"):
        raise ValueError(f"folder dataset: split must be 'train' or 'test', got {split!r}")
    _swap(up_axis)  # validates the name
    folder = Path(root).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"folder dataset: {folder} is not a directory")
    suffixes = set(list_readers())
    if (folder / "train").is_dir() and (folder / "test").is_dir():
        train, test = _class_files(folder / "train", suffixes), _class_files(folder / "test", suffixes)
        extra = sorted(set(test) - set(train))
        if extra:
            raise ValueError(
                f"{folder / 'test'}: classes {extra} have no training folder in {folder / 'train'}"
            )
        classes = sorted(train)
        chosen = train if split == "train" else test
        pairs = [(f, classes.index(c)) for c, fs in chosen.items() for f in fs]
    else:
        if not 0 < test_fraction < 1:
            raise ValueError(f"folder dataset: test_fraction must be in (0, 1), got {test_fraction}")
        by_class = _class_files(folder, suffixes)
        classes = sorted(by_class)
        pairs = []
        for k, c in enumerate(classes):
            fs = by_class[c]
            perm = np.random.default_rng([split_seed, k]).permutation(len(fs))
            n_test = int(round(test_fraction * len(fs))) if len(fs) > 1 else 0
            n_test = min(max(n_test, 1 if len(fs) > 1 else 0), len(fs) - 1)
            keep = perm[:n_test] if split == "test" else perm[n_test:]
            pairs += [(fs[j], k) for j in sorted(keep)]
    return ClassFolder(
        [p for p, _ in pairs], [y for _, y in pairs], classes, split, transforms, seed, up_axis, num_points
    )
