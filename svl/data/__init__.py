"""svl.data: file readers, datasets, transforms, batching and event streams.

Submodules import lazily (torch, h5py only when used), so ``from svl.data import load_points``
stays cheap. See io.py (load_points), datasets.py (build_dataset), transforms.py, batch.py
(PointBatch, collate_points) and events.py.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "load_points": "svl.data.io",
    "sample_mesh_surface": "svl.data.io",
    "PointBatch": "svl.data.batch",
    "collate_points": "svl.data.batch",
    "Collate": "svl.data.batch",
    "build_dataset": "svl.data.datasets",
    "list_datasets": "svl.data.datasets",
    "register_dataset": "svl.data.datasets",
    "class_prompt_name": "svl.data.datasets",
    "load_class_names": "svl.data.datasets",
    "MODELNET10_CLASSES": "svl.data.datasets",
    "build_transforms": "svl.data.transforms",
    "register_transform": "svl.data.transforms",
    "list_transforms": "svl.data.transforms",
    "Compose": "svl.data.transforms",
    "farthest_point_sample": "svl.data.transforms",
    "read_aedat31": "svl.data.events",
    "read_event_array": "svl.data.events",
    "events_to_points": "svl.data.events",
    "slice_by_time": "svl.data.events",
    "slice_by_count": "svl.data.events",
    "bin_events": "svl.data.events",
    "EVENT_DTYPE": "svl.data.events",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    mod = _EXPORTS.get(name)
    if mod is None:
        raise AttributeError(f"module 'svl.data' has no attribute {name!r}")
    return getattr(importlib.import_module(mod), name)


def __dir__() -> list[str]:
    return __all__
