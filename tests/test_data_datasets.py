"""Dataset registry on the real shared ModelNet40 and on small generated files in the official formats."""

from __future__ import annotations

import json

import numpy as np
import pytest

from svl.data import build_dataset, list_datasets
from svl.vocab import MODELNET10_CLASSES, display_name, load_class_names


def test_modelnet40_real(shared_data):
    ds = build_dataset("modelnet40", "test", root=shared_data)
    assert len(ds) == 2468 and ds.classes == load_class_names("modelnet40")
    s = ds[0]
    assert s["xyz"].shape == (1024, 3) and s["index"] == 0 and "rgb" not in s
    assert abs(np.linalg.norm(s["xyz"], axis=1).max() - 1) < 1e-3
    assert np.bincount(ds.labels(), minlength=40).tolist()[:3] == [100, 50, 100]
    assert isinstance(ds.points, np.memmap) or ds.points.base is not None  # memory-mapped cache


def test_zero_shot_split(shared_data):
    splits = {
        sp: build_dataset("modelnet40_zsl", sp, root=shared_data)
        for sp in ("train", "val", "test_unseen", "test")
    }
    ds = splits["test"]
    assert len(ds) == 2468 and len(splits["test_unseen"]) == 908
    assert ds.unseen_classes == list(MODELNET10_CLASSES) and len(ds.seen_classes) == 30
    unseen = {ds.classes.index(c) for c in MODELNET10_CLASSES}
    tr, va = splits["train"], splits["val"]
    assert not set(tr.labels()) & unseen and not set(va.labels()) & unseen
    assert set(splits["test_unseen"].labels()) == unseen
    assert not set(tr.indices) & set(va.indices)
    full = build_dataset("modelnet40", "train", root=shared_data).labels()
    seen_total = int(np.isin(full, sorted(unseen), invert=True).sum())
    assert len(tr) + len(va) == seen_total
    per = np.bincount(va.labels(), minlength=40)[sorted(set(range(40)) - unseen)]
    tot = np.bincount(full, minlength=40)[sorted(set(range(40)) - unseen)]
    assert np.all(np.abs(per - 0.1 * tot) <= 1)
    again = build_dataset("modelnet40_zsl", "val", root=shared_data)
    assert np.array_equal(again.indices, va.indices)  # fixed split


def test_class_names():
    assert display_name("night_stand") == "night stand"
    assert len(load_class_names("objaverse_lvis")) == 1156
    assert load_class_names("scanobjectnn")[:3] == ["bag", "bin", "box"]


def test_h5_formats(tmp_path):
    h5py = pytest.importorskip("h5py")
    rng = np.random.default_rng(0)
    mn = tmp_path / "modelnet40_ply_hdf5_2048"
    mn.mkdir()
    pts = rng.normal(size=(6, 2048, 3)).astype(np.float32)
    with h5py.File(mn / "ply_data_test0.h5", "w") as h:
        h["data"], h["label"] = pts, np.arange(6).reshape(6, 1)
    ds = build_dataset("modelnet40_h5", "test", root=tmp_path)
    assert len(ds) == 6 and ds[2]["label"] == 2
    np.testing.assert_array_equal(ds[2]["xyz"], pts[2][:, [0, 2, 1]])  # y-up on disk -> z-up
    so = tmp_path / "scanobjectnn" / "main_split"
    so.mkdir(parents=True)
    with h5py.File(so / "test_objectdataset_augmentedrot_scale75.h5", "w") as h:
        h["data"], h["label"] = pts, np.array([0, 1, 2, 3, 4, 14])
    with pytest.raises(ValueError, match="variant"):
        build_dataset("scanobjectnn", "test", root=tmp_path)
    ds = build_dataset("scanobjectnn", "test", root=tmp_path, variant="PB_T50_RS", num_points=1024)
    assert ds[5]["label"] == 14 and ds[5]["xyz"].shape == (1024, 3) and len(ds.classes) == 15
    with pytest.raises(FileNotFoundError, match="OBJ_ONLY"):
        build_dataset("scanobjectnn", "test", root=tmp_path, variant="OBJ_ONLY")


def test_modelnet40_normal_txt(tmp_path):
    root = tmp_path / "modelnet40_normal_resampled"
    (root / "chair").mkdir(parents=True)
    rows = np.concatenate([np.random.default_rng(0).normal(size=(100, 3)), np.tile([[0, 1, 0]], (100, 1))], 1)
    (root / "chair" / "chair_0001.txt").write_text("\n".join(",".join(map(str, r)) for r in rows))
    (root / "modelnet40_test.txt").write_text("chair_0001\n")
    s = build_dataset("modelnet40_normal", "test", root=tmp_path)[0]
    assert s["label"] == load_class_names("modelnet40").index("chair")
    np.testing.assert_allclose(s["normals"], np.tile([[0, 0, 1]], (100, 1)))  # y-up normal -> +z


