"""svl.data.images: reading image files, image datasets, collation and augmentations.

Why: the 2D student is distilled on these pictures; a wrongly decoded file, a silently mixed
grayscale image or a non-reproducible augmentation would poison a run without an error.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from svl.data import images as I
from svl.data.images import (
    ImageBatch,
    build_image_dataset,
    build_image_transforms,
    collate_images,
    list_image_datasets,
    read_image,
)


def _digit_pictures(n: int = 9, scale: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """n real sklearn digits upscaled to uint8 (8*scale)^2 pictures, with labels."""
    from sklearn.datasets import load_digits

    d = load_digits()
    idx = np.concatenate([np.flatnonzero(d.target == c)[: n // 3] for c in range(3)])
    img = (d.images[idx] / 16.0 * 255).round().astype(np.uint8)
    return img.repeat(scale, 1).repeat(scale, 2), d.target[idx]


# ----------------------------------------------------------------------------- read_image
@pytest.mark.parametrize(("mode", "suffix"), [("RGB", "png"), ("L", "png"), ("RGBA", "png"), ("P", "png")])
def test_read_image_matches_pil(tmp_path: Path, mode: str, suffix: str) -> None:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (12, 17, 3), dtype=np.uint8)
    im = Image.fromarray(rgb, "RGB")
    if mode == "L":
        im = im.convert("L")
    elif mode == "RGBA":
        im = Image.fromarray(np.dstack([rgb, rng.integers(0, 256, (12, 17), dtype=np.uint8)]), "RGBA")
    elif mode == "P":
        im = im.quantize(16)
    path = tmp_path / f"x.{suffix}"
    im.save(path)
    t = read_image(path)
    with Image.open(path) as ref:
        expect = np.asarray(ref.convert("L" if mode == "L" else "RGB"), dtype=np.float32) / 255
    expect = expect[:, :, None] if expect.ndim == 2 else expect
    assert t.dtype == torch.float32 and t.shape == (expect.shape[2], 12, 17)
    np.testing.assert_allclose(t.permute(1, 2, 0).numpy(), expect, atol=1e-7)


def test_read_image_jpeg_and_channel_request(tmp_path: Path) -> None:
    rgb = np.random.default_rng(1).integers(0, 256, (10, 8, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.JPG", quality=95)
    t = read_image(tmp_path / "a.JPG", channels=3)
    with Image.open(tmp_path / "a.JPG") as ref:
        np.testing.assert_allclose(t.permute(1, 2, 0).numpy(), np.asarray(ref, np.float32) / 255, atol=1e-7)
    Image.fromarray(rgb[:, :, 0]).save(tmp_path / "grey.png")
    with pytest.raises(ValueError, match=r"grey\.png is grayscale \(1 channel\) but the dataset is RGB"):
        read_image(tmp_path / "grey.png", channels=3)
    with pytest.raises(ValueError, match=r"a\.JPG is RGB \(3 channels\) but the dataset is grayscale"):
        read_image(tmp_path / "a.JPG", channels=1)


def test_read_image_errors_name_the_file(tmp_path: Path) -> None:
    noise = np.random.default_rng(2).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"cut\.png"):
        read_image(tmp_path / "cut.png")
    (tmp_path / "x.png").write_text("not an image at all\n")
    with pytest.raises(ValueError, match=r"x\.png"):
        read_image(tmp_path / "x.png")
    with pytest.raises(FileNotFoundError, match=r"nope\.png"):
        read_image(tmp_path / "nope.png")


# ----------------------------------------------------------------------------- image_folder
@pytest.fixture
def folder_root(tmp_path: Path) -> Path:
    """train/test x classes a, b, c of upscaled real digits (RGB PNG, plus a JPEG and a stray text file)."""
    pics, labels = _digit_pictures(9)
    root = tmp_path / "imgs"
    for split in ("train", "test"):
        for k, (p, y) in enumerate(zip(pics, labels)):
            folder = root / split / "abc"[y]
            folder.mkdir(parents=True, exist_ok=True)
            ext = "jpeg" if k == 0 else "png"
            Image.fromarray(np.dstack([p, p, 255 - p])).save(folder / f"{split}{k}.{ext}")
    (root / "train" / "a" / "notes.txt").write_text("ignored")
    return root


def test_image_folder_layout(folder_root: Path) -> None:
    ds = build_image_dataset("image_folder", "train", root=folder_root)
    assert ds.classes == ["a", "b", "c"] and len(ds) == 9 and ds.channels == 3 and ds.image_size is None
    np.testing.assert_array_equal(ds.labels(), [0, 0, 0, 1, 1, 1, 2, 2, 2])
    s = ds[4]
    assert s["image"].shape == (3, 32, 32) and s["label"] == 1 and s["index"] == 4
    assert s["path"].endswith(".png") and "/b/" in s["path"]
    sized = build_image_dataset("image_folder", "test", root=folder_root, image_size=16)
    assert sized.image_size == (16, 16) and sized[0]["image"].shape == (3, 16, 16)
    batch = collate_images([sized[i] for i in range(len(sized))])
    assert batch.images.shape == (9, 3, 16, 16) and batch.labels.tolist() == sized.labels().tolist()
    # root without a split level is the train split
    flat = build_image_dataset("image_folder", "train", root=folder_root / "test")
    assert len(flat) == 9 and flat.classes == ["a", "b", "c"]
    with pytest.raises(FileNotFoundError, match="'train' split only"):
        build_image_dataset("image_folder", "test", root=folder_root / "test")


def test_image_folder_errors_name_the_culprit(folder_root: Path, tmp_path: Path) -> None:
    grey = folder_root / "train" / "b" / "zz_grey.png"
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(grey)
    ds = build_image_dataset("image_folder", "train", root=folder_root)
    bad = [str(p) for p in ds.files].index(str(grey))
    with pytest.raises(ValueError, match=r"zz_grey\.png is grayscale \(1 channel\) but the dataset is RGB"):
        ds[bad]
    grey.unlink()
    Image.fromarray(np.zeros((3, 40, 3), np.uint8)).save(folder_root / "train" / "c" / "tiny.png")
    ds = build_image_dataset("image_folder", "train", root=folder_root, min_size=16)
    tiny = [p.name for p in ds.files].index("tiny.png")
    with pytest.raises(ValueError, match=r"tiny\.png is 3x40 pixels, smaller than the minimum 16"):
        ds[tiny]
    (folder_root / "train" / "d").mkdir()
    (folder_root / "train" / "d" / "readme.txt").write_text("no images here")
    with pytest.raises(ValueError, match=r"train/d holds no image files"):
        build_image_dataset("image_folder", "train", root=folder_root)
    with pytest.raises(FileNotFoundError, match="missing_root"):
        build_image_dataset("image_folder", "train", root=tmp_path / "missing_root")
    (tmp_path / "empty" / "train").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"no class folders in .*empty/train"):
        build_image_dataset("image_folder", "train", root=tmp_path / "empty")
    with pytest.raises(ValueError, match="unknown option"):
        build_image_dataset("image_folder", "train", root=folder_root, colour=3)


def test_image_dataset_options_are_declared_at_registration() -> None:
    """build_image_dataset checks options against the declaration; built-ins declare their signatures."""
    import inspect

    from svl.data.images import IMAGE_DATASETS, image_dataset_options, register_image_dataset

    for name in list_image_datasets():
        params = inspect.signature(IMAGE_DATASETS.get(name)).parameters
        assert image_dataset_options(name) == tuple(k for k in params if k not in ("split", "root")), name

    @register_image_dataset("_any_options")  # undeclared, takes **kwargs: every option goes through
    def _any(split, root=None, **kw):
        assert kw == {"colour": 3}
        return build_image_dataset("digits", split)

    try:
        assert image_dataset_options("_any_options") is None
        assert len(build_image_dataset("_any_options", "test", colour=3)) == 359
    finally:
        IMAGE_DATASETS.unregister("_any_options")


# ----------------------------------------------------------------------------- digits
def test_digits_split_is_stratified_and_deterministic() -> None:
    train, test = build_image_dataset("digits", "train"), build_image_dataset("digits", "test")
    assert len(train) + len(test) == 1797 and len(test) == 359
    assert not set(train.ids.tolist()) & set(test.ids.tolist())
    ytr, yte = np.bincount(train.labels(), minlength=10), np.bincount(test.labels(), minlength=10)
    np.testing.assert_allclose(yte / (ytr + yte), 0.2, atol=0.01)
    again = build_image_dataset("digits", "test")
    np.testing.assert_array_equal(again.ids, test.ids)
    s = train[3]
    assert s["image"].shape == (1, 8, 8) and s["image"].dtype == torch.float32
    allv = torch.stack([train[i]["image"] for i in range(0, len(train), 7)])
    assert allv.min() >= 0 and allv.max() <= 1 and allv.max() > 0.9
    assert train.classes == [str(d) for d in range(10)]
    rgb = build_image_dataset("digits", "test", channels=3, image_size=16)
    assert rgb[0]["image"].shape == (3, 16, 16) and rgb.channels == 3
    assert set(list_image_datasets()) >= {"digits", "image_folder", "modelnet40_views"}
    with pytest.raises(ValueError, match="unknown image dataset 'digit'"):
        build_image_dataset("digit", "train")


# ----------------------------------------------------------------------------- modelnet40_views
def test_modelnet40_views_render_and_cache(
    shared_data: Path, svl_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = shared_data / "modelnet40" / "modelnet40_pcd1024_test.npz"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    import svl.data.images.datasets as render  # where modelnet40_views calls it

    calls = []
    real = render.render_views

    def counting(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(render, "render_views", counting)
    ds = build_image_dataset("modelnet40_views", "test", views=2, size=32, per_class=1)
    assert len(ds) == 80 and ds.channels == 3 and ds.image_size == (32, 32) and calls
    s0, s1 = ds[0], ds[1]
    assert s0["image"].shape == (3, 32, 32) and s0["image"].dtype == torch.float32
    assert s0["shape_id"] == s1["shape_id"] and (s0["view"], s1["view"]) == (0, 1)
    assert (s0["image"] - s1["image"]).abs().max() > 0.1  # the two cameras see different sides
    assert 0 <= s0["image"].min() and s0["image"].max() <= 1 and s0["image"].std() > 0.05
    with np.load(path) as z:
        labels = z["labels"]
    np.testing.assert_array_equal(ds.labels()[::2], labels[ds.shape_ids])
    np.testing.assert_array_equal(ds.labels()[::2], np.arange(40))  # first shape of every class
    assert ds[5]["label"] == labels[ds[5]["shape_id"]]
    n = len(calls)
    again = build_image_dataset("modelnet40_views", "test", views=2, size=32, per_class=1)
    assert len(calls) == n, "second build should come from the cache"
    np.testing.assert_array_equal(again.views, ds.views)
    assert list((svl_cache / "modelnet40_views").glob("test-*.npz"))
    batch = collate_images([ds[i] for i in range(4)])
    assert batch.extras["shape_id"].tolist() == [ds.shape_ids[0]] * 2 + [ds.shape_ids[1]] * 2
    assert batch["view"].tolist() == [0, 1, 0, 1]


# ----------------------------------------------------------------------------- collate
def test_collate_images_stacks_and_reports_mismatch() -> None:
    samples = [
        {"image": torch.rand(3, 8, 8), "label": i, "index": 10 + i, "view": i % 2, "path": f"/d/{i}.png"}
        for i in range(3)
    ]
    b = collate_images(samples)
    assert isinstance(b, ImageBatch) and len(b) == 3 and b.images.shape == (3, 3, 8, 8)
    assert b.labels.dtype == torch.int64 and b["labels"].tolist() == [0, 1, 2]
    assert b["index"].tolist() == [10, 11, 12] and b["view"].tolist() == [0, 1, 0]
    assert "path" not in b.extras and "view" in b
    moved = b.to("cpu")
    assert moved.images.device.type == "cpu" and moved["view"].dtype == torch.int64
    with pytest.raises(KeyError):
        b["nothing"]
    samples[2]["image"] = torch.rand(1, 8, 8)
    with pytest.raises(ValueError, match=r"sample 2 \(dataset index 12, /d/2\.png\).*\(1, 8, 8\).*sample 0"):
        collate_images(samples)
    samples[2]["image"] = torch.rand(3, 9, 8)
    with pytest.raises(ValueError, match=r"\(3, 9, 8\).*\(3, 8, 8\)"):
        collate_images(samples)


# ----------------------------------------------------------------------------- transforms
def test_transforms_shapes_and_determinism() -> None:
    img = torch.rand(3, 40, 30)
    spec = [
        {"name": "random_resized_crop", "size": 24},
        "hflip",
        {"name": "color_jitter"},
        {"name": "random_crop", "size": 24, "padding": 4, "padding_mode": "reflect"},
    ]
    tf = build_image_transforms(spec)
    a = tf(img, torch.Generator().manual_seed(5))
    b = tf(img, torch.Generator().manual_seed(5))
    c = tf(img, torch.Generator().manual_seed(6))
    assert a.shape == (3, 24, 24) and torch.equal(a, b) and not torch.equal(a, c)
    assert 0 <= a.min() and a.max() <= 1
    g = torch.Generator().manual_seed(0)
    assert torch.equal(build_image_transforms([{"name": "hflip", "p": 1.0}])(img, g), torch.flip(img, [-1]))
    assert torch.equal(build_image_transforms([{"name": "hflip", "p": 0.0}])(img, g), img)
    assert build_image_transforms([{"name": "resize", "size": 20}])(img, g).shape == (3, 27, 20)
    assert build_image_transforms([{"name": "resize", "size": [10, 12]}])(img, g).shape == (3, 10, 12)
    assert build_image_transforms([{"name": "center_crop", "size": 16}])(img, g).shape == (3, 16, 16)
    assert torch.equal(
        build_image_transforms([{"name": "center_crop", "size": 16}])(img, g), img[:, 12:28, 7:23]
    )
    grey = torch.rand(1, 8, 8)
    assert build_image_transforms([{"name": "color_jitter"}])(grey, g).shape == (1, 8, 8)
    assert torch.equal(build_image_transforms(["grayscale_to_rgb"])(grey, g), grey.expand(3, 8, 8))
    assert build_image_transforms(None) is None and build_image_transforms([]) is None
    with pytest.raises(ValueError, match=r"unknown image transform 'flip'.*hflip"):
        build_image_transforms(["flip"])
    with pytest.raises(ValueError, match="bad arguments"):
        build_image_transforms([{"name": "hflip", "q": 1}])


def test_dataset_augmentation_is_deterministic_per_seed_epoch_index() -> None:
    aug = [{"name": "random_crop", "size": 8, "padding": 2}, {"name": "hflip"}]
    ds = build_image_dataset("digits", "train", transforms=aug, seed=3)
    twin = build_image_dataset("digits", "train", transforms=aug, seed=3)
    first = torch.stack([ds[i]["image"] for i in range(16)])
    assert torch.equal(first, torch.stack([twin[i]["image"] for i in range(16)]))
    assert torch.equal(first[5], ds[5]["image"])  # same index again: same augmentation
    ds.set_epoch(1)
    second = torch.stack([ds[i]["image"] for i in range(16)])
    assert not torch.equal(first, second)
    twin.set_epoch(1)
    assert torch.equal(second, torch.stack([twin[i]["image"] for i in range(16)]))
    other = build_image_dataset("digits", "train", transforms=aug, seed=4)
    assert not torch.equal(first, torch.stack([other[i]["image"] for i in range(16)]))
    plain = build_image_dataset("digits", "train")
    assert not torch.equal(first, torch.stack([plain[i]["image"] for i in range(16)]))


def test_module_does_not_need_torchvision_and_is_not_loaded_by_svl_data(run_python) -> None:
    code = (
        "import sys, svl.data; assert 'svl.data.images' not in sys.modules; "
        "import svl.data.images as m; m.build_image_dataset('digits', 'test')[0]; "
        "assert 'torchvision' not in sys.modules, 'torchvision imported'"
    )
    rc, out, err = run_python("-c", code)
    assert rc == 0, err
    assert I.__name__ in sys.modules
