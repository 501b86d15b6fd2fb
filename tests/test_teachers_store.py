"""Embedding store: hit, miss, corruption, resume; dataset-view and text embedding; precomputed features."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from svl.teachers.base import Teacher
from svl.teachers.store import (
    CacheCorruptWarning,
    EmbeddingStore,
    PrecomputedFeatures,
    embed_dataset_views,
    embed_texts_cached,
)
from svl.utils import data_root


class PixelStatsTeacher(Teacher):
    """Tiny deterministic image/text teacher that counts how many items it embedded."""

    id = "pixel-stats"
    dim = 6
    has_image = True
    has_text = True

    def __init__(self):
        super().__init__("cpu", batch_size=16)
        self.seen = 0

    def _embed_images(self, images):
        self.seen += images.shape[0]
        return torch.cat([images.mean(dim=(2, 3)), images.std(dim=(2, 3))], dim=1) + 1e-3

    def _embed_texts(self, texts):
        self.seen += len(texts)
        return torch.tensor([[len(t), t.count("a"), t.count("e"), 1.0, ord(t[0]), 2.0] for t in texts])


class ListDataset:
    def __init__(self, clouds, colours=None):
        self.clouds, self.colours = clouds, colours

    def __len__(self):
        return len(self.clouds)

    def __getitem__(self, i):
        item = {"xyz": self.clouds[i], "label": 0, "index": i}
        if self.colours is not None:
            item["rgb"] = self.colours[i]
        return item


def _clouds(n=10, seed=0):
    rng = np.random.default_rng(seed)
    return [
        (rng.random((200 + 10 * i, 3), dtype=np.float32) - 0.5) * rng.random(3).astype(np.float32)
        for i in range(n)
    ]


def test_views_cache_hit_and_miss(tmp_path):
    store, t = EmbeddingStore(tmp_path), PixelStatsTeacher()
    ds = ListDataset(_clouds())
    kw = dict(num_views=2, batch_size=4, size=32, store=store)
    a = embed_dataset_views(ds, t, **kw)
    assert isinstance(a, np.memmap) and a.shape == (10, 2, 6) and t.seen == 20
    ref = embed_dataset_views(ds, t, num_views=2, batch_size=3, size=32, cache=False)
    assert np.allclose(a, ref, atol=1e-6)  # same numbers with or without the cache
    assert np.allclose(np.linalg.norm(a, axis=-1), 1, atol=1e-5)
    t.seen = 0
    b = embed_dataset_views(ds, t, **kw)  # hit: nothing recomputed
    assert t.seen == 0 and np.array_equal(a, b)
    ds2 = ListDataset(_clouds(seed=1))  # different points -> miss
    embed_dataset_views(ds2, t, **kw)
    assert t.seen == 20
    embed_dataset_views(ds, t, num_views=3, batch_size=4, size=32, store=store)  # different settings -> miss
    assert t.seen == 50
    assert len(list(tmp_path.glob("pixel-stats-*.npy"))) == 3
    assert not list(tmp_path.glob("*.tmp"))  # no stray temp files


def test_corrupt_cache_is_detected_and_rebuilt(tmp_path):
    store, t = EmbeddingStore(tmp_path), PixelStatsTeacher()
    ds = ListDataset(_clouds(6))
    good = np.array(embed_dataset_views(ds, t, num_views=2, batch_size=4, size=32, store=store))
    (npy,) = tmp_path.glob("*.npy")
    raw = bytearray(npy.read_bytes())
    raw[-8:] = b"\x00\x00\xc0\x7f" * 2  # flip the last values to NaN
    npy.write_bytes(bytes(raw))
    t.seen = 0
    with pytest.warns(CacheCorruptWarning, match="checksum"):
        again = embed_dataset_views(ds, t, num_views=2, batch_size=4, size=32, store=store)
    assert t.seen == 12 and np.array_equal(good, again)
    npy.write_bytes(npy.read_bytes()[:200])  # truncated file
    with pytest.warns(CacheCorruptWarning, match="unreadable"):
        again = embed_dataset_views(ds, t, num_views=2, batch_size=4, size=32, store=store)
    assert np.array_equal(good, again)
    (meta,) = tmp_path.glob("*.json")
    meta.write_text("{not json")
    with pytest.warns(CacheCorruptWarning, match="metadata"):
        again = embed_dataset_views(ds, t, num_views=2, batch_size=4, size=32, store=store)
    assert np.array_equal(good, again)


def test_interrupted_build_resumes(tmp_path):
    store = EmbeddingStore(tmp_path)
    full = np.arange(10 * 3, dtype=np.float32).reshape(10, 3)
    calls = []

    def flaky(a, b):
        calls.append((a, b))
        if a >= 6:
            raise KeyboardInterrupt  # killed mid-build
        return full[a:b]

    with pytest.raises(KeyboardInterrupt):
        store.build("k-1", (10, 3), flaky, chunk=3)
    assert store.load("k-1") is None and store.meta("k-1")["rows_done"] == 6
    calls.clear()
    out = store.build("k-1", (10, 3), lambda a, b: (calls.append((a, b)), full[a:b])[1], chunk=3)
    assert calls == [(6, 9), (9, 10)] and np.array_equal(out, full)
    assert store.meta("k-1")["complete"]
    with pytest.raises(ValueError, match="expected"):
        store.build("k-2", (4, 3), lambda a, b: np.zeros((1, 3)), chunk=2)


def test_text_cache(tmp_path):
    store, t = EmbeddingStore(tmp_path), PixelStatsTeacher()
    texts = ["a chair", "an airplane", "the bed"] * 3
    a = embed_texts_cached(t, texts, store=store, chunk=4)
    assert a.shape == (9, 6) and t.seen == 9
    assert np.allclose(a, F.normalize(t._embed_texts(texts), dim=-1).numpy(), atol=1e-6)
    t.seen = 0
    embed_texts_cached(t, texts, store=store)
    assert t.seen == 0
    embed_texts_cached(t, texts[:-1], store=store)
    assert t.seen == 8


def test_bad_dataset_items(tmp_path):
    t = PixelStatsTeacher()
    with pytest.raises(ValueError, match="'xyz'"):
        embed_dataset_views([np.zeros((5, 3))], t, store=EmbeddingStore(tmp_path))
    bad = ListDataset([np.zeros((5, 3), np.float32)], [np.zeros((4, 3), np.float32)])
    with pytest.raises(ValueError, match="rgb shape"):
        embed_dataset_views(bad, t, store=EmbeddingStore(tmp_path))


def test_real_modelnet_views_with_efficientnet(tmp_path):
    root = data_root()
    path = None if root is None else root / "modelnet40/modelnet40_pcd1024_test.npz"
    if path is None or not path.is_file():
        pytest.skip("shared ModelNet40 data not available")
    pts = np.load(path)["points"][[0, 1, 2, 1000]]  # 3 airplanes + one other class
    ds = ListDataset(list(pts))
    from svl.teachers import create_teacher

    teacher = create_teacher("efficientnet-lite0", device="cpu")
    e = embed_dataset_views(ds, teacher, num_views=2, size=96, batch_size=2, store=EmbeddingStore(tmp_path))
    assert e.shape == (4, 2, 1280) and np.isfinite(e).all()
    g = e.mean(1)
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    sim = g @ g.T
    assert sim[0, 1] > sim[0, 3] and sim[0, 2] > sim[0, 3]  # airplanes resemble each other


def test_precomputed_features(tmp_path):
    rng = np.random.default_rng(0)
    img = rng.standard_normal((5, 12, 1280)).astype(np.float32)
    txt = rng.standard_normal((5, 1280)).astype(np.float16)
    np.save(tmp_path / "img.npy", img)
    f = PrecomputedFeatures(tmp_path / "img.npy", txt)
    assert f.id == "openshape-bigg14" and f.dim == 1280 and len(f) == 5
    assert np.array_equal(f.image_features([1, 3]).numpy(), img[[1, 3]])  # used as-is
    assert np.array_equal(f.text_features(2).numpy(), txt[2].astype(np.float32))
    with pytest.raises(FileNotFoundError, match="missing.npy"):
        PrecomputedFeatures(tmp_path / "missing.npy")
    with pytest.raises(ValueError, match="1280"):
        PrecomputedFeatures(np.zeros((5, 512), np.float32))
    with pytest.raises(ValueError, match="cover"):
        PrecomputedFeatures(img, txt[:3])


def test_concurrent_builders_compute_once(tmp_path):
    import threading
    import time

    store = EmbeddingStore(tmp_path)
    full = np.random.default_rng(0).random((8, 4), dtype=np.float32)
    calls = []

    def slow(a, b):
        calls.append(a)
        time.sleep(0.05)
        return full[a:b]

    outs = [None, None]

    def run(i):
        outs[i] = np.array(store.build("shared-key", (8, 4), slow, chunk=2))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert sorted(calls) == [0, 2, 4, 6]  # the second builder found a cache hit
    assert np.array_equal(outs[0], full) and np.array_equal(outs[1], full)


def test_svl_embed_cli_points(tmp_path, capsys):
    from svl.cli import main

    rng = np.random.default_rng(0)
    pts = (rng.random((3, 256, 3), dtype=np.float32) - 0.5) * np.array([1.0, 0.3, 0.6], np.float32)
    np.savez(tmp_path / "clouds.npz", points=pts)
    args = ["embed", "--points", str(tmp_path / "clouds.npz"), "--views", "2", "--size", "48"]
    args += [
        "--cache-dir",
        str(tmp_path / "store"),
        "--out",
        str(tmp_path / "e.npy"),
        "--grid",
        str(tmp_path / "g.png"),
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "(3, 2, 1280)" in out and (tmp_path / "g.png").is_file()
    e = np.load(tmp_path / "e.npy")
    assert e.shape == (3, 2, 1280) and np.allclose(np.linalg.norm(e, axis=-1), 1, atol=1e-5)
    cache_line = [ln for ln in out.splitlines() if ln.startswith("cache: ")]
    assert main(args[:-2]) == 0  # second run: same entry, served from the store
    assert [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("cache: ")] == cache_line
    assert len(list((tmp_path / "store").glob("*.npy"))) == 1
    assert main(["embed", "--points", str(tmp_path / "missing.npz")]) == 2
    assert "missing.npz: point file not found" in capsys.readouterr().err
