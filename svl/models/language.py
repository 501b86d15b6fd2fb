"""The language bridge: a spiking 3D encoder's tokens in a causal language model (PointLLM's recipe).

Point cloud -> encoder -> final-stage spike features pooled to a fixed grid of tokens + the global
embedding -> `PointProjector` (an MLP) -> input embeddings of any Hugging Face causal LM, spliced in
where the prompt holds ``<point>``. The LM is read from a local directory only
(`AutoModelForCausalLM` / `AutoTokenizer`, ``local_files_only``): frozen, LoRA-tuned through `peft`,
or fully tuned (the small LMs svl builds for tests and demos). The prompt follows PointLLM / Vicuna:
``USER: <point> question ASSISTANT: answer</s>``, and the loss falls on answer tokens only.

Checkpoints (kind ``svl-language``) hold the encoder, the projector and what was tuned of the LM (the
LoRA weights, or every LM weight when fully tuned), and name the LM directory: a user's 7B model is
never copied into a checkpoint. `load_bridge` is the one way back from such a file.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from svl.checkpoint import load_checkpoint, load_state_into, read_checkpoint_meta
from svl.models.loading import create_model, register_checkpoint_kind, wrong_checkpoint
from svl.utils import set_offline

__all__ = [
    "LANGUAGE_KIND",
    "LM_TUNE",
    "POINT_MARKER",
    "PointLanguageModel",
    "PointProjector",
    "build_small_lm",
    "grid_tokens",
    "lm_flops_per_token",
    "load_bridge",
    "load_lm",
    "render_text",
    "save_lm",
]

LANGUAGE_KIND = "svl-language"
POINT_MARKER = "<point>"
LM_TUNE = ("frozen", "lora", "full")
IGNORE_INDEX = -100  # label of a token the loss skips (prompt, points, padding): torch's and HF's value
ROLES = {"human": "USER:", "gpt": "ASSISTANT:"}


# ----------------------------------------------------------------------------- the language model
def load_lm(path: str | os.PathLike[str], dtype: torch.dtype = torch.float32) -> tuple[nn.Module, Any]:
    """(causal LM, tokenizer) from a local Hugging Face directory; no hub access.

    A directory without a config or a tokenizer is one ValueError naming the directory and what is
    missing (transformers' own errors suggest downloads that cannot happen here).
    """
    p = Path(path).expanduser()
    if not p.is_dir():
        raise FileNotFoundError(f"language model directory {p} does not exist")
    if not (p / "config.json").is_file():
        raise ValueError(f"{p}: not a Hugging Face model directory (no config.json)")
    tok_files = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt", "tokenizer_config.json")
    if not any((p / f).is_file() for f in tok_files):
        raise ValueError(f"{p}: no tokenizer files (tokenizer.json, tokenizer.model or vocab files)")
    set_offline()
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    try:
        tok = AutoTokenizer.from_pretrained(p, local_files_only=True)
        lm = AutoModelForCausalLM.from_pretrained(p, local_files_only=True, dtype=dtype)
    except (OSError, ValueError, KeyError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"{p}: cannot load a causal language model from it ({first})") from None
    if tok.pad_token_id is None:  # many causal LMs ship no pad token; padding is masked anyway
        tok.pad_token = tok.eos_token or tok.unk_token
    if tok.eos_token_id is None:
        raise ValueError(f"{p}: the tokenizer has no end-of-sequence token")
    return lm.eval(), tok


def lm_fingerprint(path: str | os.PathLike[str]) -> str:
    """sha256 of the LM directory's config.json: a checkpoint refuses another LM under the same path."""
    return hashlib.sha256((Path(path) / "config.json").read_bytes()).hexdigest()[:16]


def build_small_lm(
    out_dir: str | os.PathLike[str],
    texts: Sequence[str],
    *,
    vocab_size: int = 1000,
    hidden: int = 128,
    layers: int = 2,
    heads: int = 4,
    context: int = 256,
    seed: int = 0,
) -> Path:
    """Write a small Llama-architecture LM with a byte-level BPE tokenizer trained on `texts` as a Hugging
    Face directory (untrained weights): the same loading path as a user's model, sized for a CPU."""
    set_offline()
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    out = Path(out_dir)
    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(list(texts), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=len(fast), hidden_size=hidden, intermediate_size=3 * hidden, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=heads, max_position_embeddings=context,
        bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id, pad_token_id=fast.pad_token_id,
        tie_word_embeddings=True,
    )  # fmt: skip
    return save_lm(LlamaForCausalLM(cfg), fast, out)


def save_lm(lm: nn.Module, tokenizer: Any, out: str | os.PathLike[str]) -> Path:
    """An LM and its tokenizer as a Hugging Face folder, written whole or not at all (a temporary
    folder renamed into place); a folder another process finished first is kept."""
    out = Path(out)
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    lm.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    if out.exists():
        shutil.rmtree(tmp)
    else:
        os.replace(tmp, out)
    return out


def lm_flops_per_token(lm: nn.Module, context: int) -> float:
    """Forward FLOPs of one generated token: 2 per weight of every matmul (embedding lookup excluded,
    the output projection included) + attention over `context` cached tokens (2 * 2 * layers * d)."""
    cfg = lm.config
    emb = lm.get_input_embeddings().weight.numel()
    tied = bool(getattr(cfg, "tie_word_embeddings", False))
    n = sum(p.numel() for p in lm.parameters()) - (0 if tied else emb)
    d = int(getattr(cfg, "hidden_size", 0) or getattr(cfg, "n_embd", 0))
    layers = int(getattr(cfg, "num_hidden_layers", 0) or getattr(cfg, "n_layer", 0))
    return float(2 * n + 4 * layers * d * context)


def render_text(turns: Sequence[tuple[str, str]]) -> str:
    """A conversation as the bridge's template writes it, without the points: the text a small LM is
    pretrained on, so it knows the template before it sees a point token."""
    out = []
    for role, text in turns:
        body = " ".join(text.replace(POINT_MARKER, " ").split())
        out.append(f"{ROLES[role]} {body}")
    return " ".join(out)


# ----------------------------------------------------------------------------- point tokens
def grid_tokens(st: Any, grid: int) -> Tensor:
    """Final-stage spike features pooled into `grid`^3 cells of each cloud's site bounding box ->
    (B, grid^3, C): firing rates per region in a fixed spatial order (x slowest), zero where a
    cell holds no site. A fixed order lets the LM learn where each token sits without positions."""
    from svl.sparse.conv import _counts

    vals = _counts(st.features).float()
    if vals.dim() == 3:  # (T, N, C): rates averaged over timesteps
        vals = vals.mean(0)
    c = st.coords
    b, xyz = c[:, 0], c[:, 1:].float()
    B = st.batch_size
    lo = torch.full((B, 3), float("inf")).scatter_reduce(0, b[:, None].expand(-1, 3), xyz, "amin")
    hi = torch.full((B, 3), float("-inf")).scatter_reduce(0, b[:, None].expand(-1, 3), xyz, "amax")
    span = (hi - lo).clamp_min(1.0)
    cell = ((xyz - lo[b]) / span[b] * grid).long().clamp_(0, grid - 1)
    idx = b * grid**3 + (cell[:, 0] * grid + cell[:, 1]) * grid + cell[:, 2]
    sums = vals.new_zeros(B * grid**3, vals.shape[1]).index_add(0, idx, vals)
    cnt = torch.bincount(idx, minlength=B * grid**3).clamp_min(1).to(vals.dtype)
    return (sums / cnt[:, None]).view(B, grid**3, -1)


class PointProjector(nn.Module):
    """Encoder tokens -> LM embeddings: a 2-layer MLP for the region tokens, one for the global
    embedding, and learned start / end markers around them (PointLLM's point_start / point_end)."""

    def __init__(self, site_dim: int, global_dim: int, lm_dim: int, tokens: int, hidden: int = 256) -> None:
        super().__init__()
        self.site_dim, self.global_dim, self.lm_dim, self.tokens = site_dim, global_dim, lm_dim, tokens
        self.sites = nn.Sequential(nn.Linear(site_dim, hidden), nn.GELU(), nn.Linear(hidden, lm_dim))
        self.glob = nn.Sequential(nn.Linear(global_dim, hidden), nn.GELU(), nn.Linear(hidden, lm_dim))
        self.pos = nn.Parameter(torch.randn(tokens, lm_dim) * 0.02)
        self.start = nn.Parameter(torch.randn(lm_dim) * 0.02)
        self.end = nn.Parameter(torch.randn(lm_dim) * 0.02)

    def forward(self, sites: Tensor, glob: Tensor) -> Tensor:
        """(B, K, site_dim), (B, global_dim) -> (B, K + 3, lm_dim): start, global, regions, end."""
        B = sites.shape[0]
        regions = self.sites(sites) + self.pos
        g = self.glob(glob)[:, None]
        s, e = self.start.expand(B, 1, -1), self.end.expand(B, 1, -1)
        return torch.cat([s, g, regions, e], 1)


# ----------------------------------------------------------------------------- the bridge
class PointLanguageModel(nn.Module):
    """Encoder + projector + causal LM. ``forward(batch) -> {"loss"}`` trains on answer tokens;
    `generate` answers. A batch is a dict: "points" (the encoders' batch, or precomputed
    "sites"/"global" tokens of a frozen encoder) and "turns" (one conversation per sample)."""

    def __init__(
        self,
        encoder: nn.Module,
        lm: nn.Module,
        tokenizer: Any,
        *,
        grid: int = 2,
        hidden: int = 256,
        tune_encoder: bool = False,
        lm_tune: str = "frozen",
        lora: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if lm_tune not in LM_TUNE:
            raise ValueError(f"lm_tune must be one of {LM_TUNE}, got {lm_tune!r}")
        self.encoder, self.tokenizer, self.grid = encoder, tokenizer, int(grid)
        self.tune_encoder, self.lm_tune = bool(tune_encoder), lm_tune
        self.lora = dict(lora or {"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": "all-linear"})
        site_dim = int(encoder.embed_dim_in)
        lm_dim = int(lm.get_input_embeddings().weight.shape[1])
        self.projector = PointProjector(site_dim, int(encoder.out_dim), lm_dim, self.grid**3, hidden)
        self.lm = self._tuned(lm)
        self.encoder.requires_grad_(self.tune_encoder)
        self.context = int(getattr(lm.config, "max_position_embeddings", 0) or 10**9)

    def _tuned(self, lm: nn.Module) -> nn.Module:
        lm.requires_grad_(self.lm_tune == "full")
        if self.lm_tune != "lora":
            return lm
        try:
            from peft import LoraConfig, get_peft_model
        except ImportError:
            raise ValueError("lm_tune=lora needs peft (pip install 'svl[language]')") from None
        cfg = LoraConfig(
            r=int(self.lora["r"]), lora_alpha=float(self.lora["alpha"]),
            lora_dropout=float(self.lora["dropout"]),
            target_modules=self.lora["target_modules"], bias="none",
        )  # fmt: skip
        import warnings

        with warnings.catch_warnings():  # peft calls a transformers API deprecated in v5
            warnings.simplefilter("ignore", FutureWarning)
            return get_peft_model(lm, cfg)

    # -- what a checkpoint holds -----------------------------------------------------------------
    def _saved(self, key: str) -> bool:
        if not key.startswith("lm."):
            return True
        return self.lm_tune == "full" or (self.lm_tune == "lora" and "lora_" in key)

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:  # type: ignore[override]
        """Encoder, projector and the LM weights this run tunes (not a frozen LM: it stays in its folder)."""
        full = super().state_dict(*args, **kwargs)
        return type(full)((k, v) for k, v in full.items() if self._saved(k))

    def load_state_dict(self, state: Mapping[str, Any], strict: bool = True, assign: bool = False) -> Any:
        want = set(self.state_dict())
        if strict and set(state) != want:
            missing, extra = sorted(want - set(state)), sorted(set(state) - want)
            raise ValueError(f"bridge weights do not match: missing {missing[:4]}, unexpected {extra[:4]}")
        return super().load_state_dict(dict(state), strict=False, assign=assign)

    def train(self, mode: bool = True) -> PointLanguageModel:
        super().train(mode)
        if not self.tune_encoder:  # a frozen encoder keeps its BN statistics and spikes as pretrained
            self.encoder.eval()
        return self

    # -- tokens ----------------------------------------------------------------------------------
    def point_embeds(self, batch: Mapping[str, Any]) -> Tensor:
        """(B, K + 3, lm_dim): from precomputed "sites" / "global", else by running the encoder."""
        if "sites" in batch:
            sites, glob = batch["sites"], batch["global"]
        else:
            sites, glob = self.encoder_tokens(batch["points"])
        return self.projector(sites.float(), glob.float())

    def encoder_tokens(self, points: Any) -> tuple[Tensor, Tensor]:
        """The encoder's (region tokens (B, K, C), global embedding (B, D)) of a points batch."""
        with torch.set_grad_enabled(self.tune_encoder and torch.is_grad_enabled()):
            st = self.encoder.forward_features(points)
            return grid_tokens(st, self.grid), self.encoder.forward_head(st)

    def _ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def sequence(
        self, turns: Sequence[tuple[str, str]], points: Tensor, generate: bool
    ) -> tuple[Tensor, list[int]]:
        """One conversation -> (input embeddings (L, d), labels (L)): answers labelled, the rest not.
        With `generate`, the last gpt turn is left out and the sequence ends at "ASSISTANT:"."""
        emb = self.lm.get_input_embeddings()
        parts: list[Tensor] = []
        labels: list[int] = []
        bos = self.tokenizer.bos_token_id
        if bos is not None:
            parts.append(emb(torch.tensor([bos])))
            labels.append(IGNORE_INDEX)
        turns = list(turns)
        if generate and turns and turns[-1][0] == "gpt":
            turns = turns[:-1]
        placed = False
        for i, (role, text) in enumerate(turns):
            if role not in ROLES:
                raise ValueError(f"conversation role must be 'human' or 'gpt', got {role!r}")
            if role == "gpt":
                head = self._ids(f" {ROLES['gpt']}")
                ans = self._ids(" " + text.strip()) + [self.tokenizer.eos_token_id]
                parts += [emb(torch.tensor(head)), emb(torch.tensor(ans))]
                labels += [IGNORE_INDEX] * len(head) + ans
                continue
            before, marker, after = text.partition(POINT_MARKER)
            if not marker and not placed and i == 0:  # no marker: the points go before the question
                before, after, marker = "", text, POINT_MARKER
            lead = ("" if i == 0 else " ") + ROLES["human"] + " "
            if marker and not placed:
                ids = self._ids(lead + before.strip())
                parts += [emb(torch.tensor(ids)) if ids else points[:0], points]
                labels += [IGNORE_INDEX] * (len(ids) + len(points))
                placed, rest = True, " " + after.strip()
            else:
                rest = lead + text.strip()
            ids = self._ids(rest)
            parts.append(emb(torch.tensor(ids)))
            labels += [IGNORE_INDEX] * len(ids)
        if generate:
            ids = self._ids(f" {ROLES['gpt']}")
            parts.append(emb(torch.tensor(ids)))
            labels += [IGNORE_INDEX] * len(ids)
        x = torch.cat(parts, 0)
        if len(x) > self.context:
            raise ValueError(
                f"prompt of {len(x)} tokens (with {len(points)} point tokens) is longer than the language "
                f"model's context of {self.context}"
            )
        return x, labels

    def _padded(
        self, seqs: list[tuple[Tensor, list[int]]], left: bool
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        L = max(len(s[0]) for s in seqs)
        d = seqs[0][0].shape[1]
        B = len(seqs)
        x = seqs[0][0].new_zeros(B, L, d)
        mask = torch.zeros(B, L, dtype=torch.long)
        lab = torch.full((B, L), IGNORE_INDEX, dtype=torch.long)
        for i, (e, y) in enumerate(seqs):
            n = len(e)
            sl = slice(L - n, L) if left else slice(0, n)
            x[i, sl], mask[i, sl], lab[i, sl] = e, 1, torch.tensor(y)
        pos = (mask.cumsum(1) - 1).clamp_min(0)
        return x, mask, lab, pos

    def forward(self, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        pts = self.point_embeds(batch)
        seqs = [self.sequence(t, pts[i], generate=False) for i, t in enumerate(batch["turns"])]
        x, mask, lab, pos = self._padded(seqs, left=False)
        out = self.lm(inputs_embeds=x, attention_mask=mask, position_ids=pos, labels=lab)
        return {"loss": out.loss}

    @torch.no_grad()
    def generate(
        self,
        batch: Mapping[str, Any],
        *,
        max_new_tokens: int = 48,
        temperature: float = 0.0,
        top_p: float = 1.0,
        stop: Callable[[], bool] | None = None,
        on_token: Callable[[int], None] | None = None,
    ) -> list[str]:
        """Answers to each sample's conversation (its last gpt turn, if any, is left out).

        temperature 0 is greedy decoding; above 0, sampling at that temperature from the top-p nucleus
        (seed with torch.manual_seed). `stop()` returning True ends the answers there (Ctrl-C in
        `svl chat`); `on_token(step)` is called after each generated token (progress bars).
        """
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        if temperature < 0 or not 0 < top_p <= 1:
            raise ValueError(f"temperature must be >= 0 and top_p in (0, 1], got {temperature}, {top_p}")
        self.eval()
        pts = self.point_embeds(batch)
        seqs = [self.sequence(t, pts[i], generate=True) for i, t in enumerate(batch["turns"])]
        x, mask, _, pos = self._padded(seqs, left=True)
        if x.shape[1] + max_new_tokens > self.context:
            max_new_tokens = max(1, self.context - x.shape[1])
        from transformers import StoppingCriteria, StoppingCriteriaList

        class _Stop(StoppingCriteria):
            def __init__(self) -> None:
                self.step = 0

            def __call__(self, input_ids: Tensor, scores: Any, **kw: Any) -> Tensor:
                self.step += 1
                if on_token is not None:
                    on_token(self.step)
                done = bool(stop()) if stop is not None else False
                return torch.full((input_ids.shape[0],), done, dtype=torch.bool)

        eos, pad = self.tokenizer.eos_token_id, self.tokenizer.pad_token_id
        sample = temperature > 0
        opts: dict[str, Any] = {"do_sample": sample}
        if sample:
            opts.update(temperature=float(temperature), top_p=float(top_p), top_k=0)
        else:
            opts.update(temperature=None, top_p=None, top_k=None)
        out = self.lm.generate(
            inputs_embeds=x, attention_mask=mask, max_new_tokens=int(max_new_tokens), eos_token_id=eos,
            pad_token_id=pad, stopping_criteria=StoppingCriteriaList([_Stop()]), **opts,
        )  # fmt: skip
        texts = []
        for row in out.tolist():
            if eos in row:
                row = row[: row.index(eos)]
            texts.append(self.tokenizer.decode(row, skip_special_tokens=True).strip())
        return texts


# ----------------------------------------------------------------------------- checkpoints
def bridge_meta(model: PointLanguageModel, lm_path: str | os.PathLike[str]) -> dict[str, Any]:
    """What `load_bridge` needs to rebuild `model` (the encoder part as every svl checkpoint has it)."""
    enc = model.encoder
    return {
        "kind": LANGUAGE_KIND,
        "model": getattr(enc, "model_name", None),
        "model_cfg": dict(getattr(enc, "model_cfg", {}) or {}),
        "contract": dict(getattr(enc, "pretrained_cfg", {}) or {}),
        "lm": {
            "path": str(Path(lm_path).expanduser().resolve()),
            "fingerprint": lm_fingerprint(lm_path),
            "tune": model.lm_tune,
            "lora": model.lora,
        },
        "bridge": {"grid": model.grid, "hidden": model.projector.sites[0].out_features},
    }


def load_bridge(
    path: str | os.PathLike[str], lm_path: str | os.PathLike[str] | None = None
) -> PointLanguageModel:
    """The bridge a `svl-language` checkpoint holds, with its LM from the folder it names (or
    `lm_path`: the same model moved elsewhere; its config must match)."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"checkpoint {p} does not exist")
    meta = read_checkpoint_meta(p)
    if meta.get("kind") != LANGUAGE_KIND:
        raise wrong_checkpoint(
            p, f"kind {meta.get('kind')!r}", "a language-bridge checkpoint",
            "train one with `svl finetune task=language`",
        )  # fmt: skip
    info = meta.get("lm") or {}
    where = Path(lm_path) if lm_path is not None else Path(str(info.get("path", "")))
    if not where.is_dir():
        raise FileNotFoundError(
            f"{p}: its language model folder {where} does not exist; pass --lm PATH to the folder it was "
            "trained with"
        )
    if info.get("fingerprint") and lm_fingerprint(where) != info["fingerprint"]:
        raise ValueError(f"{p}: {where} holds another language model than the one it was trained with")
    lm, tok = load_lm(where)
    encoder = create_model(meta["model"], **(meta.get("model_cfg") or {}))  # weights: below, with the rest
    encoder.pretrained_cfg = dict(meta.get("contract") or encoder.pretrained_cfg)
    b = meta.get("bridge") or {}
    model = PointLanguageModel(
        encoder, lm, tok, grid=int(b.get("grid", 2)), hidden=int(b.get("hidden", 256)),
        lm_tune=str(info.get("tune", "frozen")), lora=info.get("lora"),
    )  # fmt: skip
    tensors, _ = load_checkpoint(p)
    load_state_into(model, tensors, where=p)
    model.meta = meta
    return model.eval()


@register_checkpoint_kind(LANGUAGE_KIND, "a 3D language bridge", "svl finetune task=language")
def _language(path: Path, meta: dict[str, Any]) -> Any:
    from svl.models.loading import LoadedModel

    return LoadedModel(load_bridge(path), LANGUAGE_KIND, meta.get("class_names"), meta)


def batch_points(samples: Iterable[Mapping[str, Any]]) -> Any:
    """The encoders' points batch of samples with "xyz" (and optional "rgb"/"normals")."""
    from svl.data.batch import collate_points

    keep = ("xyz", "rgb", "normals")
    return collate_points([{k: v for k, v in s.items() if k in keep} | {"label": 0, "index": i}
                           for i, s in enumerate(samples)])  # fmt: skip
