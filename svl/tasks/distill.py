"""Task `distill`: VL2Spike, a vision-language teacher distilled into a 2D spiking transformer (SPEC §11).

The student is a registered image model (a Spikformer, `svl/models/spikformer.py`) trained on a
labelled image dataset (`svl/data/images.py`) by the classification recipe (`ClassificationTask`:
splits, label fractions, validation, the final classifier checkpoint, per-class report, energy)
with the VL2Spike terms added to its loss, each switched by its weight (0 = off):

- SVS, spatial-temporal visual spike distillation:
  - `svs_align`: the student's spike features, pooled and/or as a token grid, mapped by learned
    projections into the teacher's image-feature space and aligned there (cosine, or InfoNCE over
    the batch);
  - `svs_temporal`: membranes (the residual stream after every block) and spike rates of each
    timestep pulled towards their mean over timesteps; switched on after `temporal_start` of training.
- SPL, spike prototype-guided linguistic distillation (needs the student's prototype head):
  - `spl_proto`: the class prototypes, through a learned projection, aligned with the teacher's text
    embeddings of the prompted class names (InfoNCE over classes), and their similarity structure
    pulled towards the text embeddings' (relational, projection-free: a projection alone can match
    any K prototypes to K texts);
  - `spl_logit`: the student's logits (scaled cosine to the prototypes) distilled from the teacher's
    logits (KL at temperature `kd_tau`), next to cross-entropy on the labels (`ce`).

The teacher's logits are image . text for a CLIP teacher (`teacher.logits: zeroshot`); the offline
teachers (EfficientNet-Lite0 + MiniLM) live in two spaces, so there they come from a logistic
regression on the teacher's image features, cross-fitted over the training images so no image is
scored by a probe that saw its label (`probe`). Teacher features and logits are computed once per
(teacher, data) and cached like the 3D side's. CE-only, every ablation and the ANN twin are this task
with weights set to 0 or `model.name=..._ann`.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from svl.data.images import build_image_dataset, collate_images, resize_image
from svl.data.splits import LabelView
from svl.eval.retrieval import positives_by_id, recall_at_k, view_retrieval_split
from svl.infer import encode, vote_probabilities
from svl.models import Contract, create_model
from svl.models.wrappers import LogitsAndPooled
from svl.tasks.base import ModelSection, TrainParts, register_task
from svl.tasks.finetune import (
    ClassificationTask,
    EvalSection,
    FinetuneConfig,
    FinetuneData,
)
from svl.teachers import create_teacher
from svl.teachers.store import EmbeddingStore, embed_texts_cached
from svl.train.distill import DistillWeights, VL2Spike
from svl.train.trainer import TrainConfig
from svl.utils import get_logger
from svl.vocab import format_prompts, prompt_average

__all__ = [
    "IMAGE_TEMPLATES",
    "DistillConfig",
    "DistillSection",
    "DistillTask",
    "TeacherSection",
    "TeacherTargets",
    "fit_logistic",
    "image_features",
]

log = get_logger(__name__)


def _tensor(a: Any) -> Tensor:
    """`torch.as_tensor`, copying a read-only array (a cached feature file mapped from disk) first:
    torch warns on every non-writable array it is handed. Float arrays come out float32."""
    if isinstance(a, np.ndarray) and not a.flags.writeable:
        a = np.array(a, dtype=np.float32 if a.dtype.kind == "f" else a.dtype)
    return torch.as_tensor(a)


# Prompt templates for images (a subset of CLIP's ImageNet ensemble).
IMAGE_TEMPLATES = [
    "a photo of a {}.",
    "a rendering of a {}.",
    "a picture of the {}.",
    "an image of a {}.",
    "a close-up photo of the {}.",
    "a low resolution photo of a {}.",
]
TEACHER_LOGITS = ("auto", "probe", "zeroshot")


# ----------------------------------------------------------------------------- config
@dataclass
class ImageData(FinetuneData):
    """Image data: the classification data section with image sizes instead of point counts."""

    dataset: str = "modelnet40_views"
    train_per_class: int | None = 20  # label-scarce by default (and a CPU-sized run); None = all
    options: dict[str, Any] = field(default_factory=dict)  # builder options (modelnet40_views: views, size)
    test_options: dict[str, Any] = field(default_factory=dict)  # builder options for the test split only
    image_size: int | None = 32  # the student's input (None: as stored); the teacher sees them as stored
    channels: int | None = None  # None: as the dataset stores them
    augment: list[Any] = field(
        default_factory=lambda: [{"name": "random_crop", "padding": 4}, {"name": "hflip"}]
    )
    # View retrieval on the test split (view 0 queries the other views; a hit is the same shape): the
    # test split of a multi-view dataset (modelnet40_views) is then rendered with `retrieval_views` views.
    retrieval: bool = True
    retrieval_views: int = 2


@dataclass
class TeacherSection:
    image: str = "efficientnet-lite0"  # or "openclip:PATH" / "hf-clip:PATH" (then also the text tower)
    text: str | None = "minilm"  # None with a CLIP image teacher: its own text tower
    image_size: int | None = 128  # teacher input size (None: as stored / the CLIP tower's)
    templates: list[str] = field(default_factory=lambda: list(IMAGE_TEMPLATES))
    logits: str = "auto"  # "zeroshot" (CLIP: image . text), "probe" (cross-fitted), "auto"
    probe_folds: int = 5
    probe_l2: float = 1e-3
    token_grid: int = 2  # token-level targets: the teacher's feature map pooled to grid x grid
    batch_size: int | None = None
    cache: bool = True


DistillSection = DistillWeights  # the `distill` config section is the loss's own weights


def _student() -> ModelSection:
    # The CPU benchmark student: binary spikes (D=1) at T=2 (configs/distill_modelnet40_views.yaml).
    return ModelSection(name="spikformer_s", T=2, D=1, options={"head": "prototype"})


def _distill_train() -> TrainConfig:
    # Spikformer's CIFAR recipe (AdamW, cosine, warm-up) at a CPU-sized budget.
    return TrainConfig(
        epochs=15,
        batch_size=64,
        lr=2e-3,
        weight_decay=0.06,
        warmup_epochs=1.0,
        min_lr=1e-5,
        grad_clip=1.0,
        ckpt_every_steps=200,
        log_every_steps=20,
    )


@dataclass
class DistillConfig(FinetuneConfig):
    task: str = "distill"
    model: ModelSection = field(default_factory=_student)
    label_smoothing: float = 0.1
    data: ImageData = field(default_factory=ImageData)
    teacher: TeacherSection = field(default_factory=TeacherSection)
    distill: DistillSection = field(default_factory=DistillSection)
    eval: EvalSection = field(default_factory=lambda: EvalSection(monitor_test=False))
    train: TrainConfig = field(default_factory=_distill_train)
    out_dir: str = "runs/distill_modelnet40_views"


# ----------------------------------------------------------------------------- teacher targets
@dataclass
class TeacherTargets:
    """What the teacher says about each training image (rows in training-set order)."""

    pooled: Tensor  # (N, Dt) L2-normalised image features
    tokens: Tensor | None  # (N, g*g, Dt) or None
    logits: Tensor | None  # (N, K) teacher logits
    text: Tensor | None  # (K, Dtext) class text embeddings
    info: dict[str, Any] = field(default_factory=dict)


def _teacher_batch(samples: list[dict[str, Any]], size: int | None) -> Tensor:
    """Images of possibly different sizes and 1 or 3 channels -> one (B, 3, S, S) teacher batch."""

    out = []
    for s in samples:
        img = torch.as_tensor(s["image"]).float()
        if img.shape[0] == 1:
            img = img.expand(3, *img.shape[1:])
        if size is not None:
            img = resize_image(img, size)
        out.append(img.clamp(0, 1))
    shapes = {tuple(t.shape) for t in out}
    if len(shapes) > 1:  # pragma: no cover - guarded by the size above
        raise ValueError(
            f"teacher batch holds images of several sizes {sorted(shapes)}; set teacher.image_size"
        )
    return torch.stack(out)


def image_features(
    teacher: Any,
    dataset: Any,
    key_parts: dict[str, Any],
    grid: int | None,
    size: int | None,
    cache: bool = True,
) -> tuple[np.ndarray, np.ndarray | None]:
    """(N, Dt) pooled and (N, g*g, Dt) token teacher features of every image of `dataset`, in order,
    built in resumable chunks under the embedding cache (key: teacher + data + settings)."""

    n, dim = len(dataset), int(teacher.dim)
    g2 = grid * grid if grid else 0

    def compute(a: int, b: int) -> Tensor:
        imgs = _teacher_batch([dataset[i] for i in range(a, b)], size)
        if g2:
            p, t = teacher.embed_images_with_tokens(imgs, grid)
            return torch.cat([p[:, None], t], 1).flatten(1)
        return teacher.embed_images(imgs)

    if not cache:
        arr = torch.cat([compute(a, min(a + 64, n)) for a in range(0, n, 64)]).numpy()
    else:
        h = hashlib.sha256(
            json.dumps({**key_parts, "grid": grid, "size": size, "n": n}, sort_keys=True).encode()
        )
        store = EmbeddingStore()
        key = store.make_key(teacher.id, "images-" + h.hexdigest())
        info = {"kind": "images", "teacher": teacher.id, **{k: str(v) for k, v in key_parts.items()}}
        arr = np.asarray(
            store.build(key, (n, (1 + g2) * dim), compute, 64, info, desc="teacher image features")
        )
    arr = arr.reshape(n, 1 + g2, dim)
    return np.ascontiguousarray(arr[:, 0]), (np.ascontiguousarray(arr[:, 1:]) if g2 else None)


def fit_logistic(x: Tensor, y: Tensor, k: int, l2: float = 1e-3, steps: int = 100) -> tuple[Tensor, Tensor]:
    """Multinomial logistic regression (standardised inputs, L2 penalty) by L-BFGS: (weight, bias)
    such that logits = x @ weight.T + bias. Deterministic; a few seconds for thousands of images."""
    x = x.double()
    mu, sd = x.mean(0), x.std(0).clamp_min(1e-6)
    z = (x - mu) / sd
    w = torch.zeros(k, x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(k, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(z @ w.T + b, y) + l2 * (w * w).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    w_raw = (w.detach() / sd).float()
    return w_raw, (b.detach() - (w.detach() / sd) @ mu).float()


def zero_shot_logits(image_features: Tensor, text: Tensor) -> Tensor:
    """A CLIP teacher's logits: 100 x cosine between image features and class text embeddings."""
    return 100.0 * F.normalize(image_features, dim=-1) @ F.normalize(text, dim=-1).T


