"""On-disk embedding store: compute teacher embeddings once, memory-map them for training.

Layout under `svl.utils.cache_dir("embeddings")` (or any root):
  <key>.npy   float32 array, written in chunks through a memmap
  <key>.json  metadata: teacher id, shape, settings, rows done, complete flag, checksum
The key is `<teacher id>-<content hash>` where the hash covers the inputs (texts, or points +
render settings). A build records progress after every flushed chunk, so an interrupted build
resumes where it stopped. A complete entry carries a BLAKE2 checksum of its data; an entry whose
files are unreadable, truncated or fail the checksum is reported with a warning and rebuilt.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from svl.conventions import MISSING_COLOR
from svl.data.render import render_views, save_view_grid
from svl.utils import atomic_write, cache_dir, get_logger, progress

from .base import Teacher, create_teacher

__all__ = [
    "EmbeddingStore",
    "CacheCorruptWarning",
    "embed_texts_cached",
    "embed_dataset_views",
    "dataset_views_key",
    "PrecomputedFeatures",
    "RENDER_VERSION",
    "ArrayPoints",
    "load_point_arrays",
    "read_texts",
    "save_dataset_view_grid",
]

log = get_logger("svl.teachers.store")
STORE_VERSION = 1
RENDER_VERSION = 1  # bump when render_views output changes, so old view caches are not reused
DEFAULT_VIEWS = 4
DEFAULT_VIEW_SIZE = 128


class CacheCorruptWarning(UserWarning):
    """A cache entry was unreadable or failed its checksum and is being rebuilt."""


def _checksum(arr: np.ndarray, chunk_rows: int = 4096) -> str:
    h = hashlib.blake2b(digest_size=16)
    flat = arr.reshape(arr.shape[0], -1) if arr.ndim > 1 else arr.reshape(-1, 1)
    for i in range(0, flat.shape[0], chunk_rows):
        h.update(np.ascontiguousarray(flat[i : i + chunk_rows]).tobytes())
    return h.hexdigest()


def _safe_id(teacher_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", teacher_id).strip("._") or "teacher"


class EmbeddingStore:
    """A folder of resumable, checksummed, memory-mappable embedding arrays."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else cache_dir("embeddings")
        if self.root.exists() and not self.root.is_dir():
            raise ValueError(f"{self.root}: embedding store root exists and is not a directory")
        self.root.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def make_key(teacher_id: str, content_hash: str) -> str:
        return f"{_safe_id(teacher_id)}-{content_hash[:24]}"

    def paths(self, key: str) -> tuple[Path, Path]:
        return self.root / f"{key}.npy", self.root / f"{key}.json"

    # -- reading -------------------------------------------------------------------------------
    def _read_meta(self, key: str) -> dict | None:
        _, meta_path = self.paths(key)
        if not meta_path.exists():
            return None
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            if not isinstance(meta, dict) or "shape" not in meta:
                raise ValueError("missing 'shape'")
            return meta
        except (OSError, ValueError) as e:
            self._corrupt(key, f"{meta_path}: unreadable metadata ({e})")
            return None

    def _corrupt(self, key: str, why: str) -> None:
        warnings.warn(f"embedding cache {key}: {why}; rebuilding it", CacheCorruptWarning, stacklevel=3)
        log.warning("embedding cache %s: %s; rebuilding it", key, why)
        for p in self.paths(key):
            p.unlink(missing_ok=True)

    def _open_data(self, key: str, meta: dict, mode: str) -> np.memmap | None:
        data_path, _ = self.paths(key)
        try:
            arr = np.load(data_path, mmap_mode=mode)
        except (OSError, ValueError, EOFError) as e:
            self._corrupt(key, f"{data_path}: unreadable array ({e})")
            return None
        if list(arr.shape) != list(meta["shape"]) or arr.dtype != np.float32:
            self._corrupt(
                key, f"{data_path}: shape {arr.shape}/{arr.dtype} != recorded {meta['shape']}/float32"
            )
            return None
        return arr

    def load(self, key: str, verify: bool = True) -> np.memmap | None:
        """The complete entry `key` as a read-only memmap, or None (missing, partial or corrupt)."""
        meta = self._read_meta(key)
        if meta is None or not meta.get("complete"):
            return None
        arr = self._open_data(key, meta, "r")
        if arr is None:
            return None
        if verify and _checksum(arr) != meta.get("checksum"):
            del arr
            self._corrupt(key, "checksum mismatch (file changed or damaged)")
            return None
        return arr

    def meta(self, key: str) -> dict | None:
        """The metadata of `key` (None when absent)."""
        return self._read_meta(key)

    # -- building ------------------------------------------------------------------------------
    def build(
        self,
        key: str,
        shape: Sequence[int],
        compute: Callable[[int, int], np.ndarray | torch.Tensor],
        chunk: int,
        info: dict[str, Any] | None = None,
        desc: str = "embedding",
        verify: bool = True,
    ) -> np.memmap:
        """Return entry `key`, computing rows [a, b) with `compute(a, b)` for whatever is missing.

        Rows are written `chunk` at a time; after each flushed chunk the progress is recorded,
        so a killed build restarts at the first unfinished chunk. Concurrent builders of one key
        (e.g. several DDP ranks) serialise on a lock file; the later ones then find a cache hit.
        """
        shape = [int(s) for s in shape]
        if chunk < 1:
            raise ValueError(f"chunk must be >= 1, got {chunk}")
        with self._lock(key):
            return self._build_locked(key, shape, compute, chunk, info, desc, verify)

    @contextlib.contextmanager
    def _lock(self, key: str):
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX: no cross-process lock
            yield
            return
        with open(self.root / f"{key}.lock", "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _build_locked(self, key, shape, compute, chunk, info, desc, verify) -> np.memmap:
        done_arr = self.load(key, verify=verify)
        if done_arr is not None:
            log.info("embedding cache hit: %s", self.paths(key)[0])
            return done_arr
        data_path, meta_path = self.paths(key)
        meta = self._read_meta(key)
        arr = None
        start = 0
        if meta is not None and not meta.get("complete") and list(meta["shape"]) == shape:
            arr = self._open_data(key, meta, "r+")
            if arr is not None:
                start = int(meta.get("rows_done", 0))
                log.info("resuming embedding build %s at row %d / %d", key, start, shape[0])
        if arr is None:
            for p in (data_path, meta_path):
                p.unlink(missing_ok=True)
            arr = np.lib.format.open_memmap(data_path, mode="w+", dtype=np.float32, shape=tuple(shape))
            meta = {
                "version": STORE_VERSION,
                "key": key,
                "shape": shape,
                "dtype": "float32",
                "rows_done": 0,
                "complete": False,
                "info": info or {},
            }
            self._write_meta(meta_path, meta)
        starts = range(start - start % chunk, shape[0], chunk)
        for a in progress(starts, desc=desc, total=len(starts), unit="chunk"):
            b = min(a + chunk, shape[0])
            block = compute(a, b)
            if isinstance(block, torch.Tensor):
                block = block.detach().cpu().numpy()
            block = np.asarray(block, dtype=np.float32)
            if list(block.shape) != [b - a, *shape[1:]]:
                raise ValueError(
                    f"{desc}: compute({a}, {b}) returned {block.shape}, expected {[b - a, *shape[1:]]}"
                )
            arr[a:b] = block
            arr.flush()
            meta["rows_done"] = b
            self._write_meta(meta_path, meta)
        meta["checksum"] = _checksum(arr)
        meta["complete"] = True
        meta["rows_done"] = shape[0]
        del arr
        self._write_meta(meta_path, meta)
        out = self.load(key, verify=False)
        assert out is not None
        return out

    @staticmethod
    def _write_meta(path: Path, meta: dict) -> None:
        with atomic_write(path, "w") as fh:
            json.dump(meta, fh, indent=1)


# -- texts -----------------------------------------------------------------------------------------
def embed_texts_cached(
    teacher: Teacher | str,
    texts: Sequence[str],
    cache: bool = True,
    store: EmbeddingStore | None = None,
    chunk: int = 2048,
) -> np.ndarray:
    """(N, dim) text embeddings of `texts`, cached under the teacher id + a hash of the texts."""
    if isinstance(teacher, str):
        teacher = create_teacher(teacher)
    texts = list(texts)
    if not texts:
        raise ValueError("embed_texts_cached: no texts given")

    def compute(a: int, b: int) -> torch.Tensor:
        return teacher.embed_texts(texts[a:b])

    if not cache:
        return compute(0, len(texts)).numpy()
    h = hashlib.sha256(f"texts/v{STORE_VERSION}/{teacher.id}/{len(texts)}".encode())
    for t in texts:
        h.update(t.encode("utf-8") + b"\0")
    store = store or EmbeddingStore()
    key = store.make_key(teacher.id, h.hexdigest())
    info = {"kind": "texts", "teacher": teacher.id, "count": len(texts)}
    return store.build(key, (len(texts), teacher.dim), compute, chunk, info, desc="embed texts")


# -- dataset views ---------------------------------------------------------------------------------
def _sample_arrays(sample: Any, i: int) -> tuple[np.ndarray, np.ndarray | None]:
    if not isinstance(sample, dict) or "xyz" not in sample:
        raise ValueError(f"dataset item {i} must be a dict with an 'xyz' entry, got {type(sample).__name__}")
    xyz = sample["xyz"]
    xyz = xyz.detach().cpu().numpy() if isinstance(xyz, torch.Tensor) else np.asarray(xyz)
    xyz = np.ascontiguousarray(xyz, dtype=np.float32)
    if xyz.ndim != 2 or xyz.shape[1] != 3 or xyz.shape[0] == 0:
        raise ValueError(f"dataset item {i}: xyz must be (N, 3) with N > 0, got {xyz.shape}")
    rgb = sample.get("rgb")
    if rgb is not None:
        rgb = rgb.detach().cpu().numpy() if isinstance(rgb, torch.Tensor) else np.asarray(rgb)
        rgb = np.ascontiguousarray(rgb, dtype=np.float32)
        if rgb.shape != xyz.shape:
            raise ValueError(f"dataset item {i}: rgb shape {rgb.shape} != xyz shape {xyz.shape}")
    return xyz, rgb


def dataset_views_key(dataset: Any, teacher_id: str, settings: dict) -> str:
    """Content hash of every sample's points (+ colours) and the render settings."""
    h = hashlib.sha256(json.dumps({"teacher": teacher_id, **settings}, sort_keys=True).encode())
    h.update(str(len(dataset)).encode())
    for i in progress(range(len(dataset)), desc="hash points", unit="shape"):
        xyz, rgb = _sample_arrays(dataset[i], i)
        h.update(np.asarray(xyz.shape, dtype=np.int64).tobytes())
        h.update(xyz.tobytes())
        h.update(b"rgb" if rgb is not None else b"---")
        if rgb is not None:
            h.update(rgb.tobytes())
    return EmbeddingStore.make_key(teacher_id, h.hexdigest())


def _stack_batch(
    samples: list[tuple[np.ndarray, np.ndarray | None]],
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Stack clouds of unequal size by repeating points (a repeated point renders identically)."""
    n = max(x.shape[0] for x, _ in samples)
    any_rgb = any(c is not None for _, c in samples)
    xs, cs = [], []
    for x, c in samples:
        if c is None and any_rgb:
            c = np.full_like(x, MISSING_COLOR)
        if x.shape[0] < n:
            idx = np.resize(np.arange(x.shape[0]), n)
            x = x[idx]
            c = c[idx] if c is not None else None
        xs.append(x)
        cs.append(c)
    xyz = torch.from_numpy(np.stack(xs))
    rgb = torch.from_numpy(np.stack(cs)) if any_rgb else None
    return xyz, rgb


def embed_dataset_views(
    dataset: Any,
    teacher: Teacher | str = "efficientnet-lite0",
    num_views: int = DEFAULT_VIEWS,
    batch_size: int = 32,
    cache: bool = True,
    *,
    size: int = DEFAULT_VIEW_SIZE,
    color_mode: str = "shaded",
    elevation: float = 20.0,
    store: EmbeddingStore | None = None,
    device: str | torch.device | None = None,
) -> np.ndarray:
    """Render every sample's cloud from `num_views` views and embed each view -> (len, V, dim).

    `dataset[i]` must return a dict with "xyz" (N, 3) z-up and optionally "rgb" (use a dataset
    without random augmentation: the cache key hashes the points). With `cache=True` the result
    is a read-only memmap from the embedding store, built resumably in chunks of `batch_size`
    shapes. Defaults (4 views of 128 px, shaded) were chosen by measurement, see RESULTS.md.
    """
    if isinstance(teacher, str):
        teacher = create_teacher(teacher, device=device)
    if not getattr(teacher, "has_image", True):
        raise ValueError(f"teacher {teacher.id!r} has no image tower")
    n = len(dataset)
    if n == 0:
        raise ValueError("embed_dataset_views: the dataset is empty")

    settings = {
        "kind": "views",
        "renderer": RENDER_VERSION,
        "num_views": int(num_views),
        "size": int(size),
        "color_mode": color_mode,
        "elevation": float(elevation),
    }

    def compute(a: int, b: int) -> torch.Tensor:
        xyz, rgb = _stack_batch([_sample_arrays(dataset[i], i) for i in range(a, b)])
        dev = teacher.device
        views = render_views(
            xyz.to(dev),
            None if rgb is None else rgb.to(dev),
            num_views=num_views,
            size=size,
            color_mode=color_mode,
            elevation=elevation,
        )
        emb = teacher.embed_images(views.flatten(0, 1))
        return emb.view(b - a, num_views, -1)

    if not cache:
        out = np.empty((n, num_views, teacher.dim), dtype=np.float32)
        for a in progress(range(0, n, batch_size), desc="embed views", unit="chunk"):
            b = min(a + batch_size, n)
            out[a:b] = compute(a, b).numpy()
        return out
    store = store or EmbeddingStore()
    key = dataset_views_key(dataset, teacher.id, settings)
    info = {**settings, "teacher": teacher.id, "count": n}
    return store.build(key, (n, num_views, teacher.dim), compute, batch_size, info, desc="embed views")


# -- precomputed features ---------------------------------------------------------------------------
class PrecomputedFeatures:
    """Teacher features computed elsewhere (e.g. OpenShape's OpenCLIP ViT-bigG-14, 1280-d), used as-is.

    image: (N, dim) or (N, V, dim) per-shape view embeddings; text: (N, dim) or (N, T, dim).
    Arrays or .npy paths (memory-mapped). Values are passed through untouched: no re-normalising,
    so results match the release the features came from.
    """

    def __init__(
        self,
        image: np.ndarray | str | Path | None = None,
        text: np.ndarray | str | Path | None = None,
        id: str = "openshape-bigg14",
        dim: int = 1280,
    ) -> None:
        self.id = id
        self.dim = int(dim)
        self.image = self._load(image, "image")
        self.text = self._load(text, "text")
        if self.image is None and self.text is None:
            raise ValueError("PrecomputedFeatures needs image and/or text features")
        if self.image is not None and self.text is not None and len(self.image) != len(self.text):
            raise ValueError(
                f"image features cover {len(self.image)} shapes but text features {len(self.text)}"
            )

    def _load(self, src, what: str) -> np.ndarray | None:
        if src is None:
            return None
        if isinstance(src, str | Path):
            path = Path(src)
            if not path.is_file():
                raise FileNotFoundError(f"{path}: {what} feature file not found")
            try:
                arr = np.load(path, mmap_mode="r", allow_pickle=False)
            except ValueError as e:
                raise ValueError(f"{path}: not a plain .npy array of {what} features ({e})") from e
            where = str(path)
        else:
            arr = np.asarray(src)
            where = f"{what} array"
        if arr.ndim not in (2, 3) or arr.shape[-1] != self.dim:
            raise ValueError(
                f"{where}: expected (N, {self.dim}) or (N, V, {self.dim}) features, got {arr.shape}"
            )
        if not np.issubdtype(arr.dtype, np.floating):
            raise ValueError(f"{where}: features must be floating point, got {arr.dtype}")
        return arr

    def __len__(self) -> int:
        return len(self.image if self.image is not None else self.text)

    def image_features(self, index: Any) -> torch.Tensor:
        """Image features of shape(s) `index` as float32 tensors, exactly as stored."""
        if self.image is None:
            raise ValueError(f"{self.id}: no image features were given")
        return torch.from_numpy(np.asarray(self.image[index], dtype=np.float32))

    def text_features(self, index: Any) -> torch.Tensor:
        """Text features of shape(s) `index` as float32 tensors, exactly as stored."""
        if self.text is None:
            raise ValueError(f"{self.id}: no text features were given")
        return torch.from_numpy(np.asarray(self.text[index], dtype=np.float32))

    def __repr__(self) -> str:
        shp = {k: getattr(v, "shape", None) for k, v in (("image", self.image), ("text", self.text))}
        return f"PrecomputedFeatures(id={self.id!r}, dim={self.dim}, {shp})"


# -- inputs of `svl embed` ---------------------------------------------------------------------------
class ArrayPoints:
    """Minimal dataset over stacked clouds (P, N, 3) [+ colours], yielding svl sample dicts."""

    def __init__(self, points: np.ndarray, rgb: np.ndarray | None = None, where: str = "points") -> None:
        if points.ndim != 3 or points.shape[-1] != 3:
            raise ValueError(f"{where}: expected points of shape (shapes, N, 3), got {points.shape}")
        if rgb is not None and rgb.shape != points.shape:
            raise ValueError(f"{where}: rgb shape {rgb.shape} != points shape {points.shape}")
        self.points, self.rgb = points, rgb

    def __len__(self) -> int:
        return len(self.points)

    def __getitem__(self, i: int) -> dict:
        item = {"xyz": np.asarray(self.points[i], dtype=np.float32), "index": i}
        if self.rgb is not None:
            item["rgb"] = np.asarray(self.rgb[i], dtype=np.float32)
        return item


def load_point_arrays(path: str | Path, limit: int | None = None) -> ArrayPoints:
    """Clouds from an .npz (`points` or `xyz`, optional `rgb`) or an .npy (shapes, N, 3) file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: point file not found")
    sl = slice(None) if limit is None else slice(0, int(limit))
    if path.suffix == ".npy":
        return ArrayPoints(np.load(path, mmap_mode="r")[sl], where=str(path))
    if path.suffix != ".npz":
        raise ValueError(f"{path}: expected an .npz or .npy point file")
    with np.load(path, allow_pickle=False) as z:
        key = next((k for k in ("points", "xyz") if k in z.files), None)
        if key is None:
            raise ValueError(f"{path}: no 'points' or 'xyz' array (found {z.files})")
        rgb = z["rgb"][sl] if "rgb" in z.files else None
        return ArrayPoints(z[key][sl], rgb, where=str(path))


def read_texts(path: str | Path) -> list[str]:
    """Texts to embed: one per non-blank line, or a JSON list of strings for a .json file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: text file not found")
    if path.suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: invalid JSON ({e})") from e
        if not isinstance(data, list) or not all(isinstance(t, str) for t in data):
            raise ValueError(f"{path}: expected a JSON list of strings")
        texts = data
    else:
        texts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not texts:
        raise ValueError(f"{path}: no texts found")
    return texts


def save_dataset_view_grid(
    dataset: Any,
    path: str | Path,
    *,
    shapes: int = 4,
    num_views: int = DEFAULT_VIEWS,
    size: int = DEFAULT_VIEW_SIZE,
    color_mode: str = "shaded",
) -> None:
    """A PNG grid of the first `shapes` clouds' views: a look at what the image teacher is shown."""

    first = _stack_batch([_sample_arrays(dataset[i], i) for i in range(min(shapes, len(dataset)))])
    save_view_grid(render_views(*first, num_views=num_views, size=size, color_mode=color_mode), path)
