"""`svl embed`: precompute teacher embeddings of texts or rendered views."""

from __future__ import annotations

import argparse
import time
from pathlib import Path


# ----------------------------------------------------------------------------- svl embed
def _dataset_file(name: str, split: str) -> Path:
    """The shared-data file `svl embed --dataset NAME --split SPLIT` reads."""
    from svl.utils import data_root

    if name != "modelnet40":
        raise ValueError(f"unknown dataset {name!r} for `svl embed` (use modelnet40, or --points FILE)")
    if split not in ("train", "test"):
        raise ValueError(f"split must be train or test, got {split!r}")
    root = data_root(required=True)
    return root / "modelnet40" / f"modelnet40_pcd1024_{split}.npz"


def run_embed_command(args: argparse.Namespace) -> int:
    """Handler of `svl embed`: embed texts or rendered views into the store (and optionally a .npy)."""
    import numpy as np

    from svl.teachers import create_teacher
    from svl.teachers.store import (
        EmbeddingStore,
        embed_dataset_views,
        embed_texts_cached,
        load_point_arrays,
        read_texts,
        save_dataset_view_grid,
    )
    from svl.utils import atomic_write

    if (args.texts is None) == (args.dataset is None and args.points is None):
        raise ValueError("give exactly one of --texts FILE, --dataset NAME or --points FILE")
    store = EmbeddingStore(args.cache_dir) if args.cache_dir else EmbeddingStore()
    t0 = time.perf_counter()
    if args.texts is not None:
        texts = read_texts(args.texts)
        teacher = create_teacher(args.teacher or "minilm", device=args.device)
        out = embed_texts_cached(teacher, texts, cache=not args.no_cache, store=store)
        what = f"{len(texts)} texts"
    else:
        if args.points is not None and args.dataset is not None:
            raise ValueError("give either --dataset or --points, not both")
        path = Path(args.points) if args.points else _dataset_file(args.dataset, args.split)
        ds = load_point_arrays(path, args.limit)
        teacher = create_teacher(args.teacher or "efficientnet-lite0", device=args.device)
        if args.grid:
            save_dataset_view_grid(
                ds, args.grid, num_views=args.views, size=args.size, color_mode=args.color_mode
            )
            print(f"view grid: {args.grid}")
        out = embed_dataset_views(
            ds,
            teacher,
            num_views=args.views,
            batch_size=args.batch_size,
            cache=not args.no_cache,
            size=args.size,
            color_mode=args.color_mode,
            store=store,
        )
        what = f"{len(ds)} shapes x {args.views} views from {path}"
    dt = time.perf_counter() - t0
    print(f"teacher {teacher.id}: {what} -> {tuple(out.shape)} in {dt:.1f} s")
    if isinstance(out, np.memmap):
        print(f"cache: {out.filename}")
    if args.output:
        with atomic_write(args.output) as fh:
            np.save(fh, np.asarray(out))
        print(f"wrote {args.output}")
    return 0


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
    p.add_argument(
        "-o", "--output", metavar="FILE.npy", default=None, help="also write the array to this .npy file"
    )
    p.add_argument("--out", dest="output", default=None, help=argparse.SUPPRESS)  # deprecated spelling
    p.add_argument(
        "--grid", metavar="FILE.png", default=None, help="save a PNG grid of the first shapes' views"
    )
    p.set_defaults(func=run_embed_command)


def register(sub: argparse._SubParsersAction) -> None:
    _add_embed(sub)
