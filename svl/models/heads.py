"""Rep-VLI: fold text-derived class embeddings into the encoder's last linear layer (docs/SPEC.md §5).

Offline, every class name (or its shipped description) is embedded by the teacher's text tower over
the prompt templates, passed through the trained `text_proj` and L2-normalised: W (K, out_dim).
Every encoder ends in `.head`, a linear layer whose output is only mean-pooled / averaged over T
afterwards, so `W @ head(x)` equals a head with weight `W @ W_head` and bias `W @ b_head`. The folded
encoder returns (B, K) class scores directly; argmax over them equals the argmax of cosine
similarity against W (the student norm is a positive per-sample factor). Zero-shot inference then
runs spikes -> folded head -> argmax with no text model loaded: this module never imports the
teachers (`svl.teachers.heads.build_head_file` embeds a vocabulary with the text tower).

A head file is an svl safetensors checkpoint holding `head.weight`, `head.bias` (the folded layer,
in the layout of the encoder's own head module) and `class_weights` (W, so cosine scores and a
re-fold stay possible), with metadata: class names, teacher id, templates hash, text mode and the
sha256 of the encoder checkpoint it was built for. A new vocabulary is a new head file.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from svl.checkpoint import load_checkpoint, save_checkpoint
from svl.utils import file_sha256
from svl.vocab import templates_hash

__all__ = [
    "HEAD_KIND",
    "attach_head",
    "build_class_weights",
    "fold_head",
    "head_affine",
    "head_metadata",
    "load_head",
    "pooled_features",
    "set_head",
    "save_head",
]

HEAD_KIND = "svl-rep-vli-head"
HEAD_FORMAT = 1
_REQUIRED_META = ("class_names", "teacher", "templates_hash", "text_mode", "encoder_sha256", "head_type")


# ----------------------------------------------------------------------------- class weights
def build_class_weights(checkpoint_tensors: Mapping[str, Tensor], text_class_emb: Tensor) -> Tensor:
    """W (K, out_dim): teacher class embeddings through the trained `text_proj`, L2-normalised."""
    if "text_proj.weight" not in checkpoint_tensors:
        raise ValueError(
            "checkpoint has no 'text_proj.weight': Rep-VLI needs a pretraining checkpoint "
            "(encoder + text projection), not a bare encoder"
        )
    w = checkpoint_tensors["text_proj.weight"].float()
    b = checkpoint_tensors.get("text_proj.bias")
    emb = torch.as_tensor(text_class_emb).float()
    if emb.ndim != 2 or emb.shape[0] < 1:
        raise ValueError(f"class embeddings must be (K, D) with K >= 1, got shape {tuple(emb.shape)}")
    if w.ndim != 2 or emb.shape[1] != w.shape[1]:
        raise ValueError(
            f"class embeddings are {emb.shape[1]}-d but text_proj expects {w.shape[-1]}-d inputs: "
            "build the head with the teacher the checkpoint was trained with"
        )
    proj = emb @ w.T
    if b is not None:
        proj = proj + b.float()
    return F.normalize(proj, dim=-1)


def head_metadata(
    class_names: Sequence[str],
    class_texts: Sequence[str],
    teacher: str,
    templates: Sequence[str],
    text_mode: str,
    encoder_checkpoint: str | os.PathLike[str],
    checkpoint_meta: Mapping[str, Any],
) -> dict[str, Any]:
    """The metadata of a head file, built in this one place for `svl build-head` and every task.

    It records what the class weights were built from (vocabulary, teacher, templates) and the
    sha256 of the encoder checkpoint, so a head is never silently applied to another encoder.
    """

    ckpt = Path(encoder_checkpoint)
    return {
        "class_names": [str(n) for n in class_names],
        "class_texts": [str(t) for t in class_texts],
        "teacher": teacher,
        "templates_hash": templates_hash(templates),
        "num_templates": len(templates),
        "text_mode": text_mode,
        "encoder_sha256": file_sha256(ckpt),
        "encoder_checkpoint": ckpt.name,
        "model": checkpoint_meta.get("model"),
        "model_cfg": checkpoint_meta.get("model_cfg"),
    }


# ----------------------------------------------------------------------------- folding
def head_affine(head: nn.Module) -> tuple[Tensor, Tensor | None, str]:
    """The head as `x -> x @ A + b`: returns (A (cin, cout), b (cout,) or None, layout).

    layout "linear": an nn.Linear (weight (cout, cin)); "sparse1x1": a 1x1 sparse conv whose weight
    is (1, cin, cout) (svl.sparse.SparseLinear).
    """
    w = getattr(head, "weight", None)
    if not isinstance(w, Tensor):
        raise ValueError(
            f"model.head ({type(head).__name__}) has no weight tensor; cannot fold Rep-VLI into it"
        )
    b = getattr(head, "bias", None)
    if isinstance(head, nn.Linear):
        return w.detach().T, None if b is None else b.detach(), "linear"
    if w.ndim == 3 and w.shape[0] == 1:
        return w.detach()[0], None if b is None else b.detach(), "sparse1x1"
    raise ValueError(
        f"model.head is a {type(head).__name__} with weight shape {tuple(w.shape)}: Rep-VLI folds only "
        "nn.Linear heads or 1x1 sparse convs with (1, cin, cout) weights"
    )


def _rebuilt_head(head: nn.Module, a: Tensor, b: Tensor | None, layout: str) -> nn.Module:
    """A copy of `head` (same class, hooks, dtype, device) carrying the affine map (a, b)."""
    new = copy.deepcopy(head)
    ref = head.weight
    cout = a.shape[1]
    weight = a.T if layout == "linear" else a[None]
    new.weight = nn.Parameter(weight.to(ref.dtype).to(ref.device).contiguous(), requires_grad=False)
    if b is not None:
        new.bias = nn.Parameter(b.to(ref.dtype).to(ref.device).contiguous(), requires_grad=False)
    else:
        new.bias = None
    for attr in ("out_features", "out_channels"):
        if hasattr(new, attr):
            setattr(new, attr, cout)
    return new


def fold_head(model: nn.Module, W: Tensor) -> nn.Module:
    """Replace `model.head` (x -> x A + b) by x -> x (A W^T) + b W^T, in place; returns `model`.

    After folding `model(batch)` returns (B, K) class scores and `model.out_dim == K`.
    """
    head = getattr(model, "head", None)
    if head is None:
        raise ValueError(f"{type(model).__name__} has no .head layer to fold the class embeddings into")
    a, b, layout = head_affine(head)
    W = torch.as_tensor(W).detach().to(torch.float64).cpu()
    if W.ndim != 2 or W.shape[1] != a.shape[1]:
        raise ValueError(
            f"class weights have shape {tuple(W.shape)} but the encoder head outputs {a.shape[1]} "
            "channels: W must be (K, out_dim)"
        )
    a2 = (a.to(torch.float64).cpu() @ W.T).float()
    b2 = None if b is None else (b.to(torch.float64).cpu() @ W.T).float()
    model.head = _rebuilt_head(head, a2, b2, layout)
    model.out_dim = int(W.shape[0])
    return model


# ----------------------------------------------------------------------------- head files
def save_head(
    path: str | os.PathLike[str],
    folded_head: nn.Module,
    class_weights: Tensor,
    meta: Mapping[str, Any],
) -> Path:
    """Write a head file (folded layer + W + metadata), atomically. `meta` needs _REQUIRED_META keys."""

    a, b, layout = head_affine(folded_head)
    names = list(meta.get("class_names") or [])
    if len(names) != a.shape[1] or len(names) != class_weights.shape[0]:
        raise ValueError(
            f"{path}: {len(names)} class names, but the folded head has {a.shape[1]} outputs and W "
            f"{class_weights.shape[0]} rows"
        )
    full = {
        "kind": HEAD_KIND,
        "format": HEAD_FORMAT,
        **dict(meta),
        "head_type": layout,
        "num_classes": len(names),
    }
    missing = [k for k in _REQUIRED_META if k not in full]
    if missing:
        raise ValueError(f"{path}: head metadata is missing {missing}")
    tensors = {"head.weight": folded_head.weight.detach(), "class_weights": class_weights.detach().float()}
    if b is not None:
        tensors["head.bias"] = b
    return save_checkpoint(path, tensors, full)


def load_head(path: str | os.PathLike[str]) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Read and validate a head file written by `save_head`: returns (tensors, meta)."""

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"head file {p} does not exist (build one with `svl build-head`)")
    tensors, meta = load_checkpoint(p)
    if meta.get("kind") != HEAD_KIND:
        raise ValueError(
            f"{p}: not a Rep-VLI head file (metadata kind is {meta.get('kind')!r}, expected {HEAD_KIND!r}); "
            "did you pass an encoder checkpoint as --head?"
        )
    missing = [k for k in _REQUIRED_META if k not in meta]
    if missing or "head.weight" not in tensors:
        raise ValueError(f"{p}: corrupt head file (missing metadata {missing} or tensor 'head.weight')")
    k = len(meta["class_names"])
    w = tensors["head.weight"]
    cout = w.shape[0] if meta["head_type"] == "linear" else w.shape[-1]
    if cout != k:
        raise ValueError(f"{p}: head has {cout} outputs but names {k} classes")
    return tensors, meta


