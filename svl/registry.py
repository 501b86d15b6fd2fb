"""One `Registry` class for everything svl builds by name: models, datasets, transforms, teachers, tasks.

Built-in entries register themselves when their package is imported (``svl.models`` imports every
architecture file, ``svl.data`` every dataset module, ...), the way timm and Pointcept do it. Other
packages add entries without editing svl through an entry-point group per registry, e.g. in their
``pyproject.toml``::

    [project.entry-points."svl.models"]
    my_encoder = "my_pkg.models:build_my_encoder"     # registered as "my_encoder"
    [project.entry-points."svl.datasets"]
    my_scans = "my_pkg.data"                          # a module: importing it registers its entries

Entry points are read once, on the first lookup. A broken plugin is reported with a warning that
names it; it never stops svl's own entries from working.

Every entry may carry metadata declared when it is registered (what a dataset builder takes, ...),
so callers ask the registry instead of inspecting builders; `build` turns a ``{"name": ..., **kw}``
spec into an object for every registry alike (Pointcept's ``build_from_cfg``).
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
import warnings
from collections.abc import Callable, Iterator, Mapping
from types import MappingProxyType
from typing import Any, Generic, TypeVar

__all__ = ["Registry", "PluginWarning"]

T = TypeVar("T")


class PluginWarning(UserWarning):
    """An entry point of another package could not be loaded."""


class Registry(Generic[T]):
    """Names -> builders (functions or classes) of one kind, with helpful errors.

    `kind` is what one entry is called in messages ("model", "dataset"); `group` the entry-point
    group other packages register into; `hint` tells the user where to look up the names;
    `default_meta(obj)` gives the metadata of an entry registered without any (plugins that declare
    nothing), computed once, when it is registered.
    """

    def __init__(
        self,
        kind: str,
        group: str | None = None,
        hint: str = "",
        default_meta: Callable[[Any], Mapping[str, Any]] | None = None,
    ) -> None:
        self.kind = kind
        self.group = group
        self.hint = hint
        self.default_meta = default_meta
        self._entries: dict[str, T] = {}
        self._meta: dict[str, Mapping[str, Any]] = {}
        self._plugins_loaded = group is None

    # ------------------------------------------------------------------ registration
    def register(
        self,
        name: str | None = None,
        obj: T | None = None,
        *,
        override: bool = False,
        meta: Mapping[str, Any] | None = None,
    ) -> Any:
        """Register `obj` under `name`; without `obj`, a decorator (the name defaults to `__name__`).

        meta: what the entry declares about itself (read back with `meta(name)`); None = the
        registry's `default_meta(obj)`, or nothing.
        """

        def add(o: T) -> T:
            key = name or getattr(o, "__name__", None)
            if not isinstance(key, str) or not key:
                raise ValueError(f"a {self.kind} needs a non-empty name, got {key!r}")
            old = self._entries.get(key)
            if old is not None and old is not o and not override:
                where = getattr(old, "__module__", "?")
                raise ValueError(f"{self.kind} {key!r} is already registered (by {where})")
            if meta is None:
                declared = dict(self.default_meta(o)) if self.default_meta is not None else {}
            else:
                declared = dict(meta)
            self._entries[key] = o
            self._meta[key] = MappingProxyType(declared)
            return o

        return add(obj) if obj is not None else add

    def register_class(self, name: str) -> Any:
        """Class decorator: register under `name` and record it as `cls.registered_name` (transforms)."""

        def deco(cls: Any) -> Any:
            self.register(name, cls)
            cls.registered_name = name
            return cls

        return deco

    def unregister(self, name: str) -> None:
        self._entries.pop(name, None)
        self._meta.pop(name, None)

    # ------------------------------------------------------------------ lookup
    def _load_plugins(self) -> None:
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        from importlib.metadata import entry_points

        for ep in entry_points(group=self.group):
            try:
                if ":" in ep.value:
                    self.register(ep.name, ep.load(), override=False)
                else:
                    importlib.import_module(ep.value)
            except Exception as e:  # a third-party plugin must not break svl
                warnings.warn(
                    f"could not load {self.kind} plugin {ep.name!r} = {ep.value!r} "
                    f"(entry-point group {self.group!r}): {type(e).__name__}: {e}",
                    PluginWarning,
                    stacklevel=3,
                )

    def get(self, name: str) -> T:
        """The entry registered as `name`; ValueError naming close matches and what is registered."""
        self._load_plugins()
        if not isinstance(name, str) or name not in self._entries:
            raise ValueError(self.unknown_message(name))
        return self._entries[name]

    def meta(self, name: str) -> Mapping[str, Any]:
        """The (read-only) metadata the entry `name` was registered with; ValueError as `get`."""
        self.get(name)
        return self._meta[name]

    def create(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Call the builder registered as `name`."""
        builder: Callable[..., Any] = self.get(name)  # type: ignore[assignment]
        return builder(*args, **kwargs)

    def build(self, spec: str | Mapping[str, Any], **defaults: Any) -> Any:
        """Build from a spec: a registered name, or a dict ``{"name": ..., **kwargs}``.

        `defaults` are keyword arguments the spec's own override. An unknown name raises ValueError
        as `get` does; a TypeError of the call (a misspelt or missing argument) becomes a ValueError
        naming the entry and the arguments, so a config mistake reads as one.
        """
        if isinstance(spec, str):
            name, kwargs = spec, {}
        elif isinstance(spec, Mapping):
            if "name" not in spec:
                raise ValueError(f"a {self.kind} spec needs a 'name' key, got {dict(spec)!r}")
            kwargs = {k: v for k, v in spec.items() if k != "name"}
            name = spec["name"]
        else:
            raise ValueError(f"a {self.kind} spec must be a name or a dict with 'name', got {spec!r}")
        builder: Callable[..., Any] = self.get(name)  # type: ignore[assignment]
        kwargs = {**defaults, **kwargs}
        try:
            return builder(**kwargs)
        except TypeError as e:
            raise ValueError(f"{self.kind} {name!r}: bad arguments {kwargs} ({e})") from None

    def names(self, pattern: str = "*") -> list[str]:
        """Sorted registered names matching a shell-style pattern."""
        self._load_plugins()
        return sorted(n for n in self._entries if fnmatch.fnmatchcase(n, pattern))

    def unknown_message(self, name: Any) -> str:
        names = self.names()
        close = difflib.get_close_matches(str(name), names, n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        listing = ", ".join(names) if len(names) <= 40 else ", ".join(names[:40]) + ", ..."
        where = f" ({self.hint})" if self.hint else ""
        return f"unknown {self.kind} {name!r}{hint}; registered: {listing or 'none'}{where}"

    def __contains__(self, name: object) -> bool:
        self._load_plugins()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        self._load_plugins()
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {len(self._entries)} entries, group={self.group!r})"
