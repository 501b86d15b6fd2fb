"""Model + loss: a network and the criterion it trains with, as one module the Trainer steps.

Pointcept's `DefaultSegmentor` / `DefaultClassifier` pattern: `forward(batch)` returns
`{"loss": ..., <logged scalars>}`. The wrappers hold no data policy and read no config section; a task
builds one with plain arguments. Registered in `WRAPPERS` so another package can add its own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from svl.models.detector import centerpoint_loss, centerpoint_targets
from svl.registry import Registry

__all__ = [
    "IGNORE",
    "WRAPPERS",
    "Classifier",
    "Detector",
    "FeatureProbe",
    "LogitsAndPooled",
    "Segmenter",
    "remap_labels",
]

IGNORE = -1  # per-point label left out of the loss and the metrics
WRAPPERS: Registry[Callable[..., nn.Module]] = Registry(
    "model wrapper", group="svl.wrappers", hint="see svl.models.wrappers.WRAPPERS.names()"
)


@WRAPPERS.register("classifier")
class Classifier(nn.Module):
    """An encoder whose head emits K logits, trained with label-smoothed cross-entropy.

    With `freeze_encoder` only the head trains and the encoder stays in eval mode (BatchNorm
    statistics frozen too), which is what a linear probe means.
    """

    def __init__(
        self, encoder: nn.Module, label_smoothing: float = 0.0, freeze_encoder: bool = False
    ) -> None:
        super().__init__()
        if not 0 <= label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.encoder, self.label_smoothing, self.frozen = encoder, float(label_smoothing), freeze_encoder
        if freeze_encoder:
            for name, p in encoder.named_parameters():
                p.requires_grad_(name.startswith("head."))

    def train(self, mode: bool = True) -> Classifier:
        super().train(mode)
        if self.frozen:
            self.encoder.eval()
        return self

    def forward(self, batch: Any) -> dict[str, Tensor]:
        logits = self.encoder(batch).float()
        labels = batch["labels"] if isinstance(batch, dict) else batch.labels
        if labels is None:
            raise ValueError("fine-tuning needs labelled batches (batch.labels is None)")
        loss = F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)
        acc = (logits.argmax(1) == labels).float().mean()
        return {"loss": loss, "acc": acc.detach()}


@WRAPPERS.register("feature_probe")
class FeatureProbe(nn.Module):
    """Linear probe on cached pooled encoder features: a (C -> K) layer with the same loss."""

    def __init__(self, dim: int, k: int, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, k)
        self.label_smoothing = float(label_smoothing)

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        logits = self.linear(batch["feats"].float())
        loss = F.cross_entropy(logits, batch["labels"], label_smoothing=self.label_smoothing)
        return {"loss": loss, "acc": (logits.argmax(1) == batch["labels"]).float().mean().detach()}


@WRAPPERS.register("segmenter")
class Segmenter(nn.Module):
    """A U-Net whose forward gives (B, N, K) logits, trained with per-point cross-entropy."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, batch: Any) -> dict[str, Tensor]:
        logits = self.net(batch).float()
        y = batch.extras.get("segment")
        if y is None:
            raise ValueError("segmentation needs per-point labels (sample key 'segment')")
        y = y.long()
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), ignore_index=IGNORE)
        keep = y != IGNORE
        acc = (logits.argmax(-1)[keep] == y[keep]).float().mean() if keep.any() else logits.new_zeros(())
        return {"loss": loss, "acc": acc.detach()}


def remap_labels(labels: Tensor, lut: Tensor) -> Tensor:
    """Dataset box classes -> detected classes (-1: padding or a class not detected)."""
    out = torch.full_like(labels, -1)
    ok = labels >= 0
    if ok.any() and int(labels[ok].max()) >= len(lut):
        raise ValueError(f"box label {int(labels[ok].max())} outside the dataset's {len(lut)} box classes")
    out[ok] = lut[labels[ok]]
    return out


@WRAPPERS.register("detector")
class Detector(nn.Module):
    """A detector plus the map from dataset box classes to detected classes; forward gives the loss."""

    def __init__(self, net: nn.Module, lut: Tensor) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("lut", lut.long(), persistent=False)

    def forward(self, batch: Any) -> dict[str, Tensor]:
        boxes, labels = batch.extras.get("boxes"), batch.extras.get("box_labels")
        if boxes is None or labels is None:
            raise ValueError("detection needs boxes (sample keys 'boxes' and 'box_labels')")
        labels = remap_labels(labels.long(), self.lut)
        out = self.net(batch)
        t = centerpoint_targets(boxes.float(), labels, self.net.grid, self.net.num_classes)
        losses = centerpoint_loss({k: v.float() for k, v in out.items()}, t)
        return {"loss": losses["loss"], "heatmap": losses["heatmap"].detach(), "reg": losses["reg"].detach()}


class LogitsAndPooled(nn.Module):
    """The student's logits and, beside them, its pooled spike features (what the head reads, the
    retrieval descriptors): one test pass gives both."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, batch: Any) -> Tensor:
        pooled = self.encoder.forward_features(batch)["pooled"]
        return torch.cat([self.encoder.head(pooled).float(), pooled.float()], 1)
