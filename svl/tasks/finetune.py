"""Task `classification`: fine-tune a registered encoder on a labelled dataset (docs/SPEC.md §9).

The recipe every later downstream task builds on: the encoder from scratch or from an `svl pretrain`
checkpoint (its weights, a new K-way head) or with the classifier started from a Rep-VLI head file
(the fine-tune starts at the zero-shot accuracy); full fine-tuning with label-smoothed
cross-entropy, or a linear probe on the frozen encoder; the labelled data restricted to a
class-balanced share of the training labels (label efficiency) or to a few-shot episode. The final
model is one plain classifier checkpoint (`final.safetensors`) that `svl classify` reads with no
head file and no text model; the report holds overall and class-mean accuracy, a per-class table, a
confusion-matrix PNG and the energy per sample.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from svl.checkpoint import load_checkpoint, load_state_into, save_checkpoint
from svl.data import build_dataset, collate_points
from svl.data.splits import LabelView, SplitPolicy
from svl.data.transforms import augment_recipe
from svl.energy import energy_line, energy_per_sample
from svl.eval.zeroshot import (
    class_mean_accuracy,
    confusion_matrix,
    per_class_accuracy,
    topk_accuracy,
)
from svl.infer import encode, vote_probabilities
from svl.models import Contract, create_model, load_weights, model_info
from svl.models.heads import attach_head, head_affine, load_head, pooled_features, set_head
from svl.models.loading import CLASSIFIER_KIND
from svl.models.wrappers import Classifier, FeatureProbe
from svl.plots import plot_confusion
from svl.tasks.base import SCRATCH, ModelSection, Task, TrainParts, TransferSection, register_task
from svl.train.bn import precise_bn
from svl.train.trainer import TrainConfig
from svl.utils import get_logger, seed_everything
from svl.vocab import display_name

__all__ = ["ClassificationTask", "FinetuneConfig"]

log = get_logger(__name__)

MODES = ("full", "linear_probe")


@dataclass
class FewShotSection:
    """One episode of the standard point-cloud few-shot protocol: `ways` classes drawn from the
    training classes, `shots` training shapes each, `queries` test shapes each (0 ways = off)."""

    ways: int = 0
    shots: int = 10
    queries: int = 20
    episode: int = 0
    seed: int = 0


@dataclass
class FinetuneData:
    dataset: str = "modelnet40"
    root: str | None = None
    options: dict[str, Any] = field(default_factory=dict)  # dataset builder options (variant=...)
    num_points: int = 1024
    train_split: str = "train"
    test_split: str = "test"
    # A class-stratified held-out share of the labelled training shapes: validation curves and
    # checkpoint selection (never the test split). 0 = train on all of them; the last checkpoint is final.
    val_fraction: float = 0.0
    # Class-balanced share of the training labels used (label efficiency), fixed by label_seed.
    label_fraction: float = 1.0
    label_seed: int = 0
    classes: list[str] = field(default_factory=list)  # only these classes (labels re-numbered)
    few_shot: FewShotSection = field(default_factory=FewShotSection)
    # Stratified k-fold cross-validation on the training split (for small datasets): train on k-1
    # folds, report on fold `cv_fold`; the test split is not used. 0 = off.
    cv_folds: int = 0
    cv_fold: int = 0
    train_per_class: int | None = None  # caps for quick runs
    test_per_class: int | None = None
    # Training augmentation: a named recipe (svl.data.transforms.AUGMENT_RECIPES; default the E-3DSNN
    # release's isotropic scale [0.9, 1.1] + shift 0.2), or an explicit transform list that replaces it.
    augment_recipe: str = "e3dsnn_release"
    augment: list[Any] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.num_points, bool) or not isinstance(self.num_points, int) or self.num_points < 1:
            raise ValueError(f"num_points must be an integer >= 1, got {self.num_points!r}")


@dataclass
class EvalSection:
    # Test-time voting: the plain pass plus votes-1 augmented passes, softmax probabilities averaged.
    votes: int = 1
    vote_augment: list[Any] = field(
        default_factory=lambda: [{"name": "random_scale", "low": 0.8, "high": 1.2, "anisotropic": True}]
    )
    batch_size: int = 64
    # Re-estimate BatchNorm statistics of the final model over this many training batches (precise BN):
    # E-3DSNN's BN momentum is 0.01, so after a short fine-tune (few-shot: ~100 steps) the running
    # statistics still lean on their initial values. In a linear probe: the frozen encoder's statistics,
    # re-estimated before its features are pooled. 0 = keep the running statistics.
    precise_bn: int = 0
    # Log test accuracy as `test/oa` each validation, for the curve only: never selected on.
    monitor_test: bool = True


def _default_train() -> TrainConfig:
    # The E-3DSNN classification recipe (SGD nesterov, lr 0.1, wd 1e-3, step decay at 60% / 80%),
    # at a CPU-sized epoch count; configs/finetune_modelnet40_full.yaml has the 300-epoch GPU run.
    return TrainConfig(
        epochs=30,
        batch_size=16,
        lr=0.1,
        weight_decay=1e-3,
        optimizer="sgd",
        momentum=0.9,
        nesterov=True,
        schedule="step",
        milestones=[0.6, 0.8],
        gamma=0.1,
        grad_clip=None,
        ckpt_every_steps=200,
        log_every_steps=50,
    )


@dataclass
class FinetuneConfig:
    RENAMED: ClassVar[dict[str, str]] = {"model.init": "init"}  # one init key (was also model.init)
    task: str = "classification"
    model: ModelSection = field(default_factory=ModelSection)
    # "scratch", or an svl checkpoint whose encoder weights start the run (a new head).
    init: str = "scratch"
    transfer: TransferSection = field(default_factory=TransferSection)
    # A Rep-VLI head file built for `init`: the classifier starts from the zero-shot head.
    head: str | None = None
    mode: str = "full"  # "full" fine-tuning | "linear_probe" (frozen encoder)
    label_smoothing: float = 0.2
    data: FinetuneData = field(default_factory=FinetuneData)
    eval: EvalSection = field(default_factory=EvalSection)
    train: TrainConfig = field(default_factory=_default_train)
    out_dir: str = "runs/finetune_modelnet40"
    energy: bool = True


# ----------------------------------------------------------------------------- models
class _FeatureSet:
    def __init__(self, feats: Tensor, labels: np.ndarray) -> None:
        self.feats, self.y = feats, torch.as_tensor(labels, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.feats)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        return self.feats[i], self.y[i]


def _stack(items: list[tuple[Tensor, Tensor]]) -> dict[str, Tensor]:
    return {"feats": torch.stack([f for f, _ in items]), "labels": torch.stack([y for _, y in items])}


def _head_rows(head_names: list[str], classes: list[str], where: str) -> list[int]:
    """Rows of a head's classes in the dataset's class order (names compared as displayed)."""
    key = {display_name(n).lower(): i for i, n in enumerate(head_names)}
    missing = [c for c in classes if display_name(c).lower() not in key]
    if missing:
        raise ValueError(
            f"head: {where} has no class {missing[:5]} of the dataset (it has {head_names[:5]}...)"
        )
    return [key[display_name(c).lower()] for c in classes]


# ----------------------------------------------------------------------------- the task
@register_task("classification")
class ClassificationTask(Task):
    """Fine-tuning for shape classification; see the module docstring."""

    Config = FinetuneConfig
    energy_unit: ClassVar[str] = "sample"  # "energy per <unit>" in the result table

    @staticmethod
    def collate(samples: list[Any]) -> Any:
        """How samples become a batch (point clouds here; the image tasks batch images)."""
        return collate_points(samples)

    def __init__(self, cfg: FinetuneConfig) -> None:
        super().__init__(cfg)
        if cfg.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {cfg.mode!r}")
        if cfg.eval.votes < 1:
            raise ValueError(f"eval.votes must be >= 1, got {cfg.eval.votes}")
        seed_everything(cfg.train.seed)
        d = cfg.data
        self.train_aug = self.build_split(d.train_split, "train")
        self.train_plain = self.build_split(d.train_split, "plain")
        self.test_plain = self.build_split(d.test_split, "plain")
        classes = list(self.train_plain.classes)
        if list(self.test_plain.classes) != classes:
            raise ValueError(
                f"{d.dataset}: the {d.train_split} and {d.test_split} splits list different classes "
                f"({len(classes)} vs {len(self.test_plain.classes)})"
            )
        y_tr, y_te = (
            self._labels(self.train_plain, d.train_split, classes),
            self._labels(self.test_plain, d.test_split, classes),
        )
        policy = SplitPolicy(
            classes=list(d.classes), label_fraction=d.label_fraction, label_seed=d.label_seed,
            ways=d.few_shot.ways, shots=d.few_shot.shots, queries=d.few_shot.queries,
            episode=d.few_shot.episode, episode_seed=d.few_shot.seed, cv_folds=d.cv_folds, cv_fold=d.cv_fold,
            val_fraction=d.val_fraction, train_per_class=d.train_per_class, test_per_class=d.test_per_class,
        )  # fmt: skip
        sp = policy.apply(y_tr, y_te, classes, d.dataset)
        self.eval_split = d.test_split
        if sp.test_from_train:  # cross-validation: the held-out fold comes from the training split
            self.test_plain, self.eval_split = self.train_plain, d.train_split
        self.val_idx = sp.val
        self.classes, self.lut = sp.classes, sp.lut
        self.train_set = LabelView(self.train_aug, sp.train, sp.lut)
        self.train_eval = LabelView(self.train_plain, sp.train, sp.lut)
        self.val_set = None if sp.val is None else LabelView(self.train_plain, sp.val, sp.lut)
        self.test_set = LabelView(self.test_plain, sp.test, sp.lut)
        self.color = "none" if self.train_plain[0].get("rgb") is None else "rgb01"
        train_idx, test_idx, what = sp.train, sp.test, sp.description
        self.announce(
            log,
            "classification on %s: %d classes, %d training shapes (%s), %d validation, %d test",
            d.dataset, len(self.classes), len(train_idx),
            what,
            0 if self.val_idx is None else len(self.val_idx), len(test_idx),
        )  # fmt: skip

    def build_split(self, split: str, kind: str) -> Any:
        """A dataset split as training ("train": augmented), evaluation ("plain") or voting ("vote")
        data; the one place a subclass changes how its data is read."""
        d, n = self.cfg.data, self.cfg.data.num_points
        kw = {"root": d.root, "seed": self.cfg.train.seed, **dict(d.options)}
        augment = d.augment if d.augment is not None else augment_recipe(d.augment_recipe)
        if kind == "train" and augment:
            aug = [{"name": "random_sample", "num_points": n}, *augment]
            return build_dataset(d.dataset, split, transforms=aug, num_points=n, **kw)
        if kind == "vote":
            tf = [{"name": "fps", "num_points": n}, *self.cfg.eval.vote_augment]
            return build_dataset(d.dataset, split, transforms=tf, **kw)
        return build_dataset(d.dataset, split, num_points=n, **kw)

    @staticmethod
    def _labels(ds: Any, split: str, classes: list[str]) -> np.ndarray:
        y = np.asarray(ds.labels(), dtype=np.int64)
        bad = np.flatnonzero((y < 0) | (y >= len(classes)))
        if len(bad):
            raise ValueError(
                f"{ds.name}/{split}: label {int(y[bad[0]])} of shape {int(bad[0])} is outside the class "
                f"list ({len(classes)} classes); {len(bad)} such shape(s)"
            )
        return y

    # -- model ---------------------------------------------------------------------------------
    def model_cfg(self) -> dict[str, Any]:
        return {**self.cfg.model.builder_kwargs(), "out_dim": len(self.classes)}

    def build_encoder(self) -> nn.Module:
        """The encoder with a K-way head: scratch, init weights, and optionally the Rep-VLI head."""
        cfg, m = self.cfg, self.cfg.model
        init = cfg.init if cfg.init not in SCRATCH else None
        enc = create_model(m.name, **self.model_cfg())
        self.init_meta: dict[str, Any] = {}
        if init:
            self.init_meta = self.load_init(enc, init)
            self._check_color(init)
        if cfg.head:
            if not init:
                raise ValueError(
                    "head: a Rep-VLI head starts a fine-tune from its checkpoint; give init=PATH too"
                )
            self._attach_rep_vli(enc, cfg.head, init)
        return enc

    def load_init(self, enc: nn.Module, init: str) -> dict[str, Any]:
        """An svl checkpoint's encoder, all but its head (the run's K-way head starts new)."""
        return load_weights(
            enc, init, self.cfg.model.name, part="encoder", model_cfg=self.model_cfg(), key="init",
            **self.cfg.transfer.kwargs(),
        )  # fmt: skip

    def _check_color(self, init: str) -> None:
        held = (self.init_meta.get("contract") or {}).get("color")
        data = self.color
        if held not in (None, data):
            raise ValueError(
                f"init: {init} was trained on colour {held!r} but {self.cfg.data.dataset} gives {data!r}; "
                "fine-tune on data with the same input channels"
            )

    def _attach_rep_vli(self, enc: nn.Module, head: str, init: str) -> None:
        tensors, meta = load_head(head)
        attach_head(enc, (tensors, meta), checkpoint=init)  # built for `init`, same layout and channels
        rows = _head_rows(list(meta["class_names"]), self.classes, head)
        a, b, _ = head_affine(enc.head)  # (C, K_head): columns re-ordered to the dataset's classes
        set_head(enc, a[:, rows].T, None if b is None else b[rows])

    def setup(self) -> TrainParts:
        self.encoder = self.build_encoder()
        self.model = Classifier(
            self.encoder, self.cfg.label_smoothing, freeze_encoder=self.cfg.mode == "linear_probe"
        )
        meta = self.meta()
        if self.cfg.mode == "full":
            lr = self.cfg.transfer.lr_scale_of(self.model, self.encoder, self.cfg.init)
            return TrainParts(self.model, self.train_set, self.collate, meta, lr_scale=lr)
        # Linear probe: pool the frozen encoder's features once, train the (C -> K) map on them.
        # An untrained encoder's BN statistics are at their init values and it hardly spikes, so a
        # scratch probe is only a random-features baseline with eval.precise_bn on.
        self.recalibrate_bn()
        feat = pooled_features(self.encoder)
        bs = self.cfg.eval.batch_size
        self.feats = {
            "train": encode(feat, self.train_eval, bs, "probe features (train)", self.collate),
            "test": encode(feat, self.test_set, bs, "probe features (test)", self.collate),
        }
        if self.val_set is not None:
            self.feats["val"] = encode(feat, self.val_set, bs, "probe features (val)", self.collate)
        self.probe = FeatureProbe(self.feats["train"].shape[1], len(self.classes), self.cfg.label_smoothing)
        if self.cfg.head:  # start the probe at the zero-shot head
            a, b, _ = head_affine(self.encoder.head)
            with torch.no_grad():
                self.probe.linear.weight.copy_(a.T)
                self.probe.linear.bias.copy_(b if b is not None else torch.zeros(len(self.classes)))
        train = _FeatureSet(self.feats["train"], self.train_eval.labels())
        return TrainParts(self.probe, train, _stack, meta)

    def recalibrate_bn(self) -> None:
        """Precise BN of the encoder over `eval.precise_bn` training batches (0 = keep its statistics)."""
        if self.cfg.eval.precise_bn:
            e, tr = self.cfg.eval, self.cfg.train
            precise_bn(self.encoder, self.train_set, tr.batch_size, e.precise_bn, self.collate)

    def meta(self) -> dict[str, Any]:
        m, d = self.cfg.model, self.cfg.data
        contract = Contract(
            gravity_axis="z", color=self.color,
            num_points=d.num_points, voxel_size=m.voxel_size if model_info(m.name).voxel else None,
            T=m.T, D=m.D, teacher=None, embed_dim=len(self.classes), normals=False,
        )  # fmt: skip
        return {
            "kind": CLASSIFIER_KIND,
            "model": m.name,
            "model_cfg": self.model_cfg(),
            "class_names": self.classes,
            "contract": contract.to_dict(),
            "init": self.cfg.init,
            "head_init": self.cfg.head,
            "mode": self.cfg.mode,
            "data": {
                "dataset": d.dataset,
                "label_fraction": d.label_fraction,
                "few_shot": d.few_shot.ways > 0,
            },
            **self.files_meta(),
        }

    # -- validation ----------------------------------------------------------------------------
    @property
    def has_validation(self) -> bool:
        return self.val_set is not None or self.cfg.eval.monitor_test

    def _logits(self, model: nn.Module, split: str) -> Tensor:
        if isinstance(model, FeatureProbe):
            with torch.no_grad():
                return model.linear(self.feats[split])
        ds = {"val": self.val_set, "test": self.test_set}[split]
        return encode(model.encoder, ds, self.cfg.eval.batch_size, split, self.collate)

    def validate(self, model: nn.Module) -> dict[str, float]:
        """Validation accuracy (selects checkpoints), and test accuracy as `test/oa` when monitored."""
        out: dict[str, float] = {}
        K = len(self.classes)
        if self.val_set is not None:
            logits, y = self._logits(model, "val").numpy(), self.val_set.labels()
            out["acc"] = float((logits.argmax(1) == y).mean())
            out["macc"] = class_mean_accuracy(logits, y, K)
        if self.cfg.eval.monitor_test:
            logits, y = self._logits(model, "test").numpy(), self.test_set.labels()
            out["test/oa"] = float((logits.argmax(1) == y).mean())
            out["test/macc"] = class_mean_accuracy(logits, y, K)
        return out

    # -- final evaluation ----------------------------------------------------------------------
    def final_encoder(self, summary: dict[str, Any]) -> tuple[nn.Module, str]:
        """The weights the run ships (`final_path`) as one classifier encoder, and the file they came from."""
        path = summary["final_path"]
        tensors, _ = load_checkpoint(path)
        if self.cfg.mode == "full":
            load_state_into(self.model, tensors, where=path)
            self.recalibrate_bn()
            return self.encoder.eval(), path
        load_state_into(self.probe, tensors, where=path)
        return set_head(self.encoder, self.probe.linear.weight, self.probe.linear.bias.detach()).eval(), path

    @torch.no_grad()
    def predict(self, encoder: nn.Module) -> Tensor:
        """Class probabilities on the test shapes: one plain pass, plus votes-1 augmented passes."""
        e = self.cfg.eval
        t0 = time.perf_counter()
        passes = [encode(encoder, self.test_set, e.batch_size, "test", self.collate)]
        self.ms_per_sample = 1000 * (time.perf_counter() - t0) / max(len(self.test_set), 1)
        if e.votes > 1:
            aug = self.build_split(self.eval_split, "vote")
            view = LabelView(aug, self.test_set.indices, self.lut)
            for v in range(1, e.votes):
                aug.set_epoch(v)
                passes.append(
                    encode(encoder, view, e.batch_size, f"test vote {v + 1}/{e.votes}", self.collate)
                )
        return vote_probabilities(passes)

    def evaluate(self, summary: dict[str, Any]) -> dict[str, Any]:
        encoder, path = self.final_encoder(summary)
        final = self.out / "final.safetensors"
        state = {f"encoder.{k}": v for k, v in encoder.state_dict().items()}
        save_checkpoint(final, state, {**self.meta(), "source": Path(path).name})
        probs = self.predict(encoder).numpy()
        y = self.test_set.labels()
        K = len(self.classes)
        pred = probs.argmax(1)
        per = per_class_accuracy(pred, y, K)
        counts = np.bincount(y, minlength=K)
        cm = confusion_matrix(y, pred, K)
        png = plot_confusion(
            cm, self.classes, self.out / "confusion.png", title="fine-tuned (row-normalised)"
        )
        result: dict[str, Any] = {
            "oa": float((pred == y).mean()),
            "macc": float(np.nanmean(per[counts > 0])),
            **{k: v for k, v in topk_accuracy(probs, y, (1, 5) if K >= 5 else (1,)).items() if k != "top1"},
            "n_test": int(len(y)),
            "n_train": int(len(self.train_set)),
            "classes": K,
            "votes": self.cfg.eval.votes,
            "ms_per_sample": self.ms_per_sample,  # one plain test pass, data loading included
            "per_class": [
                {"class": c, "n": int(counts[i]), "acc": None if counts[i] == 0 else float(per[i])}
                for i, c in enumerate(self.classes)
            ],
            "checkpoint": str(final),
            "selected": Path(path).name,
            "confusion_png": str(png),
            "init": self.cfg.init,
            "mode": self.cfg.mode,
            "model": self.cfg.model.name,
            "dataset": self.cfg.data.dataset,
        }
        if self.cfg.energy:
            result["energy"] = energy_per_sample(encoder, self.test_set, collate=self.collate)
        return result

    def format_results(self, result: dict[str, Any]) -> str:
        lines = [
            "",
            f"Classification on {result.get('dataset')} ({result.get('classes')} classes): "
            f"{result.get('model')}, init {result.get('init')}, {result.get('mode')}",
            "",
            f"{'class':<20}{'n':>6}{'acc':>8}",
            "-" * 34,
        ]
        for r in result.get("per_class", []):
            acc = "-" if r["acc"] is None else f"{100 * r['acc']:.2f}"
            lines.append(f"{r['class']:<20}{r['n']:>6}{acc:>8}")
        lines += [
            "-" * 34,
            f"overall accuracy {100 * result['oa']:.2f}   class-mean {100 * result['macc']:.2f}   "
            f"n={result['n_test']} (votes {result.get('votes', 1)})",
        ]
        if "energy" in result:
            lines.append(energy_line(result["energy"], self.energy_unit))
        lines.append(f"checkpoint: {result.get('checkpoint')}   confusion: {result.get('confusion_png')}")
        return "\n".join(lines)
