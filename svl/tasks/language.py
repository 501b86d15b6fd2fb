"""Task `language`: 3D captioning and question answering through the language bridge (PointLLM's recipe).

- Stage 1 (`stage=1`) aligns: the projector alone learns to turn the encoder's tokens into LM inputs,
  on caption conversations, with the LM frozen.
- Stage 2 (`stage=2 init=<stage-1 final.safetensors>`) instruction-tunes on every kind of question,
  the projector and the LM (LoRA through peft, or all of a small LM) together.
The encoder is frozen unless `tune_encoder=true`; frozen, its tokens are computed once per shape.

Data: `data.dataset=modelnet40` generates conversations from the ModelNet40 labels and svl's class
descriptions (`svl.data.instructions`): the training split's shapes with the training phrasings, the
test split's with held-out phrasings, so no test shape or test wording is seen. A PointLLM or ShapeLLM
conversation file (`data.dataset=path/to/file.json data.points_dir=...`) trains on public data unchanged.

The LM: `lm.path=DIR` is any local Hugging Face causal LM. `lm.path=builtin` builds a small Llama-layout
LM and a BPE tokenizer from the training conversations' text and pretrains it on that text first
(cached by corpus and settings), so the stages start from a model that can write the vocabulary: a
pipeline check on this machine, not a language model of the field's size.

Results: `gen_cls_acc` (PointLLM's generative classification, by class-name matching:
`svl.data.instructions.generative_correct`), exact match on yes/no and multiple choice, caption
similarity to the reference description (MiniLM sentence embeddings), answer length, a linear probe on
the same frozen global features (what the encoder knows, for comparison), the encoder's energy per
object and the LM's FLOPs per generated token, reported apart.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from svl.data import build_dataset, load_points, prepare
from svl.data.instructions import (
    Conversation,
    exact_match,
    generative_correct,
    modelnet40_conversations,
    read_conversations,
)
from svl.data.splits import Subset, cap_per_class, stratified_holdout
from svl.energy import energy_per_sample
from svl.models import create_model
from svl.models.language import (
    IGNORE_INDEX,
    LANGUAGE_KIND,
    LM_TUNE,
    PointLanguageModel,
    batch_points,
    bridge_meta,
    build_small_lm,
    lm_flops_per_token,
    load_bridge,
    load_lm,
    render_text,
    save_lm,
)
from svl.models.loading import read_meta
from svl.tasks.base import SCRATCH, ModelSection, Task, TrainParts, register_task
from svl.train.trainer import TrainConfig
from svl.utils import atomic_write, cache_dir, get_logger, progress

__all__ = ["LanguageConfig", "LanguageTask"]

log = get_logger(__name__)
KINDS = ("caption", "what", "yesno", "choice")


@dataclass
class LanguageData:
    dataset: str = "modelnet40"  # generated from the labels, or a PointLLM / ShapeLLM conversation JSON
    root: str | None = None
    points_dir: str | None = None  # the point files a conversation JSON names (default: its folder)
    format: str = "auto"  # conversation JSON: auto | pointllm | shapellm
    num_points: int = 1024
    kinds: list[str] = field(default_factory=lambda: list(KINDS))  # stage 2; stage 1 trains captions
    per_shape: int = 1  # conversations per shape and kind
    train_templates: int | None = None  # the first N training wordings per kind (None: all 10)
    train_per_class: int | None = None  # quick runs
    test_per_class: int | None = None
    val_fraction: float = 0.05  # training shapes held out for val/loss (never the test split)
    val_seed: int = 0


@dataclass
class LMSection:
    path: str = "builtin"  # a local Hugging Face causal LM folder, or "builtin" (see the module docstring)
    tune: str = "auto"  # frozen | lora | full; auto: stage 1 frozen, stage 2 lora (full for builtin)
    lora_r: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    lora_targets: str = "all-linear"
    # builtin LM: size and its pretraining on the corpus text
    vocab_size: int = 1000
    hidden: int = 128
    layers: int = 2
    heads: int = 4
    context: int = 256
    pretrain_epochs: int = 4
    pretrain_lr: float = 3e-3
    seed: int = 0


@dataclass
class LanguageEval:
    max_new_tokens: int = 32
    temperature: float = 0.0  # 0 = greedy (the reported numbers)
    top_p: float = 1.0
    batch_size: int = 64
    probe: bool = True  # a linear probe on the same frozen global features, for comparison
    energy: bool = True


def _language_train() -> TrainConfig:
    return TrainConfig(epochs=3, batch_size=32, lr=1e-3, weight_decay=0.0, warmup_epochs=0.2,
                       log_every_steps=50, ckpt_every_steps=500)  # fmt: skip


@dataclass
class LanguageConfig:
    task: str = "language"
    stage: int = 1
    init: str = ""  # stage 1: an svl 3D checkpoint (or scratch); stage 2: the stage-1 checkpoint
    model: ModelSection = field(default_factory=ModelSection)
    tune_encoder: bool = False
    grid: int = 2  # region tokens = grid^3, plus the global embedding
    projector_hidden: int = 256
    lm: LMSection = field(default_factory=LMSection)
    data: LanguageData = field(default_factory=LanguageData)
    train: TrainConfig = field(default_factory=_language_train)
    eval: LanguageEval = field(default_factory=LanguageEval)
    out_dir: str = "runs/language"

    def __post_init__(self) -> None:
        if self.stage not in (1, 2):
            raise ValueError(
                f"stage must be 1 (caption alignment) or 2 (instruction tuning), got {self.stage}"
            )
        if self.lm.tune not in ("auto", *LM_TUNE):
            raise ValueError(f"lm.tune must be auto, frozen, lora or full, got {self.lm.tune!r}")
        if self.grid < 1:
            raise ValueError(f"grid must be >= 1, got {self.grid}")
        bad = sorted(set(self.data.kinds) - set(KINDS))
        if bad:
            raise ValueError(f"data.kinds: unknown {bad}; known: {list(KINDS)}")
        if self.data.num_points < 1:
            raise ValueError(f"data.num_points must be >= 1, got {self.data.num_points}")


# ----------------------------------------------------------------------------- datasets
class _Conversations:
    """(shape's points or tokens, conversation) pairs; `tokens` (sites, global) replace the points."""

    def __init__(self, convs: list[Conversation], shapes: Any, rows: list[int], tokens: Any = None) -> None:
        self.convs, self.shapes, self.rows, self.tokens = convs, shapes, rows, tokens
        self.base = shapes  # what `files_up_axis` reads through a view

    def __len__(self) -> int:
        return len(self.convs)

    def __getitem__(self, i: int) -> dict[str, Any]:
        r = self.rows[i]
        item: dict[str, Any] = {"turns": self.convs[i].turns}
        if self.tokens is not None:
            item["sites"], item["global"] = self.tokens[0][r], self.tokens[1][r]
        else:
            item["xyz"] = self.shapes[r]["xyz"]
        return item


def _collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"turns": [it["turns"] for it in items]}
    if "sites" in items[0]:
        out["sites"] = torch.stack([torch.as_tensor(it["sites"]) for it in items])
        out["global"] = torch.stack([torch.as_tensor(it["global"]) for it in items])
    else:
        out["points"] = batch_points(items)
    return out