def attach_head(
    model: nn.Module,
    head: str | os.PathLike[str] | tuple[Mapping[str, Tensor], Mapping[str, Any]],
    checkpoint: str | os.PathLike[str] | None = None,
) -> nn.Module:
    """Put a saved folded head into an already-loaded encoder, in place; returns `model`.

    With `checkpoint` (the file the encoder was loaded from) the head's recorded encoder hash must
    match it, so a head built for another checkpoint is refused instead of giving silent garbage.
    """
    where = "<head>" if isinstance(head, tuple) else str(head)
    tensors, meta = head if isinstance(head, tuple) else load_head(head)
    if checkpoint is not None:
        _check_encoder_hash(checkpoint, meta, where)
    cur = getattr(model, "head", None)
    if cur is None:
        raise ValueError(f"{type(model).__name__} has no .head layer to attach {where} to")
    a, _, layout = head_affine(cur)
    if layout != meta["head_type"]:
        raise ValueError(
            f"{where}: head was built for a {meta['head_type']} head, this model has a {layout} head"
        )
    w = tensors["head.weight"]
    a_new = w.T if layout == "linear" else w[0]
    if a_new.shape[0] != a.shape[0]:
        raise ValueError(
            f"{where}: folded head expects {a_new.shape[0]} input channels, the encoder's head has "
            f"{a.shape[0]} (head built for a different model?)"
        )
    model.head = _rebuilt_head(cur, a_new, tensors.get("head.bias"), layout)
    model.out_dim = len(meta["class_names"])
    return model


