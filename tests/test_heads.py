"""Rep-VLI head folding (svl.models.heads): folded argmax == cosine argmax, head files, errors."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from svl.models.heads import (
    attach_head,
    build_class_weights,
    fold_head,
    head_affine,
    load_head,
    save_head,
)
from svl.sparse import SparseLinear, SubMConv3d, global_mean_pool, voxelize
from svl.spiking import ILIF, SLinear, as_tensor, set_spike_mode
from svl.vocab import templates_hash


class TinySparseEncoder(nn.Module):
    """Stand-in with E-3DSNN's ending: spiking sparse features -> per-voxel 1x1 head -> mean pool."""

    def __init__(self, out_dim: int = 32, voxel: float = 0.1) -> None:
        super().__init__()
        self.voxel = voxel
        self.conv = SubMConv3d(3, 16)
        self.sn = ILIF(D=4)
        self.head = SparseLinear(16, out_dim, bias=True)
        self.out_dim = out_dim
        nn.init.normal_(self.conv.weight, std=1.0)  # untrained: make the neurons fire

    def forward(self, xyz: torch.Tensor) -> torch.Tensor:
        b, n, _ = xyz.shape
        batch = torch.arange(b).repeat_interleave(n)
        st, _ = voxelize(xyz.reshape(-1, 3), xyz.reshape(-1, 3), batch, self.voxel, batch_size=b)
        return global_mean_pool(self.head(self.sn(self.conv(st))))


class TinyDenseEncoder(nn.Module):
    """Stand-in with PointNet's ending: spiking point MLP -> max pool -> linear head."""

    def __init__(self, out_dim: int = 32) -> None:
        super().__init__()
        self.mlp = SLinear(3, 24)
        self.sn = ILIF(D=4)
        self.head = SLinear(24, out_dim)
        self.out_dim = out_dim
        nn.init.normal_(self.mlp.weight, std=2.0)

    def forward(self, xyz: torch.Tensor) -> torch.Tensor:
        return self.head(as_tensor(self.sn(self.mlp(xyz))).amax(1))


@pytest.fixture(scope="module")
def clouds(modelnet_clouds) -> torch.Tensor:
    """12 real clouds spread over the test split, every other point (512)."""
    return modelnet_clouds(12)[0][:, ::2].contiguous()


def _class_weights(k: int, out_dim: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(k, out_dim, generator=g), dim=-1)


@pytest.mark.parametrize("mode", ["integer", "binary"])
@pytest.mark.parametrize("make", [TinySparseEncoder, TinyDenseEncoder])
def test_folded_argmax_equals_cosine_argmax(clouds, make, mode) -> None:
    torch.manual_seed(0)
    model = make().eval()
    set_spike_mode(model, mode)
    with torch.no_grad():
        feats = model(clouds)
        # class directions: centred features of real clouds with the shared mean direction removed
        # (an untrained encoder's outputs are dominated by it), so predictions differ per cloud
        mean = F.normalize(feats.mean(0), dim=0)
        d = feats[:10] - feats.mean(0) + 0.05 * _class_weights(10, model.out_dim)
        W = F.normalize(d - (d @ mean)[:, None] * mean, dim=-1)
        cosine = F.normalize(feats, dim=-1) @ W.T
        folded = fold_head(model, W)
        assert folded is model and model.out_dim == 10
        scores = model(clouds)
    assert scores.shape == (len(clouds), 10)
    assert torch.equal(scores.argmax(1), cosine.argmax(1))
    # the folded logits are exactly W f (cosine times the positive student norm)
    torch.testing.assert_close(scores, feats @ W.T, rtol=1e-4, atol=1e-4)
    assert len(set(scores.argmax(1).tolist())) > 1  # not a degenerate constant prediction


def test_head_affine_layouts() -> None:
    lin = nn.Linear(5, 3)
    a, b, layout = head_affine(lin)
    assert layout == "linear" and a.shape == (5, 3)
    x = torch.randn(4, 5)
    torch.testing.assert_close(x @ a + b, lin(x))
    sp = SparseLinear(5, 3)
    a, b, layout = head_affine(sp)
    assert layout == "sparse1x1" and a.shape == (5, 3)
    with pytest.raises(ValueError, match="folds only"):
        head_affine(nn.Conv1d(5, 3, 3))


def test_build_class_weights_is_projected_and_normalised() -> None:
    g = torch.Generator().manual_seed(2)
    tensors = {
        "text_proj.weight": torch.randn(32, 16, generator=g),
        "text_proj.bias": torch.randn(32, generator=g),
    }
    emb = F.normalize(torch.randn(7, 16, generator=g), dim=-1)
    W = build_class_weights(tensors, emb)
    ref = emb @ tensors["text_proj.weight"].T + tensors["text_proj.bias"]
    torch.testing.assert_close(W, ref / ref.norm(dim=-1, keepdim=True))
    with pytest.raises(ValueError, match="16-d inputs"):
        build_class_weights(tensors, torch.randn(7, 20))
    with pytest.raises(ValueError, match="text_proj.weight"):
        build_class_weights({}, emb)
    with pytest.raises(ValueError, match="W must be"):
        fold_head(TinyDenseEncoder(), torch.randn(4, 8))


def _meta(names: list[str], sha: str = "0" * 64) -> dict:
    return {
        "class_names": names,
        "teacher": "minilm",
        "templates_hash": templates_hash(["a point cloud model of {}."]),
        "text_mode": "names",
        "encoder_sha256": sha,
    }


def test_head_file_roundtrip_and_hash_check(clouds, tmp_path) -> None:
    from svl.checkpoint import save_checkpoint
    from svl.utils import file_sha256

    torch.manual_seed(0)
    base = TinySparseEncoder().eval()
    ckpt = save_checkpoint(
        tmp_path / "enc.safetensors", {f"encoder.{k}": v for k, v in base.state_dict().items()}
    )
    other = save_checkpoint(tmp_path / "other.safetensors", {"encoder.x": torch.zeros(1)})
    names = [f"c{i}" for i in range(6)]
    W = _class_weights(6, base.out_dim)
    folded = fold_head(copy.deepcopy(base), W)
    path = save_head(tmp_path / "head.safetensors", folded.head, W, _meta(names, file_sha256(ckpt)))
    tensors, meta = load_head(path)
    assert meta["class_names"] == names and meta["head_type"] == "sparse1x1" and meta["num_classes"] == 6
    torch.testing.assert_close(tensors["class_weights"], W)
    fresh = attach_head(copy.deepcopy(base), path, checkpoint=ckpt)
    with torch.no_grad():
        torch.testing.assert_close(fresh(clouds), folded(clouds))
    with pytest.raises(ValueError) as e:
        attach_head(copy.deepcopy(base), path, checkpoint=other)
    assert file_sha256(ckpt) in str(e.value) and file_sha256(other) in str(e.value)
    with pytest.raises(ValueError, match="not a Rep-VLI head file"):
        load_head(ckpt)
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        load_head(tmp_path / "missing.safetensors")
    bad = nn.Module()
    bad.head = SparseLinear(8, 32)
    with pytest.raises(ValueError, match="input channels"):
        attach_head(bad, (tensors, meta))
    dense = nn.Module()
    dense.head = nn.Linear(16, 32)
    with pytest.raises(ValueError, match="sparse1x1 head"):
        attach_head(dense, (tensors, meta))
    with pytest.raises(ValueError, match="class names"):
        save_head(tmp_path / "bad.safetensors", folded.head, W, _meta(names[:3]))
