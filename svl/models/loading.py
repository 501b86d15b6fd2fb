"""The one way from weights to a model (timm's `_builder` + mmdetection3d's `init_model`, in one room).

Two questions, each answered once:
- *Put these weights into this model.* `load_weights(model, path, arch, part=...)` loads the whole
  model, its encoder (all but the head: a fine-tune's new classifier), or only the E-3DSNN stem and
  stages that a U-Net or detector shares with its encoder; it adapts input channels through `adapt`
  and refuses other input settings (T, D, voxel size, channels) unless the caller says they may
  differ. `create_model(name, pretrained=...)` builds a registered model with it.
- *Give me a ready model for this file.* `load_model(path)` reads the checkpoint's `kind` and builds
  what it holds through the registry of kinds (`CHECKPOINT_KINDS`): a zero-shot encoder (+ its Rep-VLI
  head file), a classifier (points, events or an image student), a segmenter, a detector. The
  inference layer (`svl.infer`) and `svl classify/segment/detect/retrieve` call only this.
What a model is (its family, whether it has a voxel size, which encoder its stem loads from) is read
from the registry entry (`model_info`), never parsed from its name. A file of the wrong kind or
architecture gets `wrong_checkpoint`'s one message, which names both.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from svl.checkpoint import load_checkpoint, load_state_into, read_checkpoint_meta
from svl.models._registry import (
    Contract,
    PretrainedEntry,
    check_contract,
    default_contract,
    get_pretrained,
    model_entrypoint,
    model_info,
)
from svl.models.heads import _check_encoder_hash, attach_head, load_head
from svl.registry import Registry
from svl.utils import get_logger

__all__ = [
    "CHECKPOINT_KINDS",
    "CLASSIFIER_KIND",
    "DETECTOR_KIND",
    "PRETRAIN_KIND",
    "SEGMENTER_KIND",
    "CheckpointKind",
    "LoadedModel",
    "checkpoint_model_name",
    "create_model",
    "load_encoder",
    "load_model",
    "load_weights",
    "load_zeroshot_model",
    "polarity_from_colour",
    "read_meta",
    "register_checkpoint_kind",
    "wrong_checkpoint",
]

log = get_logger(__name__)

# The kinds svl writes (meta["kind"]); a task file names its kind through these, never a string.
PRETRAIN_KIND = "svl-pretrain"
CLASSIFIER_KIND = "svl-classifier"
SEGMENTER_KIND = "svl-segmenter"
DETECTOR_KIND = "svl-detector"
_SETTINGS = ("T", "D", "voxel_size", "in_channels", "channels", "stem_channels", "depth")
PARTS = ("model", "encoder", "stem")


# ----------------------------------------------------------------------------- errors and checks
def wrong_checkpoint(
    path: str | os.PathLike[str], held: str, want: str, fix: str = "", key: str = ""
) -> ValueError:
    """The one message for a file that holds something else than asked: names both, then the fix."""
    lead = f"{key}: " if key else ""
    tail = f"; {fix}" if fix else ""
    return ValueError(f"{lead}{path} holds {held}, not {want}{tail}")


def read_meta(path: str | os.PathLike[str], key: str = "") -> dict[str, Any]:
    """A checkpoint's metadata; a missing file is a FileNotFoundError naming the config key."""
    p = Path(path)
    if not p.is_file():
        lead = f"{key}: " if key else ""
        raise FileNotFoundError(f"{lead}checkpoint {p} does not exist")
    return read_checkpoint_meta(p)


def _check_arch(path: str | os.PathLike[str], meta: Mapping[str, Any], arch: str, key: str) -> None:
    held = meta.get("model")
    if held is not None and held != arch:
        fix = f"set model.name={held} or give a checkpoint of that architecture"
        mine, theirs = _info(arch), _info(str(held))
        if mine is not None and (
            theirs is None or theirs.inputs != mine.inputs or theirs.encoder is not None
        ):
            # a network of another kind (a U-Net, a detector, an image model): its name is no advice here
            kind = f", kind {meta['kind']!r}" if meta.get("kind") else ""
            family = theirs.family if theirs is not None else "unregistered"
            fix = (f"give a checkpoint of the {mine.family} family (this file holds a network of the "
                   f"{family} family{kind})")  # fmt: skip
        raise wrong_checkpoint(path, f"a {held!r} model", f"{arch!r}", key=key, fix=fix)


def _info(arch: str) -> Any:
    """The registry's `ModelInfo` of `arch`, None when it is not registered."""
    try:
        return model_info(arch)
    except (KeyError, ValueError):
        return None


