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
    # Caps per class for quick runs (smoke tests, debugging); None = every shape.
    train_per_class: int | None = None
    test_per_class: int | None = None


@dataclass
class TeacherSection:
    text: str = "minilm"
    image: str = "efficientnet-lite0"
    views: int = 4
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
    # "learned": a trainable text projection (SPEC §4). "identity": the 3D embedding lives in the
    # text teacher's space itself (needs model.out_dim == text dim); with few training classes a
    # learned projection is only constrained on their span, so unseen names can map anywhere.
    text_proj: str = "learned"


def _default_train() -> TrainConfig:
    return TrainConfig(
        epochs=12,
        batch_size=32,
        lr=2e-3,
        weight_decay=1e-4,
        warmup_epochs=1,
        ckpt_every_steps=100,
        select_metric="val/score",
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
    evaluate_test: bool = True
    energy: bool = True


# ----------------------------------------------------------------------------- data wiring
class _Subset:
    """Index view of a dataset (keeps `set_epoch` and the sample dict protocol)."""

    def __init__(self, base: Any, indices: np.ndarray) -> None:
        self.base, self.indices = base, np.asarray(indices, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict[str, Any]:
        s = self.base[int(self.indices[i])]
        s["index"] = int(i)
        return s

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.base, "set_epoch"):
            self.base.set_epoch(epoch)


class AlignmentSet(_Subset):
    """Training triplets: an (augmented) cloud, one rendered view's image embedding, one prompt's text.

    The view and the prompt template are drawn per sample from (seed, epoch, index), so the choice
    is reproducible and independent of workers, like the point augmentations.
    """

    def __init__(
        self,
        base: Any,
        indices: np.ndarray,
        image_emb: np.ndarray,
        text_emb: Tensor,
        class_rows: dict[int, int],
        seed: int = 0,
    ) -> None:
        super().__init__(base, indices)
        if len(image_emb) != len(self.indices):
            raise ValueError(f"{len(image_emb)} image embeddings for {len(self.indices)} training shapes")
        self.image_emb, self.text_emb, self.class_rows, self.seed = image_emb, text_emb, class_rows, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        self.epoch = int(epoch)

    def __getitem__(self, i: int) -> dict[str, Any]:
        s = super().__getitem__(i)
        rng = np.random.default_rng([self.seed, self.epoch, int(i), 7])
        v = int(rng.integers(self.image_emb.shape[1]))
        t = int(rng.integers(self.text_emb.shape[1]))
        s["image_emb"] = np.array(self.image_emb[i, v], dtype=np.float32)
        s["text_emb"] = self.text_emb[self.class_rows[int(s["label"])], t].numpy()
        s["has_text"] = np.ones((), dtype=np.float32)
        return s


def _cap(idx: np.ndarray, labels: np.ndarray, per_class: int | None) -> np.ndarray:
    """The first `per_class` indices of each class (all when None)."""
    if not per_class:
        return idx
    keep = np.concatenate([idx[labels[idx] == c][:per_class] for c in np.unique(labels[idx])])
    return np.sort(keep)


def _pick_pseudo_unseen(seen: list[str], k: int, seed: int) -> list[str]:
    if not 0 <= k < len(seen):
        raise ValueError(f"data.pseudo_unseen must be in [0, {len(seen) - 1}], got {k}")
    rng = np.random.default_rng([seed, 1234])
    return sorted(rng.choice(seen, size=k, replace=False).tolist()) if k else []


@torch.no_grad()
def encode(model: nn.Module, dataset: Any, batch_size: int = 64, desc: str = "encode") -> Tensor:
    """Raw encoder outputs (N, D) for every sample of `dataset`, in eval mode, in order."""
    from svl.data import collate_points
    from svl.utils import progress

    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = []
    starts = range(0, len(dataset), batch_size)
    for a in progress(starts, desc=desc, leave=False):
        batch = collate_points([dataset[i] for i in range(a, min(a + batch_size, len(dataset)))])
        out.append(model(batch.to(device)).float().cpu())
    model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0)


def _labels(dataset: Any) -> np.ndarray:
    return np.asarray([dataset.base._labels[dataset.base.indices[j]] for j in dataset.indices])


