"""Task `segmentation`: fine-tune a spiking sparse U-Net for per-point labels (docs/SPEC.md §9).

The encoder half of an `e3dsnn_unet_*` model has the E-3DSNN stages' names, so an SVL pretraining
checkpoint (`init=PATH`) starts it, the decoder and the per-point classifier staying new. Training is
per-point cross-entropy (points labelled IGNORE = -1 are left out); the report holds mIoU, overall
and class-mean accuracy, per-class IoU, ShapeNetPart's instance / class mIoU on that dataset, and the
energy per pass. The final `final.safetensors` (kind `svl-segmenter`) is what `svl segment` reads.

Scoring follows the benchmarks' tools (SemanticKITTI API, Pointcept's tester): every original point
of every test scan is predicted (`svl.infer.predict_logits`: passes of `data.num_points` random
points covering the scan, each point taking its own voxel's logits; `eval.votes` > 1 averages the
logits over re-drawn, turned passes), and mIoU averages the dataset's fixed class list
(`svl.eval.segmentation`). ShapeNetPart shapes take the argmax over their own category's parts.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from torch import nn

from svl.data import PointBatch, build_dataset, collate_points
from svl.energy import energy_line, energy_per_sample
from svl.eval.segmentation import part_miou, segmentation_metrics
from svl.infer import chunk_input, cover, predict_points
from svl.models.loading import SEGMENTER_KIND
from svl.models.wrappers import IGNORE, Segmenter
from svl.tasks.base import ModelSection, TrainParts, TransferSection, register_task
from svl.tasks.dense import DenseTask, SceneData
from svl.train.trainer import TrainConfig
from svl.utils import get_logger, seed_everything

__all__ = ["SegmentationConfig", "SegmentationTask"]

log = get_logger(__name__)


def _seg_model() -> ModelSection:
    return ModelSection(name="e3dsnn_unet_t", voxel_size=0.05)


def _seg_augment() -> list[Any]:
    # transforms that move points but keep each point's label (nothing reorders without its label)
    return [
        {"name": "rotate_gravity"},
        {"name": "random_scale", "low": 0.9, "high": 1.1},
        {"name": "jitter", "sigma": 0.005, "clip": 0.02},
    ]


@dataclass
class SegData(SceneData):
    augment: list[Any] = field(default_factory=_seg_augment)


@dataclass
class SegEval:
    batch_size: int = 8
    monitor_test: bool = True  # test mIoU logged each validation for the curve, never selected on
    # BN statistics re-estimated over this many training batches before evaluating: E-3DSNN's BN
    # momentum is 0.01, so after a short run the running statistics still sit near their initial
    # values and an untrained-looking network hardly spikes (classification's eval.precise_bn).
    precise_bn: int = 16
    # test-time votes: the scan re-covered with other random passes, turned 2 pi v / votes about z,
    # logits averaged (1 = one pass per point, the default)
    votes: int = 1


def _seg_train() -> TrainConfig:
    return TrainConfig(
        epochs=20, batch_size=8, lr=2e-3, weight_decay=0.05, optimizer="adamw", schedule="cosine",
        grad_clip=None, ckpt_every_steps=200, log_every_steps=20,
    )  # fmt: skip


@dataclass
class SegmentationConfig:
    RENAMED: ClassVar[dict[str, str]] = {"model.init": "init"}  # one init key (was also model.init)
    task: str = "segmentation"
    model: ModelSection = field(default_factory=_seg_model)
    init: str = "scratch"  # or an svl checkpoint whose E-3DSNN encoder starts the U-Net's encoder
    transfer: TransferSection = field(default_factory=TransferSection)
    data: SegData = field(default_factory=SegData)
    eval: SegEval = field(default_factory=SegEval)
    train: TrainConfig = field(default_factory=_seg_train)
    out_dir: str = "runs/segment_modelnet40_scenes"
    energy: bool = True


@register_task("segmentation")
class SegmentationTask(DenseTask):
    """Per-point segmentation; see the module docstring."""

    Config = SegmentationConfig
    family = "e3dsnn_unet"

    def __init__(self, cfg: SegmentationConfig) -> None:
        super().__init__(cfg)
        seed_everything(cfg.train.seed)
        d = cfg.data
        kw = {"root": d.root, "seed": cfg.train.seed, **dict(d.options)}
        n = d.num_points
        aug = [*d.presample, {"name": "random_sample", "num_points": n}, *d.augment]
        train = build_dataset(d.dataset, d.train_split, transforms=aug, num_points=n, **kw)
        # every point as stored: validation and test scans are scored on all their points (see the docstring)
        self.train_set = self.split_train(
            train, lambda: build_dataset(d.dataset, d.train_split, all_points=True, **kw)
        )
        test = build_dataset(d.dataset, d.test_split, all_points=True, **kw)
        self.test_set = self.limit(test, d.test_limit)
        # per-point classes: a dataset whose `classes` label whole shapes (ShapeNetPart's categories)
        # names its point classes `segment_classes`
        base = getattr(self.train_set, "base", self.train_set)
        self.classes = list(getattr(base, "segment_classes", None) or self.train_set.classes)
        self.categories = list(base.classes)
        first = self.train_set[0]
        if first.get("segment") is None:
            raise ValueError(f"{d.dataset}: its samples carry no per-point labels ('segment'); not a "
                             "segmentation dataset")  # fmt: skip
        self.announce(
            log, "segmentation on %s: %d classes, %d training scenes, %d validation, %d test scenes",
            d.dataset, len(self.classes), len(self.train_set), len(self.val_set or ()),
            len(self.test_set),
        )  # fmt: skip

    def model_cfg(self) -> dict[str, Any]:
        m = self.cfg.model
        cfg: dict[str, Any] = {
            "num_classes": len(self.classes),
            "T": m.T,
            "D": m.D,
            "voxel_size": m.voxel_size,
        }
        if m.in_channels is not None:
            cfg["in_channels"] = m.in_channels
        return {**cfg, **dict(m.options)}  # other builder arguments (channels, neck_channels, ...)

    def setup(self) -> TrainParts:
        self.net = self.build_net()
        self.model = Segmenter(self.net)
        lr = self.cfg.transfer.lr_scale_of(self.model, self.net, self.cfg.init)
        return TrainParts(self.model, self.train_set, collate_points, self.meta(), lr_scale=lr)

    def meta(self) -> dict[str, Any]:
        return {
            "kind": SEGMENTER_KIND,
            "model": self.cfg.model.name,
            "model_cfg": self.model_cfg(),
            "class_names": self.classes,
            "init": self.cfg.init,
            "data": {"dataset": self.cfg.data.dataset, "num_points": self.cfg.data.num_points},
        }

    def predict(self, net: nn.Module, ds: Any = None, desc: str = "test") -> tuple[list, list]:
        """(labels, predictions) of every point of every scan of `ds` (default the test split; see the
        module docstring)."""
        ds = self.test_set if ds is None else ds
        base = getattr(ds, "base", ds)
        parts = getattr(base, "allowed_segments", None)  # ShapeNetPart: its category's parts only
        return predict_points(
            net, ds, self.cfg.eval.batch_size, desc=desc, num_points=self.cfg.data.num_points,
            votes=self.cfg.eval.votes, seed=self.cfg.train.seed,
            allowed=None if parts is None else (lambda s: parts(int(s["label"]))),
        )  # fmt: skip

    def one_pass(self, samples: list[dict[str, Any]]) -> PointBatch:
        """One network pass per scan (its first `data.num_points` chunk): what the energy is measured on."""
        n = self.cfg.data.num_points
        rng = np.random.default_rng(self.cfg.train.seed)
        return collate_points([chunk_input(s, cover(len(s["xyz"]), n, rng)[0][0]) for s in samples])

    def score(self, net: nn.Module, ds: Any, desc: str) -> dict[str, float]:
        ys, ps = self.predict(net, ds, desc)
        m = segmentation_metrics(np.concatenate(ys), np.concatenate(ps), self.classes, ignore_index=IGNORE)
        return {"miou": m["miou"], "oa": m["oa"]}

    def evaluate(self, summary: dict[str, Any]) -> dict[str, Any]:
        final = self.restore_best(summary)
        t0 = time.perf_counter()
        ys, ps = self.predict(self.net)
        ms = 1000 * (time.perf_counter() - t0) / max(len(ys), 1)
        res = segmentation_metrics(np.concatenate(ys), np.concatenate(ps), self.classes, ignore_index=IGNORE)
        n = self.cfg.data.num_points
        passes = [1 if n is None else -(-len(y) // n) for y in ys]
        res.update({
            "n_test": len(ys), "n_train": len(self.train_set), "n_val": len(self.val_set or ()),
            "classes": len(self.classes),
            "checkpoint": str(final), "model": self.cfg.model.name, "init": self.cfg.init,
            "dataset": self.cfg.data.dataset, "ms_per_scene": ms, "points_per_pass": n,
            "passes_per_scene": self.cfg.eval.votes * float(np.mean(passes)), "votes": self.cfg.eval.votes,
        })  # fmt: skip
        if self.cfg.data.dataset == "shapenetpart":
            cats = [self.categories[int(self.test_set[i]["label"])] for i in range(len(ys))]
            res["shapenetpart"] = part_miou(ys, ps, cats)
        if self.cfg.energy:  # per network pass of data.num_points points (a scan takes passes_per_scene)
            res["energy"] = energy_per_sample(self.net, self.test_set, samples=4, collate=self.one_pass)
        return res

    def format_results(self, result: dict[str, Any]) -> str:
        lines = [
            "",
            f"Segmentation on {result.get('dataset')} ({result.get('classes')} classes): "
            f"{result.get('model')}, init {result.get('init')}",
            "",
            f"{'class':<20}{'points':>10}{'IoU':>8}",
            "-" * 38,
        ]
        for r in result.get("per_class", []):
            iou = "-" if r["iou"] is None else f"{100 * r['iou']:.2f}"
            lines.append(f"{r['class']:<20}{r['points']:>10}{iou:>8}")
        lines += [
            "-" * 38,
            f"mIoU {100 * result['miou']:.2f}   OA {100 * result['oa']:.2f}   "
            f"mAcc {100 * result['macc']:.2f}   scenes={result['n_test']}   "
            f"points scored={result.get('points_scored')}",
        ]
        if result.get("absent_classes"):
            absent = result["absent_classes"]
            lines.append(f"{len(absent)} of {result.get('classes')} classes have no test points (IoU '-', "
                         f"0 in the mean; mIoU over the others {100 * result['miou_present']:.2f}): "
                         + ", ".join(absent[:8]) + (" ..." if len(absent) > 8 else ""))  # fmt: skip
        if "shapenetpart" in result:
            sp = result["shapenetpart"]
            lines.append(f"ShapeNetPart instance mIoU {100 * sp['instance_miou']:.2f}   "
                         f"class mIoU {100 * sp['class_miou']:.2f}")  # fmt: skip
        if "energy" in result:
            lines.append(energy_line(result["energy"], f"pass of {result.get('points_per_pass')} points")
                         + f"   ({result.get('passes_per_scene', 1):.1f} passes / scene)")  # fmt: skip
        lines.append(f"checkpoint: {result.get('checkpoint')}")
        return "\n".join(lines)