def _openshape_shape(path, rng, n=300, text=True):
    d = {
        "xyz": rng.normal(size=(n, 3)).astype(np.float32),
        "rgb": rng.random((n, 3)).astype(np.float32),
        "image_feat": rng.normal(size=(12, 16)).astype(np.float32),
        "thumbnail_feat": rng.normal(size=(16,)).astype(np.float32),
        "text": ["a chair"] if text else [],
        "text_feat": [{"original": rng.normal(size=(1, 16)), "prompt_avg": rng.normal(size=(1, 16))}]
        if text
        else [],
    }
    np.save(path, np.array(d, dtype=object))
    return d


def test_openshape_train_and_lvis(tmp_path):
    from svl.data.batch import collate_points

    rng = np.random.default_rng(0)
    root = tmp_path / "openshape"
    (root / "objs").mkdir(parents=True)
    (root / "meta_data" / "split").mkdir(parents=True)
    items, shapes = [], []
    for i in range(3):
        shapes.append(_openshape_shape(root / "objs" / f"uid{i}.npy", rng, text=i != 2))
        items.append({"id": f"uid{i}", "data_path": f"/mnt/data/objs/uid{i}.npy", "dataset": "Objaverse"})
    (root / "meta_data" / "split" / "train.json").write_text(json.dumps(items))
    ds = build_dataset("openshape", "train", root=tmp_path, num_points=128, augment=True)
    s = ds[0]
    assert s["xyz"].shape == (128, 3) and s["image_emb"].shape == (16,) and s["has_text"]
    targets = np.concatenate([shapes[0]["image_feat"], shapes[0]["thumbnail_feat"][None]])
    assert np.abs(targets - s["image_emb"]).max(1).min() == 0  # one view (or the thumbnail), not a mean
    np.testing.assert_allclose(s["text_emb"], shapes[0]["text_feat"][0]["original"].reshape(-1), rtol=1e-6)
    b = collate_points([ds[i] for i in range(3)])
    assert b.extras["has_text"].tolist() == [True, True, False] and b.labels is None
    raw = build_dataset("openshape", "train", root=tmp_path, transforms=[])[1]
    np.testing.assert_allclose(raw["xyz"], shapes[1]["xyz"][:, [0, 2, 1]])  # OpenShape y-up swap
    classes = load_class_names("objaverse_lvis")
    ann = {c: [] for c in classes}
    ann[classes[5]] = ["uid0", "uid2"]
    ann[classes[9]] = ["uid1", "missing_uid"]
    (tmp_path / "ann.json").write_text(json.dumps(ann))
    with pytest.raises(FileNotFoundError, match="1 of 4"):
        build_dataset("objaverse_lvis", "test", root=tmp_path, annotations=str(tmp_path / "ann.json"))
    lv = build_dataset(
        "objaverse_lvis", "test", root=tmp_path, annotations=str(tmp_path / "ann.json"), missing="skip"
    )
    assert lv.labels().tolist() == [5, 5, 9] and lv.ids == ["uid0", "uid2", "uid1"]


def test_dataset_registry(tmp_path):
    from svl.data import DATASETS, PointDataset, list_datasets, register_dataset
    from svl.registry import Registry

    assert isinstance(DATASETS, Registry) and DATASETS.kind == "dataset" and DATASETS.group == "svl.datasets"
    # importing svl.data registers the built-ins of both files, the event streams included
    assert {"modelnet40", "modelnet40_zsl", "scanobjectnn", "objaverse_lvis", "dvs128_gesture"} <= set(
        list_datasets()
    )

    class Tiny(PointDataset):
        def __len__(self) -> int:
            return 3

        def _load(self, i: int) -> dict:
            return {"xyz": np.full((10, 3), float(i), np.float32), "label": i}

    @register_dataset("tiny_test_set")
    def build_tiny(split, root, transforms, seed):
        return Tiny(split, ["a", "b", "c"], transforms, seed)

    try:
        ds = build_dataset("tiny_test_set", "test", num_points=4)
        assert len(ds) == 3 and ds[2]["xyz"].shape == (4, 3) and ds[2]["label"] == 2
        assert "tiny_test_set" in list_datasets()
        with pytest.raises(ValueError, match="already registered"):
            register_dataset("tiny_test_set")(lambda **kw: None)
        with pytest.raises(ValueError, match=r"unknown dataset 'tiny_tset'.*did you mean 'tiny_test_set'"):
            build_dataset("tiny_tset", "test")
    finally:
        DATASETS.unregister("tiny_test_set")


