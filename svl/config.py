"""Dataclass configs loaded from YAML plus `key=value` overrides, with errors a user can act on.

A config is a plain (possibly nested) dataclass. OmegaConf does the type checking and merging;
this module turns its exceptions into ValueErrors that name the file or override, the key, and
the keys that would have been valid.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import os
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePath
from typing import Any, TypeVar

from svl.utils import atomic_write, get_logger

__all__ = ["config_from_dict", "config_to_dict", "load_config", "save_config"]

C = TypeVar("C")
log = get_logger(__name__)


def _dataclass_type(cls_or_obj: Any) -> type:
    cls = cls_or_obj if isinstance(cls_or_obj, type) else type(cls_or_obj)
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"configs must be dataclasses, got {cls!r}")
    return cls


def _nested_dataclass(tp: Any) -> type | None:
    """The dataclass inside a field annotation (`Sub`, `Sub | None`), else None."""
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return tp
    for arg in typing.get_args(tp):
        if dataclasses.is_dataclass(arg) and isinstance(arg, type):
            return arg
    return None


def _valid_keys(cls: type, dotted_parent: str) -> list[str] | None:
    """Field names of the dataclass reached by following `dotted_parent` from `cls`."""
    node: type | None = cls
    for part in [p for p in dotted_parent.split(".") if p]:
        if node is None:
            return None
        try:
            hints = typing.get_type_hints(node)
        except Exception:  # unresolvable forward refs: fall back to the raw annotations
            hints = {f.name: f.type for f in dataclasses.fields(node)}
        if part not in hints:
            return None
        node = _nested_dataclass(hints[part])
    if node is None:
        return None
    return [f.name for f in dataclasses.fields(node)]


def _unknown_key_message(cls: type, full_key: str, source: str) -> str:
    parent, _, leaf = full_key.rpartition(".")
    valid = _valid_keys(cls, parent) or []
    msg = f"{source}: unknown config key '{full_key}'"
    close = difflib.get_close_matches(leaf, valid, n=1)
    if close:
        msg += f" (did you mean '{(parent + '.' if parent else '') + close[0]}'?)"
    if valid:
        where = f"under '{parent}'" if parent else f"for {cls.__name__}"
        msg += f"; valid keys {where}: {', '.join(valid)}"
    return msg


def _merge(cls: type, base: Any, update: Any, source: str, key_hint: str | None = None) -> Any:
    """Merge `update` into the structured `base`, translating OmegaConf errors to ValueError."""
    from omegaconf import OmegaConf
    from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

    try:
        return OmegaConf.merge(base, update)
    except ConfigKeyError as e:
        key = e.full_key or key_hint or str(e.key)
        raise ValueError(_unknown_key_message(cls, key, source)) from None
    except ValidationError as e:
        key = e.full_key or key_hint
        detail = str(e).splitlines()[0]
        value = f" {e.value!r}" if e.value is not None else ""
        where = f" for config key '{key}'" if key else ""
        raise ValueError(f"{source}: invalid value{value}{where}: {detail}") from None
    except OmegaConfBaseException as e:
        where = f" (key '{key_hint}')" if key_hint else ""
        raise ValueError(f"{source}{where}: {str(e).splitlines()[0]}") from None


def _instantiate(cfg: Any, sources: str) -> Any:
    from omegaconf import OmegaConf
    from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

    try:
        return OmegaConf.to_object(cfg)
    except MissingMandatoryValue as e:
        key = e.full_key or e.key
        raise ValueError(
            f"config key '{key}' is required but not set ({sources}); "
            f"set it in the YAML file or pass {key}=VALUE"
        ) from None
    except OmegaConfBaseException as e:
        raise ValueError(f"invalid config ({sources}): {str(e).splitlines()[0]}") from None
    except (ValueError, TypeError) as e:  # raised by a dataclass __post_init__ validator
        section = _failing_section(cfg)
        where = f" in section '{section}'" if section else ""
        raise ValueError(f"invalid config ({sources}){where}: {e}") from None


def _failing_section(cfg: Any, prefix: str = "") -> str | None:
    """The dotted key of the innermost nested section whose validator refuses its values, if any.

    A section's __post_init__ does not know where it sits (`train` in one job, `finetune.train`
    in another), so the error names the section here.
    """
    from omegaconf import DictConfig, OmegaConf

    for key in cfg:
        sub = cfg[key] if isinstance(key, str) else None
        if not isinstance(sub, DictConfig) or not dataclasses.is_dataclass(OmegaConf.get_type(sub)):
            continue
        name = f"{prefix}{key}"
        try:
            OmegaConf.to_object(sub)
        except (ValueError, TypeError):
            return _failing_section(sub, name + ".") or name
        except Exception:  # noqa: BLE001 - not a validator failure: not this section
            continue
    return None


def _parse_override(item: str) -> tuple[str, str]:
    if not isinstance(item, str) or "=" not in item:
        raise ValueError(f"override {item!r} is not of the form key=value (e.g. train.lr=0.001)")
    key, _, value = item.partition("=")
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ValueError(f"override {item!r} has an empty key")
    return key, value


def _rename_keys(data: Any, renamed: Mapping[str, str], source: str) -> None:
    """Move keys a config class renamed (its `RENAMED = {old: new}`) to their new place, in place; an
    old key holding null (a config.yaml saved before the rename) is dropped."""
    from omegaconf import OmegaConf

    for old, new in renamed.items():
        parent_key, _, leaf = old.rpartition(".")
        parent = OmegaConf.select(data, parent_key) if parent_key else data
        if parent is None or not hasattr(parent, "keys") or leaf not in parent:
            continue
        value = parent[leaf]
        del parent[leaf]
        if value is not None:
            log.warning("%s: key %s is now %s", source, old, new)
            OmegaConf.update(data, new, value, merge=False)


def load_config(
    cls: type[C] | C, path: str | os.PathLike[str] | None = None, overrides: Sequence[str] | None = None
) -> C:
    """Build a config: dataclass defaults <- YAML file at `path` <- `key=value` overrides, in order.

    `cls` may also be a dataclass instance, whose values then act as the defaults.
    Unknown keys, wrong types and missing required values raise ValueError.
    """
    from omegaconf import DictConfig, OmegaConf

    dc = _dataclass_type(cls)
    cfg = OmegaConf.structured(cls)
    sources: list[str] = []
    renamed: dict[str, str] = dict(getattr(dc, "RENAMED", {}))
    if path is not None and str(path) != "":
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"config file {p} does not exist")
        try:
            data = OmegaConf.load(p)
        except Exception as e:  # yaml.YAMLError and friends
            raise ValueError(f"{p}: not valid YAML: {str(e).splitlines()[0]}") from None
        if not isinstance(data, DictConfig):
            raise ValueError(f"{p}: a config file must hold a mapping of keys, got a {type(data).__name__}")
        _rename_keys(data, renamed, str(p))
        cfg = _merge(dc, cfg, data, source=str(p))
        sources.append(str(p))
    for item in overrides or ():
        key, value = _parse_override(item)
        if key in renamed:
            log.warning("override %r: key %s is now %s", item, key, renamed[key])
            key = renamed[key]
        try:
            update = OmegaConf.from_dotlist([f"{key}={value}"])
        except Exception as e:
            raise ValueError(f"override {item!r}: cannot parse value: {str(e).splitlines()[0]}") from None
        cfg = _merge(dc, cfg, update, source=f"override {item!r}", key_hint=key)
        sources.append(f"override {item!r}")
    return _instantiate(cfg, ", ".join(sources) or f"{dc.__name__} defaults")


def config_from_dict(cls: type[C] | C, data: Mapping[str, Any], source: str = "<dict>") -> C:
    """Build a config from a plain mapping (e.g. the model config stored in a checkpoint)."""
    from omegaconf import OmegaConf

    dc = _dataclass_type(cls)
    if not isinstance(data, Mapping):
        raise ValueError(f"{source}: expected a mapping of config keys, got {type(data).__name__}")
    cfg = _merge(dc, OmegaConf.structured(cls), OmegaConf.create(dict(data)), source=source)
    return _instantiate(cfg, source)


def _plain(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.name
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Plain, JSON/YAML-safe dict of a config (enums by name, paths as strings, tuples as lists)."""
    from omegaconf import DictConfig, OmegaConf

    if isinstance(cfg, DictConfig):
        container = OmegaConf.to_container(cfg, resolve=True)
    elif dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        container = OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)
    elif isinstance(cfg, Mapping):
        container = dict(cfg)
    else:
        raise TypeError(f"config_to_dict: expected a dataclass instance or mapping, got {type(cfg).__name__}")
    return _plain(container)


def save_config(cfg: Any, path: str | os.PathLike[str]) -> Path:
    """Write the resolved config as YAML (atomically), loadable again with `load_config`."""
    from omegaconf import OmegaConf

    text = OmegaConf.to_yaml(OmegaConf.create(config_to_dict(cfg)))
    p = Path(path)
    with atomic_write(p, "w") as fh:
        fh.write(text)
    return p
