"""Precise BN: re-estimate BatchNorm running statistics on training data before an evaluation.

E-3DSNN's BN momentum is 0.01, so after a short run the running statistics still sit near their start
and a spiking network hardly fires; every downstream task re-estimates them the same way here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from svl.data.batch import collate_points

__all__ = ["precise_bn"]


@torch.no_grad()
def precise_bn(
    model: nn.Module,
    dataset: Any,
    batch_size: int,
    batches: int,
    collate: Callable[[list[Any]], Any] | None = None,
) -> nn.Module:
    """Replace every BatchNorm's running statistics by their plain average over `batches` training
    batches (the model's weights are untouched); returns the model in eval mode."""
    collate = collate or collate_points
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return model.eval()
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    model.train()
    device = next(model.parameters()).device
    order = np.random.default_rng(len(dataset)).permutation(len(dataset))
    for b in range(min(batches, max(1, len(dataset) // batch_size))):
        idx = order[b * batch_size : (b + 1) * batch_size]
        model(collate([dataset[int(i)] for i in idx]).to(device))
    for m, mom in zip(bns, saved):
        m.momentum = mom
    return model.eval()
