"""VL2Spike's distillation terms (docs/SPEC.md §11): the losses and the module that applies them.

Each term is switched by its weight (0 = off): cross-entropy, SVS alignment of pooled / token spike
features to the teacher's image features (cosine or InfoNCE), SVS temporal consistency (after a warm
start), SPL prototype-text alignment and SPL logit distillation. Plain numbers and tensors in: the
task's config section is read by the task, not here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["SVS_LEVELS", "SVS_MODES", "DistillWeights", "VL2Spike", "info_nce", "warp_token_targets"]

SVS_MODES = ("cosine", "contrastive")
SVS_LEVELS = ("pooled", "token", "both")


@dataclass
class DistillWeights:
    """Loss weights (0 switches a term off) and their settings, checked once (also the `distill`
    config section of `svl distill`)."""

    ce: float = 1.0
    svs_align: float = 1.0
    svs_mode: str = "cosine"  # "cosine" | "contrastive" (InfoNCE over the batch)
    svs_level: str = "both"  # "pooled" | "token" | "both"
    svs_temporal: float = 0.5
    temporal_start: float = 0.25  # fraction of the training steps before the temporal term starts
    spl_proto: float = 0.5
    spl_logit: float = 1.0
    kd_tau: float = 4.0
    proto_tau: float = 0.07
    contrastive_tau: float = 0.07

    def __post_init__(self) -> None:
        for name in ("ce", "svs_align", "svs_temporal", "spl_proto", "spl_logit"):
            if getattr(self, name) < 0:
                raise ValueError(f"distill.{name} must be >= 0 (0 = off), got {getattr(self, name)}")
        if self.svs_mode not in SVS_MODES:
            raise ValueError(f"distill.svs_mode must be one of {SVS_MODES}, got {self.svs_mode!r}")
        if self.svs_level not in SVS_LEVELS:
            raise ValueError(f"distill.svs_level must be one of {SVS_LEVELS}, got {self.svs_level!r}")
        if not 0 <= self.temporal_start <= 1:
            raise ValueError(
                f"distill.temporal_start must be a fraction in [0, 1], got {self.temporal_start}"
            )
        for name in ("kd_tau", "proto_tau", "contrastive_tau"):
            if not getattr(self, name) > 0:
                raise ValueError(f"distill.{name} must be > 0, got {getattr(self, name)}")
        if self.ce + self.svs_align + self.spl_logit == 0:
            raise ValueError(
                "distill: ce, svs_align and spl_logit are all 0; nothing would train the student"
            )

    @property
    def needs_teacher(self) -> bool:
        return bool(self.svs_align or self.spl_proto or self.spl_logit)


def info_nce(a: Tensor, b: Tensor, tau: float) -> Tensor:
    """Symmetric InfoNCE between row-matched (n, d) embeddings (row i of a matches row i of b)."""
    sim = F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T / tau
    target = torch.arange(len(a), device=a.device)
    return (F.cross_entropy(sim, target) + F.cross_entropy(sim.T, target)) / 2


def _cosine_loss(a: Tensor, b: Tensor, weight: Tensor | None = None) -> Tensor:
    """Mean (1 - cosine) over rows, or its ``weight``-weighted mean."""
    gap = 1 - F.cosine_similarity(a, b, dim=-1)
    if weight is None:
        return gap.mean()
    return (gap * weight).sum() / weight.sum().clamp_min(1e-6)


def warp_token_targets(tokens: Tensor, source_uv: Tensor, grid: int) -> tuple[Tensor, Tensor]:
    """The teacher's token grid of the un-augmented image, moved the way the student's image was.

    ``tokens`` (B, g*g, D): the cached targets (cell (i, j) covers rows i/g..(i+1)/g and columns
    j/g..(j+1)/g of the original image); ``source_uv`` (B, 3, H, W): where each student pixel came from
    (`svl.data.images.apply_with_geometry`: u, v in [0, 1] premultiplied by validity). Every student
    pixel takes the teacher cell its source falls in (nearest: no blur, so an un-augmented or flipped
    image gets exactly the cached or mirrored grid), then the pixels are averaged into ``grid`` x
    ``grid`` cells the way the student's tokens are pooled, padding left out. Returns the targets
    (B, grid*grid, D) and each cell's weight (B, grid*grid): the fraction of it that shows the image.

    Why not run the teacher on each augmented view: that is a teacher pass per sample per epoch
    (EfficientNet at 128-224 px on CPU), while the warp costs one grid_sample. The approximation:
    the teacher's features are taken as equivariant to the shift / flip, and a cell shifted by part of
    its width mixes its neighbours by area (a crop of ``pad`` px moves the grid by pad * g / H cells).
    """
    b, n, d = tokens.shape
    g = int(round(n**0.5))
    if g * g != n:
        raise ValueError(f"token targets must be a square grid, got {n} cells")
    t = tokens.transpose(1, 2).reshape(b, d, g, g)
    src = source_uv.to(t.dtype)
    valid = src[:, 2:3]
    uv = src[:, :2] / valid.clamp_min(1e-6)
    warped = F.grid_sample(
        t, (2 * uv - 1).permute(0, 2, 3, 1), mode="nearest", padding_mode="border", align_corners=False
    )  # (B, D, H, W)
    keep = (valid > 0.5).to(t.dtype)  # a pixel shows the image (not padding)
    num = F.adaptive_avg_pool2d(warped * keep, grid)
    share = F.adaptive_avg_pool2d(keep, grid)
    out = num / share.clamp_min(1e-6)
    return out.flatten(2).transpose(1, 2), share.flatten(1)


def _relation(a: Tensor, b: Tensor) -> Tensor:
    """Mean squared gap between the cosine-similarity matrices of two row-matched sets (off-diagonal)."""
    sa = F.normalize(a, dim=-1) @ F.normalize(a, dim=-1).T
    sb = F.normalize(b, dim=-1) @ F.normalize(b, dim=-1).T
    off = ~torch.eye(len(a), dtype=torch.bool, device=a.device)
    return (sa - sb)[off].pow(2).mean()


def _consistency(x: Tensor) -> Tensor:
    """Scale-free spread of (T, ...) values around their mean over timesteps (the mean detached)."""
    mean = x.mean(0, keepdim=True).detach()
    return (x - mean).pow(2).mean() / (mean.pow(2).mean() + 1e-6)


class VL2Spike(nn.Module):
    """The student (`.encoder`) plus the learned projections of the distillation terms; `forward(batch)`
    returns the weighted loss and each term. `targets` has `.pooled`, `.tokens`, `.logits`, `.text`
    (tensors or None); `weights` are `DistillWeights`' fields. Teacher targets are non-persistent
    buffers: checkpoints hold the student and the projections only."""

    def __init__(
        self,
        encoder: nn.Module,
        targets: Any | None,
        total_steps: int,
        label_smoothing: float = 0.0,
        **weights: Any,
    ) -> None:
        super().__init__()
        cfg = DistillWeights(**weights)
        self.encoder, self.cfg, self.label_smoothing = encoder, cfg, float(label_smoothing)
        self.total_steps = max(int(total_steps), 1)
        self.register_buffer("step", torch.zeros((), dtype=torch.long))  # drives the temporal warm start
        dim = int(encoder.embed_dim)
        if cfg.needs_teacher and targets is None:
            raise ValueError("distill: the SVS/SPL terms need teacher targets")
        self.levels = set()
        if cfg.svs_align:
            self.levels = {"pooled", "token"} if cfg.svs_level == "both" else {cfg.svs_level}
            if "token" in self.levels and targets.tokens is None:
                raise ValueError("distill.svs_level includes 'token' but the teacher gave no token features")
            dt = targets.pooled.shape[1]
            if "pooled" in self.levels:
                self.align_pooled = nn.Linear(dim, dt)
            if "token" in self.levels:
                self.align_token = nn.Linear(dim, dt)
                self.grid = int(round(targets.tokens.shape[1] ** 0.5))
        head = getattr(encoder, "head", None)
        if (cfg.spl_proto or cfg.spl_logit) and not hasattr(head, "prototypes"):
            raise ValueError(
                "distill.spl_proto / spl_logit need a student with a prototype head "
                "(model.options.head=prototype)"
            )
        if cfg.spl_proto:
            if targets.text is None:
                raise ValueError("distill.spl_proto needs the teacher's text embeddings (teacher.text)")
            self.text_proj = nn.Linear(head.prototypes.shape[1], targets.text.shape[1])
        if cfg.spl_logit and targets.logits is None:
            raise ValueError("distill.spl_logit needs teacher logits")
        for name in ("pooled", "tokens", "logits", "text"):
            t = None if targets is None else getattr(targets, name)
            self.register_buffer(f"t_{name}", None if t is None else t.float(), persistent=False)

    def temporal_on(self) -> bool:
        return bool(self.cfg.svs_temporal) and int(self.step) >= self.cfg.temporal_start * self.total_steps

    def token_targets(self, batch: Any) -> tuple[Tensor, Tensor | None]:
        """The teacher token grids (B, g*g, Dt) this batch is aligned to, and per-cell weights: moved
        with each image's crop / flip when the batch says where its pixels came from (``source_uv``,
        see warp_token_targets), else the cached grids as they are (weights None)."""
        t = self.t_tokens[batch.index]
        src = getattr(batch, "extras", {}).get("source_uv")
        return (t, None) if src is None else warp_token_targets(t, src, self.grid)

    def forward(self, batch: Any) -> dict[str, Tensor]:
        c = self.cfg
        f = self.encoder.forward_features(batch)
        logits = self.encoder.head(f["pooled"]).float()
        labels = batch.labels
        if labels is None:
            raise ValueError("distillation needs labelled batches (batch.labels is None)")
        idx = batch.index
        out: dict[str, Tensor] = {}
        loss = logits.new_zeros(())
        if c.ce:
            out["ce"] = F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)
            loss = loss + c.ce * out["ce"]
        if "pooled" in self.levels:
            s, t = self.align_pooled(f["pooled"]), self.t_pooled[idx]
            out["svs_pooled"] = (
                info_nce(s, t, c.contrastive_tau) if c.svs_mode == "contrastive" else _cosine_loss(s, t)
            )
            loss = loss + c.svs_align * out["svs_pooled"]
        if "token" in self.levels:
            sp = f["spikes"].float().mean(0)  # (B, N, C) spike rates
            gh, gw = f["grid"]
            grid = sp.transpose(1, 2).reshape(sp.shape[0], sp.shape[2], gh, gw)
            tok = F.adaptive_avg_pool2d(grid, self.grid).flatten(2).transpose(1, 2)  # (B, g*g, C)
            s = self.align_token(tok)
            t, w = self.token_targets(batch)
            if c.svs_mode == "contrastive":
                keep = slice(None) if w is None else w.flatten() > 0
                out["svs_token"] = info_nce(s.flatten(0, 1)[keep], t.flatten(0, 1)[keep], c.contrastive_tau)
            else:
                out["svs_token"] = _cosine_loss(s, t, w)
            loss = loss + c.svs_align * out["svs_token"]
        if c.svs_temporal and f["spikes"].shape[0] > 1:
            on = self.temporal_on()
            mem = torch.stack([_consistency(m) for m in f["membranes"]]).mean()
            rate = _consistency(f["spikes"].float().mean(2))  # (T, B, C) rates per step
            out["svs_temporal"] = mem + rate
            if on:
                loss = loss + c.svs_temporal * out["svs_temporal"]
        if c.spl_proto:
            protos = self.encoder.head.prototypes
            # matched to their class's text embedding through the projection, and the prototypes'
            # own similarity structure pulled towards the text embeddings' (projection-free)
            out["spl_proto"] = info_nce(self.text_proj(protos), self.t_text, c.proto_tau) + _relation(
                protos, self.t_text
            )
            loss = loss + c.spl_proto * out["spl_proto"]
        if c.spl_logit:
            tau = c.kd_tau
            t = F.softmax(self.t_logits[idx] / tau, -1)
            out["spl_logit"] = F.kl_div(F.log_softmax(logits / tau, -1), t, reduction="batchmean") * tau * tau
            loss = loss + c.spl_logit * out["spl_logit"]
        if self.training:
            self.step += 1
        out = {k: v.detach() for k, v in out.items()}
        out["loss"] = loss
        out["acc"] = (logits.argmax(1) == labels).float().mean().detach()
        return out