def test_dataset_abilities_are_declared_at_registration():
    """Callers ask the registry what a dataset takes; every built-in's declaration matches its builder."""
    import inspect

    from svl.data import DATASET_OPTIONS, DATASETS, dataset_abilities, dataset_takes, register_dataset

    for name in list_datasets():
        params = inspect.signature(DATASETS.get(name)).parameters
        assert dataset_abilities(name)["takes"] == tuple(k for k in DATASET_OPTIONS if k in params), name
    assert dataset_takes("nmnist", "encoding") and dataset_takes("modelnet40_dvs", "T")
    assert dataset_takes("shapenetpart", "num_points") and dataset_takes("folder", "num_points")
    assert not dataset_takes("modelnet40", "num_points") and not dataset_takes("modelnet40", "encoding")
    with pytest.raises(ValueError, match="'encodings' is not a build option"):
        dataset_takes("nmnist", "encodings")
    with pytest.raises(ValueError, match="unknown dataset 'nmnsit'"):
        dataset_takes("nmnsit", "encoding")
    with pytest.raises(ValueError, match=r"takes= names unknown option\(s\) \['num_point'\]"):
        register_dataset("_bad_declaration", takes=("num_point",))

    @register_dataset("_declared", takes=())  # the declaration wins over the signature
    def _declared(split, root, transforms, seed, num_points=5):
        return build_dataset("modelnet40", split, root=root, transforms=transforms, seed=seed)

    try:
        ds = build_dataset("_declared", "test", num_points=32)
        assert ds[0]["xyz"].shape == (32, 3)  # resampled by the default fps, not by the builder
    finally:
        DATASETS.unregister("_declared")


def test_points_events_and_images_share_one_seeded_base():
    """One base holds split, classes, seed, epoch and the per-sample streams of every dataset kind."""
    from svl.data import PointDataset, SeededDataset
    from svl.data.events import EventDataset
    from svl.data.images import ImageDataset

    assert all(issubclass(c, SeededDataset) for c in (PointDataset, EventDataset, ImageDataset))
    ds = build_dataset("modelnet40", "train", num_points=64, augment=True, seed=3)
    ds.set_epoch(2)
    assert ds.sample_rng(5).random() == np.random.default_rng([3, 2, 5]).random()
    assert ds.sample_rng(5, 1).random() == np.random.default_rng([3, 2, 5, 1]).random()
    again = build_dataset("modelnet40", "train", num_points=64, augment=True, seed=3)
    again.set_epoch(2)
    assert np.array_equal(ds[5]["xyz"], again[5]["xyz"])
    again.set_epoch(3)
    assert not np.array_equal(ds[5]["xyz"], again[5]["xyz"])


def test_import_svl_data_is_cheap(run_python):
    """`import svl.data` registers every dataset yet loads neither torch, h5py, trimesh nor svl.models."""
    code = (
        "import sys, svl.data\n"
        "assert 'dvs128_gesture' in svl.data.list_datasets() and callable(svl.data.prepare)\n"
        "svl.data.load_points, svl.data.build_transforms, svl.data.MISSING_COLOR\n"
        "print(sorted(m for m in ('torch', 'h5py', 'trimesh', 'svl.models') if m in sys.modules))\n"
    )
    code_, out, err = run_python("-c", code)
    assert code_ == 0, err
    assert out.strip() == "[]"


def _full_openshape_shape(path, rng, dim=8):
    """A shape with every OpenShape text source: name, BLIP and MSFT captions, two retrieved texts."""
    f = lambda: {"original": rng.normal(size=(1, dim)), "prompt_avg": rng.normal(size=(1, dim))}  # noqa: E731
    d = {
        "xyz": rng.normal(size=(64, 3)).astype(np.float32),
        "rgb": rng.integers(0, 256, (64, 3)).astype(np.float32),
        "image_feat": rng.normal(size=(12, dim)).astype(np.float32),
        "thumbnail_feat": rng.normal(size=(dim,)).astype(np.float32),
        "text": ["a chair"],
        "text_feat": [f()],
        "blip_caption": "a wooden chair",
        "blip_caption_feat": f(),
        "msft_caption": "a chair with four legs",
        "msft_caption_feat": f(),
        "retrieval_text": ["office chair", "stool"],
        "retrieval_text_feat": [f(), f()],
    }
    np.save(path, np.array(d, dtype=object))
    return d


