"""CLIP teachers from local files: HF transformers CLIP (tiny random model) and the OpenCLIP adaptor."""

import sys
import types

import pytest
import torch
import torch.nn.functional as F

from svl.teachers import create_teacher
from svl.teachers.clip import CLIP_MEAN, CLIP_STD

transformers = pytest.importorskip("transformers")


def _feat(out):
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def test_hf_clip_matches_the_model(tiny_clip_dir):
    t = create_teacher(f"hf-clip:{tiny_clip_dir}", device="cpu")
    assert t.dim == 16 and t.id.startswith("hf-clip-")
    texts = ["a chair.", "an airplane", "stool"]
    e = t.embed_texts(texts)
    assert e.shape == (3, 16) and torch.allclose(e.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert not torch.allclose(e[0], e[1], atol=1e-3)  # a broken tokenizer would make these equal
    # reference: the transformers model called directly, one text at a time (no padding)
    tok = transformers.AutoTokenizer.from_pretrained(str(tiny_clip_dir))
    model = transformers.CLIPModel.from_pretrained(str(tiny_clip_dir)).eval()
    with torch.no_grad():
        for i, s in enumerate(texts):
            ref = F.normalize(_feat(model.get_text_features(**tok([s], return_tensors="pt"))), dim=-1)
            assert torch.allclose(e[i], ref[0], atol=1e-5)
        imgs = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
        mean, std = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), torch.tensor(CLIP_STD).view(1, 3, 1, 1)
        ref = F.normalize(_feat(model.get_image_features(pixel_values=(imgs - mean) / std)), dim=-1)
    assert torch.allclose(t.embed_images(imgs), ref, atol=1e-5)
    assert t.embed_images(torch.rand(1, 3, 64, 48)).shape == (1, 16)  # resized to 32x32


def test_hf_clip_missing_path_and_files(tmp_path, tiny_clip_dir):
    with pytest.raises(FileNotFoundError, match="not found"):
        create_teacher(f"hf-clip:{tmp_path / 'nope'}")
    with pytest.raises(FileNotFoundError, match="config.json"):
        create_teacher(f"hf-clip:{tmp_path}")
    d = tmp_path / "notok"
    d.mkdir()
    (d / "config.json").write_text((tiny_clip_dir / "config.json").read_text())
    with pytest.raises(FileNotFoundError, match="tokenizer"):
        create_teacher(f"hf-clip:{d}")


def test_hf_clip_rejects_empty_tokenizer(tmp_path, tiny_clip_dir):
    # the transformers trap: a tokenizer with an empty vocabulary loads "fine" offline
    d = tmp_path / "emptytok"
    d.mkdir()
    for f in ("config.json", "model.safetensors"):
        (d / f).write_bytes((tiny_clip_dir / f).read_bytes())
    (d / "vocab.json").write_text("{}")
    (d / "merges.txt").write_text("#version: 0.2\n")
    with pytest.raises(ValueError, match="tokens"):
        create_teacher(f"hf-clip:{d}")


class _FakeOpenCLIP(torch.nn.Module):
    """Stands in for an open_clip CLIP model (open_clip itself needs torchvision)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.tok_emb = torch.nn.Embedding(300, 8)
        self.img = torch.nn.Linear(3, 8)
        self.visual = types.SimpleNamespace(image_size=16, image_mean=None, image_std=None)

    def encode_text(self, tokens):
        return self.tok_emb(tokens).mean(1)

    def encode_image(self, x):
        assert x.shape[-2:] == (16, 16)
        return self.img(x.mean(dim=(2, 3)))


def test_openclip_adaptor_with_local_checkpoint(tmp_path, monkeypatch):
    ckpt = tmp_path / "model.pt"
    ckpt.write_bytes(b"weights")
    made = {}

    def create_model(name, pretrained=None, device="cpu"):
        made.update(name=name, pretrained=pretrained)
        return _FakeOpenCLIP()

    def get_tokenizer(name):
        return lambda texts: torch.tensor([[ord(c) % 300 for c in (s + " " * 12)[:12]] for s in texts])

    fake = types.SimpleNamespace(create_model=create_model, get_tokenizer=get_tokenizer)
    monkeypatch.setitem(sys.modules, "open_clip", fake)
    with pytest.raises(FileNotFoundError, match="not found"):
        create_teacher(f"openclip:{tmp_path / 'missing.pt'}", model_name="ViT-B-32")
    with pytest.raises(ValueError, match="model_name"):
        create_teacher(f"openclip:{ckpt}")
    t = create_teacher(f"openclip:{ckpt}", model_name="ViT-B-32", device="cpu")
    assert made == {"name": "ViT-B-32", "pretrained": str(ckpt)} and t.dim == 8
    ref_model = _FakeOpenCLIP()
    e = t.embed_texts(["chair", "stool"])
    assert torch.allclose(
        e, F.normalize(ref_model.encode_text(get_tokenizer("")(["chair", "stool"])), dim=-1), atol=1e-6
    )
    imgs = torch.rand(2, 3, 16, 16)
    mean, std = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    ref = F.normalize(ref_model.encode_image((imgs - mean) / std), dim=-1)
    assert torch.allclose(t.embed_images(imgs), ref, atol=1e-5)
    d = tmp_path / "dir"
    d.mkdir()
    with pytest.raises(FileNotFoundError, match="open_clip_config.json"):
        create_teacher(f"openclip:{d}")


def test_openclip_missing_path_without_open_clip(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        create_teacher(f"openclip:{tmp_path / 'none.bin'}", model_name="ViT-B-32")
    with pytest.raises(ValueError, match="needs a local path"):
        create_teacher("openclip:")