def cross_fitted_logits(x: Tensor, y: Tensor, k: int, folds: int, l2: float, seed: int = 0) -> Tensor:
    """Out-of-fold logistic-regression logits: each image scored by a probe fitted without it."""
    n = len(y)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    out = torch.zeros(n, k)
    folds = max(2, min(folds, n))
    for f in range(folds):
        held = order[f::folds]
        keep = torch.ones(n, dtype=torch.bool)
        keep[held] = False
        w, b = fit_logistic(x[keep], y[keep], k, l2)
        out[held] = x[held] @ w.T + b
    return out


# ----------------------------------------------------------------------------- the task
@register_task("distill")
class DistillTask(ClassificationTask):
    """VL2Spike distillation into an image Spikformer; see the module docstring."""

    Config = DistillConfig

    @staticmethod
    def collate(samples: list[Any]) -> Any:

        return collate_images(samples)

    def __init__(self, cfg: DistillConfig) -> None:
        if cfg.mode != "full":
            raise ValueError("distill trains the whole student: mode must be 'full'")
        if cfg.eval.votes != 1:
            raise ValueError("distill: test-time voting is for point clouds; keep eval.votes=1")
        if cfg.teacher.logits not in TEACHER_LOGITS:
            raise ValueError(f"teacher.logits must be one of {TEACHER_LOGITS}, got {cfg.teacher.logits!r}")
        super().__init__(cfg)
        self.channels = int(self.train_plain[0]["image"].shape[0])
        self.input_size = int(cfg.data.image_size) if cfg.data.image_size is not None else self._stored_size()

    # -- data ----------------------------------------------------------------------------------
    def _patch_size(self) -> int:
        """The student's patch size: images must be at least this large."""

        if not hasattr(self, "_patch"):
            opts = dict(self.cfg.model.options)
            probe = create_model(
                self.cfg.model.name, out_dim=2, **{k: v for k, v in opts.items() if k != "head"}
            )
            self._patch = int(getattr(probe, "patch_size", 1))
        return self._patch

    def split_options(self, split: str) -> dict[str, Any]:
        """The dataset builder's options for `split` (the test split: retrieval views, test_options)."""
        d = self.cfg.data
        opts = dict(d.options)
        if split == d.test_split:
            if d.retrieval and d.dataset == "modelnet40_views":
                opts["views"] = d.retrieval_views
            opts.update(dict(d.test_options))
        if d.channels is not None:
            opts["channels"] = d.channels
        return opts

    def _teacher_key(self, split: str, view: LabelView) -> dict[str, Any]:
        """What names the teacher features of `view` in the cache: data, options, rows."""
        d = self.cfg.data
        return {
            "dataset": d.dataset, "root": str(d.root), "split": split, "options": self.split_options(split),
            "indices": hashlib.sha256(view.indices.tobytes()).hexdigest()[:16],
        }  # fmt: skip

    def build_split(self, split: str, kind: str) -> Any:
        """Image splits: "train" (resized + augmented), "plain" (resized), "teacher" (as stored)."""

        d = self.cfg.data
        opts = self.split_options(split)
        size = d.image_size
        if size is None:  # as stored: every image must hold at least one patch
            if d.dataset == "image_folder":
                opts.setdefault("min_size", self._patch_size())
            tf: list[Any] | None = []
        else:
            if int(size) < self._patch_size():
                raise ValueError(
                    f"data.image_size={size} is smaller than the student's patch size {self._patch_size()}"
                )
            tf = [{"name": "resize", "size": [int(size), int(size)]}]
        if kind == "train":
            crop_size = self._stored_size() if size is None else int(size)
            tf += [{"size": crop_size, **a} if a.get("name") in ("random_crop", "random_resized_crop") else a
                   for a in d.augment]  # fmt: skip
        if kind == "teacher":
            tf = None
        ds = build_image_dataset(
            d.dataset, split, root=d.root, transforms=tf, seed=self.cfg.train.seed, **opts
        )
        if kind == "train" and self.token_targets:
            # Token targets are the teacher's grid of the un-augmented image (cached once); the
            # samples carry where their pixels came from so the loss moves that grid with the
            # student's crop / flip (svl.train.distill.warp_token_targets says why not re-run it).
            ds.track_geometry = True
        return ds

    @property
    def token_targets(self) -> bool:
        """Whether the SVS term aligns token grids (and so needs each sample's augmentation)."""
        dc = self.cfg.distill
        return bool(dc.svs_align) and dc.svs_level != "pooled"

    def _stored_size(self) -> int:
        """The images' own (square) size, for data.image_size=None."""

        d = self.cfg.data
        ds = build_image_dataset(d.dataset, d.train_split, root=d.root, **self.split_options(d.train_split))
        h, w = ds[0]["image"].shape[-2:]
        if h != w:
            raise ValueError(
                f"{d.dataset}: images are {h}x{w}; set data.image_size to train on square inputs"
            )
        return int(h)

    # -- model ---------------------------------------------------------------------------------
    def model_cfg(self) -> dict[str, Any]:
        return {
            **self.cfg.model.builder_kwargs(),
            "out_dim": len(self.classes),
            "img_size": self.input_size,
            "in_channels": self.channels,
        }

    def _teacher_view(self, split: str, view: LabelView) -> LabelView:
        return LabelView(self.build_split(split, "teacher"), view.indices, self.lut)

    def teacher_targets(self) -> TeacherTargets:
        """Teacher image features of the training images, class text embeddings, teacher logits."""

        tc, d = self.cfg.teacher, self.cfg.data
        kw: dict[str, Any] = {} if tc.batch_size is None else {"batch_size": tc.batch_size}
        if tc.image_size is not None and tc.image.split(":")[0].lower().startswith("efficientnet"):
            kw["image_size"] = tc.image_size
        img_t = create_teacher(tc.image, **kw)
        grid = tc.token_grid if self.token_targets else None
        key = self._teacher_key(d.train_split, self.train_set)
        size = tc.image_size if tc.image_size is not None else getattr(img_t, "image_size", None)
        size = size[0] if isinstance(size, tuple) else size
        teacher_train = self._teacher_view(d.train_split, self.train_set)
        pooled, tokens = image_features(img_t, teacher_train, key, grid, size, tc.cache)
        text_t = img_t if tc.text is None else create_teacher(tc.text)
        text = None
        if text_t.has_text:
            prompts = [p for c in self.classes for p in format_prompts(c, tc.templates)]
            emb = torch.tensor(np.asarray(embed_texts_cached(text_t, prompts, cache=tc.cache)))
            text = prompt_average(emb, len(self.classes))
        how = tc.logits
        if how == "auto":
            how = "zeroshot" if (text_t is img_t and text is not None) else "probe"
        y = _tensor(self.train_set.labels())
        x = _tensor(pooled)
        info: dict[str, Any] = {"image": img_t.id, "text": text_t.id, "logits": how, "image_size": size}
        if how == "zeroshot":
            if text_t is not img_t:
                raise ValueError(
                    "teacher.logits=zeroshot needs one image-text model (a CLIP teacher, text: null)"
                )
            logits = zero_shot_logits(x, text)
        else:
            logits = cross_fitted_logits(x, y, len(self.classes), tc.probe_folds, tc.probe_l2)
            self.teacher_probe = fit_logistic(x, y, len(self.classes), tc.probe_l2)
        info["train_oa"] = float((logits.argmax(1) == y).float().mean())  # out-of-fold for a probe
        self.teacher, self.teacher_size, self.teacher_text = img_t, size, text
        self.teacher_how = how
        log.info(
            "teacher %s (+ %s text, %s logits): %.1f%% on the training images%s",
            img_t.id, text_t.id, how, 100 * info["train_oa"], " (out-of-fold)" if how == "probe" else "",
        )  # fmt: skip
        return TeacherTargets(
            pooled=x.float(),
            tokens=None if tokens is None else _tensor(tokens).float(),
            logits=logits.float(),
            text=None if text is None else text.float(),
            info=info,
        )

    def setup(self) -> TrainParts:
        self.encoder = self.build_encoder()
        if not hasattr(self.encoder, "forward_features") or not hasattr(self.encoder, "embed_dim"):
            raise ValueError(f"model.name={self.cfg.model.name!r} is not an image student (use spikformer_*)")
        dc = self.cfg.distill
        self.targets = self.teacher_targets() if dc.needs_teacher else None
        tr = self.cfg.train
        steps_per_epoch = max(1, len(self.train_set) // tr.batch_size)
        self.model = VL2Spike(
            self.encoder, self.targets, steps_per_epoch * tr.epochs, self.cfg.label_smoothing, **asdict(dc)
        )
        return TrainParts(self.model, self.train_set, self.collate, self.meta())

    def meta(self) -> dict[str, Any]:

        m, d = self.cfg.model, self.cfg.data
        contract = Contract(
            gravity_axis=None, color=None, T=m.T, D=m.D, embed_dim=len(self.classes), normals=None
        )
        base = super().meta()
        base.update(
            contract=contract.to_dict(),
            data={
                "input": "image",
                "dataset": d.dataset,
                "image_size": self.input_size,
                "channels": self.channels,
                "label_fraction": d.label_fraction,
                "few_shot": d.few_shot.ways > 0,
            },
            distill=asdict(self.cfg.distill),
        )
        return base

    # -- evaluation ----------------------------------------------------------------------------
    def teacher_test_features(self) -> Tensor:
        """The teacher's pooled features of the test images (cached): its own accuracy and recall."""
        if getattr(self, "_teacher_test", None) is None:
            tview = self._teacher_view(self.eval_split, self.test_set)
            key = self._teacher_key(self.eval_split, self.test_set)
            pooled, _ = image_features(
                self.teacher, tview, key, None, self.teacher_size, self.cfg.teacher.cache
            )
            self._teacher_test = _tensor(pooled)
        return self._teacher_test

    @torch.no_grad()
    def predict(self, encoder: nn.Module) -> Tensor:
        """Class probabilities on the test images; the same pass keeps their pooled features."""
        t0 = time.perf_counter()
        out = encode(LogitsAndPooled(encoder), self.test_set, self.cfg.eval.batch_size, "test", self.collate)
        self.ms_per_sample = 1000 * (time.perf_counter() - t0) / max(len(self.test_set), 1)
        k = len(self.classes)
        self.test_pooled = out[:, k:]
        return vote_probabilities([out[:, :k]])

    def _retrieval(self) -> dict[str, Any] | None:
        """View retrieval on the test split: view 0 of each shape queries the other views."""

        base = self.test_set.base
        if not self.cfg.data.retrieval or not hasattr(base, "retrieval_ids"):
            return None
        rows = self.test_set.indices
        shape, view = (np.asarray(a)[rows] for a in base.retrieval_ids())
        if len(np.unique(view)) < 2:
            log.warning("view retrieval needs >= 2 views per test shape (data.test_options.views); skipped")
            return None
        q, db = view_retrieval_split(shape, view, query_view=0)
        feats = self.test_pooled
        pos = positives_by_id(shape[q], shape[db])
        out = recall_at_k(feats[q], feats[db], pos, ks=(1, 5, 10))
        if getattr(self, "teacher", None) is not None:
            t = self.teacher_test_features()
            out["teacher"] = recall_at_k(t[q], t[db], pos, ks=(1, 5, 10))
        return out

    def evaluate(self, summary: dict[str, Any]) -> dict[str, Any]:
        result = super().evaluate(summary)
        ret = self._retrieval()
        if ret is not None:
            result["retrieval"] = ret
            for k in ("recall@1", "recall@5", "recall@10"):
                result[k] = ret[k]
        if getattr(self, "targets", None) is not None:
            info = dict(self.targets.info)
            t = self.teacher_test_features()
            if self.teacher_how == "zeroshot":
                tl = zero_shot_logits(t, self.teacher_text)
            else:
                w, b = self.teacher_probe
                tl = t @ w.T + b
            info["test_oa"] = float((tl.argmax(1).numpy() == self.test_set.labels()).mean())
            result["teacher"] = info
        result["distill"] = asdict(self.cfg.distill)
        result["T"], result["D"] = self.cfg.model.T, self.cfg.model.D
        return result

    def format_results(self, result: dict[str, Any]) -> str:
        text = super().format_results(result)
        lines = [text]
        if "retrieval" in result:
            r = result["retrieval"]
            line = "view retrieval (test): " + "  ".join(
                f"R@{k} {100 * r[f'recall@{k}']:.2f}" for k in (1, 5, 10)
            )
            if "teacher" in r:
                line += f"   (teacher R@1 {100 * r['teacher']['recall@1']:.2f})"
            lines.append(line)
        if "teacher" in result:
            t = result["teacher"]
            lines.append(
                f"teacher {t['image']} + {t['text']} ({t['logits']} logits): {100 * t['test_oa']:.2f}% on "
                f"the test split, {100 * t['train_oa']:.2f}% on the training images"
            )
        rate = (result.get("energy") or {}).get("firing_rate")
        if rate is not None:
            groups = result["energy"].get("firing_rates") or {}
            lines.append(
                f"firing rate (energy batch): {rate:.4f} spikes per neuron and step"
                + (" (" + ", ".join(f"{k} {v:.4f}" for k, v in groups.items()) + ")" if groups else "")
            )
        d = result.get("distill", {})
        on = [k for k in ("ce", "svs_align", "svs_temporal", "spl_proto", "spl_logit") if d.get(k)]
        lines.append(f"loss terms: {', '.join(on) or 'none'}")
        return "\n".join(lines)
