"""Checkpoints: weights in one safetensors file, svl metadata as JSON in its header.

Weights go to safetensors (no pickle: safe to load from strangers, memory-mappable, readable by
other tools). Training state that is not weights (optimizer, scheduler, RNG, data position) goes
to a sibling `.state.pt` that only this library writes and reads.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from svl._version import __version__
from svl.utils import atomic_path, atomic_write

if TYPE_CHECKING:
    import torch

__all__ = [
    "check_checkpoint_complete",
    "load_checkpoint",
    "load_state_into",
    "load_training_state",
    "read_checkpoint_meta",
    "save_checkpoint",
    "save_checkpoint_and_state",
    "save_training_state",
    "training_state_path",
]

META_KEY = "svl"
_SHOW = 5  # how many names of each kind an error message lists


def _prepare_tensors(tensors: Mapping[str, Any], path: Path) -> dict[str, torch.Tensor]:
    """Detached, contiguous CPU tensors, each owning its storage (safetensors rejects shared memory)."""
    import torch

    if not isinstance(tensors, Mapping):
        raise ValueError(f"{path}: tensors must be a dict of name -> Tensor, got {type(tensors).__name__}")
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for name, t in tensors.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"{path}: tensor names must be non-empty strings, got {name!r}")
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{path}: entry {name!r} is a {type(t).__name__}, not a torch.Tensor")
        t = t.detach().to("cpu").contiguous()
        ptr = t.untyped_storage().data_ptr()
        whole = t.untyped_storage().nbytes() == t.numel() * t.element_size() and t.storage_offset() == 0
        if ptr in seen or not whole:
            t = t.clone()
        if t.numel() > 0:
            seen.add(t.untyped_storage().data_ptr())
        out[name] = t
    return out


def save_checkpoint(
    path: str | os.PathLike[str], tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any] | None = None
) -> Path:
    """Write `tensors` + JSON `meta` to one safetensors file, atomically.

    `svl_version` is added to meta so a reader can tell which release wrote the file.
    """
    from safetensors.torch import save_file

    p = Path(path)
    meta = dict(meta or {})
    meta["svl_version"] = __version__
    try:
        meta_json = json.dumps(meta, sort_keys=True)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{p}: checkpoint meta must be JSON-serialisable: {e}") from None
    ready = _prepare_tensors(tensors, p)
    # Exact data size + a generous header allowance: the space a full disk must be told about.
    expected = sum(t.numel() * t.element_size() for t in ready.values()) + len(meta_json) + 200 * len(ready)
    with atomic_path(p, expected_bytes=expected) as tmp:
        save_file(ready, str(tmp), metadata={META_KEY: meta_json})
    return p


def _check_file(path: str | os.PathLike[str]) -> Path:
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"checkpoint {p} does not exist")
    if not p.is_file():
        raise ValueError(f"checkpoint {p} is not a file")
    return p


_MAX_HEADER = 100_000_000  # safetensors refuses larger headers: a bigger length is garbage, not a cut


def _truncation(p: Path) -> str | None:
    """ "<file> is truncated: ..." when the file is shorter than its own header says, else None.

    A file cut short (a full disk during a non-atomic copy, an interrupted download) otherwise
    surfaces as an opaque safetensors header error or, further on, as a hash mismatch.
    """
    size = p.stat().st_size
    with open(p, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            return f"{p} is truncated: {size} bytes, less than the 8-byte header length"
        n = int.from_bytes(head, "little")
        if n == 0 or n > _MAX_HEADER:
            return None
        if 8 + n > size:
            return f"{p} is truncated: {size} bytes, the header says at least {8 + n}"
        try:
            header = json.loads(fh.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError):
            return None
    if not isinstance(header, dict):
        return None
    ends = [
        v["data_offsets"][1]
        for k, v in header.items()
        if k != "__metadata__"
        and isinstance(v, dict)
        and isinstance(v.get("data_offsets"), list)
        and len(v["data_offsets"]) == 2
        and isinstance(v["data_offsets"][1], int)
    ]
    need = 8 + n + max(ends, default=0)
    if need > size:
        return f"{p} is truncated: {size} bytes, the header says {need}"
    return None


def check_checkpoint_complete(path: str | os.PathLike[str]) -> Path:
    """Raise ValueError "<file> is truncated: N bytes, the header says M" for a file cut short.

    Cheap (reads the header only); call it before hashing a checkpoint, so a cut file is not
    reported as a hash mismatch.
    """
    p = _check_file(path)
    msg = _truncation(p)
    if msg:
        raise ValueError(msg)
    return p


def _unreadable(p: Path, e: Exception) -> ValueError:
    """The error for a file safetensors cannot open: "truncated" when it is, else the generic message."""
    try:
        msg = _truncation(p)
    except OSError:
        msg = None
    return ValueError(msg or f"{p}: not a readable safetensors checkpoint (truncated or corrupt?): {e}")


def _parse_meta(p: Path, header: Mapping[str, str] | None) -> dict[str, Any]:
    if not header or META_KEY not in header:
        raise ValueError(
            f"{p}: a safetensors file but not an svl checkpoint (no '{META_KEY}' metadata); "
            "load it with safetensors directly or re-save it with svl.checkpoint.save_checkpoint"
        )
    try:
        meta = json.loads(header[META_KEY])
    except json.JSONDecodeError as e:
        raise ValueError(f"{p}: corrupt svl metadata (invalid JSON: {e})") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{p}: corrupt svl metadata (expected a JSON object, got {type(meta).__name__})")
    return meta


def read_checkpoint_meta(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Only the metadata (reads the header, not the weights): cheap model/contract inspection."""
    from safetensors import safe_open

    p = _check_file(path)
    try:
        with safe_open(str(p), framework="pt") as f:
            header = f.metadata()
    except Exception as e:  # SafetensorError, OSError on unreadable files
        raise _unreadable(p, e) from None
    return _parse_meta(p, header)


