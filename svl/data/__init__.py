"""svl.data: file readers, datasets, transforms, input preparation, batching and event streams.

Importing the package registers the built-in point and event datasets (one module per source family:
modelnet.py, scanobjectnn.py, openshape.py, folders.py, events.py, event_sim.py, segmentation.py,
scenes.py, detection.py) and stays cheap: torch, h5py and trimesh load only when a function needs
them. Where things live: readers/ (`load_points`, one module per format behind one table), base.py
(dataset registry, `build_dataset`, the `SeededDataset` / `PointDataset` bases), transforms.py,
prepare.py (`prepare`: a loaded cloud made to look like a checkpoint's training data), batch.py
(`PointBatch`, `collate_points`), axes.py (up-axis rotations), render.py (point-splat views),
images/ (image files, batches, transforms and datasets; import it directly, it loads torch).
"""

from __future__ import annotations

import importlib
from typing import Any

from svl.data import (  # noqa: F401  (importing them registers the built-in datasets)
    detection,
    event_sim,
    events,
    folders,
    modelnet,
    openshape,
    scanobjectnn,
    scenes,
    segmentation,
)

# eager, so `svl.data.prepare` is the function and not the submodule of the same name
from svl.data.prepare import DegenerateCloudWarning as DegenerateCloudWarning
from svl.data.prepare import prepare as prepare

_EXPORTS = {
    "load_points": "svl.data.readers",
    "sample_mesh_surface": "svl.data.readers",
    "register_reader": "svl.data.readers",
    "list_readers": "svl.data.readers",
    "rotate_up_to_z": "svl.data.axes",
    "PointBatch": "svl.data.batch",
    "collate_points": "svl.data.batch",
    "Collate": "svl.data.batch",
    "MISSING_COLOR": "svl.conventions",
    "DATASETS": "svl.data.base",
    "DATASET_OPTIONS": "svl.data.base",
    "ArrayDataset": "svl.data.base",
    "PointDataset": "svl.data.base",
    "SeededDataset": "svl.data.base",
    "build_dataset": "svl.data.base",
    "dataset_abilities": "svl.data.base",
    "dataset_takes": "svl.data.base",
    "files_up_axis": "svl.data.base",
    "list_datasets": "svl.data.base",
    "register_dataset": "svl.data.base",
    "TRANSFORMS": "svl.data.transforms",
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
    "events_to_steps": "svl.data.events",
    "EventDataset": "svl.data.events",
    "EVENT_DTYPE": "svl.data.events",
    "read_events": "svl.data.readers.events",
    "read_nmnist": "svl.data.readers.events",
    "sniff_bin": "svl.data.readers.events",
    "detect_event_format": "svl.data.readers.events",
    "EventFile": "svl.data.readers.events",
    "to_tonic": "svl.data.readers.events",
    "from_tonic": "svl.data.readers.events",
}
__all__ = sorted([*_EXPORTS, "DegenerateCloudWarning", "prepare"])


def __getattr__(name: str) -> Any:
    mod = _EXPORTS.get(name)
    if mod is None:
        raise AttributeError(f"module 'svl.data' has no attribute {name!r}")
    return getattr(importlib.import_module(mod), name)


def __dir__() -> list[str]:
    return __all__