# ----------------------------------------------------------------------------- the job
class PretrainJob:
    """Holds everything one pretraining run builds, so evaluation can reuse it after `fit`."""

    def __init__(self, cfg: PretrainConfig) -> None:
        from svl.data.datasets import build_dataset

        self.cfg = cfg
        self.out = Path(cfg.out_dir)
        seed_everything(cfg.seed)
        d = cfg.data
        if d.dataset != "modelnet40_zsl":
            raise ValueError(
                f"data.dataset={d.dataset!r}: the embedded zero-shot job runs on 'modelnet40_zsl' "
                "(OpenShape-format training data plugs in through svl.train.Trainer directly)"
            )
        kw = {"root": d.root, "seed": cfg.seed}
        self.train_aug = build_dataset(d.dataset, "train", num_points=d.num_points, augment=d.augment, **kw)
        self.train_plain = build_dataset(d.dataset, "train", **kw)
        self.val_plain = build_dataset(d.dataset, "val", **kw)
        self.classes = list(self.train_plain.classes)
        self.seen = list(self.train_plain.seen_classes)
        self.unseen = list(self.train_plain.unseen_classes)
        self.pseudo = _pick_pseudo_unseen(self.seen, d.pseudo_unseen, cfg.seed)
        self.trained = [c for c in self.seen if c not in self.pseudo]
        cid = {c: i for i, c in enumerate(self.classes)}
        trained_ids = {cid[c] for c in self.trained}

        tr_labels = self.train_plain.labels()
        self.train_idx = _cap(
            np.flatnonzero(np.isin(tr_labels, list(trained_ids))), tr_labels, d.train_per_class
        )
        # Validation: held-out shapes of trained classes + shapes of the pseudo-unseen classes
        # (never trained on), capped per class. No test shape is ever looked at before the end.
        va_labels = self.val_plain.labels()
        val_trained = np.flatnonzero(np.isin(va_labels, list(trained_ids)))
        calib = []
        for c in self.pseudo:
            idx = np.flatnonzero(tr_labels == cid[c])
            calib.append(np.random.default_rng([cfg.seed, cid[c]]).permutation(idx)[: d.calib_per_class])
        self.val_sets = [_Subset(self.val_plain, val_trained)]
        if calib:
            self.val_sets.append(_Subset(self.train_plain, np.sort(np.concatenate(calib))))
        self.val_labels = np.concatenate([_labels(s) for s in self.val_sets])
        self.val_classes = self.trained + self.pseudo
        log.info(
            "zero-shot split: %d trained classes (%d shapes), %d pseudo-unseen, %d unseen; val %d shapes",
            len(self.trained), len(self.train_idx), len(self.pseudo), len(self.unseen), len(self.val_labels),
        )  # fmt: skip

    # -- teachers ---------------------------------------------------------------------------
    def teacher_targets(self) -> None:
        from svl.eval.zeroshot import class_texts
        from svl.teachers import create_teacher, embed_dataset_views, load_templates

        t0 = time.perf_counter()
        tc = self.cfg.teacher
        self.text_teacher = create_teacher(tc.text)
        self.templates = load_templates()
        names = class_texts(self.classes, "names")
        prompts = [tpl.format(n) for n in names for tpl in self.templates]
        emb = self.text_teacher.embed_texts(prompts).view(len(names), len(self.templates), -1)
        self.prompt_emb = emb  # (40, templates, Dt) for every class; training reads trained rows only
        self.name_emb = torch.nn.functional.normalize(emb.mean(1), dim=-1)
        self.desc_emb = self.text_teacher.embed_texts(class_texts(self.classes, "descriptions"))
        log.info(
            "text teacher %s: %d prompts in %.1fs",
            self.text_teacher.id,
            len(prompts),
            time.perf_counter() - t0,
        )
        t0 = time.perf_counter()
        views = _Subset(self.train_plain, self.train_idx)
        self.image_emb = embed_dataset_views(
            views, teacher=tc.image, num_views=tc.views, batch_size=tc.image_batch_size
        )
        self.image_dim = int(self.image_emb.shape[-1])
        log.info(
            "image teacher %s: %s in %.1fs", tc.image, tuple(self.image_emb.shape), time.perf_counter() - t0
        )

    # -- model ------------------------------------------------------------------------------
    def model_cfg(self) -> dict[str, Any]:
        m = self.cfg.model
        cfg: dict[str, Any] = {"out_dim": m.out_dim, "T": m.T, "D": m.D}
        if m.name.startswith("e3dsnn"):
            cfg["voxel_size"] = m.voxel_size
        return cfg

    def build_model(self) -> nn.Module:
        from svl.models import create_model
        from svl.train.losses import TripleAlignment

        lc = self.cfg.loss
        if lc.text_proj not in ("learned", "identity"):
            raise ValueError(f"loss.text_proj must be 'learned' or 'identity', got {lc.text_proj!r}")
        text_dim = int(self.prompt_emb.shape[-1])
        if lc.text_proj == "identity" and self.cfg.model.out_dim != text_dim:
            raise ValueError(
                f"loss.text_proj=identity needs model.out_dim == the text teacher's dim ({text_dim}), "
                f"got model.out_dim={self.cfg.model.out_dim}"
            )
        encoder = create_model(self.cfg.model.name, **self.model_cfg())
        model = TripleAlignment(
            encoder,
            text_dim=text_dim,
            image_dim=self.image_dim,
            logit_scale_init=lc.logit_scale_init,
            learn_scale=lc.learn_scale,
            l_text=lc.l_text,
            l_image=lc.l_image,
            l_mse=lc.l_mse,
        )
        if lc.text_proj == "identity":
            with torch.no_grad():
                model.text_proj.weight.copy_(torch.eye(text_dim))
                model.text_proj.bias.zero_()
            model.text_proj.requires_grad_(False)
        return model

    def meta(self) -> dict[str, Any]:
        m = self.cfg.model
        return {
            "kind": "svl-pretrain",
            "model": m.name,
            "model_cfg": self.model_cfg(),
            "teachers": {"text": self.cfg.teacher.text, "image": self.cfg.teacher.image},
            "contract": {
                "gravity_axis": "z",
                "color": "none",
                "num_points": self.cfg.data.num_points,
                "voxel_size": m.voxel_size,
                "T": m.T,
                "D": m.D,
                "teacher": self.cfg.teacher.text,
                "embed_dim": m.out_dim,
            },
            "zsl": {"trained_classes": self.trained, "pseudo_unseen_classes": self.pseudo},
        }

    # -- validation -------------------------------------------------------------------------
    def _val_scores(self, model: nn.Module, class_emb: Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Folded-head-equivalent scores (raw embedding . W) over trained + pseudo-unseen classes."""
        z = torch.cat([encode(model.encoder, s, desc="val") for s in self.val_sets])
        rows = [self.classes.index(c) for c in self.val_classes]
        with torch.no_grad():
            W = model.embed_text(class_emb[rows])
        labels = np.asarray([self.val_classes.index(self.classes[y]) for y in self.val_labels])
        return (z @ W.T).numpy(), labels

    def val_fn(self, model: nn.Module) -> dict[str, float]:
        from svl.eval.zeroshot import class_mean_accuracy, gzsl_metrics

        s, y = self._val_scores(model, self.name_emb)
        k = len(self.trained)
        tr = y < k
        out = {"seen_top1": float((s[tr, :k].argmax(1) == y[tr]).mean())}
        if self.pseudo:
            ps = ~tr
            out["pseudo_unseen_top1"] = float((s[ps, k:].argmax(1) == (y[ps] - k)).mean())
            out["pseudo_unseen_mean"] = class_mean_accuracy(s[ps, k:].argmax(1), y[ps] - k, len(self.pseudo))
            out["gzsl_H_uncalibrated"] = gzsl_metrics(s, y, np.arange(len(self.val_classes)) < k)["H"]
            out["score"] = 0.5 * (out["seen_top1"] + out["pseudo_unseen_top1"])
        else:
            out["score"] = out["seen_top1"]
        return out

    # -- training ---------------------------------------------------------------------------
    def fit(self, resume: bool | str = False) -> dict[str, Any]:
        from svl.data import collate_points
        from svl.train.trainer import Trainer

        self.teacher_targets()
        rows = {self.classes.index(c): self.classes.index(c) for c in self.trained}
        train_set = AlignmentSet(
            self.train_aug, self.train_idx, self.image_emb, self.prompt_emb, rows, seed=self.cfg.seed
        )
        self.model = self.build_model()
        batch_sampler_fn = None
        if self.cfg.loss.hard_negatives:
            from svl.train.sampler import KNNGroupedBatchSampler

            feats = np.asarray(self.image_emb, dtype=np.float32).mean(1)

            def batch_sampler_fn(rank: int, world: int) -> Any:
                tc = self.cfg.train
                return KNNGroupedBatchSampler(
                    feats, tc.batch_size, self.cfg.loss.hard_negative_group, tc.seed, rank, world
                )

        self.trainer = Trainer(
            self.model,
            train_set,
            collate_points,
            self.cfg.train,
            self.out,
            val_fn=self.val_fn,
            checkpoint_meta=self.meta(),
            batch_sampler_fn=batch_sampler_fn,
        )
        return self.trainer.fit(resume=resume)

    # -- final evaluation -------------------------------------------------------------------
    def evaluate(self, summary: dict[str, Any]) -> dict[str, Any]:
        """Calibrate on validation, then report ZSL / GZSL on the test split via the folded head."""
        from svl.checkpoint import load_checkpoint, load_state_into, save_checkpoint
        from svl.data.datasets import build_dataset
        from svl.eval.zeroshot import choose_calibration, gzsl_metrics, topk_accuracy
        from svl.models.heads import build_class_weights, fold_head, save_head, templates_hash
        from svl.utils import file_sha256

        best = summary.get("best_path") or summary["last"]
        tensors, meta = load_checkpoint(best)
        model = self.model
        load_state_into(model, tensors, where=best)
        model.eval()
        k = len(self.trained)
        val_mask = np.arange(len(self.val_classes)) < k
        modes = {"names": self.name_emb, "descriptions": self.desc_emb}
        gammas = {}
        for mode, emb in modes.items():
            s, y = self._val_scores(model, emb)
            gammas[mode] = choose_calibration(s, y, val_mask) if self.pseudo else 0.0
        meta = dict(meta)
        meta["zsl"] = {
            **meta.get("zsl", {}),
            "gamma": gammas["names"],
            "gamma_descriptions": gammas["descriptions"],
        }
        final = self.out / "final.safetensors"
        save_checkpoint(final, tensors, meta)
        sha = file_sha256(final)

        result: dict[str, Any] = {"checkpoint": str(final), "best_step": summary.get("best_step")}
        if not self.cfg.evaluate_test:
            return result
        test = build_dataset(self.cfg.data.dataset, "test", root=self.cfg.data.root, seed=self.cfg.seed)
        if self.cfg.data.test_per_class:
            all_y = test.labels()
            test = _Subset(test, _cap(np.arange(len(all_y)), all_y, self.cfg.data.test_per_class))
            y = all_y[test.indices]
        else:
            y = test.labels()
        seen_mask = np.array([c in self.trained for c in self.classes])
        bench_seen = np.array([c in self.seen for c in self.classes])
        unseen_rows = [self.classes.index(c) for c in self.unseen]
        is_unseen = np.isin(y, unseen_rows)
        heads: dict[str, nn.Module] = {}
        for mode, emb in modes.items():
            W = build_class_weights(tensors, emb)
            folded = fold_head(_clone_encoder(model.encoder), W)
            heads[mode] = folded
            t0 = time.perf_counter()
            scores = encode(folded, test, desc=f"test ({mode})").numpy()
            secs = time.perf_counter() - t0
            # Cosine reference: the folded head must pick the same class as similarity against W.
            z = encode(model.encoder, test, desc="test (reference)")
            cos = torch.nn.functional.normalize(z, dim=-1) @ W.T
            agree = float((cos.argmax(1).numpy() == scores.argmax(1)).mean())
            tmpl = self.templates if mode == "names" else ["{}"]
            head_meta = {
                "class_names": self.classes,
                "class_texts": list(self.classes),
                "teacher": self.text_teacher.id,
                "templates_hash": templates_hash(tmpl),
                "num_templates": len(tmpl),
                "text_mode": mode,
                "encoder_sha256": sha,
                "encoder_checkpoint": final.name,
                "model": meta["model"],
                "model_cfg": meta["model_cfg"],
            }
            save_head(self.out / f"head_modelnet40_{mode}.safetensors", folded.head, W, head_meta)
            zs = scores[is_unseen][:, unseen_rows]
            zs_y = np.searchsorted(unseen_rows, y[is_unseen])
            zsl = topk_accuracy(zs, zs_y, (1, 3, 5))
            # Seen/unseen are the benchmark's 30/10 classes; the bias goes on the trained classes.
            g0 = gzsl_metrics(scores, y, bench_seen, 0.0, bias_mask=seen_mask)
            g1 = gzsl_metrics(scores, y, bench_seen, gammas[mode], bias_mask=seen_mask)
            result[mode] = {
                "zsl_top1": zsl["top1"],
                "zsl_top3": zsl.get("top3"),
                "zsl_top5": zsl.get("top5"),
                "gzsl": g0,
                "gzsl_calibrated": g1,
                "gamma": gammas[mode],
                "folded_vs_cosine_agreement": agree,
                "test_seconds": secs,
            }
        if self.cfg.energy:  # the deployed path: spiking encoder + folded 40-way head
            result["energy"] = self._energy(heads["names"], test)
        return result

    def _energy(self, encoder: nn.Module, test: Any) -> dict[str, float]:
        from svl.data import collate_points
        from svl.energy import measure_energy

        batch = collate_points([test[i] for i in range(0, len(test), max(1, len(test) // 16))][:16])
        rep = measure_energy(encoder.eval(), batch.to(next(encoder.parameters()).device))
        return {
            "energy_snn_mj": rep.energy_snn_mj,
            "energy_ann_mj": rep.energy_ann_mj,
            "ratio": rep.ratio,
            "sops": rep.sops,
            "ann_flops": rep.ann_flops,
        }


def _clone_encoder(encoder: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(encoder).eval()


def format_results(result: dict[str, Any]) -> str:
    """The result table printed at the end of `svl pretrain`."""
    lines = ["", "Zero-shot on ModelNet40 (test split; unseen = the 10 ModelNet10 classes)", ""]
    hdr = (
        f"{'text':<13}{'ZSL top-1':>10}{'top-5':>8}   {'GZSL seen':>9}{'unseen':>8}{'H':>7}   "
        f"{'calibrated: seen':>16}{'unseen':>8}{'H':>7}{'gamma':>8}"
    )
    lines += [hdr, "-" * len(hdr)]
    for mode in ("names", "descriptions"):
        r = result.get(mode)
        if not r:
            continue
        g0, g1 = r["gzsl"], r["gzsl_calibrated"]
        lines.append(
            f"{mode:<13}{100 * r['zsl_top1']:>10.2f}{100 * (r['zsl_top5'] or 0):>8.2f}   "
            f"{100 * g0['seen']:>9.2f}{100 * g0['unseen']:>8.2f}{100 * g0['H']:>7.2f}   "
            f"{100 * g1['seen']:>16.2f}{100 * g1['unseen']:>8.2f}{100 * g1['H']:>7.2f}{r['gamma']:>8.3f}"
        )
    if "energy" in result:
        e = result["energy"]
        lines += [
            "",
            f"energy per cloud: SNN {e['energy_snn_mj']:.4f} mJ vs ANN-equivalent "
            f"{e['energy_ann_mj']:.4f} mJ (ratio {e['ratio']:.3f})",
        ]
    if "names" in result:
        agree = 100 * result["names"]["folded_vs_cosine_agreement"]
        lines.append(f"folded Rep-VLI head vs cosine argmax agreement: {agree:.2f}%")
    lines.append(f"checkpoint: {result.get('checkpoint')}")
    return "\n".join(lines)


def run_pretrain(cfg: PretrainConfig, resume: bool | str = False) -> dict[str, Any]:
    """Pretrain, calibrate, evaluate; writes config.yaml, results.json and head files into out_dir."""
    from svl.config import save_config
    from svl.train import distributed as D

    t0 = time.perf_counter()
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    job = PretrainJob(cfg)
    summary = job.fit(resume=resume)
    result: dict[str, Any] = {"train": summary}
    if D.is_main():
        result.update(job.evaluate(summary))
        result["wall_seconds"] = time.perf_counter() - t0
        with atomic_write(out / "results.json", "w") as fh:
            json.dump(_jsonable(result), fh, indent=2)
    return result


def _jsonable(o: Any) -> Any:
    if isinstance(o, float) and not math.isfinite(o):
        return None
    if isinstance(o, dict):
        return {str(k): _jsonable(v) for k, v in o.items()}
    if isinstance(o, list | tuple):
        return [_jsonable(v) for v in o]
    if isinstance(o, np.generic):
        return o.item()
    return o


__all__ = ["PretrainConfig", "PretrainJob", "run_pretrain", "format_results", "encode", "asdict"]