class _FileShapes:
    """Point files named by a conversation JSON, read on access the way `svl classify` reads a file."""

    def __init__(self, files: list[Path], num_points: int, seed: int) -> None:
        self.files, self.num_points, self.seed = files, num_points, seed

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> dict[str, Any]:
        s = prepare(load_points(self.files[i]), None, num_points=self.num_points, seed=self.seed + i,
                    where=str(self.files[i]))  # fmt: skip
        return {"xyz": s["xyz"]}


@register_task("language")
class LanguageTask(Task):
    """Stage 1 / stage 2 of the language bridge; see the module docstring."""

    Config = LanguageConfig

    def __init__(self, cfg: LanguageConfig) -> None:
        super().__init__(cfg)
        torch.manual_seed(cfg.train.seed)
        self.init_meta = read_meta(cfg.init, "init") if cfg.init not in SCRATCH else {}
        if cfg.stage == 2 and self.init_meta.get("kind") != LANGUAGE_KIND:
            raise ValueError(
                f"stage=2 starts from a stage-1 checkpoint (init=<run>/final.safetensors of "
                f"`svl finetune task=language stage=1`); init={cfg.init or 'scratch'!r} is not one"
            )
        d = cfg.data
        self.tune = cfg.lm.tune if cfg.lm.tune != "auto" else (
            "frozen" if cfg.stage == 1 else ("full" if cfg.lm.path == "builtin" else "lora"))  # fmt: skip
        if cfg.stage == 1 and self.tune != "frozen":
            raise ValueError(f"stage 1 trains the projector alone: lm.tune must be frozen, got {self.tune!r}")
        kinds = ["caption"] if cfg.stage == 1 else list(d.kinds)
        if d.dataset == "modelnet40":
            self._modelnet40(kinds)
        else:
            self._conversation_file(kinds)

    # -- data ----------------------------------------------------------------------------------
    def _modelnet40(self, kinds: list[str]) -> None:
        d, seed = self.cfg.data, self.cfg.train.seed
        kw = {"root": d.root, "num_points": d.num_points, "seed": seed}
        train, test = build_dataset("modelnet40", "train", **kw), build_dataset("modelnet40", "test", **kw)
        self.classes = [c.replace("_", " ") for c in train.classes]
        y_tr, y_te = np.asarray(train.labels()), np.asarray(test.labels())
        tr_idx = cap_per_class(np.arange(len(y_tr)), y_tr, d.train_per_class)
        te_idx = cap_per_class(np.arange(len(y_te)), y_te, d.test_per_class)
        tr_idx, va_idx = stratified_holdout(y_tr, tr_idx, d.val_fraction, d.val_seed) if d.val_fraction else (
            tr_idx, np.zeros(0, np.int64))  # fmt: skip
        self.shapes = {"train": train, "test": test}
        self.labels = {"train": y_tr, "test": y_te}
        self.index = {"train": tr_idx, "val": va_idx, "test": te_idx}
        names = list(train.classes)
        gen = {"kinds": tuple(kinds), "per_shape": d.per_shape, "seed": seed, "templates": d.train_templates}
        keep_tr, keep_va, keep_te = set(tr_idx.tolist()), set(va_idx.tolist()), set(te_idx.tolist())
        # three disjoint sets of question wordings: training, validation (settings are chosen on
        # wordings the model never saw) and the held-out ones of the test
        self.convs = {
            "train": [c for c in modelnet40_conversations(y_tr, names, "train", **gen) if c.index in keep_tr],
            "val": [c for c in modelnet40_conversations(y_tr, names, "train", phrasings="val", seed=seed,
                                                        kinds=tuple(kinds)) if c.index in keep_va],
            "test": [c for c in modelnet40_conversations(y_te, names, "test", phrasings="heldout", seed=seed,
                                                         kinds=KINDS) if c.index in keep_te],
        }  # fmt: skip
        self.all_train_text = [render_text(c.turns) for c in modelnet40_conversations(
            y_tr[tr_idx], names, "train", seed=0, kinds=KINDS, per_shape=2, templates=d.train_templates)
        ]  # fmt: skip
        self.split_of = {"train": "train", "val": "train", "test": "test"}
        self.announce(
            log, "language stage %d on modelnet40: %d training shapes (%d conversations), %d validation, "
            "%d test shapes (%d conversations, held-out phrasings)", self.cfg.stage, len(tr_idx),
            len(self.convs["train"]), len(va_idx), len(te_idx), len(self.convs["test"]),
        )  # fmt: skip

    def _conversation_file(self, kinds: list[str]) -> None:
        d, seed = self.cfg.data, self.cfg.train.seed
        pairs = read_conversations(d.dataset, d.points_dir, format=d.format)
        if not pairs:
            raise ValueError(f"data.dataset: {d.dataset} holds no conversations")
        files = sorted({p for _, p in pairs})
        row = {p: i for i, p in enumerate(files)}
        shapes = _FileShapes(files, d.num_points, seed)
        convs = [c for c, _ in pairs]
        for c, p in pairs:
            c.index = row[p]
        g = np.random.default_rng(d.val_seed)
        order = g.permutation(len(files))
        n_val = int(round(d.val_fraction * len(files))) if len(files) > 1 else 0
        val_rows = set(order[:n_val].tolist())
        self.classes = []
        self.shapes = {"train": shapes, "test": shapes}
        self.labels = {"train": np.zeros(len(files), np.int64), "test": np.zeros(len(files), np.int64)}
        self.index = {"train": np.array(sorted(set(range(len(files))) - val_rows), np.int64),
                      "val": np.array(sorted(val_rows), np.int64), "test": np.zeros(0, np.int64)}  # fmt: skip
        self.convs = {"train": [c for c in convs if c.index not in val_rows],
                      "val": [c for c in convs if c.index in val_rows], "test": []}  # fmt: skip
        self.all_train_text = [render_text(c.turns) for c in self.convs["train"]]
        self.split_of = {"train": "train", "val": "train", "test": "test"}
        self.announce(log, "language stage %d on %s: %d conversations over %d point files (%d held out)",
                      self.cfg.stage, d.dataset, len(convs), len(files), len(val_rows))  # fmt: skip

    # -- model ---------------------------------------------------------------------------------
    def lm_path(self) -> Path:
        """The LM folder: the user's, or the builtin one (built and pretrained once per corpus)."""
        c = self.cfg.lm
        if c.path != "builtin":
            return Path(c.path).expanduser()
        spec = {k: v for k, v in asdict(c).items() if not k.startswith("lora") and k not in ("path", "tune")}
        text = sorted(set(self.all_train_text))
        h = hashlib.sha256(json.dumps([spec, text]).encode()).hexdigest()[:16]
        out = cache_dir("lm") / f"builtin-{h}"
        if not (out / "config.json").is_file():
            log.info("building the builtin language model (%d sentences) in %s", len(text), out)
            raw = build_small_lm(out.with_name(out.name + ".raw"), text, vocab_size=c.vocab_size,
                                 hidden=c.hidden, layers=c.layers, heads=c.heads, context=c.context,
                                 seed=c.seed)  # fmt: skip
            _pretrain_lm(raw, out, text, c)
        return out

    def build_encoder(self) -> nn.Module:
        m, init = self.cfg.model, self.cfg.init
        # an svl 3D checkpoint (pretraining or fine-tuned) builds the encoder it names, with its weights
        enc = (
            create_model(m.name, **m.builder_kwargs())
            if init in SCRATCH
            else create_model(None, pretrained=init)
        )
        if not all(hasattr(enc, a) for a in ("forward_features", "forward_head", "embed_dim_in")):
            raise ValueError(
                "the language bridge reads a 3D encoder's spike tokens; "
                f"{getattr(enc, 'model_name', m.name)} is not an E-3DSNN-style point encoder"
            )
        return enc

    def build_bridge(self) -> PointLanguageModel:
        c = self.cfg
        lora = {"r": c.lm.lora_r, "alpha": c.lm.lora_alpha, "dropout": c.lm.lora_dropout,
                "target_modules": c.lm.lora_targets}  # fmt: skip
        if c.stage == 2:
            prev = load_bridge(c.init)
            lm = prev.lm.merge_and_unload() if prev.lm_tune == "lora" else prev.lm
            self.lm_dir = Path(prev.meta["lm"]["path"])
            model = PointLanguageModel(prev.encoder, lm, prev.tokenizer, grid=prev.grid,
                                       hidden=prev.projector.sites[0].out_features,
                                       tune_encoder=c.tune_encoder,
                                       lm_tune=self.tune, lora=lora)  # fmt: skip
            model.projector.load_state_dict(prev.projector.state_dict())
            return model
        self.lm_dir = self.lm_path()
        lm, tok = load_lm(self.lm_dir)
        return PointLanguageModel(self.build_encoder(), lm, tok, grid=c.grid, hidden=c.projector_hidden,
                                  tune_encoder=c.tune_encoder, lm_tune=self.tune, lora=lora)  # fmt: skip

    def _tokens(self, split: str) -> tuple[Tensor, Tensor]:
        """The frozen encoder's (region tokens, global embedding) of every shape of a split, once."""
        ds = self.shapes[split]
        rows = sorted({c.index for s in ("train", "val", "test") if self.split_of[s] == split
                       for c in self.convs[s]})  # fmt: skip
        n, bs = len(ds), self.cfg.eval.batch_size
        K, C = self.model.grid**3, int(self.model.encoder.embed_dim_in)
        sites, glob = torch.zeros(n, K, C), torch.zeros(n, int(self.model.encoder.out_dim))
        enc = self.model.eval()
        with torch.no_grad():
            for a in progress(range(0, len(rows), bs), desc=f"encoder tokens ({split})", leave=False):
                r = rows[a : a + bs]
                s, g = enc.encoder_tokens(batch_points([ds[i] for i in r]))
                sites[r], glob[r] = s, g
        return sites, glob

    def setup(self) -> TrainParts:
        self.model = self.build_bridge()
        self.tokens = None
        if not self.cfg.tune_encoder:
            self.tokens = {s: self._tokens(s) for s in sorted(set(self.split_of.values()))
                           if any(self.split_of[k] == s and self.convs[k] for k in self.convs)}  # fmt: skip
        self.train_set = self._set("train")
        self.val_set = self._set("val") if self.convs["val"] else None
        meta = {**bridge_meta(self.model, self.lm_dir), "stage": self.cfg.stage, "class_names": self.classes,
                "init": self.cfg.init, "data": {"dataset": self.cfg.data.dataset, "input": "points",
                                                "num_points": self.cfg.data.num_points}}  # fmt: skip
        return TrainParts(self.model, self.train_set, _collate, meta)

    def _set(self, split: str) -> _Conversations:
        src = self.split_of[split]
        convs = self.convs[split]
        tokens = self.tokens.get(src) if self.tokens else None
        return _Conversations(convs, self.shapes[src], [c.index for c in convs], tokens)

    # -- validation and evaluation -------------------------------------------------------------
    @property
    def has_validation(self) -> bool:
        return self.val_set is not None

    @torch.no_grad()
    def validate(self, model: nn.Module) -> dict[str, float]:
        was = model.training
        model.eval()
        total, n = 0.0, 0
        bs = self.cfg.eval.batch_size
        for a in range(0, len(self.val_set), bs):
            items = [self.val_set[i] for i in range(a, min(a + bs, len(self.val_set)))]
            total += float(model(_collate(items))["loss"]) * len(items)
            n += len(items)
        out = {"val/loss": total / max(n, 1)}
        # generative classification on held-out training shapes ("what" questions; in stage 1 the
        # captions, which name the class first)
        labelled = [c for c in self.convs["val"] if c.label is not None]
        what = [c for c in labelled if c.kind == "what"] or [c for c in labelled if c.kind == "caption"]
        if what and self.classes:
            answers = self.answers(what, "train")
            out["val/gen_cls_acc"] = float(np.mean([generative_correct(a, c.label, self.classes)
                                                    for c, a in zip(what, answers)]))  # fmt: skip
        model.train(was)
        return out

    def answers(self, convs: Sequence[Conversation], split: str) -> list[str]:
        """Generated answers (the eval section's decoding) to each conversation's question."""
        e, ds = self.cfg.eval, _Conversations(list(convs), self.shapes[split], [c.index for c in convs],
                                               self.tokens.get(split) if self.tokens else None)  # fmt: skip
        out: list[str] = []
        for a in progress(range(0, len(ds), e.batch_size), desc="answering", leave=False):
            items = [ds[i] for i in range(a, min(a + e.batch_size, len(ds)))]
            out += self.model.generate(_collate(items), max_new_tokens=e.max_new_tokens,
                                       temperature=e.temperature, top_p=e.top_p)  # fmt: skip
        return out

    def evaluate(self, summary: dict[str, Any]) -> dict[str, Any]:
        from svl.checkpoint import load_checkpoint, load_state_into, save_checkpoint

        path = summary["final_path"]
        tensors, meta = load_checkpoint(path)
        load_state_into(self.model, tensors, where=path)
        final = self.out / "final.safetensors"
        save_checkpoint(final, tensors, meta)
        result: dict[str, Any] = {"checkpoint": str(final), "stage": self.cfg.stage, "lm": str(self.lm_dir),
                                  "lm_tune": self.tune}  # fmt: skip
        torch.manual_seed(self.cfg.train.seed)
        test = self.convs["test"]
        if test:
            result.update(self._score(test))
        if self.cfg.eval.probe and self.tokens and "test" in self.tokens and self.classes:
            result.update(self._probe())
        if self.cfg.eval.energy and test:
            result["energy_encoder"] = energy_per_sample(
                self.model.encoder, Subset(self.shapes["test"], self.index["test"])
            )
        result["lm_flops_per_token"] = lm_flops_per_token(self.model.lm, 64)
        return result

    def _score(self, convs: list[Conversation]) -> dict[str, Any]:
        answers = self.answers(convs, "test")
        # each answer judged once: class-name matching for "what", exact match for yes/no and choice
        judged = [
            generative_correct(a, c.label, self.classes) if c.kind == "what"
            else exact_match(a, c.answer) if c.kind in ("yesno", "choice") else None
            for c, a in zip(convs, answers)
        ]  # fmt: skip
        res: dict[str, Any] = {"n_test_conversations": len(convs)}
        for kind, key in (("what", "gen_cls_acc"), ("yesno", "yesno_em"), ("choice", "choice_em")):
            ok = [j for c, j in zip(convs, judged) if c.kind == kind]
            if ok:
                res[key] = float(np.mean(ok))
        res["n_gen_cls"] = sum(c.kind == "what" for c in convs)
        caps = [(c, a) for c, a in zip(convs, answers) if c.kind == "caption"]
        if caps:
            res["caption_similarity"] = _similarity([a for _, a in caps], [c.answer for c, _ in caps])
        res["answer_words"] = float(np.mean([len(a.split()) for a in answers])) if answers else 0.0
        with atomic_write(self.out / "answers.jsonl", "w") as fh:  # every answer, to read or re-score
            for c, a, ok in zip(convs, answers, judged):
                fh.write(json.dumps({"object_id": c.object_id, "kind": c.kind, "label": c.label,
                                     "question": c.question, "reference": c.answer, "answer": a,
                                     "correct": ok}) + "\n")  # fmt: skip
        res["examples"] = [{"kind": c.kind, "question": c.question, "reference": c.answer, "answer": a}
                           for c, a in list(zip(convs, answers))[:: max(1, len(convs) // 12)][:12]
                           ]  # fmt: skip
        return res

    def _probe(self) -> dict[str, float]:
        """Accuracy of a multinomial logistic regression (scikit-learn, standardised inputs) on the frozen
        global embeddings of the same training shapes: what the encoder's features hold, for comparison."""
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        tr, va, te = self.index["train"], self.index["val"], self.index["test"]
        g = self.tokens["train"][1].numpy()
        clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
        clf.fit(g[tr], self.labels["train"][tr])
        out = {
            "probe_acc": float(
                (clf.predict(self.tokens["test"][1].numpy()[te]) == self.labels["test"][te]).mean()
            )
        }
        if len(va):  # the same on the held-out training shapes: compare with val/gen_cls_acc
            out["probe_val_acc"] = float((clf.predict(g[va]) == self.labels["train"][va]).mean())
        return out

    def format_results(self, result: dict[str, Any]) -> str:
        lines = [
            f"language bridge, stage {result.get('stage')} (LM {result.get('lm_tune')}: {result.get('lm')})"
        ]
        for key, name in (("gen_cls_acc", "generative classification"),
                          ("probe_acc", "linear probe (same features)"),
                          ("yesno_em", "yes/no exact match"), ("choice_em", "multiple choice exact match"),
                          ("caption_similarity", "caption similarity (MiniLM cosine)")):  # fmt: skip
            if key in result:
                lines.append(f"{name:38s} {100 * result[key]:6.2f}" if key != "caption_similarity"
                             else f"{name:38s} {result[key]:6.3f}")  # fmt: skip
        if "answer_words" in result:
            lines.append(f"{'answer length (words)':38s} {result['answer_words']:6.2f}")
        if "energy_encoder" in result:
            e = result["energy_encoder"]
            lines.append(f"{'encoder energy per object':38s} {e['energy_snn_mj']:.4f} mJ "
                         f"(ANN equivalent {e['energy_ann_mj']:.4f} mJ)")  # fmt: skip
        if "lm_flops_per_token" in result:
            lines.append(
                f"{'LM FLOPs per generated token':38s} {result['lm_flops_per_token']:.3g} (not in the energy)"
            )
        for ex in result.get("examples", [])[:6]:
            lines.append(f"  Q: {ex['question']}  A: {ex['answer']}  (ref: {ex['reference']})")
        return "\n".join(lines)


def _similarity(a: list[str], b: list[str]) -> float:
    """Mean cosine of MiniLM sentence embeddings of generated vs reference captions."""
    from svl.teachers import create_teacher

    t = create_teacher("minilm")
    ea, eb = t.embed_texts(a), t.embed_texts(b)
    return float(torch.nn.functional.cosine_similarity(ea, eb, dim=-1).mean())


def _pretrain_lm(raw: Path, out: Path, texts: list[str], c: LMSection) -> None:
    """Causal-LM pretraining of the builtin model on the corpus text (every token), saved atomically."""
    import shutil

    lm, tok = load_lm(raw)
    lm.train()
    torch.manual_seed(c.seed)
    opt = torch.optim.AdamW(lm.parameters(), lr=c.pretrain_lr, weight_decay=0.0)
    eos = tok.eos_token
    lines = [t + eos for t in texts]
    g = np.random.default_rng(c.seed)
    bs = 64
    batches = [order[a : a + bs] for order in (g.permutation(len(lines)) for _ in range(c.pretrain_epochs))
               for a in range(0, len(lines), bs)]  # fmt: skip
    total = len(batches)  # one-cycle needs a few steps for its warm-up; a tiny corpus keeps lr constant
    sched = (torch.optim.lr_scheduler.OneCycleLR(opt, c.pretrain_lr, total_steps=total, pct_start=0.1)
             if total >= 20 else torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 1.0))  # fmt: skip
    loss = torch.zeros(())
    bar = progress(batches, desc="pretraining the builtin LM")
    for rows in bar:
        enc = tok([lines[i] for i in rows], return_tensors="pt", padding=True, add_special_tokens=False)
        labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, IGNORE_INDEX)
        loss = lm(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")
    save_lm(lm.eval(), tok, out)
    shutil.rmtree(raw, ignore_errors=True)
    log.info("builtin LM pretrained: last loss %.3f, saved to %s", loss.item(), out)