def _check_settings(
    path: str | os.PathLike[str],
    meta: Mapping[str, Any],
    model_cfg: Mapping[str, Any],
    may_differ: Sequence[str],
    key: str,
) -> None:
    saved = meta.get("model_cfg") or {}
    diffs = [
        f"{k}: checkpoint {saved[k]!r} vs config {model_cfg[k]!r}"
        for k in _SETTINGS
        if k in saved and k in model_cfg and saved[k] != model_cfg[k] and k not in may_differ
    ]
    if diffs:
        lead = f"{key}: " if key else ""
        raise ValueError(
            f"{lead}{path} was trained with other input settings than model.* ({'; '.join(diffs)}); "
            "set them to the checkpoint's values"
        )


# ----------------------------------------------------------------------------- weights into a model
def _own_tensors(tensors: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A bare model's tensors, or a run's `encoder.*` (pretraining and fine-tuning wrappers)."""
    if any(k.startswith("encoder.") for k in tensors):
        return {k[len("encoder.") :]: v for k, v in tensors.items() if k.startswith("encoder.")}
    return dict(tensors)


# The E-3DSNN input convolution: its weight is (27, C_in, C) with x, y, z (or x, y, t) in columns 0-2.
INPUT_CONV = "stem.0.conv.weight"


def _transfer(
    tensors: dict[str, Tensor], stages: int | None, xyz_scale: float, path: Path, key: str
) -> tuple[dict[str, Tensor], tuple[str, ...]]:
    """What of a pretrained encoder to carry over: the stem plus the first `stages` stages (None = all;
    the prefixes of the rest are returned so they stay as built), and the input convolution's
    coordinate columns divided by `xyz_scale` (the downstream frame is that many times the
    pretraining's: a 6 m scene against a unit sphere), so the stem responds to the downstream
    coordinates as it did to the pretraining's."""
    lead = f"{key}: " if key else ""
    if not (math.isfinite(xyz_scale) and xyz_scale > 0):
        raise ValueError(f"{lead}transfer.xyz_scale must be a positive number, got {xyz_scale}")
    drop: tuple[str, ...] = ()
    if stages is not None:
        held = sorted({int(k.split(".")[1]) for k in tensors if k.startswith("stages.")})
        if not 0 <= stages <= len(held):
            raise ValueError(
                f"{lead}transfer.stages must be 0 (stem only) to {len(held)} (all of {path}'s stages), "
                f"got {stages}"
            )
        drop = tuple(f"stages.{i}." for i in held[stages:])
        tensors = {k: v for k, v in tensors.items() if not k.startswith(drop)}
    if xyz_scale != 1.0:
        if INPUT_CONV not in tensors:
            raise ValueError(f"{lead}{path} has no input convolution {INPUT_CONV!r} to rescale")
        w = tensors[INPUT_CONV].clone()
        w[:, :3] /= xyz_scale
        tensors = {**tensors, INPUT_CONV: w}
    return tensors, drop


def _load_stem(
    model: nn.Module, path: Path, arch: str, tensors: Mapping[str, Tensor], key: str,
    stages: int | None = None, xyz_scale: float = 1.0,
) -> None:  # fmt: skip
    """The E-3DSNN stem and stages of `path` into the model's encoder part; the rest stays as built."""
    prefixes = model_info(arch).encoder_prefixes
    state = {k.removeprefix("encoder."): v for k, v in tensors.items()}
    state, drop = _transfer(state, stages, xyz_scale, path, key)
    own = {k: v for k, v in model.state_dict().items() if k.startswith(prefixes) and not k.startswith(drop)}
    if not any(k in state for k in own):
        raise ValueError(f"{key}: {path} holds no E-3DSNN stem / stage weights")
    missing = [k for k in own if k not in state]
    misshaped = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
                 if k in state and state[k].shape != v.shape]  # fmt: skip
    if missing or misshaped:
        raise ValueError(f"{key}: {path} does not fit {arch}'s encoder: {len(missing)} tensors missing "
                         f"{missing[:4]}, {len(misshaped)} of another shape {misshaped[:4]}")  # fmt: skip
    model.load_state_dict({k: state[k] for k in own}, strict=False)
    log.info(
        "%s: %d encoder tensors from %s; %d tensors new",
        key,
        len(own),
        path,
        len(model.state_dict()) - len(own),
    )


def load_weights(
    model: nn.Module,
    path: str | os.PathLike[str],
    arch: str,
    part: str = "model",
    keep: Sequence[str] = (),
    adapt: Callable[[dict[str, Tensor], dict[str, Tensor]], dict[str, Tensor]] | None = None,
    model_cfg: Mapping[str, Any] | None = None,
    may_differ: Sequence[str] = (),
    key: str = "",
    stages: int | None = None,
    xyz_scale: float = 1.0,
) -> dict[str, Any]:
    """Load an svl checkpoint (a bare model or a run's ``encoder.*``) into ``model``; returns its meta.

    part: "model" (every tensor), "encoder" (all but ``head.*``: a fine-tune's new K-way head stays), or
      "stem" (only the encoder tensors of a model built on a registered encoder, e.g. a U-Net's
      ``stem.*`` / ``stages.*`` from an ``e3dsnn_t`` checkpoint).
    keep: more name prefixes that stay the model's own. adapt(tensors, model_state): reshape the
      checkpoint's tensors first (other input channels). model_cfg + may_differ: refuse a checkpoint
      trained with other input settings except those named. key: the config key in errors ("init").
    stages, xyz_scale: how much of an encoder to carry over and in which frame (`_transfer`).
    """
    if part not in PARTS:
        raise ValueError(f"load_weights: part must be one of {PARTS}, got {part!r}")
    p = Path(path)
    meta = read_meta(p, key)
    want = (model_info(arch).encoder or arch) if part == "stem" else arch
    held = meta.get("model")
    if held is not None and held != want:
        if part == "stem":
            raise wrong_checkpoint(p, f"a {held!r} encoder", f"the {want!r} weights {arch} needs", key=key)
        _check_arch(p, meta, arch, key)
    if model_cfg is not None:
        _check_settings(p, meta, model_cfg, may_differ, key)
    tensors, _ = load_checkpoint(p)
    if part == "stem":
        _load_stem(model, p, arch, tensors, key or "init", stages, xyz_scale)
        return meta
    tensors = _own_tensors(tensors)
    if not tensors:
        raise ValueError(f"{p}: the checkpoint holds no weights")
    if adapt is not None:
        tensors = adapt(tensors, model.state_dict())
    if stages is not None or xyz_scale != 1.0:
        tensors, drop = _transfer(tensors, stages, xyz_scale, p, key)
        keep = (*keep, *drop)
    keep = (*keep, "head.") if part == "encoder" else tuple(keep)
    if keep:
        own = {k: v for k, v in model.state_dict().items() if k.startswith(tuple(keep))}
        tensors = {k: v for k, v in tensors.items() if not k.startswith(tuple(keep))} | own
    load_state_into(model, tensors, where=str(p))
    return meta


# ----------------------------------------------------------------------------- input adaptation
def polarity_from_colour(tensors: dict[str, Tensor], own: dict[str, Tensor]) -> dict[str, Tensor]:
    """Carry a 6-channel (xyz + rgb) checkpoint's input layers over to 4 channels (x, y, t, polarity).

    The 3D pretraining fed a constant colour (0.4) in all three colour channels, so only their sum
    ever mattered: the polarity channel gets the sum of the three colour columns (polarity 0.4 then
    reproduces the pretrained response exactly) and x, y, t keep the xyz columns. Any tensor whose
    shape differs from the model's only in a 6 -> 4 input-channel dim is converted this way.
    """
    out = dict(tensors)
    for k, v in tensors.items():
        mine = own.get(k)
        if mine is None or mine.shape == v.shape or mine.dim() != v.dim():
            continue
        dims = [i for i, (a, b) in enumerate(zip(v.shape, mine.shape)) if a != b]
        if len(dims) == 1 and v.shape[dims[0]] == 6 and mine.shape[dims[0]] == 4:
            d = dims[0]
            out[k] = torch.cat([v.narrow(d, 0, 3), v.narrow(d, 3, 3).sum(d, keepdim=True)], d).contiguous()
    return out


# ----------------------------------------------------------------------------- build a registered model
def _is_path(pretrained: str | os.PathLike[str]) -> bool:
    s = os.fspath(pretrained)
    return (
        isinstance(pretrained, os.PathLike) or s.endswith(".safetensors") or os.sep in s or Path(s).exists()
    )


def checkpoint_model_name(path: str | os.PathLike[str]) -> str:
    """The registered architecture an svl checkpoint was saved from (its metadata's ``model``)."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"checkpoint {p} does not exist")
    name = read_checkpoint_meta(p).get("model")
    if not isinstance(name, str) or not name:
        raise ValueError(f"{p}: checkpoint metadata names no model (meta['model'] missing)")
    return name


def create_model(
    name: str | None,
    pretrained: str | os.PathLike[str] | None = None,
    data_contract: Contract | Mapping[str, Any] | None = None,
    **overrides: Any,
) -> nn.Module:
    """Build a registered model, optionally with weights.

    ``name`` may be ``arch`` or ``arch.tag``, or None with a checkpoint path (the architecture the
    checkpoint names). ``pretrained`` is a registered tag (weights looked up under
    ``cache_dir("models")``) or a checkpoint path (its ``model_cfg`` is used, ``overrides`` win).
    ``data_contract`` describes what the data pipeline produces; a mismatch with the weights'
    contract raises ValueError listing every difference. The model gets ``.pretrained_cfg`` (the
    contract as a dict), ``.model_name`` and ``.model_cfg``.
    """
    if name is None and pretrained is not None and _is_path(pretrained):
        name = checkpoint_model_name(pretrained)
    if not isinstance(name, str) or not name:
        raise ValueError(f"model name must be a non-empty string, got {name!r}")
    arch, _, tag = name.partition(".")
    if tag:
        if pretrained is not None:
            raise ValueError(f"give either {name!r} or pretrained={pretrained!r}, not both")
        pretrained = tag
    builder = model_entrypoint(arch)
    entry: PretrainedEntry | None = None
    path: Path | None = None
    cfg: dict[str, Any] = {}
    if pretrained is not None:
        if _is_path(pretrained):
            path = Path(pretrained)
            if not path.exists():
                raise FileNotFoundError(f"checkpoint {path} does not exist")
            meta = read_checkpoint_meta(path)
            held = meta.get("model")
            if held is not None and held != arch:
                raise ValueError(
                    f"{path}: checkpoint holds architecture {held!r}, not {arch!r}; "
                    f"use create_model({held!r}, pretrained=...)"
                )
            saved = meta.get("model_cfg") or {}
            if not isinstance(saved, dict):
                raise ValueError(
                    f"{path}: meta['model_cfg'] must be a JSON object, got {type(saved).__name__}"
                )
            cfg.update(saved)
        else:
            tag = str(pretrained).removeprefix(f"{arch}.")  # accept "tag" and "arch.tag"
            entry = get_pretrained(f"{arch}.{tag}")
            path = entry.path()
            if not path.exists():
                raise FileNotFoundError(
                    f"weights for {entry.name} not found: put the file at {path} "
                    f"(svl never downloads; set $SVL_CACHE to use another cache folder)"
                )
            cfg.update(entry.model_cfg)
    cfg.update(overrides)
    try:
        model = builder(**cfg)
    except TypeError as e:
        if "argument" not in str(e):
            raise
        raise ValueError(f"bad options for model {arch!r}: {e}") from None
    contract = default_contract(model)
    if path is not None:
        meta = load_weights(model, path, arch)
        if entry is not None:
            contract = entry.contract
        elif meta.get("contract") is not None:
            contract = Contract.from_dict(meta["contract"])
    if data_contract is not None:
        check_contract(contract, data_contract, where=str(path) if path is not None else arch)
    model.pretrained_cfg = contract.to_dict()
    model.model_name = arch
    model.model_cfg = dict(cfg)
    return model


# ----------------------------------------------------------------------------- encoders and zero-shot heads
def load_encoder(checkpoint: str | os.PathLike[str]) -> tuple[nn.Module, dict[str, Tensor], dict[str, Any]]:
    """The encoder a checkpoint names, with its weights (via `create_model(None, pretrained=...)`),
    plus all checkpoint tensors (the text projection lives there) and the checkpoint meta.

    Returns (model in eval mode, all checkpoint tensors, checkpoint meta).
    """
    model = create_model(None, pretrained=checkpoint)
    tensors, meta = load_checkpoint(checkpoint)
    return model.eval(), tensors, meta


def load_zeroshot_model(
    checkpoint: str | os.PathLike[str], head: str | os.PathLike[str]
) -> tuple[nn.Module, list[str], dict[str, Any]]:
    """The text-free zero-shot classifier: (folded encoder in eval mode, class names, head meta).

    Imports no text model. A head built for another checkpoint -> ValueError naming both hashes.
    """
    ckpt = Path(checkpoint)
    if not ckpt.exists():
        raise FileNotFoundError(f"checkpoint {ckpt} does not exist")
    tensors, meta = load_head(head)
    # Load first: a damaged checkpoint (truncated, corrupt) must be reported as such, not as a head
    # built for another encoder (its hash differs too).
    model = create_model(None, pretrained=ckpt).eval()
    _check_encoder_hash(ckpt, meta, str(head))
    attach_head(model, (tensors, meta))
    return model.eval(), list(meta["class_names"]), dict(meta)


# ----------------------------------------------------------------------------- checkpoint kinds
@dataclass
class LoadedModel:
    """A ready model (eval mode) and what its file says about it."""

    model: nn.Module
    kind: str
    class_names: list[str] | None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def inputs(self) -> str:
        """What the model reads: points, events or images (its data section, else its registry entry)."""
        data = self.meta.get("data") or {}
        if data.get("input") in ("events", "image"):
            return "images" if data["input"] == "image" else "events"
        return model_info(self.meta.get("model") or self.model.model_name).inputs


@dataclass(frozen=True)
class CheckpointKind:
    """How a checkpoint kind becomes a ready model (`build(path, meta)`), and what writes it."""

    name: str
    what: str
    made_by: str
    build: Callable[[Path, dict[str, Any]], LoadedModel]


CHECKPOINT_KINDS: Registry[CheckpointKind] = Registry(
    "checkpoint kind", group="svl.checkpoint_kinds", hint="see svl.models.loading.CHECKPOINT_KINDS.names()"
)


def register_checkpoint_kind(name: str, what: str, made_by: str) -> Callable[[Callable], Callable]:
    """Decorator: `fn(path, meta) -> LoadedModel` builds models from checkpoints of kind `name`."""

    def deco(fn: Callable[[Path, dict[str, Any]], LoadedModel]) -> Callable:
        CHECKPOINT_KINDS.register(name, CheckpointKind(name, what, made_by, fn))
        return fn

    return deco


def _labelled(path: Path, meta: dict[str, Any]) -> LoadedModel:
    if not meta.get("class_names"):
        raise ValueError(f"{path}: the checkpoint names no classes (meta['class_names'] missing)")
    model = create_model(None, pretrained=path).eval()
    return LoadedModel(model, str(meta["kind"]), list(meta["class_names"]), meta)


def _encoder(path: Path, meta: dict[str, Any]) -> LoadedModel:
    model = create_model(None, pretrained=path).eval()
    return LoadedModel(model, str(meta.get("kind") or "encoder"), None, meta)


register_checkpoint_kind(PRETRAIN_KIND, "a pretrained encoder", "svl pretrain")(_encoder)
register_checkpoint_kind(CLASSIFIER_KIND, "a fine-tuned classifier", "svl finetune (or svl distill)")(
    _labelled
)
register_checkpoint_kind(SEGMENTER_KIND, "a segmentation network", "svl finetune task=segmentation")(
    _labelled
)
register_checkpoint_kind(DETECTOR_KIND, "a detector", "svl finetune task=detection")(_labelled)
_TASK_OF = {CLASSIFIER_KIND: "classification", SEGMENTER_KIND: "segmentation", DETECTOR_KIND: "detection"}


def load_model(
    path: str | os.PathLike[str],
    kind: str | Sequence[str] | None = None,
    head: str | os.PathLike[str] | None = None,
) -> LoadedModel:
    """A ready model (eval mode) from any svl checkpoint, built by its `kind`.

    `kind` restricts what is accepted (one kind or several); a file of another kind is refused with
    both named and the command that writes the right one. `head` is a Rep-VLI head file for an
    encoder checkpoint (a text-free zero-shot classifier). A file without a kind is a bare encoder.
    """
    p = Path(path)
    meta = read_meta(p)
    held = meta.get("kind")
    if head is not None:  # an encoder + its Rep-VLI head: the text-free zero-shot classifier
        if held not in (PRETRAIN_KIND, None):
            raise wrong_checkpoint(
                p, f"kind {held!r} with its own classes", "a pretrained encoder", "give no head file"
            )
        model, names, head_meta = load_zeroshot_model(p, head)
        return LoadedModel(model, str(held or "encoder"), names, {**meta, "head": head_meta})
    wanted = [kind] if isinstance(kind, str) else list(kind or [])
    if wanted and held not in wanted:
        spec = CHECKPOINT_KINDS.get(wanted[0]) if wanted[0] in CHECKPOINT_KINDS else None
        task = _TASK_OF.get(wanted[0])
        want = f"a {task} checkpoint" if task else " or ".join(repr(w) for w in wanted)
        fix = f"train one with `{spec.made_by}`" if spec else ""
        if held in (PRETRAIN_KIND, None) and CLASSIFIER_KIND in wanted:
            fix = "a pretraining checkpoint needs a Rep-VLI head file (--head, built with `svl build-head`)"
        raise wrong_checkpoint(p, f"kind {held!r}", want, fix)
    if held is None:
        return _encoder(p, meta)
    if held not in CHECKPOINT_KINDS:
        raise wrong_checkpoint(p, f"kind {held!r}", "a model checkpoint", "see CHECKPOINT_KINDS.names()")
    return CHECKPOINT_KINDS.get(held).build(p, meta)