def test_openshape_targets_are_drawn_as_the_official_trainer_draws_them(tmp_path):
    from svl.data.openshape import load_openshape_shape

    d = _full_openshape_shape(tmp_path / "s.npy", np.random.default_rng(0))
    texts, thumbs = [], 0
    for k in range(400):
        s = load_openshape_shape(tmp_path / "s.npy", np.random.default_rng([k]))
        texts.append(s["text"])
        thumbs += bool(np.array_equal(s["image_emb"], d["thumbnail_feat"]))
        if s["text"].startswith("a wooden"):
            np.testing.assert_allclose(
                s["text_emb"], d["blip_caption_feat"]["original"].reshape(-1), rtol=1e-6
            )
        if s["text"] == "stool":  # retrieved texts always use their 'original' feature
            np.testing.assert_allclose(
                s["text_emb"], d["retrieval_text_feat"][1]["original"].reshape(-1), rtol=1e-6
            )
    counts = {t: texts.count(t) for t in set(texts)}
    assert set(counts) == {"a chair", "a wooden chair", "a chair with four legs", "office chair", "stool"}
    assert 100 <= counts["a chair"] <= 170  # one of three sources: ~1/3
    assert 40 <= counts["a wooden chair"] <= 95 and 40 <= counts["stool"] <= 95  # ~1/6 each
    assert 160 <= thumbs <= 240  # Objaverse: thumbnail half the time
    others = [
        load_openshape_shape(tmp_path / "s.npy", np.random.default_rng([k]), objaverse=False)
        for k in range(50)
    ]
    assert not any(np.array_equal(o["image_emb"], d["thumbnail_feat"]) for o in others)
    named = [
        load_openshape_shape(tmp_path / "s.npy", np.random.default_rng([k]), keep_name=False)["text"]
        for k in range(60)
    ]
    assert "a chair" not in named  # the GPT filter's "N" drops the name text only
    pa = load_openshape_shape(
        tmp_path / "s.npy", np.random.default_rng([0]), text_sources=("text",), text_version="prompt_avg"
    )
    np.testing.assert_allclose(pa["text_emb"], d["text_feat"][0]["prompt_avg"].reshape(-1), rtol=1e-6)


def test_openshape_gpt_filter_and_sources_from_the_split(tmp_path):
    rng = np.random.default_rng(1)
    root = tmp_path / "openshape"
    (root / "objs").mkdir(parents=True)
    (root / "meta_data" / "split").mkdir(parents=True)
    for i in range(2):
        _full_openshape_shape(root / "objs" / f"u{i}.npy", rng)
    items = [{"id": "u0", "data_path": "objs/u0.npy", "dataset": "Objaverse"},
             {"id": "u1", "data_path": "objs/u1.npy", "dataset": "ShapeNet"}]  # fmt: skip
    (root / "meta_data" / "split" / "train.json").write_text(json.dumps(items))
    (tmp_path / "gpt.json").write_text(json.dumps({"u0": {"flag": "N"}, "u1": {"flag": "Y"}}))
    ds = build_dataset(
        "openshape", "train", root=tmp_path, transforms=[], gpt_filter=str(tmp_path / "gpt.json")
    )
    assert ds.sources == ["Objaverse", "ShapeNet"] and ds.dropped_names == {"u0"}
    seen0 = set()
    for epoch in range(30):
        ds.set_epoch(epoch)
        seen0.add(ds[0]["text"])
    assert "a chair" not in seen0 and len(seen0) >= 3
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="GPT-filter"):
        build_dataset("openshape", "train", root=tmp_path, gpt_filter=str(tmp_path / "bad.json"))


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d.pop("image_feat"), "missing 'image_feat'"),
        (lambda d: d["image_feat"].__setitem__((0, 0), np.nan), "'image_feat' is empty or holds NaN"),
        (
            lambda d: d.__setitem__("blip_caption_feat", {"original": np.full((1, 8), np.nan)}),
            "blip_caption_feat",
        ),
        (lambda d: d.__setitem__("text_feat", [{"original": np.ones((1, 5))}]), "text features are 5-d"),
        (lambda d: d.__setitem__("text_feat", []), "1 'text' entries but 0 'text_feat'"),
    ],
)
def test_openshape_bad_features_name_the_file_and_key(tmp_path, change, message):
    from svl.data.openshape import load_openshape_shape

    d = _full_openshape_shape(tmp_path / "ok.npy", np.random.default_rng(2))
    change(d)
    np.save(tmp_path / "bad.npy", np.array(d, dtype=object))
    errors = set()
    for k in range(40):  # every draw must fail the same way, whatever source it picks
        try:
            load_openshape_shape(tmp_path / "bad.npy", np.random.default_rng([k]))
        except ValueError as e:
            errors.add(str(e))
    assert errors and any(message in e and "bad.npy" in e for e in errors), errors
