"""Task `detection`: fine-tune a spiking CenterPoint detector for 3D boxes (docs/SPEC.md §9).

The detector's encoder is E-3DSNN's stem and first stages under their own names, so an SVL
pretraining checkpoint (`init=PATH`) starts it; the BEV neck and the CenterPoint head stay new.
Training is CenterNet's focal loss on class heatmaps plus L1 on the box regression at object centres;
evaluation decodes peaks, applies rotated NMS per class in bird's-eye view and computes AP the way
KITTI's devkit does (R40 recall positions, BEV and 3D, per class and difficulty level where the data
has one). `final.safetensors` (kind `svl-detector`) is what `svl detect` reads.

A dataset serves ``boxes (K, 7)`` and ``box_labels (K,)`` (-1 = padding) in each sample, names its
box classes in ``box_classes`` (else ``classes``) and may give ``point_cloud_range``; optional keys
``difficulty (K,)``, ``ignore_boxes (M, 7)`` (DontCare and neighbouring classes) feed the evaluation.
`data.classes` picks which box classes to detect (the others become ignore boxes) and
`data.agnostic` merges them into one class "object".
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from svl.data import build_dataset, collate_points
from svl.data.detection import build_gt_database
from svl.energy import energy_line, energy_per_sample
from svl.eval.detection import evaluate_detection
from svl.infer import predict_boxes
from svl.models.loading import DETECTOR_KIND
from svl.models.wrappers import Detector, remap_labels
from svl.tasks.base import ModelSection, TrainParts, TransferSection, register_task
from svl.tasks.dense import DenseTask, SceneData
from svl.train.trainer import TrainConfig
from svl.utils import get_logger, seed_everything

__all__ = ["DetectionConfig", "DetectionTask"]

log = get_logger(__name__)


@dataclass
class DetModel(ModelSection):
    """The detector: a registered `e3dsnn_det_*`, its grid and where its encoder starts."""

    name: str = "e3dsnn_det_t"
    voxel_size: float = 0.05
    point_cloud_range: list[float] | None = None  # None: the dataset's (its `point_cloud_range`)
    bev_stride: int = 4


def _det_augment() -> list[Any]:
    # global transforms that move boxes with the points (svl.data.transforms refuses the others)
    return [
        {"name": "random_flip"},
        {"name": "rotate_gravity"},
        {"name": "random_scale", "low": 0.95, "high": 1.05},
    ]


@dataclass
class DetData(SceneData):
    classes: list[str] | None = None  # box classes to detect; None: all of the dataset's
    agnostic: bool = False  # one class "object" for every detected class
    augment: list[Any] = field(default_factory=_det_augment)


@dataclass
class DetEval:
    batch_size: int = 8
    monitor_test: bool = True  # test mAP logged each validation for the curve, never selected on
    precise_bn: int = 16  # as segmentation: re-estimate BN statistics before evaluating
    # Per-class IoU thresholds (3D and BEV). Unset classes take the dataset's declared protocol
    # (KITTI: Car 0.7, Pedestrian 0.5, Cyclist 0.5, whatever config is used), else default_iou.
    iou: dict[str, float] = field(default_factory=dict)
    default_iou: float = 0.5
    # "devkit": KITTI devkit's 41-threshold recall sampling (what papers report); "exact": precision at
    # every true positive's recall; "auto": what the dataset declares (KITTI: devkit), else exact.
    recall_sampling: str = "auto"
    score_threshold: float = 0.1
    topk: int = 100  # peaks decoded per frame before NMS
    nms_iou: float = 0.1  # BEV IoU above which a lower-scored box of the same class is dropped
    max_boxes: int = 50  # per frame after NMS
    num_recall: int = 40  # KITTI R40 (11: the older R11)

    def decoding(self) -> dict[str, Any]:
        """The settings `svl.infer.postprocess` takes (saved in the checkpoint for `svl detect`)."""
        return {"score_threshold": self.score_threshold, "topk": self.topk, "nms_iou": self.nms_iou,
                "max_boxes": self.max_boxes}  # fmt: skip


def _det_train() -> TrainConfig:
    return TrainConfig(
        epochs=20, batch_size=8, lr=2e-3, weight_decay=0.01, optimizer="adamw", schedule="cosine",
        grad_clip=10.0, ckpt_every_steps=200, log_every_steps=20,
    )  # fmt: skip


@dataclass
class DetectionConfig:
    RENAMED: ClassVar[dict[str, str]] = {"model.init": "init"}  # one init key (was also model.init)
    task: str = "detection"
    model: DetModel = field(default_factory=DetModel)
    init: str = "scratch"  # or an svl checkpoint whose E-3DSNN encoder starts the detector's encoder
    transfer: TransferSection = field(default_factory=TransferSection)
    data: DetData = field(default_factory=DetData)
    eval: DetEval = field(default_factory=DetEval)
    train: TrainConfig = field(default_factory=_det_train)
    out_dir: str = "runs/detect_modelnet40_scenes"
    energy: bool = True


@register_task("detection")
class DetectionTask(DenseTask):
    """3D object detection; see the module docstring."""

    Config = DetectionConfig
    family = "e3dsnn_det"

    def __init__(self, cfg: DetectionConfig) -> None:
        super().__init__(cfg)
        if cfg.eval.recall_sampling not in ("auto", "devkit", "exact"):
            raise ValueError(f"eval.recall_sampling must be 'auto', 'devkit' or 'exact', got "
                             f"{cfg.eval.recall_sampling!r}")  # fmt: skip
        seed_everything(cfg.train.seed)
        d = cfg.data
        kw = {"root": d.root, "seed": cfg.train.seed, **dict(d.options)}
        n = d.num_points
        augment = [self._with_database(t, d, kw) for t in d.augment]
        aug = [*d.presample, *augment[: self._n_before(augment)], {"name": "random_sample", "num_points": n},
               *augment[self._n_before(augment) :]]  # fmt: skip
        train = build_dataset(d.dataset, d.train_split, transforms=aug, num_points=n, **kw)
        plain = [*d.presample, {"name": "fps", "num_points": n}]
        self.train_set = self.split_train(
            train, lambda: build_dataset(d.dataset, d.train_split, transforms=plain, num_points=n, **kw)
        )
        # evaluation frames are thinned as training's are (data.presample, e.g. KITTI's voxel sampling),
        # then farthest-point sampled to the budget instead of randomly
        test = build_dataset(d.dataset, d.test_split, transforms=plain, num_points=n, **kw)
        self.test_set = self.limit(test, d.test_limit)
        base = getattr(train, "base", train)
        self.box_classes = list(getattr(base, "box_classes", None) or base.classes)
        if d.classes:
            unknown = [c for c in d.classes if c not in self.box_classes]
            if unknown:
                raise ValueError(f"data.classes: {unknown} are not box classes of {d.dataset} "
                                 f"({', '.join(self.box_classes)})")  # fmt: skip
        kept = list(d.classes or self.box_classes)
        self.classes = ["object"] if d.agnostic else kept
        lut = [(0 if d.agnostic else kept.index(c)) if c in kept else -1 for c in self.box_classes]
        self.lut = torch.tensor(lut, dtype=torch.long)
        rng = cfg.model.point_cloud_range or getattr(base, "point_cloud_range", None)
        if rng is None:
            raise ValueError(
                f"{d.dataset}: set model.point_cloud_range (x_min y_min z_min x_max y_max z_max)"
            )
        self.point_cloud_range = [float(v) for v in rng]
        first = self.train_set[0]
        if first.get("boxes") is None or first.get("box_labels") is None:
            raise ValueError(f"{d.dataset}: its samples carry no boxes ('boxes', 'box_labels'); not a "
                             "detection dataset")  # fmt: skip
        self.announce(
            log, "detection on %s: classes %s, %d training frames, %d validation, %d test frames",
            d.dataset, self.classes, len(self.train_set), len(self.val_set or ()),
            len(self.test_set),
        )  # fmt: skip

    @staticmethod
    def _n_before(augment: list[Any]) -> int:
        """gt_sample changes the point count, so it (and what precedes it) runs before the cap."""
        names = [t.get("name") if isinstance(t, dict) else None for t in augment]
        return max((i + 1 for i, name in enumerate(names) if name == "gt_sample"), default=0)

    @staticmethod
    def _with_database(t: Any, d: DetData, kw: dict[str, Any]) -> Any:
        """A `gt_sample` entry without a database gets the training split's (built once, cached)."""
        if not (isinstance(t, dict) and t.get("name") == "gt_sample" and t.get("database") is None):
            return t
        return {**t, "database": build_gt_database(build_dataset(d.dataset, d.train_split, **kw))}

    def model_cfg(self) -> dict[str, Any]:
        m = self.cfg.model
        cfg: dict[str, Any] = {
            "num_classes": len(self.classes), "T": m.T, "D": m.D, "voxel_size": m.voxel_size,
            "point_cloud_range": self.point_cloud_range, "bev_stride": m.bev_stride,
        }  # fmt: skip
        if m.in_channels is not None:
            cfg["in_channels"] = m.in_channels
        return {**cfg, **dict(m.options)}  # other builder arguments (channels, neck_channels, ...)

    def setup(self) -> TrainParts:
        self.net = self.build_net()
        self.model = Detector(self.net, self.lut)
        lr = self.cfg.transfer.lr_scale_of(self.model, self.net, self.cfg.init)
        return TrainParts(self.model, self.train_set, collate_points, self.meta(), lr_scale=lr)

    def meta(self) -> dict[str, Any]:
        return {
            "kind": DETECTOR_KIND,
            "model": self.cfg.model.name,
            "model_cfg": self.model_cfg(),
            "class_names": self.classes,
            "init": self.cfg.init,
            "eval": {
                "score_threshold": self.cfg.eval.score_threshold,
                "nms_iou": self.cfg.eval.nms_iou,
                "topk": self.cfg.eval.topk,
                "max_boxes": self.cfg.eval.max_boxes,
            },  # fmt: skip
            "data": {"dataset": self.cfg.data.dataset, "num_points": self.cfg.data.num_points},
        }

    def frames(self, preds: list[tuple], truth: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Ground truth and predictions of every test frame in the layout `evaluate_detection` reads.

        Boxes of box classes not detected drop out of the ground truth (detections on them count as
        false positives: training taught the detector they are background); a dataset's
        ``ignore_boxes`` (KITTI's Van, Person_sitting, ...) go to the evaluation as neighbours.
        """
        out = []
        base = getattr(self.test_set, "base", self.test_set)
        ignore_names = list(getattr(base, "ignore_classes", []) or [])
        for i, ((boxes, scores, labels), s) in enumerate(zip(preds, truth, strict=True)):
            gb = np.asarray(s["boxes"], np.float64).reshape(-1, 7)
            mapped = remap_labels(torch.as_tensor(np.asarray(s["box_labels"], np.int64)), self.lut).numpy()
            keep = mapped >= 0
            frame: dict[str, Any] = {
                "gt_boxes": gb[keep], "gt_labels": mapped[keep], "det_boxes": boxes, "det_labels": labels,
                "det_scores": scores, "name": str(s.get("frame_id", i)),
            }  # fmt: skip
            if s.get("difficulty") is not None:
                frame["gt_difficulty"] = np.asarray(s["difficulty"], np.int64)[keep]
            if s.get("ignore_boxes") is not None and ignore_names:
                il = np.asarray(s["ignore_labels"], np.int64)
                frame["ignore_boxes"] = np.asarray(s["ignore_boxes"], np.float64).reshape(-1, 7)[il >= 0]
                frame["ignore_names"] = [ignore_names[k] for k in il[il >= 0]]
            out.append(frame)
        return out

    def protocol(self) -> tuple[dict[str, float], str]:
        """(IoU threshold per evaluated class, recall sampling): config keys, else what the dataset
        declares (KITTI's benchmark thresholds and devkit sampling), else default_iou / exact."""
        ev = self.cfg.eval
        base = getattr(self.test_set, "base", self.test_set)
        declared = dict(getattr(base, "iou_thresholds", None) or {})
        iou = {c: float(ev.iou.get(c, declared.get(c, ev.default_iou))) for c in self.classes}
        sampling = ev.recall_sampling
        if sampling == "auto":
            sampling = getattr(base, "recall_sampling", "exact")
        return iou, sampling

    def _ap(self, preds: list[tuple], truth: list[dict[str, Any]]) -> dict[str, Any]:
        ev = self.cfg.eval
        iou, sampling = self.protocol()
        res = evaluate_detection(self.frames(preds, truth), self.classes, iou, num_recall=ev.num_recall,
                                 devkit_sampling=sampling == "devkit")  # fmt: skip
        level = "moderate" if "moderate" in res["levels"] else res["levels"][0]
        for key, name in (("ap_bev", "map_bev"), ("ap3d", "map3d")):
            vals = [v[level] for v in res[key].values() if v.get(level) == v.get(level)]  # not NaN
            res[name] = float(np.mean(vals)) if vals else float("nan")
        res["map_level"] = level
        return res

    def score(self, net: nn.Module, ds: Any, desc: str) -> dict[str, float]:
        truth: list[dict[str, Any]] = []
        res = self._ap(predict_boxes(net, ds, self.cfg.eval, desc, truth), truth)
        return {"map_bev": res["map_bev"], "map3d": res["map3d"]}

    def evaluate(self, summary: dict[str, Any]) -> dict[str, Any]:
        final = self.restore_best(summary)
        t0 = time.perf_counter()
        truth: list[dict[str, Any]] = []
        preds = predict_boxes(self.net, self.test_set, self.cfg.eval, "test", truth)
        ms = 1000 * (time.perf_counter() - t0) / max(len(preds), 1)
        res = self._ap(preds, truth)
        res.update({
            "n_test": len(preds), "n_train": len(self.train_set), "n_val": len(self.val_set or ()),
            "classes": self.classes,
            "checkpoint": str(final), "model": self.cfg.model.name, "init": self.cfg.init,
            "dataset": self.cfg.data.dataset, "ms_per_frame": ms,
            "boxes_per_frame": float(np.mean([len(p[0]) for p in preds])) if preds else 0.0,
        })  # fmt: skip
        if self.cfg.energy:
            res["energy"] = energy_per_sample(self.net, self.test_set, samples=4)
        return res

    def format_results(self, result: dict[str, Any]) -> str:
        levels = sorted({lv for per in result["ap3d"].values() for lv in per}, key=_level_order)
        lines = [
            "",
            f"Detection on {result.get('dataset')}: {result.get('model')}, init {result.get('init')}, "
            f"{result.get('n_test')} frames, AP R{self.cfg.eval.num_recall} (%), {result.get('sampling')} "
            "recall sampling, IoU "
            + ", ".join(f"{c} {v}" for c, v in (result.get("iou_thresholds") or {}).items()),
            "",
            f"{'class':<16}{'GT':>6}" + "".join(f"{'BEV ' + lv:>14}{'3D ' + lv:>14}" for lv in levels),
            "-" * (22 + 28 * len(levels)),
        ]
        for c in result["ap3d"]:
            cells = []
            for lv in levels:
                for key in ("ap_bev", "ap3d"):
                    v = result[key].get(c, {}).get(lv)
                    cells.append(f"{'-' if v is None or v != v else f'{100 * v:.2f}':>14}")
            n_gt = max((result.get("num_gt", {}).get(c) or {}).values(), default=0)
            lines.append(f"{c:<16}{n_gt:>6}" + "".join(cells))
        lines += ["-" * (22 + 28 * len(levels)),
                  f"mAP BEV {100 * result['map_bev']:.2f}   mAP 3D {100 * result['map3d']:.2f}   "
                  f"({result.get('map_level')})"]  # fmt: skip
        if "energy" in result:
            lines.append(energy_line(result["energy"], "frame"))
        lines.append(f"checkpoint: {result.get('checkpoint')}")
        return "\n".join(lines)


def _level_order(level: str) -> int:
    order = ["all", "easy", "moderate", "hard"]
    return order.index(level) if level in order else len(order)
