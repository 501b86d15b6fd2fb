"""Task `event_classification`: the classification task (finetune.py) on event-camera streams.

Only the data differ: an event dataset (`nmnist`, `modelnet40_dvs`, `dvs128_gesture`, or any
`EventDataset`) read in encoding (b) by default, T time bins fed as consecutive timesteps with the
I-LIF membranes carried across them (T = 6, docs/SPEC.md §8), or (a) one x-y-t cloud; training
augmentation happens on the events (pixel shifts, dropped events), not on the points. The inputs are
x, y, t and polarity (4 channels). An SVL checkpoint pretrained on 3D shapes (xyz + colour, 6
channels, T = 1) starts the encoder: its weights do not depend on T or on the voxel size (event
clouds fill [0, 1]^3, so their voxel size is set by the sensor's pixel pitch, not by the shapes'),
and its first layer is carried over to the event channels by `polarity_from_colour`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from svl.data import build_dataset, dataset_takes
from svl.data.events import EventDataset
from svl.models import load_weights
from svl.models.loading import polarity_from_colour
from svl.tasks.base import ModelSection, register_task
from svl.tasks.finetune import ClassificationTask, FinetuneConfig, FinetuneData
from svl.train.trainer import TrainConfig
from svl.utils import get_logger

__all__ = ["EventClassificationTask", "EventFinetuneConfig"]

log = get_logger(__name__)


@dataclass
class EventData(FinetuneData):
    dataset: str = "nmnist"
    num_points: int = 1024  # events sampled per window (all bins together)
    encoding: str = "bins"  # "bins" (T time bins as timesteps) | "cloud" (one x-y-t cloud)
    augment: list[Any] = field(default_factory=list)  # point transforms: none (they would desync x-y-t)
    # Event-space training augmentation (svl.data.events.augment_events): pixel shift, dropped share.
    event_augment: dict[str, Any] = field(default_factory=lambda: {"shift": 2, "drop": 0.1})


def _event_model() -> ModelSection:
    return ModelSection(T=6, in_channels=4, voxel_size=0.02)


def _event_train() -> TrainConfig:
    # AdamW + cosine: on the small event sets here (1,000 N-MNIST digits) the E-3DSNN SGD recipe
    # (lr 0.1) hardly moves in 15 epochs (38% vs 96% after 8 epochs: benchmarks/RESULTS.md).
    return TrainConfig(
        epochs=20, batch_size=16, lr=2e-3, weight_decay=0.05, optimizer="adamw", schedule="cosine",
        grad_clip=None, ckpt_every_steps=200, log_every_steps=50,
    )  # fmt: skip


@dataclass
class EventFinetuneConfig(FinetuneConfig):
    task: str = "event_classification"
    model: ModelSection = field(default_factory=_event_model)
    data: EventData = field(default_factory=EventData)
    train: TrainConfig = field(default_factory=_event_train)
    out_dir: str = "runs/finetune_nmnist"


@register_task("event_classification")
class EventClassificationTask(ClassificationTask):
    """Classification of event streams; see the module docstring."""

    Config = EventFinetuneConfig

    def __init__(self, cfg: EventFinetuneConfig) -> None:
        if cfg.data.encoding == "bins" and cfg.model.T < 2:
            raise ValueError(
                f"data.encoding=bins feeds time bins as timesteps: set model.T >= 2 (got {cfg.model.T}), "
                "or use data.encoding=cloud"
            )
        super().__init__(cfg)
        first = self.train_plain[0]
        c = first["feats"].shape[-1] if first.get("feats") is not None else None
        want = cfg.model.in_channels
        if c is not None and want is not None and c != want:
            raise ValueError(f"{cfg.data.dataset} gives {c} input channels but model.in_channels={want}")

    def build_split(self, split: str, kind: str) -> Any:

        d, m = self.cfg.data, self.cfg.model
        if not dataset_takes(d.dataset, "encoding"):
            raise ValueError(
                f"event_classification: {d.dataset!r} is not an event dataset (nmnist, modelnet40_dvs, "
                "dvs128_gesture, ...); use task=classification for shapes"
            )
        kw = {"root": d.root, "seed": self.cfg.train.seed, **dict(d.options)}
        aug = dict(d.event_augment) if kind == "train" and d.event_augment else None
        # votes: the same events resampled (another subset of num_points per pass), no augmentation
        ds = build_dataset(
            d.dataset, split, num_points=d.num_points, T=m.T, encoding=d.encoding, event_augment=aug, **kw
        )
        if not isinstance(ds, EventDataset):
            raise ValueError(
                f"event_classification: {d.dataset} is not an event dataset; use task=classification"
            )
        return ds

    def load_init(self, enc: nn.Module, init: str) -> dict[str, Any]:
        return load_weights(
            enc, init, self.cfg.model.name, part="encoder", model_cfg=self.model_cfg(),
            may_differ=("T", "in_channels", "voxel_size"), adapt=polarity_from_colour, key="init",
            **self.cfg.transfer.kwargs(),
        )  # fmt: skip

    def meta(self) -> dict[str, Any]:
        out = super().meta()
        d = self.cfg.data
        ds = self.train_plain
        out["data"] |= {
            "input": "events",
            "encoding": d.encoding,
            "sensor_size": list(ds.sensor_size),
            "num_points": d.num_points,
        }
        return out
