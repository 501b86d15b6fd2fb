"""clip_loss against hand-written numpy references; TripleAlignment terms, switches and keys."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from svl.train import TripleAlignment, clip_loss


def _np_log_softmax(z: np.ndarray) -> np.ndarray:
    m = z.max(axis=1, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(axis=1, keepdims=True))


def _np_clip(a: np.ndarray, b: np.ndarray, scale: float) -> tuple[float, float]:
    logits = scale * a @ b.T
    n = len(a)
    l_ab = -np.mean([_np_log_softmax(logits)[i, i] for i in range(n)])
    l_ba = -np.mean([_np_log_softmax(logits.T)[i, i] for i in range(n)])
    acc = 0.5 * (np.mean(logits.argmax(1) == np.arange(n)) + np.mean(logits.T.argmax(1) == np.arange(n)))
    return 0.5 * (l_ab + l_ba), acc


def test_clip_loss_matches_hand_computed_3x3() -> None:
    a = np.array([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
    b = np.array([[0.8, 0.6], [0.0, 1.0], [-0.6, 0.8]])  # rows already unit length
    s = 2.0
    # Written out: logits = 2 * a @ b.T
    logits = np.array([[1.6, 0.0, -1.2], [2 * (0.48 + 0.48), 1.6, 2 * (-0.36 + 0.64)], [1.2, 2.0, 1.6]])
    np.testing.assert_allclose(s * a @ b.T, logits)
    lse_rows = np.log(np.exp(logits).sum(1))
    lse_cols = np.log(np.exp(logits).sum(0))
    expected = 0.5 * (np.mean(lse_rows - np.diag(logits)) + np.mean(lse_cols - np.diag(logits)))
    # argmax rows: [0, 0, 1] -> 1/3 correct; argmax cols: [1, 2, 2] -> col 2 correct -> 1/3
    expected_acc = 0.5 * (1 / 3 + 1 / 3)
    loss, acc = clip_loss(torch.tensor(a, dtype=torch.float32), torch.tensor(b, dtype=torch.float32), s)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert acc.item() == pytest.approx(expected_acc)


def test_clip_loss_random_batch_and_symmetry() -> None:
    a = nn.functional.normalize(torch.randn(7, 5, dtype=torch.float64), dim=1)
    b = nn.functional.normalize(torch.randn(7, 5, dtype=torch.float64), dim=1)
    ref, ref_acc = _np_clip(a.numpy(), b.numpy(), 14.0)
    loss, acc = clip_loss(a.float(), b.float(), torch.tensor(14.0))
    assert loss.item() == pytest.approx(ref, rel=1e-5)
    assert acc.item() == pytest.approx(ref_acc)
    assert clip_loss(b.float(), a.float(), 14.0)[0].item() == pytest.approx(loss.item(), rel=1e-6)


def test_mask_restricts_rows_and_columns() -> None:
    a = nn.functional.normalize(torch.randn(6, 4), dim=1)
    b = nn.functional.normalize(torch.randn(6, 4), dim=1)
    mask = torch.tensor([True, False, True, True, False, True])
    loss, _ = clip_loss(a, b, 5.0, mask)
    ref, _ = _np_clip(a[mask].double().numpy(), b[mask].double().numpy(), 5.0)
    assert loss.item() == pytest.approx(ref, rel=1e-5)
    # Masked-out samples get no gradient at all.
    b = b.clone().requires_grad_(True)
    clip_loss(a, b, 5.0, mask)[0].backward()
    assert torch.all(b.grad[~mask] == 0) and torch.all(b.grad[mask].abs().sum(1) > 0)
    # Nothing valid: a zero loss that still backpropagates (zeros), accuracy 0.
    a2 = a.clone().requires_grad_(True)
    loss0, acc0 = clip_loss(a2, b, 5.0, torch.zeros(6, dtype=torch.bool))
    loss0.backward()
    assert loss0.item() == 0.0 and acc0.item() == 0.0 and torch.all(a2.grad == 0)


def test_clip_loss_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match="equal shape"):
        clip_loss(torch.randn(3, 4), torch.randn(3, 5), 1.0)
    with pytest.raises(ValueError, match="bool"):
        clip_loss(torch.randn(3, 4), torch.randn(3, 4), 1.0, torch.ones(3))


class MeanMLP(nn.Module):
    def __init__(self, out_dim: int = 6) -> None:
        super().__init__()
        self.out_dim = out_dim
        self.net = nn.Sequential(nn.Linear(3, 12), nn.ReLU(), nn.Linear(12, out_dim))

    def forward(self, batch: Any) -> torch.Tensor:
        return self.net(batch.xyz.mean(1))


@pytest.fixture
def make_batch(random_batch: Callable[..., Any]) -> Callable[..., Any]:
    """Five random clouds with teacher targets: text for four of them, one or `views` images each."""

    def make(views: int | None = None, text_dim: int = 7, image_dim: int = 9) -> Any:
        n = 5
        shape = (n, views, image_dim) if views else (n, image_dim)
        return random_batch(
            n,
            10,
            text_emb=torch.randn(n, text_dim),
            has_text=torch.tensor([True, False, True, True, True]),
            image_emb=torch.randn(*shape),
        )

    return make


def test_triple_alignment_terms_and_total(make_batch) -> None:
    model = TripleAlignment(MeanMLP(), text_dim=7, image_dim=9)
    assert model.embed_dim == 6
    assert model.logit_scale.item() == pytest.approx(math.log(1 / 0.07))
    batch = make_batch()
    out = model(batch)
    assert set(out) == {"loss", "loss_text", "loss_image", "loss_mse", "acc_text", "acc_image", "logit_scale"}
    z = model.embed_points(batch)
    assert torch.allclose(z.norm(dim=1), torch.ones(5))
    scale = 1 / 0.07
    t = nn.functional.normalize(model.text_proj(batch.extras["text_emb"]), dim=1)
    i = nn.functional.normalize(model.image_proj(batch.extras["image_emb"]), dim=1)
    m = batch.extras["has_text"]
    zd, td, idd = z.detach().double().numpy(), t.detach().double().numpy(), i.detach().double().numpy()
    ref_t, _ = _np_clip(zd[m.numpy()], td[m.numpy()], scale)
    ref_i, _ = _np_clip(zd, idd, scale)
    # Squared distance per sample (summed over dims), as the paper's l3 term; on unit rows = 2 - 2 cos.
    ref_m = np.mean(((zd - idd) ** 2).sum(1))
    assert ref_m == pytest.approx(np.mean(2 - 2 * (zd * idd).sum(1)), rel=1e-6)  # rows unit in float32
    assert out["loss_text"].item() == pytest.approx(ref_t, rel=1e-4)
    assert out["loss_image"].item() == pytest.approx(ref_i, rel=1e-4)
    assert out["loss_mse"].item() == pytest.approx(ref_m, rel=1e-4)
    assert out["loss"].item() == pytest.approx(ref_t + ref_i + ref_m, rel=1e-4)
    assert out["logit_scale"].item() == pytest.approx(scale, rel=1e-5)
    out["loss"].backward()
    params = dict(model.named_parameters())
    assert {"logit_scale", "text_proj.weight", "image_proj.weight", "encoder.net.0.weight"} <= set(params)
    for name, p in params.items():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_weights_scale_terms_and_zero_skips(make_batch) -> None:
    batch = make_batch()
    torch.manual_seed(1)
    full = TripleAlignment(MeanMLP(), 7, 9, l_text=0.5, l_image=2.0, l_mse=3.0)
    o = full(batch)
    total = 0.5 * o["loss_text"] + 2.0 * o["loss_image"] + 3.0 * o["loss_mse"]
    assert o["loss"].item() == pytest.approx(total.item(), rel=1e-6)

    image_only = TripleAlignment(MeanMLP(), 7, 9, l_text=0.0, l_mse=0.0)
    del batch.extras["text_emb"]  # not needed (nor read) when the text term is off
    o = image_only(batch)
    assert set(o) == {"loss", "loss_image", "acc_image", "logit_scale"}
    assert not image_only.text_proj.weight.requires_grad

    text_only = TripleAlignment(MeanMLP(), 7, 9, l_image=0.0, l_mse=0.0, learn_scale=False)
    b2 = make_batch()
    del b2.extras["image_emb"]
    o = text_only(b2)
    assert set(o) == {"loss", "loss_text", "acc_text", "logit_scale"}
    assert not text_only.image_proj.weight.requires_grad and not text_only.logit_scale.requires_grad
    with pytest.raises(ValueError, match="image_emb"):
        full(b2)
    with pytest.raises(ValueError, match="text_emb"):
        text_only(batch)
    with pytest.raises(ValueError, match="not all 0"):
        TripleAlignment(MeanMLP(), 7, 9, l_text=0, l_image=0, l_mse=0)


def test_logit_scale_clamped_and_multiview_images(make_batch) -> None:
    model = TripleAlignment(MeanMLP(), 7, 9)
    with torch.no_grad():
        model.logit_scale.fill_(math.log(1000.0))
    batch = make_batch(views=3)
    out = model(batch)
    assert out["logit_scale"].item() == pytest.approx(100.0)
    mean_view = nn.functional.normalize(model.image_proj(batch.extras["image_emb"].mean(1)), dim=1)
    assert torch.allclose(model.embed_image(batch.extras["image_emb"]), mean_view)
    sd = model.state_dict()
    assert {
        "logit_scale",
        "text_proj.weight",
        "text_proj.bias",
        "image_proj.weight",
        "encoder.net.0.weight",
    } <= set(sd)


def _np_multi_positive(a: np.ndarray, b: np.ndarray, s: float, groups: np.ndarray) -> tuple[float, float]:
    """Multi-positive InfoNCE written out: each row's target is uniform over its same-group columns."""
    logits = s * a @ b.T
    pos = (groups[:, None] == groups[None, :]).astype(float)
    total, hits = 0.0, 0.0
    for z in (logits, logits.T):  # pos is symmetric, so both directions use it
        lsm = _np_log_softmax(z)
        for i in range(len(z)):
            total += -np.sum(pos[i] * lsm[i]) / pos[i].sum()
            hits += pos[i, z[i].argmax()]
    n = len(a)
    return 0.5 * total / n, 0.5 * hits / n


