"""The main job: Multi-scale Triple Alignment pretraining with zero-shot evaluation (SPEC §4-§6).

`run_pretrain(cfg)` wires the library together: the zero-shot split, frozen teachers (cached
embeddings), a registered encoder inside `TripleAlignment`, the generic `Trainer`, validation on
held-out seen-class shapes (never the test split), calibrated stacking for generalized zero-shot
chosen on pseudo-unseen classes that were kept out of training, and a final report on the test split
computed through the folded Rep-VLI head, i.e. the text-free inference path.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from svl.train.trainer import TrainConfig
from svl.utils import atomic_write, get_logger, seed_everything

log = get_logger(__name__)


@dataclass
class ModelSection:
    name: str = "e3dsnn_t"
    out_dim: int = 384
    T: int = 1
    D: int = 4
    voxel_size: float = 0.02


@dataclass
class DataSection:
    dataset: str = "modelnet40_zsl"
    root: str | None = None
    num_points: int = 1024
    augment: bool = True
    # Seen classes kept out of training so GZSL calibration and checkpoint selection can be done on
    # classes the model has never been trained on, without looking at the test split.
    pseudo_unseen: int = 5
    calib_per_class: int = 40
    num_workers: int = 0


@dataclass
class TeacherSection:
    text: str = "minilm"
    image: str = "efficientnet-lite0"
    views: int = 2
    image_batch_size: int = 32


@dataclass
class LossSection:
    l_text: float = 1.0
    l_image: float = 1.0
    l_mse: float = 1.0
    logit_scale_init: float = 1 / 0.07
    learn_scale: bool = True
    hard_negatives: bool = False
    hard_negative_group: int = 4


def _default_train() -> TrainConfig:
    return TrainConfig(
        epochs=12,
        batch_size=32,
        lr=2e-3,
        weight_decay=1e-4,
        warmup_epochs=1,
        select_metric="val/pseudo_unseen_top1",
    )


@dataclass
class PretrainConfig:
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    teacher: TeacherSection = field(default_factory=TeacherSection)
    loss: LossSection = field(default_factory=LossSection)
    train: TrainConfig = field(default_factory=_default_train)
    out_dir: str = "runs/zsl_modelnet40"
    seed: int = 0
    device: str = "auto"
    evaluate_test: bool = True
    energy: bool = True
