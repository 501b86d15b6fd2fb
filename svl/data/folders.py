"""Users' own data: files with captions, clouds with teacher targets in arrays, class folders.

Names: captions (a folder of point-cloud / mesh files plus a captions file: pretraining pairs for the
offline teachers), aligned_npz (clouds with precomputed teacher targets in one npz), folder (one
sub-folder of files per class: labelled data to fine-tune on). Files are read with
`svl.data.load_points` (any format it reads), rotated to z-up, centred and scaled to the unit sphere
like every other svl dataset, so a model trained here takes the same inputs as `svl classify`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from svl.data.axes import swap_yz
from svl.data.base import PointDataset, register_dataset
from svl.data.readers import list_readers, load_points
from svl.data.transforms import Compose
from svl.utils import progress

__all__ = ["AlignedArrays", "CaptionedFolder", "ClassFolder", "read_captions"]


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
        self.up_axis_on_disk = up_axis

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
        k = ids[int(self.sample_rng(i, 3).integers(len(ids)))]
        out["text"], out["text_id"] = self.texts[k], k
        return out

    def check(self) -> None:
        """Read every file once, so an unreadable one stops the run before training, naming it."""

        for i in progress(range(len(self)), desc="check files", unit="file"):
            if not np.isfinite(self._load(i)["xyz"]).all():
                raise ValueError(f"{self.files[i]}: the cloud holds NaN/inf coordinates")


@register_dataset("captions", takes=("num_points",))
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
            img = img[int(self.sample_rng(i, 1).integers(len(img)))]
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


@register_dataset("aligned_npz", takes=())
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
        self.up_axis_on_disk = up_axis

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


@register_dataset("folder", takes=("num_points",))
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

    if root is None:
        raise ValueError("folder dataset: give data.root, the folder holding one sub-folder per class")
    if split not in ("train", "test"):
        raise ValueError(f"folder dataset: split must be 'train' or 'test', got {split!r}")
    swap_yz(up_axis)  # validates the name
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
