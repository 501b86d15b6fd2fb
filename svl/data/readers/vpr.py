"""Visual place recognition (VPR) datasets in the standard layout of gmberton's VPR-datasets-downloader.

That layout is what deep-visual-geo-localization-benchmark (``datasets_ws.py``), CosPlace, EigenPlaces
and VPR-methods-evaluation (``test_dataset.py``) read, and what MixVPR-style evaluations reuse::

    ROOT/images/{train,val,test}/{database,queries}/*.jpg

Labels live in the file names (README of github.com/gmberton/VPR-datasets-downloader)::

    @UTM_east@UTM_north@UTM_zone_number@UTM_zone_letter@latitude@longitude@pano_id@tile_num
    @heading@pitch@roll@height@timestamp@note@extension

i.e. '@'-separated fields (chosen because '-' and '_' occur inside pano ids), many of which may be
empty; only the UTM easting and northing (fields 1 and 2 after splitting on '@') are required. The
benchmark parses them as ``path.split("@")[1], path.split("@")[2]``; here the split is done on the
file name only, so an '@' in a folder name cannot shift the fields. Ground truth is the standard
one: database images within 25 m of the query (`positives_by_distance`).

`read_vpr` also accepts ``ROOT/{split}/{database,queries}`` (no ``images/``) and, when there are no
split folders, ``ROOT/{database,queries}``. Images are found recursively (.jpg, .jpeg, .png, any
case) and sorted by their path relative to the database/queries folder. This module only lists and
parses files; it never decodes images.

Alternative ground truth (``positives_file``), for datasets labelled by lists instead of coordinates:

- ``.npy`` / ``.npz``: an array with one entry per query (in the sorted query order) holding that
  query's database indices (an object array of 1-D integer arrays, as the benchmark's
  ``get_positives()`` returns, or a 2-D integer array with a fixed count per query). A ``.npz`` must
  hold one array, or one named ``positives``. Object arrays are unpickled: only load your own files.
- text (any other suffix): one line per query, whitespace-separated::

      query_name db_name1 db_name2 ...

  names are file names (or paths relative to the queries/database folder where file names repeat);
  blank lines and lines starting with ``#`` are skipped; a query with no line (or no db names) has
  no positive; names with whitespace are not supported.

With a positives file, names need not carry UTM fields (unparseable coordinates become NaN).
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from svl.data.images.io import IMAGE_SUFFIXES, list_image_files

__all__ = [
    "IMAGE_SUFFIXES",
    "UTM_PATTERN",
    "VPRSplit",
    "list_images",
    "parse_utm",
    "positives_by_distance",
    "read_vpr",
]

UTM_PATTERN = (
    "@UTM_east@UTM_north@UTM_zone_number@UTM_zone_letter@latitude@longitude@pano_id@tile_num"
    "@heading@pitch@roll@height@timestamp@note@.jpg"
)
_EXAMPLE = "@0584443.18@4477236.85@17@T@40.44@-89.99@pano@@@@@@@@.jpg"


@dataclass
class VPRSplit:
    """One split: sorted database and query images with their UTM (east, north) coordinates.

    ``ground_truth`` holds the positives read from a positives file; when it is None positives are
    the database images within ``threshold`` metres.
    """

    root: Path
    split: str
    database: list[Path]
    queries: list[Path]
    db_utm: np.ndarray
    q_utm: np.ndarray
    threshold: float = 25.0
    ground_truth: list[np.ndarray] | None = field(default=None, repr=False)
    positives_file: Path | None = None

    def positives(self, threshold: float | None = None) -> list[np.ndarray]:
        """Per query, the sorted indices into ``database`` that count as correct.

        The positives file when one was given (``threshold`` is then ignored), else the database
        images within ``threshold`` metres (default: the split's threshold, 25 m as standard).
        """
        if self.ground_truth is not None:
            return [p.copy() for p in self.ground_truth]
        return positives_by_distance(
            self.q_utm, self.db_utm, self.threshold if threshold is None else threshold
        )

    def __repr__(self) -> str:
        gt = (
            f"file {self.positives_file.name}" if self.positives_file is not None else f"{self.threshold:g} m"
        )
        return (
            f"VPRSplit(root={str(self.root)!r}, split={self.split!r}, database={len(self.database)}, "
            f"queries={len(self.queries)}, positives={gt})"
        )


def _as_xy(x: Any, what: str) -> np.ndarray:
    a = np.asarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] != 2:
        raise ValueError(f"{what} coordinates must have shape (N, 2) (UTM east, north), got {a.shape}")
    if a.shape[0] == 0:
        raise ValueError(f"empty {what}: 0 coordinates")
    if not np.isfinite(a).all():
        raise ValueError(f"{what} coordinates hold NaN or inf")
    return a


def positives_by_distance(query_xy: Any, db_xy: Any, threshold: float = 25.0) -> list[np.ndarray]:
    """Per query, the sorted database indices within ``threshold`` metres (inclusive, Euclidean).

    Coordinates are UTM easting/northing in metres; 25 m is the standard VPR test radius. Uses
    sklearn's radius query (what the VPR benchmarks use) and falls back to chunked numpy.
    """
    q = _as_xy(query_xy, "query")
    d = _as_xy(db_xy, "database")
    thr = float(threshold)
    if not np.isfinite(thr) or thr < 0:
        raise ValueError(f"threshold must be a finite distance >= 0 in metres, got {threshold!r}")
    try:
        from sklearn.neighbors import NearestNeighbors
    except ImportError:  # pragma: no cover - sklearn is installed in the dev env
        NearestNeighbors = None
    if NearestNeighbors is not None:
        nn = NearestNeighbors().fit(d)
        found = nn.radius_neighbors(q, radius=thr, return_distance=False)
        return [np.sort(np.asarray(f, dtype=np.int64)) for f in found]
    out: list[np.ndarray] = []
    step = max(1, 2**22 // d.shape[0])
    for s in range(0, q.shape[0], step):
        diff = q[s : s + step, None, :] - d[None, :, :]
        dist = np.sqrt((diff * diff).sum(-1))
        out.extend(np.nonzero(row <= thr)[0].astype(np.int64) for row in dist)
    return out


def list_images(folder: Path) -> list[Path]:
    """Images under ``folder`` (recursive), sorted by relative path so every run sees one order."""
    return sorted(list_image_files(folder), key=lambda p: p.relative_to(folder).as_posix())


def parse_utm(path: Path | str) -> tuple[float, float]:
    """(east, north) from a VPR-datasets-downloader file name; ValueError naming the file otherwise."""
    name = Path(path).name
    parts = name.split("@")
    try:
        east, north = float(parts[1]), float(parts[2])
    except (IndexError, ValueError):
        raise ValueError(
            f"{path}: no parseable UTM fields in the file name; expected {UTM_PATTERN} (fields 1 and 2 "
            f"are UTM east and north in metres, e.g. {_EXAMPLE})"
        ) from None
    if not (np.isfinite(east) and np.isfinite(north)):
        raise ValueError(f"{path}: UTM fields are not finite ({east}, {north}); expected {UTM_PATTERN}")
    return east, north


def _find_folders(root: Path, split: str) -> tuple[Path, Path]:
    """(database, queries) folders of the first layout present; errors list the layouts tried."""
    tried = []
    for base in (root / "images" / split, root / split, root):
        if base == root and ((root / "images").is_dir() or (root / split).is_dir()):
            continue  # ROOT/{database,queries} only applies when there are no split folders
        db, q = base / "database", base / "queries"
        tried.append(f"{base.relative_to(root).as_posix()}/{{database,queries}}".removeprefix("./"))
        if db.is_dir() or q.is_dir():
            for have, lack in ((db, q), (q, db)):
                if not lack.is_dir():
                    raise FileNotFoundError(
                        f"{lack}: missing {lack.name} folder (found {have.name} next to it)"
                    )
            return db, q
    splits = sorted(
        {p.parent.name for p in [*root.glob("images/*/database"), *root.glob("*/database")]} - {"images"}
    )
    hint = f"; split folders found: {', '.join(splits)}" if splits else ""
    raise FileNotFoundError(
        f"{root}: no database/queries folders for split {split!r}; tried ROOT/" + ", ROOT/".join(tried) + hint
    )


def _read_utms(paths: list[Path], lenient: bool) -> np.ndarray:
    out = np.full((len(paths), 2), np.nan, dtype=np.float64)
    for i, p in enumerate(paths):
        try:
            out[i] = parse_utm(p)
        except ValueError:
            if not lenient:
                raise
    return out


def _name_index(paths: list[Path], folder: Path) -> dict[str, int]:
    """Map relative paths and file names to indices; a file name shared by several files maps to -1."""
    idx = {p.relative_to(folder).as_posix(): i for i, p in enumerate(paths)}
    names: dict[str, int] = {}
    for i, p in enumerate(paths):
        names[p.name] = -1 if p.name in names else i
    for name, i in names.items():
        idx.setdefault(name, i)  # an exact relative path wins over a file name
    return idx


def _lookup(name: str, index: dict[str, int], where: str, kind: str) -> int:
    i = index.get(name, None)
    if i is None:
        raise ValueError(f"{where}: unknown {kind} image {name!r} (not in the {kind} folder)")
    if i < 0:
        raise ValueError(
            f"{where}: {kind} file name {name!r} is ambiguous; use its path relative to the folder"
        )
    return i


def _read_positives_text(
    path: Path, queries: list[Path], qdir: Path, database: list[Path], dbdir: Path
) -> list[np.ndarray]:
    qi, di = _name_index(queries, qdir), _name_index(database, dbdir)
    gt: list[np.ndarray | None] = [None] * len(queries)
    seen: dict[int, int] = {}
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a UTF-8 text positives file (use .npy/.npz for arrays)") from None
    for ln, line in enumerate(text.splitlines(), start=1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        names = s.split()
        where = f"{path}:{ln}"
        q = _lookup(names[0], qi, where, "query")
        if q in seen:
            raise ValueError(f"{where}: query {names[0]!r} already listed on line {seen[q]}")
        seen[q] = ln
        gt[q] = np.unique(np.array([_lookup(n, di, where, "database") for n in names[1:]], dtype=np.int64))
    return [g if g is not None else np.zeros(0, np.int64) for g in gt]


def _read_positives_array(path: Path, nq: int, m: int) -> list[np.ndarray]:
    try:
        if path.suffix.lower() == ".npz":
            with np.load(path, allow_pickle=True) as z:
                keys = list(z.files)
                if "positives" not in keys and len(keys) != 1:
                    raise ValueError(f"holds arrays {keys}; expected one array or one named 'positives'")
                arr = z["positives" if "positives" in keys else keys[0]]
        else:
            arr = np.load(path, allow_pickle=True)
    except (ValueError, OSError, EOFError, pickle.UnpicklingError) as e:
        raise ValueError(f"{path}: unreadable positives array ({e})") from None
    if arr.ndim == 0 or len(arr) != nq:
        raise ValueError(
            f"{path}: positives for {0 if arr.ndim == 0 else len(arr)} queries, but {nq} query images"
        )
    out = []
    for i, row in enumerate(arr):
        a = np.asarray(row).reshape(-1)
        if a.size and not np.issubdtype(a.dtype, np.integer):
            raise ValueError(f"{path}: entry {i} is not integer database indices (dtype {a.dtype})")
        a = a.astype(np.int64)
        if a.size and (a.min() < 0 or a.max() >= m):
            raise ValueError(f"{path}: entry {i} names database index outside [0, {m})")
        out.append(np.unique(a))
    return out


def read_vpr(
    root: str | Path, split: str = "test", threshold: float = 25.0, positives_file: str | Path | None = None
) -> VPRSplit:
    """Read one split of a VPR dataset (see the module docstring for layouts and the name format).

    Errors name the file or folder: FileNotFoundError for a missing root, folder or positives file;
    ValueError for an unparseable name, an empty folder or a positives file that does not fit.
    """
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"{root}: no such VPR dataset folder")
    if not root.is_dir():
        raise NotADirectoryError(f"{root}: is a file, expected a VPR dataset folder")
    thr = float(threshold)
    if not np.isfinite(thr) or thr < 0:
        raise ValueError(f"threshold must be a finite distance >= 0 in metres, got {threshold!r}")
    dbdir, qdir = _find_folders(root, split)
    database, queries = list_images(dbdir), list_images(qdir)
    for folder, found in ((dbdir, database), (qdir, queries)):
        if not found:
            raise ValueError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}) in the {folder.name} folder")

    pf = None if positives_file is None else Path(positives_file)
    if pf is not None and not pf.is_file():
        raise FileNotFoundError(f"{pf}: no such positives file")
    db_utm = _read_utms(database, lenient=pf is not None)
    q_utm = _read_utms(queries, lenient=pf is not None)
    gt = None
    if pf is not None:
        if pf.suffix.lower() in (".npy", ".npz"):
            gt = _read_positives_array(pf, len(queries), len(database))
        else:
            gt = _read_positives_text(pf, queries, qdir, database, dbdir)
    return VPRSplit(
        root=root,
        split=split,
        database=database,
        queries=queries,
        db_utm=db_utm,
        q_utm=q_utm,
        threshold=thr,
        ground_truth=gt,
        positives_file=pf,
    )
