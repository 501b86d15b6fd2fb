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
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
import warnings
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

__all__ = ["Registry", "PluginWarning"]

T = TypeVar("T")


class PluginWarning(UserWarning):
    """An entry point of another package could not be loaded."""


class Registry(Generic[T]):
    """Names -> builders (functions or classes) of one kind, with helpful errors.

    `kind` is what one entry is called in messages ("model", "dataset"); `group` the entry-point
    group other packages register into; `hint` tells the user where to look up the names.
    """

    def __init__(self, kind: str, group: str | None = None, hint: str = "") -> None:
        self.kind = kind
        self.group = group
        self.hint = hint
        self._entries: dict[str, T] = {}
        self._plugins_loaded = group is None

    # ------------------------------------------------------------------ registration
    def register(self, name: str | None = None, obj: T | None = None, *, override: bool = False) -> Any:
        """Register `obj` under `name`; without `obj`, a decorator (the name defaults to `__name__`)."""

        def add(o: T) -> T:
            key = name or getattr(o, "__name__", None)
            if not isinstance(key, str) or not key:
                raise ValueError(f"a {self.kind} needs a non-empty name, got {key!r}")
            old = self._entries.get(key)
            if old is not None and old is not o and not override:
                where = getattr(old, "__module__", "?")
                raise ValueError(f"{self.kind} {key!r} is already registered (by {where})")
            self._entries[key] = o
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

    def create(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Call the builder registered as `name`."""
        builder: Callable[..., Any] = self.get(name)  # type: ignore[assignment]
        return builder(*args, **kwargs)

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
