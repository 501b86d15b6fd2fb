"""Model registry (timm / open_clip style), input contracts and the input conventions every model shares.

Architectures register their builder with ``@register_model`` in the file that defines them;
pretrained weights are ``arch.tag`` entries that carry the model's **input contract** (gravity axis,
colour channels and range, points per cloud, voxel size, T x D, teacher, embedding dim). Loading
weights checks that contract against what the data pipeline produces and names every difference,
because the usual failure of 3D-language encoders is not a crash but silent garbage (y-up vs z-up,
rgb 0-255 vs 0-1, missing colour).
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from svl.conventions import MISSING_COLOR
from svl.registry import Registry
from svl.utils import cache_dir

__all__ = [
    "COLOR_MODES",
    "MODELS",
    "Contract",
    "PretrainedEntry",
    "check_contract",
    "get_pretrained",
    "list_models",
    "list_pretrained",
    "model_entrypoint",
    "model_info",
    "ModelInfo",
    "register_model",
    "register_pretrained",
    "unpack_inputs",
]

COLOR_MODES = ("none", "rgb01", "rgb255")
_COLOR_TEXT = {
    "none": f"no colour (constant {MISSING_COLOR} in the colour channels)",
    "rgb01": "RGB in [0, 1]",
    "rgb255": "RGB in [0, 255]",
}


# ----------------------------------------------------------------------------- contracts
@dataclass(frozen=True)
class Contract:
    """What a model's weights expect from the data pipeline. ``None`` fields are unknown / free."""

    gravity_axis: str | None = "z"
    color: str | None = "none"
    num_points: int | None = None
    voxel_size: float | None = None
    T: int | None = 1
    D: int | None = 4
    teacher: str | None = None
    embed_dim: int | None = None
    normals: bool | None = False

    def __post_init__(self) -> None:
        if self.gravity_axis not in (None, "x", "y", "z"):
            raise ValueError(f"contract gravity_axis must be 'x', 'y' or 'z', got {self.gravity_axis!r}")
        if self.color not in (None, *COLOR_MODES):
            raise ValueError(f"contract color must be one of {COLOR_MODES}, got {self.color!r}")
        for name in ("num_points", "T", "D", "embed_dim"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
                raise ValueError(f"contract {name} must be a positive int, got {v!r}")
        if self.voxel_size is not None and not float(self.voxel_size) > 0:
            raise ValueError(f"contract voxel_size must be > 0, got {self.voxel_size!r}")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | Contract | None) -> Contract:
        """Build from a dict (e.g. checkpoint metadata); unknown keys are an error, missing keys unknown."""
        if isinstance(d, Contract):
            return d
        if d is None:
            return cls(**{f.name: None for f in fields(cls)})
        if not isinstance(d, Mapping):
            raise ValueError(f"a contract must be a dict or a Contract, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        extra = sorted(set(d) - known)
        if extra:
            raise ValueError(f"unknown contract fields {extra}; known: {sorted(known)}")
        base = {f.name: None for f in fields(cls)}
        base.update(d)
        return cls(**base)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def diff(self, other: Contract | Mapping[str, Any]) -> list[str]:
        """Human-readable differences ``self`` (what the model expects) vs ``other`` (what data gives).

        Fields unknown (None) on either side are not compared.
        """
        other = Contract.from_dict(other)
        out: list[str] = []
        for f in fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            if a is None or b is None:
                continue
            if f.name == "voxel_size":
                if abs(float(a) - float(b)) > 1e-9 * max(abs(float(a)), 1.0):
                    out.append(
                        f"voxel_size: model was trained at {a:g}, data pipeline voxelizes at {b:g} "
                        "(receptive fields in metres change; re-voxelize at the model's size)"
                    )
            elif a != b:
                out.append(_explain(f.name, a, b))
        return out


def _explain(name: str, want: Any, got: Any) -> str:
    if name == "gravity_axis":
        return (
            f"gravity_axis: model expects {want}-up, data is {got}-up "
            f"(swap the {want} and {got} axes of the points before the model)"
        )
    if name == "color":
        hint = ""
        if want == "rgb01" and got == "rgb255":
            hint = " (divide colours by 255)"
        elif want == "rgb255" and got == "rgb01":
            hint = " (multiply colours by 255)"
        elif want == "none":
            hint = f" (replace colours by the constant {MISSING_COLOR})"
        elif got == "none":
            hint = " (the model was trained with colour; expect lower accuracy without it)"
        return f"color: model expects {_COLOR_TEXT[want]}, data gives {_COLOR_TEXT[got]}{hint}"
    if name == "normals":
        w, g = ("normals" if v else "no normals" for v in (want, got))
        return f"normals: model expects {w}, data gives {g}"
    return f"{name}: model expects {want!r}, data gives {got!r}"


def check_contract(
    expected: Contract | Mapping[str, Any], actual: Contract | Mapping[str, Any], where: str = "model"
) -> None:
    """Raise ValueError listing every difference between a model's contract and the data's."""
    diffs = Contract.from_dict(expected).diff(actual)
    if diffs:
        lines = "\n  - ".join(diffs)
        raise ValueError(f"{where}: input contract mismatch ({len(diffs)} difference(s)):\n  - {lines}")


# ----------------------------------------------------------------------------- registry
# Architecture files register their builders when svl.models (the package) imports them; other
# packages register through the "svl.models" entry-point group (svl/registry.py).
MODELS: Registry[Callable[..., nn.Module]] = Registry(
    "model", group="svl.models", hint="see svl.list_models() / `svl models`"
)


@dataclass(frozen=True)
class PretrainedEntry:
    """A registered weight file ``arch.tag``: its contract, the config it was built with, its file name."""

    arch: str
    tag: str
    contract: Contract
    model_cfg: Mapping[str, Any]
    description: str = ""

    @property
    def name(self) -> str:
        return f"{self.arch}.{self.tag}"

    @property
    def filename(self) -> str:
        return f"{self.name}.safetensors"

    def path(self) -> Path:
        """Where the weights must lie: ``svl.utils.cache_dir("models") / "arch.tag.safetensors"``."""

        return cache_dir("models") / self.filename


_PRETRAINED: dict[str, PretrainedEntry] = {}


@dataclass(frozen=True)
class ModelInfo:
    """What a registered architecture is, declared where it registers (never parsed from its name).

    family: the architecture family ("e3dsnn", "e3dsnn_unet", "e3dsnn_det", "spikformer", ...);
    inputs: "points" (point clouds and event clouds) or "images";
    voxel: the builder takes ``voxel_size`` (sparse voxel encoders);
    encoder: the registered encoder whose weights this model's encoder part loads (a U-Net or a
      detector built on E-3DSNN stages: ``e3dsnn_t``); None when the model is an encoder itself;
    encoder_prefixes: the parameter-name prefixes of that encoder part (``stem.``, ``stages.``).
    """

    family: str
    inputs: str = "points"
    voxel: bool = False
    encoder: str | None = None
    encoder_prefixes: tuple[str, ...] = ()


def register_model(
    fn: Callable[..., nn.Module] | None = None,
    *,
    name: str | None = None,
    family: str | None = None,
    inputs: str = "points",
    voxel: bool = False,
    encoder: str | None = None,
    encoder_prefixes: Sequence[str] = (),
) -> Any:
    """Decorator: register a builder ``fn(**overrides) -> nn.Module`` under its function name, with
    what the architecture is (`ModelInfo`): `svl` asks the registry, not the name, for its abilities."""
    if inputs not in ("points", "images"):
        raise ValueError(f"register_model: inputs must be 'points' or 'images', got {inputs!r}")

    def deco(f: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        key = name or f.__name__
        info = ModelInfo(family or key, inputs, voxel, encoder, tuple(encoder_prefixes))
        return MODELS.register(key, f, meta={"info": info})

    return deco(fn) if fn is not None else deco


def model_info(name: str) -> ModelInfo:
    """The declared `ModelInfo` of a registered architecture (a plugin that declared nothing: its own
    family, point inputs, no voxel size, no separate encoder part)."""
    return MODELS.meta(name).get("info") or ModelInfo(family=name)  # unknown name: the registry's error


def register_pretrained(
    arch: str,
    tag: str,
    contract: Contract,
    model_cfg: Mapping[str, Any] | None = None,
    description: str = "",
) -> PretrainedEntry:
    """Declare the weight file ``arch.tag`` (its input contract and the builder overrides it needs)."""
    if "." in tag or not tag:
        raise ValueError(f"pretrained tag must be non-empty and contain no '.', got {tag!r}")
    entry = PretrainedEntry(arch, tag, contract, dict(model_cfg or {}), description)
    _PRETRAINED[entry.name] = entry
    return entry


def list_models(pattern: str = "*", pretrained: bool = False) -> list[str]:
    """Sorted registered names matching a shell-style ``pattern``; ``pretrained=True`` lists ``arch.tag``."""
    if not pretrained:
        return MODELS.names(pattern)
    return sorted(n for n in _PRETRAINED if fnmatch.fnmatchcase(n, pattern))


def list_pretrained(pattern: str = "*") -> list[PretrainedEntry]:
    return [_PRETRAINED[n] for n in list_models(pattern, pretrained=True)]


def _unknown(kind: str, name: str, choices: list[str]) -> ValueError:
    close = difflib.get_close_matches(name, choices, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return ValueError(f"unknown {kind} {name!r}{hint} (see svl.list_models() / `svl models`)")


def model_entrypoint(name: str) -> Callable[..., nn.Module]:
    return MODELS.get(name)


def get_pretrained(name: str) -> PretrainedEntry:
    """The registered ``arch.tag`` entry (ValueError with close matches when unknown)."""
    if name not in _PRETRAINED:
        raise _unknown("pretrained tag", name, sorted(_PRETRAINED))
    return _PRETRAINED[name]


def default_contract(model: nn.Module) -> Contract:
    """The contract a freshly built model implies: z-up, no colour, its own voxel size / T / D / dim."""
    return Contract(
        gravity_axis="z",
        color="none" if getattr(model, "in_channels", 6) >= 6 else None,
        num_points=getattr(model, "num_points", None),
        voxel_size=getattr(model, "voxel_size", None),
        T=getattr(model, "T", 1),
        D=getattr(model, "D", 4) if getattr(model, "neuron", "ilif") == "ilif" else None,
        teacher=None,
        embed_dim=getattr(model, "out_dim", None),
        normals=getattr(model, "in_channels", 6) > 6,
    )


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ----------------------------------------------------------------------------- shared input handling
@dataclass
class Inputs:
    """What a model needs from a batch: xyz (B, N, 3), feats (B, N, C) or per-step (T, B, N, C)."""

    xyz: Tensor
    feats: Tensor
    sparse: Any = None
    steps: bool = False
    step_mask: Tensor | None = None  # (T, B, N) bool: which step each point belongs to


def unpack_inputs(batch: Any, in_channels: int, T: int = 1, dtype: torch.dtype | None = None) -> Inputs:
    """Accept a PointBatch (duck-typed: ``xyz``, ``feats``, ``sparse``, ``extras``) or a Tensor (B, N, C).

    A 3-channel input gets the constant colour MISSING_COLOR appended when the model wants 6 channels
    (docs/SPEC.md §3).
    With ``T > 1`` a ``(T, B, N, C)`` tensor in ``batch.extras["steps"]`` gives per-step features
    (with ``extras["step_mask"] (T, B, N)`` saying which step each point of ``xyz`` belongs to);
    otherwise the same features are repeated over time by the model. Floating inputs are cast to
    ``dtype`` (the model's parameter dtype) so a float64 model runs end to end in float64.
    """
    if isinstance(batch, Tensor):
        if batch.dim() != 3 or batch.shape[-1] < 3:
            raise ValueError(f"model input must be (B, N, C>=3) points, got shape {tuple(batch.shape)}")
        xyz, feats, sparse, extras = batch[..., :3], batch, None, {}
    elif hasattr(batch, "xyz") and hasattr(batch, "feats"):
        xyz, feats = batch.xyz, batch.feats
        sparse = getattr(batch, "sparse", None)
        extras = getattr(batch, "extras", None) or {}
    else:
        raise ValueError(
            f"model input must be a PointBatch or a (B, N, C) Tensor, got {type(batch).__name__}"
        )
    steps = extras.get("steps")
    mask = None
    if steps is not None:
        if steps.dim() != 4 or steps.shape[0] != T or steps.shape[1:3] != xyz.shape[:2]:
            raise ValueError(
                f"extras['steps'] must be (T={T}, B, N, C) matching xyz {tuple(xyz.shape)} for a model "
                f"with T={T}, got {tuple(steps.shape)}; build the data with T={T} or the model with "
                f"T={steps.shape[0] if steps.dim() == 4 else '?'}"
            )
        feats = steps
        mask = extras.get("step_mask")
        if mask is not None and tuple(mask.shape) != tuple(steps.shape[:3]):
            raise ValueError(f"extras['step_mask'] must be {tuple(steps.shape[:3])}, got {tuple(mask.shape)}")
    if dtype is not None:
        xyz, feats = xyz.to(dtype), feats.to(dtype)
    if feats.shape[-1] == 3 and in_channels == 6:
        feats = torch.cat([feats, torch.full_like(feats, MISSING_COLOR)], -1)
    if sparse is None and feats.shape[-1] != in_channels:
        raise ValueError(f"model expects {in_channels} input channels, got {feats.shape[-1]}")
    return Inputs(
        xyz=xyz, feats=feats, sparse=sparse, steps=steps is not None,
        step_mask=None if mask is None else mask.bool(),
    )  # fmt: skip


def with_defaults(contract: Contract, **kw: Any) -> Contract:
    return replace(contract, **kw)
