"""Embedding store: hit, miss, corruption, resume; dataset-view and text embedding; precomputed features."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from svl.teachers.base import TEACHERS, Teacher, create_teacher, list_teachers, register_aliases
from svl.teachers.store import (
    CacheCorruptWarning,
    EmbeddingStore,
    PrecomputedFeatures,
    embed_dataset_views,
    embed_texts_cached,
)


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


def test_real_modelnet_views_with_efficientnet(tmp_path, shared_data):
    with np.load(shared_data / "modelnet40" / "modelnet40_pcd1024_test.npz") as z:
        pts, labels = z["points"][[0, 1, 2, 1000]], z["labels"][[0, 1, 2, 1000]]  # 3 airplanes + another
    assert labels[:3].tolist() == [0, 0, 0] and labels[3] != 0
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


def test_svl_embed_cli_points(tmp_path, run_cli):
    rng = np.random.default_rng(0)
    pts = (rng.random((3, 256, 3), dtype=np.float32) - 0.5) * np.array([1.0, 0.3, 0.6], np.float32)
    np.savez(tmp_path / "clouds.npz", points=pts)
    args = ["embed", "--points", str(tmp_path / "clouds.npz"), "--views", "2", "--size", "48"]
    args += [
        "--cache-dir",
        str(tmp_path / "store"),
        "-o",
        str(tmp_path / "e.npy"),
        "--grid",
        str(tmp_path / "g.png"),
    ]
    rc, out, err = run_cli(*args)
    assert rc == 0, err
    assert "(3, 2, 1280)" in out and (tmp_path / "g.png").is_file()
    e = np.load(tmp_path / "e.npy")
    assert e.shape == (3, 2, 1280) and np.allclose(np.linalg.norm(e, axis=-1), 1, atol=1e-5)
    cache_line = [ln for ln in out.splitlines() if ln.startswith("cache: ")]
    assert cache_line  # the first run reported its cache entry
    rc, out, err = run_cli(*args[:-2])  # second run: same entry, served from the store
    assert rc == 0, err
    assert [ln for ln in out.splitlines() if ln.startswith("cache: ")] == cache_line
    assert len(list((tmp_path / "store").glob("*.npy"))) == 1
    rc, _, err = run_cli("embed", "--points", tmp_path / "missing.npz")
    assert rc == 2
    assert "missing.npz: point file not found" in err


class _NamedTeacher(PixelStatsTeacher):
    """Tiny deterministic teacher built by name, as create_teacher calls it."""

    def __init__(self, device=None):
        super().__init__()


class _PathTeacher(PixelStatsTeacher):
    """Loads "weights" from a local path: spec 'name:PATH'."""

    takes_path = True
    description = "a test teacher built from a path"

    def __init__(self, path, device=None):
        super().__init__()
        self.path = path


def test_builtin_teachers_are_registered_with_aliases():
    from svl.teachers.clip import HFCLIPTeacher, OpenCLIPTeacher
    from svl.teachers.image import EfficientNetLiteTeacher
    from svl.teachers.text import MiniLMTeacher

    expect = {
        MiniLMTeacher: ("minilm", "all-minilm-l6-v2", "minilm-l6-v2"),
        EfficientNetLiteTeacher: ("efficientnet-lite0", "efficientnet_lite0"),
        OpenCLIPTeacher: ("openclip", "open_clip"),
        HFCLIPTeacher: ("hf-clip", "hf_clip"),
    }
    for cls, names in expect.items():
        assert all(TEACHERS.get(n) is cls for n in names)
    assert list(list_teachers()) == ["efficientnet-lite0", "hf-clip:PATH", "minilm", "openclip:PATH"]
    assert all(list_teachers().values())  # every entry is described


def test_unknown_teacher_lists_registered_names():
    with pytest.raises(ValueError, match="unknown teacher 'clip-vit'") as e:
        create_teacher("clip-vit")
    for name in ("minilm", "efficientnet-lite0", "openclip", "hf-clip", "all-minilm-l6-v2"):
        assert name in str(e.value)
    with pytest.raises(ValueError, match="unknown teacher 'nope'"):
        create_teacher("nope:/some/path")
    with pytest.raises(ValueError, match="non-empty"):
        create_teacher("  ")
    with pytest.raises(ValueError, match="needs a local path: 'hf_clip:PATH'"):
        create_teacher("hf_clip:")
    with pytest.raises(ValueError, match="takes no path"):
        create_teacher("minilm:/some/path")


def test_registered_teacher_is_built_from_its_spec(tmp_path):
    TEACHERS.register("pixel-stats", _NamedTeacher)
    TEACHERS.register("path-stats", _PathTeacher)
    try:
        register_aliases("pixel-stats", "pixel_stats")
        t = create_teacher("Pixel_Stats")  # names are matched lower-cased, aliases resolve
        assert isinstance(t, _NamedTeacher) and t.id == "pixel-stats"
        p = create_teacher(f"path-stats:{tmp_path}", device="cpu")
        assert isinstance(p, _PathTeacher) and p.path == str(tmp_path)  # the part after ':' is the path
        listed = list_teachers()
        assert listed["path-stats:PATH"] == "a test teacher built from a path"
        assert listed["pixel-stats"].startswith("Tiny deterministic") and "pixel_stats" not in listed
        assert np.allclose(embed_texts_cached("pixel-stats", ["a chair"], cache=False).shape, (1, 6))
    finally:
        for name in ("pixel-stats", "pixel_stats", "path-stats"):
            TEACHERS.unregister(name)
    assert "pixel-stats" not in TEACHERS


def test_read_texts_and_point_arrays(tmp_path):
    from svl.teachers.store import load_point_arrays, read_texts

    (tmp_path / "t.txt").write_text("a chair\n\n  a stool \n")
    assert read_texts(tmp_path / "t.txt") == ["a chair", "a stool"]
    (tmp_path / "t.json").write_text('["x", "y"]')
    assert read_texts(str(tmp_path / "t.json")) == ["x", "y"]
    (tmp_path / "bad.json").write_text('{"x": 1}')
    with pytest.raises(ValueError, match="bad.json: expected a JSON list"):
        read_texts(tmp_path / "bad.json")
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(ValueError, match="empty.txt: no texts"):
        read_texts(tmp_path / "empty.txt")
    with pytest.raises(FileNotFoundError, match="none.txt: text file not found"):
        read_texts(tmp_path / "none.txt")
    pts = np.random.default_rng(0).random((5, 16, 3), dtype=np.float32)
    np.save(tmp_path / "p.npy", pts)
    ds = load_point_arrays(tmp_path / "p.npy", limit=3)
    assert len(ds) == 3 and np.array_equal(ds[2]["xyz"], pts[2])
    np.savez(tmp_path / "p.npz", xyz=pts, rgb=pts)
    assert np.array_equal(load_point_arrays(tmp_path / "p.npz")[4]["rgb"], pts[4])
    np.savez(tmp_path / "q.npz", other=pts)
    with pytest.raises(ValueError, match="q.npz: no 'points' or 'xyz'"):
        load_point_arrays(tmp_path / "q.npz")