def _check_encoder_hash(checkpoint: str | os.PathLike[str], meta: Mapping[str, Any], where: str) -> None:

    have = file_sha256(checkpoint)
    want = meta.get("encoder_sha256")
    if have != want:
        raise ValueError(
            f"head {where} was built for encoder checkpoint sha256 {want}, but {checkpoint} has sha256 "
            f"{have}; rebuild the head with `svl build-head --checkpoint {checkpoint} ...`"
        )


# ----------------------------------------------------------------------------- head surgery
def pooled_features(encoder: nn.Module) -> nn.Module:
    """A copy of `encoder` whose head is the identity: it returns the pooled features the head reads
    (the head is linear and only pooled after, so head(pooled) = pooled head outputs)."""
    enc = copy.deepcopy(encoder).eval()
    a, _, layout = head_affine(enc.head)
    enc.head = _rebuilt_head(enc.head, torch.eye(a.shape[0], dtype=a.dtype), None, layout)
    return enc


def set_head(encoder: nn.Module, weight: Tensor, bias: Tensor | None) -> nn.Module:
    """Replace the encoder's head by the linear map `weight` (K, C) + `bias` (K,), in its own layout,
    trainable (a folded zero-shot head is rebuilt frozen; a fine-tune starting from it must train it)."""
    _, _, layout = head_affine(encoder.head)
    bias = None if bias is None else bias.detach()
    encoder.head = _rebuilt_head(encoder.head, weight.detach().T.contiguous(), bias, layout)
    encoder.head.requires_grad_(True)
    encoder.out_dim = int(weight.shape[0])
    return encoder