def test_multi_positive_clip_loss_matches_a_written_out_reference() -> None:
    g = torch.Generator().manual_seed(4)
    a = nn.functional.normalize(torch.randn(6, 5, generator=g), dim=1)
    b = nn.functional.normalize(torch.randn(6, 5, generator=g), dim=1)
    groups = torch.tensor([3, 3, 1, 7, 1, 3])
    loss, acc = clip_loss(a, b, 4.0, None, groups)
    ref, ref_acc = _np_multi_positive(a.double().numpy(), b.double().numpy(), 4.0, groups.numpy())
    assert loss.item() == pytest.approx(ref, rel=1e-5) and acc.item() == pytest.approx(ref_acc)
    # all groups distinct: exactly the one-positive InfoNCE
    plain, plain_acc = clip_loss(a, b, 4.0)
    distinct, distinct_acc = clip_loss(a, b, 4.0, None, torch.arange(6))
    assert distinct.item() == pytest.approx(plain.item(), rel=1e-6) and distinct_acc == plain_acc
    # a mask drops samples as rows and as columns, groups included
    mask = torch.tensor([True, False, True, True, True, False])
    masked, _ = clip_loss(a, b, 4.0, mask, groups)
    keep = mask.numpy()
    ref_m, _ = _np_multi_positive(
        a.double().numpy()[keep], b.double().numpy()[keep], 4.0, groups.numpy()[keep]
    )
    assert masked.item() == pytest.approx(ref_m, rel=1e-5)
    with pytest.raises(ValueError, match="groups must have shape"):
        clip_loss(a, b, 4.0, None, torch.arange(5))


def test_same_class_shapes_are_text_positives_with_text_positives_label(make_batch) -> None:
    torch.manual_seed(0)
    model = TripleAlignment(
        MeanMLP(), text_dim=7, image_dim=9, l_image=0.0, l_mse=0.0, text_positives="label"
    )
    batch = make_batch()
    batch.labels = torch.tensor([0, 0, 1, 0, 2])
    out = model(batch)
    m = batch.extras["has_text"].numpy()
    z = model.embed_points(batch).detach().double().numpy()[m]
    t = nn.functional.normalize(model.text_proj(batch.extras["text_emb"]), dim=1).detach().double().numpy()[m]
    ref, _ = _np_multi_positive(z, t, 1 / 0.07, batch.labels.numpy()[m])
    assert out["loss_text"].item() == pytest.approx(ref, rel=1e-4)
    batch.labels = None
    with pytest.raises(ValueError, match="needs batch.labels"):
        model(batch)
    with pytest.raises(ValueError, match="text_positives"):
        TripleAlignment(MeanMLP(), text_dim=7, image_dim=9, text_positives="class")
