"""Pretraining on any aligned dataset: clouds paired with texts and images (docs/SPEC.md §4).

`svl pretrain data.dataset=NAME` with any dataset other than the embedded `modelnet40_zsl` runs
this recipe (`PretrainTask` picks it). Targets come either precomputed with every sample (the
OpenShape release: OpenCLIP text and image features, one text source and one view drawn per
sample and epoch) or from the offline teachers (a user's folder of files with captions: the text
teacher embeds the captions, the image teacher embeds rendered views; both cached).

Checkpoints are selected on held-out training pairs (3D -> text / image retrieval), never on a test
split. Zero-shot sets (`zeroshot:` in the config) are classified during training for the curves
and at the end through the folded Rep-VLI head; their class embeddings come from a class-name
feature file (OpenShape's `cat_name_pt_feat.npy`: no text tower at all) or from the text teacher.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from svl.checkpoint import load_checkpoint, load_state_into, read_checkpoint_meta, save_checkpoint
from svl.data import build_dataset, collate_points
from svl.data.splits import Subset, cap_per_class
from svl.energy import energy_line
from svl.eval.zeroshot import class_mean_accuracy, topk_accuracy
from svl.infer import encode
from svl.models.heads import build_class_weights, fold_head, head_metadata, save_head
from svl.tasks.base import Task, TrainParts, register_task
from svl.tasks.pretrain import PretrainConfig, PretrainTask, ViewTargets, ZeroShotSet
from svl.teachers import create_teacher
from svl.utils import get_logger, seed_everything
from svl.vocab import class_embeddings, display_name, load_templates

__all__ = ["AlignedPretrainTask", "CaptionTargets", "load_class_features"]

log = get_logger(__name__)


class CaptionTargets(ViewTargets):
    """Adds teacher targets to samples that carry a caption id: its text embedding and a view's
    image embedding (`image_emb` rows follow the base dataset). `text_emb=None`: image targets only."""

    def __init__(
        self, base: Any, indices: np.ndarray, text_emb: np.ndarray | None, image_emb: np.ndarray,
        seed: int = 0, view_target: str = "random",
    ) -> None:  # fmt: skip
        super().__init__(base, indices, seed, view_target)
        self.text_emb, self.image_emb = text_emb, image_emb

    def __getitem__(self, i: int) -> dict[str, Any]:
        s = super().__getitem__(i)
        s["image_emb"], _ = self._image_target(i, self.image_emb[int(self.indices[i])])
        if self.text_emb is None:
            s["text_emb"], s["has_text"] = np.zeros(1, np.float32), np.zeros((), np.float32)
            return s
        s["text_emb"] = np.array(self.text_emb[int(s["text_id"])], np.float32)
        s["has_text"] = np.ones((), dtype=np.float32)
        return s


def load_class_features(path: str | Path, num_classes: int, dim: int | None) -> Tensor:
    """(K, D) class-name text features from a .npy file (OpenShape's `cat_name_pt_feat.npy` layout)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"class features file {p} does not exist")
    try:
        arr = np.load(p, allow_pickle=False)
    except Exception as e:  # noqa: BLE001 - any unreadable file is bad input
        raise ValueError(f"{p}: not a numeric .npy array ({type(e).__name__}: {e})") from None
    arr = np.asarray(arr, dtype=np.float32)
    if arr.ndim != 2 or arr.shape[0] != num_classes:
        raise ValueError(f"{p}: expected ({num_classes}, D) class features, got shape {arr.shape}")
    if dim is not None and arr.shape[1] != dim:
        raise ValueError(f"{p}: class features are {arr.shape[1]}-d but the text targets are {dim}-d")
    if not np.isfinite(arr).all():
        raise ValueError(f"{p}: class features hold NaN/inf values")
    return torch.nn.functional.normalize(torch.from_numpy(arr), dim=-1)


def _set_name(zs: ZeroShotSet) -> str:
    return zs.name or zs.dataset


@register_task("pretrain_aligned")
class AlignedPretrainTask(PretrainTask):
    """MTA on (cloud, text, image) pairs of any registered dataset; see the module docstring."""

    # -- data ----------------------------------------------------------------------------------
    def __init__(self, cfg: PretrainConfig) -> None:

        Task.__init__(self, cfg)
        seed_everything(cfg.seed)
        d = cfg.data
        kw = {"root": d.root, "seed": cfg.seed, **dict(d.options)}
        self.train_aug = build_dataset(
            d.dataset, "train", num_points=d.num_points, augment=d.augment,
            extra_augment=d.augment_extra, **kw,
        )  # fmt: skip
        self.train_plain = build_dataset(d.dataset, "train", num_points=d.num_points, **kw)
        self.precomputed = bool(getattr(self.train_plain, "provides_targets", False))
        # No texts and no stored targets: image-only alignment (rendered views + MSE), which never
        # reads a label or a class name: the label-free pretraining of the fine-tuning protocols.
        self.image_only = not self.precomputed and not hasattr(self.train_plain, "texts")
        if self.image_only and (cfg.loss.l_text > 0 or cfg.zeroshot):
            raise ValueError(
                f"data.dataset={d.dataset!r} has no captions or stored teacher targets: pretrain on it "
                "image-only (loss.l_text=0, no zeroshot sets), or use a dataset with texts "
                "(like 'captions') or targets (like 'openshape')"
            )
        self._split(len(self.train_plain))
        names = [_set_name(z) for z in cfg.zeroshot]
        if len(set(names)) != len(names):
            raise ValueError(f"zeroshot: two sets share a name in {names}; give them distinct `name`s")
        self._check_selection(names)
        self.zs_sets = {_set_name(z): (z, self._zeroshot_data(z)) for z in cfg.zeroshot}
        self.feat_dim = self.train_plain.check() if d.check and hasattr(self.train_plain, "check") else None
        self.announce(
            log,
            "aligned pretraining on %s: %d training pairs, %d held out for validation; zero-shot sets: %s",
            d.dataset, len(self.train_idx), len(self.val_idx), ", ".join(names) or "none",
        )  # fmt: skip

    def _split(self, n: int) -> None:
        """A seeded held-out slice of the training pairs for validation and checkpoint selection."""
        d = self.cfg.data
        if n < 2:
            raise ValueError(f"data.dataset={d.dataset!r}: {n} training pair(s); need at least 2")
        if not 0 < d.val_fraction < 1:
            raise ValueError(f"data.val_fraction must be in (0, 1), got {d.val_fraction}")
        perm = np.random.default_rng([self.cfg.seed, 4321]).permutation(n)
        n_val = int(min(max(1, round(n * d.val_fraction)), d.val_max, n - 1))
        self.val_idx, self.train_idx = np.sort(perm[:n_val]), np.sort(perm[n_val:])
        if d.max_train:
            self.train_idx = self.train_idx[: d.max_train]

    def _check_selection(self, names: list[str]) -> None:
        metric = self.cfg.train.select_metric or ""
        for z in self.cfg.zeroshot:
            if metric.startswith(f"zeroshot/{_set_name(z)}_") and z.split == "test":
                raise ValueError(
                    f"train.select_metric={metric!r} would pick checkpoints on a test split "
                    f"({z.dataset}/{z.split}); select on 'val/score' or a zero-shot set's validation split"
                )

    def _zeroshot_data(self, z: ZeroShotSet) -> tuple[Any, np.ndarray, list[str], list[int]]:
        """(shapes, labels, class names, their rows in the dataset's class list); `z.classes`
        restricts the set to those classes (e.g. the unseen ones) and scores only among them."""

        n = self.cfg.data.num_points
        opts = dict(z.options)
        ds = build_dataset(z.dataset, z.split, root=z.root, num_points=n, seed=self.cfg.seed, **opts)
        y, classes = ds.labels(), list(ds.classes)
        rows = list(range(len(classes)))
        if z.classes:
            unknown = [c for c in z.classes if c not in classes]
            if unknown:
                raise ValueError(f"zeroshot set {_set_name(z)!r}: {unknown} are not classes of {z.dataset}")
            rows = [classes.index(c) for c in z.classes]
        idx = np.flatnonzero(np.isin(y, rows))
        idx = cap_per_class(idx, y, z.per_class)
        lut = np.full(len(classes), -1)
        lut[rows] = np.arange(len(rows))
        return Subset(ds, idx), lut[y[idx]], [classes[r] for r in rows], rows

    # -- teachers ------------------------------------------------------------------------------
    def teacher_targets(self) -> None:
        """Caption and view embeddings (teacher data), then every zero-shot set's class embeddings."""

        tc = self.cfg.teacher
        self.text_teacher = None if tc.text in ("none", "", None) else create_teacher(tc.text)
        if self.precomputed:
            s = self.train_plain[int(self.train_idx[0])]
            self.text_dim, self.image_dim = int(np.size(s["text_emb"])), int(np.size(s["image_emb"]))
        else:
            from svl.teachers import embed_dataset_views
            from svl.teachers.store import embed_texts_cached

            if self.text_teacher is None and not self.image_only:
                raise ValueError("teacher.text=none: captions need a text teacher (e.g. teacher.text=minilm)")
            t0 = time.perf_counter()
            self.caption_emb = None
            if not self.image_only:
                self.caption_emb = embed_texts_cached(self.text_teacher, self.train_plain.texts)
            self.view_emb = embed_dataset_views(
                self.train_plain, teacher=tc.image, num_views=tc.views, batch_size=tc.image_batch_size,
                size=tc.view_size,
            )  # fmt: skip
            self.image_dim = int(self.view_emb.shape[-1])
            self.text_dim = 1 if self.caption_emb is None else int(self.caption_emb.shape[1])
            n_cap = 0 if self.caption_emb is None else len(self.caption_emb)
            log.info("teacher targets: %d captions, %s views in %.1fs", n_cap,
                     tuple(self.view_emb.shape), time.perf_counter() - t0)  # fmt: skip
        self.templates = None
        self.class_emb = {n: self._class_embeddings(z, *data) for n, (z, data) in self.zs_sets.items()}

    def _class_embeddings(
        self, z: ZeroShotSet, ds: Subset, _y: Any, classes: list[str], rows: list[int]
    ) -> Tensor:
        if z.class_feats:  # rows of the file follow the dataset's full class list
            return load_class_features(z.class_feats, len(ds.base.classes), self.text_dim)[rows]
        if self.text_teacher is None:
            raise ValueError(
                f"zeroshot set {_set_name(z)!r}: no class_feats file and teacher.text=none; give one of them"
            )

        self.templates = load_templates()
        emb = class_embeddings(self.text_teacher, [display_name(c) for c in classes], self.templates)
        if emb.shape[1] != self.text_dim:
            raise ValueError(
                f"zeroshot set {_set_name(z)!r}: teacher.text={self.cfg.teacher.text!r} gives "
                f"{emb.shape[1]}-d class embeddings but the training text targets are {self.text_dim}-d; "
                "use the teacher that made the features, or a class_feats file"
            )
        return emb

    # -- model ---------------------------------------------------------------------------------
    def _train_views(self, idx: np.ndarray, base: Any, view_target: str) -> Any:
        if self.precomputed:
            return Subset(base, idx)
        return CaptionTargets(base, idx, self.caption_emb, self.view_emb, self.cfg.seed, view_target)

    def setup(self) -> TrainParts:

        self.teacher_targets()
        self.prompt_emb = torch.zeros(1, 1, self.text_dim)  # build_model reads the text dimension only
        self.train_set = self._train_views(self.train_idx, self.train_aug, self.cfg.teacher.view_target)
        self.val_set = self._train_views(self.val_idx, self.train_plain, "mean")
        self.model = self.build_model()
        return TrainParts(self.model, self.train_set, collate_points, self.meta())

    def meta(self) -> dict[str, Any]:
        meta = self.model_meta()
        if self.train_plain[int(self.train_idx[0])].get("rgb") is not None:
            meta["contract"]["color"] = "rgb01"  # trained on coloured clouds (OpenShape: xyz + rgb)
        meta["data"] = {"dataset": self.cfg.data.dataset, "precomputed_targets": self.precomputed}
        return meta

    # -- validation ----------------------------------------------------------------------------
    @torch.no_grad()
    def _val_targets(self) -> tuple[Tensor, Tensor, Tensor]:

        t, i, h = [], [], []
        for a in range(0, len(self.val_set), 256):
            b = collate_points([self.val_set[k] for k in range(a, min(a + 256, len(self.val_set)))])
            t.append(b.extras["text_emb"])
            i.append(b.extras["image_emb"])
            h.append(b.extras.get("has_text", torch.ones(len(b.extras["text_emb"]))).bool())
        return torch.cat(t), torch.cat(i), torch.cat(h)

    def validate(self, model: nn.Module) -> dict[str, float]:
        """Held-out pairs: 3D -> text and 3D -> image retrieval top-1 (val/score = their mean), plus
        zero-shot top-1 on every set with during_training (logged under zeroshot/, not selected on)."""
        if not hasattr(self, "_val_cache"):
            self._val_cache = self._val_targets()
        text, image, has = self._val_cache
        z = torch.nn.functional.normalize(encode(model.encoder, self.val_set, desc="val"), dim=-1)
        with torch.no_grad():
            t, im = model.embed_text(text), model.embed_image(image)
        rows = torch.arange(len(z))
        out = {"image_r1": float(((z @ im.T).argmax(1) == rows).float().mean())}
        if has.any():
            zt = z[has] @ t[has].T
            out["text_r1"] = float((zt.argmax(1) == torch.arange(int(has.sum()))).float().mean())
        out["score"] = float(np.mean([out["image_r1"], out.get("text_r1", out["image_r1"])]))
        for name, (zs, (ds, y, _, _)) in self.zs_sets.items():
            if zs.during_training:
                s = self._zs_scores(model, name, ds)
                out[f"zeroshot/{name}_top1"] = float((s.argmax(1) == y).mean())
        return out

    def _zs_scores(self, model: nn.Module, name: str, ds: Any) -> np.ndarray:
        z = encode(model.encoder, ds, desc=f"zero-shot {name}")
        with torch.no_grad():
            W = model.embed_text(self.class_emb[name])
        return (z @ W.T).numpy()

    # -- final evaluation ----------------------------------------------------------------------
    def evaluate(self, summary: dict[str, Any]) -> dict[str, Any]:
        """The weights the run ships -> final.safetensors; per zero-shot set a folded head and its scores."""

        path = summary["final_path"]
        tensors, meta = load_checkpoint(path)
        load_state_into(self.model, tensors, where=path)
        self.model.eval()
        final = self.out / "final.safetensors"
        save_checkpoint(final, tensors, meta)
        result: dict[str, Any] = {"checkpoint": str(final), "best_step": summary.get("best_step")}
        result["val"] = self.validate(self.model)
        result["zeroshot"] = {}
        heads = {}
        if not self.cfg.evaluate_test:
            return result
        for name, (zs, (ds, y, classes, _)) in self.zs_sets.items():
            W = build_class_weights(tensors, self.class_emb[name])
            folded = fold_head(copy.deepcopy(self.model.encoder).eval(), W)
            scores = encode(folded, ds, desc=f"{name} ({zs.split})").numpy()
            teacher = f"features:{Path(zs.class_feats).name}" if zs.class_feats else self.text_teacher.id
            tmpl = ["{}"] if zs.class_feats else self.templates
            ckpt_meta = read_checkpoint_meta(final)
            hmeta = head_metadata(classes, classes, teacher, tmpl, "names", final, ckpt_meta)
            save_head(self.out / f"head_{name}.safetensors", folded.head, W, hmeta)
            r = topk_accuracy(scores, y)
            r["class_mean"] = class_mean_accuracy(scores, y, len(classes))
            r.update(dataset=zs.dataset, split=zs.split, n=len(y), classes=len(classes))
            result["zeroshot"][name] = r
            heads[name] = (folded, ds)
        if self.cfg.energy and heads:
            folded, ds = next(iter(heads.values()))
            result["energy"] = self._energy(folded, ds)
        return result

    def format_results(self, result: dict[str, Any]) -> str:
        lines = ["", f"Aligned pretraining on {self.cfg.data.dataset}", ""]
        v = result.get("val", {})
        lines.append(
            f"validation (held-out pairs): 3D->text R@1 {100 * v.get('text_r1', float('nan')):.2f}   "
            f"3D->image R@1 {100 * v.get('image_r1', float('nan')):.2f}"
        )
        if result.get("zeroshot"):
            hdr = f"{'zero-shot set':<24}{'split':>8}{'n':>7}{'K':>6}"
            hdr += "".join(f"{h:>8}" for h in ("top-1", "top-3", "top-5", "mean"))
            lines += ["", hdr, "-" * len(hdr)]
            for name, r in result["zeroshot"].items():
                keys = ("top1", "top3", "top5", "class_mean")
                accs = "".join(f"{100 * (r.get(k) or 0):>8.2f}" for k in keys)
                lines.append(f"{name:<24}{r['split']:>8}{r['n']:>7}{r['classes']:>6}{accs}")
        if "energy" in result:
            lines += ["", energy_line(result["energy"], "cloud")]
        lines.append(f"checkpoint: {result.get('checkpoint')}")
        return "\n".join(lines)
