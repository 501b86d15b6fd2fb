"""EfficientNet-Lite0 image teacher on real photos (scikit-image's bundled samples)."""

import pytest
import torch
import torch.nn.functional as F

from svl.teachers import create_teacher

skdata = pytest.importorskip("skimage.data")

# ImageNet-1k indices 281-285: tabby, tiger cat, Persian, Siamese, Egyptian cat
CAT_CLASSES = set(range(281, 286))


def _photo(name: str, size: int = 224) -> torch.Tensor:
    img = torch.from_numpy(getattr(skdata, name)().copy()).permute(2, 0, 1).float()[None] / 255
    return F.interpolate(img, size=(size, size), mode="bilinear", antialias=True).clamp(0, 1)


@pytest.fixture(scope="module")
def effnet():
    return create_teacher("efficientnet-lite0", device="cpu")


def test_cat_photo_is_a_cat(effnet):
    probs = effnet.classify(_photo("chelsea"))
    top = int(probs.argmax())
    assert top in CAT_CLASSES and probs[0, top] > 0.5
    coffee = effnet.classify(_photo("coffee"))
    assert int(coffee.argmax()) not in CAT_CLASSES


def test_embeddings_are_pooled_unit_features(effnet):
    cat, cat_flip, coffee, astro = (
        _photo("chelsea"),
        _photo("chelsea").flip(-1),
        _photo("coffee"),
        _photo("astronaut"),
    )
    e = effnet.embed_images(torch.cat([cat, cat_flip, coffee, astro]))
    assert e.shape == (4, 1280) and effnet.dim == 1280 and effnet.id == "efficientnet-lite0"
    assert torch.allclose(e.norm(dim=-1), torch.ones(4), atol=1e-5)
    sim = e @ e.T
    assert sim[0, 1] > sim[0, 2] and sim[0, 1] > sim[0, 3]  # the mirrored cat is nearest
    # the pooled feature feeds the ImageNet classifier: fc(pooled) must reproduce classify()
    with torch.inference_mode():
        pooled = effnet.model.extract_features(effnet.preprocess(cat)).mean(dim=(2, 3))
        logits = effnet.model._fc(pooled)
    assert torch.allclose(logits.softmax(-1), effnet.classify(cat), atol=1e-5)
    assert torch.allclose(F.normalize(pooled, dim=-1), e[:1], atol=1e-5)


def test_any_input_size_and_resizing(effnet):
    small = effnet.embed_images(_photo("chelsea", 128))
    assert small.shape == (1, 1280)
    resized = create_teacher("efficientnet-lite0", device="cpu", image_size=224).embed_images(
        _photo("chelsea", 128)
    )
    direct = effnet.embed_images(
        F.interpolate(_photo("chelsea", 128), size=(224, 224), mode="bilinear", antialias=True)
    )
    assert torch.allclose(resized, direct, atol=1e-5)
    u8 = (_photo("chelsea", 64) * 255).round().to(torch.uint8)
    assert torch.allclose(effnet.embed_images(u8), effnet.embed_images(u8.float() / 255), atol=1e-6)


def test_bad_inputs(effnet):
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        effnet.embed_images(torch.rand(1, 1, 32, 32))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        effnet.embed_images(torch.rand(1, 3, 32, 32) * 255)
    with pytest.raises(ValueError, match="no text tower"):
        effnet.embed_texts(["chair"])
    with pytest.raises(FileNotFoundError, match="weights file not found"):
        create_teacher("efficientnet-lite0", weights="/nonexistent/lite0.pth")