def load_checkpoint(
    path: str | os.PathLike[str], device: str = "cpu"
) -> tuple[dict[str, torch.Tensor], dict]:
    """Read a checkpoint written by `save_checkpoint`: returns `(tensors, meta)`.

    Missing file -> FileNotFoundError; a file cut short -> ValueError "<file> is truncated: ...";
    other corruption or a non-svl file -> ValueError.
    """
    from safetensors import safe_open

    p = _check_file(path)
    try:
        with safe_open(str(p), framework="pt", device=device) as f:
            header = f.metadata()
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:
        raise _unreadable(p, e) from None
    return tensors, _parse_meta(p, header)


def _listing(kind: str, names: list[str]) -> str:
    shown = ", ".join(names[:_SHOW])
    more = f", ... ({len(names) - _SHOW} more)" if len(names) > _SHOW else ""
    return f"{len(names)} {kind}: {shown}{more}"


def load_state_into(
    module: torch.nn.Module, tensors: Mapping[str, torch.Tensor], where: str | os.PathLike[str] = "<tensors>"
) -> torch.nn.Module:
    """Copy `tensors` into `module` after checking that names and shapes match exactly.

    On any mismatch nothing is loaded and the ValueError lists missing, unexpected and
    mis-shaped entries (the first few of each, with counts), so a wrong model/config is obvious.
    """
    expected = module.state_dict()
    missing = [k for k in expected if k not in tensors]
    unexpected = [k for k in tensors if k not in expected]
    misshaped = [
        f"{k} (checkpoint {tuple(tensors[k].shape)} vs model {tuple(expected[k].shape)})"
        for k in expected
        if k in tensors and tuple(tensors[k].shape) != tuple(expected[k].shape)
    ]
    if missing or unexpected or misshaped:
        parts = [
            _listing(kind, names)
            for kind, names in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped))
            if names
        ]
        raise ValueError(
            f"{where}: checkpoint does not match {type(module).__name__} "
            f"({len(expected)} entries expected, {len(tensors)} found): " + "; ".join(parts)
        )
    module.load_state_dict(dict(tensors), strict=True)
    return module


def training_state_path(checkpoint_path: str | os.PathLike[str]) -> Path:
    """The `.state.pt` sidecar of a checkpoint: `run/last.safetensors` -> `run/last.state.pt`."""
    p = Path(checkpoint_path)
    stem = p.name[: -len(".safetensors")] if p.name.endswith(".safetensors") else p.name
    return p.with_name(stem + ".state.pt")


def save_training_state(path: str | os.PathLike[str], obj: Any) -> Path:
    """torch.save `obj` (optimizer/scheduler/RNG/data position) atomically.

    On a full disk the DiskFullError's size is the arrays' bytes in `obj` (what dominates a state),
    or the earlier state file's size when larger.
    """
    import torch

    p = Path(path)
    estimate = max(_array_bytes(obj), _size(p)) or None
    with atomic_write(p, "wb", expected_bytes=estimate) as fh:
        torch.save(obj, fh)
    return p


def save_checkpoint_and_state(
    path: str | os.PathLike[str], tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any], state: Any
) -> Path:
    """`save_checkpoint(path, ...)` and `save_training_state` of its `.state.pt`, replaced as a pair.

    The state (the larger file: optimizer moments) is written to a temporary file and synced
    first, the weights then replace theirs, and only then does the state replace its own: a failed
    write of either (a full disk: `DiskFullError` naming that file) leaves the previous pair intact.
    """
    import torch

    p = Path(path)
    sp = training_state_path(p)
    estimate = max(_array_bytes(state), _size(sp)) or None
    with atomic_write(sp, "wb", expected_bytes=estimate) as fh:
        torch.save(state, fh)
        fh.flush()
        os.fsync(fh.fileno())
        save_checkpoint(p, tensors, meta)
    return p


def _size(p: Path) -> int:
    try:
        return p.stat().st_size
    except OSError:
        return 0


def _array_bytes(obj: Any, depth: int = 0) -> int:
    """Bytes of the tensors / numpy arrays inside nested dicts, lists and tuples."""
    import numpy as np
    import torch

    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, np.ndarray):
        return int(obj.nbytes)
    if depth > 8:
        return 0
    if isinstance(obj, Mapping):
        return sum(_array_bytes(v, depth + 1) for v in obj.values())
    if isinstance(obj, list | tuple):
        return sum(_array_bytes(v, depth + 1) for v in obj)
    return 0


def load_training_state(path: str | os.PathLike[str], map_location: str = "cpu") -> Any:
    """Load a `.state.pt` written by `save_training_state` (full unpickling: only load your own files)."""
    import torch

    p = _check_file(path)
    try:
        return torch.load(p, map_location=map_location, weights_only=False)
    except Exception as e:
        raise ValueError(f"{p}: cannot read training state (truncated or corrupt?): {e}") from None
