"""Multi-scale Triple Alignment (docs/SPEC.md §4): 3D <-> text and 3D <-> image InfoNCE plus 3D -> image MSE.

The student (a spiking 3D encoder) is pulled into a frozen teacher's embedding space through
trainable linear projections of the teacher's text and image embeddings. Across processes the
embeddings are all-gathered with gradient so the negatives span the global batch, and each rank's
loss is its share of the global mean: DDP's gradient average then equals one process on the
whole batch.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from svl.train.distributed import all_gather_no_grad, all_gather_sizes, all_gather_with_grad, get_rank
from svl.train.distributed import get_world_size as _world

__all__ = ["TripleAlignment", "clip_loss", "squared_error"]

MAX_LOGIT_SCALE = 100.0


def _check_pair(a: Tensor, b: Tensor, mask: Tensor | None) -> None:
    if a.ndim != 2 or b.ndim != 2 or a.shape != b.shape:
        raise ValueError(
            f"clip_loss needs two (B, D) tensors of equal shape, got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    if mask is not None and (mask.dtype != torch.bool or mask.shape != (a.shape[0],)):
        raise ValueError(
            f"clip_loss mask must be a bool tensor of shape ({a.shape[0]},), "
            f"got {mask.dtype} {tuple(mask.shape)}"
        )


def clip_loss(
    a: Tensor,
    b: Tensor,
    logit_scale: Tensor | float,
    mask: Tensor | None = None,
    groups: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Symmetric InfoNCE between L2-normalised rows of `a` and `b` (CLIP: cross-entropy both ways).

    `logits = logit_scale * a @ b.T`; sample i's positive is column i. `mask` (B,) keeps only the
    samples that have the `b` modality, as rows and as columns. In a process group, the local rows
    are scored against the gathered global columns, and loss/acc are this rank's share of the
    global mean (mean over ranks = the single-process value on the concatenated batch). With no
    valid sample anywhere the loss is a graph-connected zero and acc is 0.

    `groups` (B,) int: samples with equal ids (e.g. class labels, when the text targets are class
    names) are positives of each other, not negatives. The loss is then multi-positive InfoNCE: a
    cross-entropy against the uniform distribution over each row's positives (UniCL); a row counts
    as correct when its argmax is any positive. With all ids distinct it equals plain InfoNCE.
    Returns (loss, top-1 accuracy averaged over both directions, no grad).
    """
    _check_pair(a, b, mask)
    n_local = a.shape[0]
    if mask is None:
        mask = torch.ones(n_local, dtype=torch.bool, device=a.device)
    world = _world()
    a_all = all_gather_with_grad(a)
    b_all = all_gather_with_grad(b)
    m_all = all_gather_no_grad(mask)
    offset = sum(all_gather_sizes(n_local, a.device)[: get_rank()]) if world > 1 else 0
    n_global = int(m_all.sum().item())
    if n_global == 0:
        zero = (a.sum() + b.sum()) * 0.0
        return zero, zero.detach()
    scale = torch.as_tensor(logit_scale, dtype=torch.float32, device=a.device)
    # Column index of each local positive among the kept global columns.
    col_of = torch.cumsum(m_all.long(), 0) - 1
    local_rows = torch.nonzero(mask, as_tuple=True)[0]
    target = col_of[offset + local_rows]
    a_rows, b_rows = a[mask].float(), b[mask].float()
    a_cols, b_cols = a_all[m_all].float(), b_all[m_all].float()
    logits_ab = scale * a_rows @ b_cols.T
    logits_ba = scale * b_rows @ a_cols.T
    share = world / n_global
    if groups is not None:
        return _multi_positive(logits_ab, logits_ba, groups, mask, m_all, share)
    ce = F.cross_entropy(logits_ab, target, reduction="sum") + F.cross_entropy(
        logits_ba, target, reduction="sum"
    )
    loss = 0.5 * ce * share
    with torch.no_grad():
        correct = (logits_ab.argmax(1) == target).sum() + (logits_ba.argmax(1) == target).sum()
        acc = 0.5 * correct.float() * share
    return loss, acc


def _multi_positive(
    logits_ab: Tensor, logits_ba: Tensor, groups: Tensor, mask: Tensor, m_all: Tensor, share: float
) -> tuple[Tensor, Tensor]:
    """Both directions of multi-positive InfoNCE: soft targets uniform over same-group columns."""
    if groups.shape != mask.shape:
        raise ValueError(f"clip_loss groups must have shape {tuple(mask.shape)}, got {tuple(groups.shape)}")
    g_all = all_gather_no_grad(groups.to(mask.device).long())
    g_rows, g_cols = groups.to(mask.device).long()[mask], g_all[m_all]
    pos = (g_rows[:, None] == g_cols[None, :]).float()  # each row holds at least its own column
    target = pos / pos.sum(1, keepdim=True)
    ce = -(target * F.log_softmax(logits_ab, 1)).sum() - (target * F.log_softmax(logits_ba, 1)).sum()
    with torch.no_grad():
        hit_ab = pos.gather(1, logits_ab.argmax(1, keepdim=True)).sum()
        hit_ba = pos.gather(1, logits_ba.argmax(1, keepdim=True)).sum()
        acc = 0.5 * (hit_ab + hit_ba) * share
    return 0.5 * ce * share, acc


def squared_error(a: Tensor, b: Tensor) -> Tensor:
    """MTA's point-to-image term: squared Euclidean distance per sample, averaged over the batch.

    Summed over dimensions, not averaged (`F.mse_loss` would divide by D, about 1/384 of the weight
    the paper's l3 = 1 intends). On L2-normalised rows it equals 2 - 2 cos(a, b), so it sits on the
    InfoNCE terms' scale. Unnormalised it would be minimised by shrinking both sides to zero.
    """
    return (a.float() - b.float()).pow(2).sum(-1).mean()


def _extras(batch: Any) -> dict[str, Tensor]:
    extras = batch.get("extras") if isinstance(batch, dict) else getattr(batch, "extras", None)
    if extras is None:
        raise ValueError(
            "TripleAlignment needs teacher targets in batch.extras (text_emb, has_text, image_emb)"
        )
    return extras


class TripleAlignment(nn.Module):
    """A 3D encoder plus teacher-side projections and a learnable temperature, trained with MTA.

    State-dict keys (`encoder.*`, `text_proj.*`, `image_proj.*`, `logit_scale`) are what the Rep-VLI
    head builder reads. A term with weight 0 is not computed, and parameters only it would train
    are frozen at construction (so DDP never waits for gradients that cannot come).
    """

    def __init__(
        self,
        encoder: nn.Module,
        text_dim: int,
        image_dim: int,
        embed_dim: int | None = None,
        logit_scale_init: float = 1 / 0.07,
        learn_scale: bool = True,
        l_text: float = 1.0,
        l_image: float = 1.0,
        l_mse: float = 1.0,
        text_positives: str = "sample",
    ) -> None:
        super().__init__()
        if embed_dim is None:
            embed_dim = getattr(encoder, "out_dim", None)
            if embed_dim is None:
                raise ValueError("TripleAlignment: pass embed_dim or give the encoder an `.out_dim`")
        if min(l_text, l_image, l_mse) < 0 or l_text + l_image + l_mse <= 0:
            raise ValueError(f"loss weights must be >= 0 and not all 0, got {l_text=}, {l_image=}, {l_mse=}")
        if not 0 < logit_scale_init <= MAX_LOGIT_SCALE:
            raise ValueError(f"logit_scale_init must be in (0, {MAX_LOGIT_SCALE}], got {logit_scale_init}")
        self.encoder = encoder
        self.text_proj = nn.Linear(int(text_dim), int(embed_dim))
        self.image_proj = nn.Linear(int(image_dim), int(embed_dim))
        # Stored as a log like CLIP, so the optimiser works on a scale-free quantity.
        self.logit_scale = nn.Parameter(torch.tensor(math.log(logit_scale_init), dtype=torch.float32))
        self.embed_dim = int(embed_dim)
        if text_positives not in ("sample", "label"):
            raise ValueError(f"text_positives must be 'sample' or 'label', got {text_positives!r}")
        self.l_text, self.l_image, self.l_mse = float(l_text), float(l_image), float(l_mse)
        # "label": shapes of one class are positives of each other's text (class-name targets).
        self.text_positives = text_positives
        self.text_proj.requires_grad_(self.l_text > 0)
        self.image_proj.requires_grad_(self.l_image > 0 or self.l_mse > 0)
        self.logit_scale.requires_grad_(learn_scale and (self.l_text > 0 or self.l_image > 0))

    def scale(self) -> Tensor:
        """exp(logit_scale) clamped to 100 (CLIP's guard against a runaway temperature)."""
        return self.logit_scale.exp().clamp(max=MAX_LOGIT_SCALE)

    def embed_points(self, batch: Any) -> Tensor:
        """L2-normalised 3D embedding (B, D) of the encoder output (already averaged over T)."""
        z = self.encoder(batch)
        if z.ndim != 2 or z.shape[1] != self.embed_dim:
            raise ValueError(f"encoder must return (B, {self.embed_dim}), got {tuple(z.shape)}")
        return F.normalize(z.float(), dim=-1)

    def embed_text(self, text_emb: Tensor) -> Tensor:
        return F.normalize(self.text_proj(text_emb.float()), dim=-1)

    def embed_image(self, image_emb: Tensor) -> Tensor:
        """Projected image embedding; (B, V, Di) multi-view input is averaged over views first."""
        if image_emb.ndim == 3:
            image_emb = image_emb.mean(1)
        return F.normalize(self.image_proj(image_emb.float()), dim=-1)

    def forward(self, batch: Any) -> dict[str, Tensor]:
        extras = _extras(batch)
        z = self.embed_points(batch)
        n = z.shape[0]
        out: dict[str, Tensor] = {}
        total = z.new_zeros(())
        scale = self.scale()
        if self.l_text > 0:
            if "text_emb" not in extras:
                raise ValueError("batch.extras lacks 'text_emb' but the text term is on (l_text > 0)")
            has_text = extras.get("has_text")
            if has_text is None:
                has_text = torch.ones(n, dtype=torch.bool, device=z.device)
            groups = None
            if self.text_positives == "label":
                groups = batch.get("labels") if isinstance(batch, dict) else getattr(batch, "labels", None)
                if groups is None:
                    raise ValueError("text_positives='label' needs batch.labels (the class of each shape)")
            loss_t, acc_t = clip_loss(z, self.embed_text(extras["text_emb"]), scale, has_text.bool(), groups)
            total = total + self.l_text * loss_t
            out["loss_text"], out["acc_text"] = loss_t.detach(), acc_t
        if self.l_image > 0 or self.l_mse > 0:
            if "image_emb" not in extras:
                raise ValueError(
                    "batch.extras lacks 'image_emb' but an image term is on (l_image or l_mse > 0)"
                )
            img = self.embed_image(extras["image_emb"])
            if self.l_image > 0:
                loss_i, acc_i = clip_loss(z, img, scale)
                total = total + self.l_image * loss_i
                out["loss_image"], out["acc_image"] = loss_i.detach(), acc_i
            if self.l_mse > 0:
                loss_m = squared_error(z, img)
                total = total + self.l_mse * loss_m
                out["loss_mse"] = loss_m.detach()
        out["loss"] = total
        out["logit_scale"] = scale.detach()
        return out
