"""Measure a whole model: build it (by name or from a checkpoint), feed it real clouds or the E-3DSNN
release's random input, and return one EnergyReport. `svl energy` is a thin shell over `energy_report`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from svl.conventions import MISSING_COLOR
from svl.data import build_dataset
from svl.data.batch import PointBatch, collate_points
from svl.data.events import EVENT_DTYPE, events_to_points, events_to_steps
from svl.data.images import build_image_dataset, collate_images
from svl.energy.meter import CONVENTIONS, UNITS, measure_energy
from svl.energy.report import EnergyReport, EnergyTable, merge_reports
from svl.models import create_model, load_model, model_info
from svl.models.heads import attach_head
from svl.sparse import SparseTensor
from svl.spiking import record_spikes, set_spike_mode, spike_stats

__all__ = [
    "build_model",
    "dataset_batches",
    "energy_per_sample",
    "energy_report",
    "firing_rates",
    "image_batches",
    "measure_model",
    "random_cloud",
    "random_input",
    "random_voxel_input",
    "seeded_batches",
    "sparse_point_batch",
]


def random_voxel_input(
    n_points: int = 9830, grid: int = 64, channels: int = 6, batch_size: int = 1, seed: int = 0
) -> Any:
    """The E-3DSNN release's energy input: integer voxel coords uniform in [0, grid)^3, random features.

    Coordinates are drawn with replacement and kept as drawn (duplicates included), like the release.
    """

    if n_points < 1 or grid < 1 or channels < 1 or batch_size < 1:
        raise ValueError(f"random input needs positive sizes, got points={n_points}, grid={grid}")
    g = torch.Generator().manual_seed(seed)
    xyz = torch.randint(0, grid, (batch_size * n_points, 3), generator=g)
    b = torch.arange(batch_size).repeat_interleave(n_points).view(-1, 1)
    feats = torch.randn(batch_size * n_points, channels, generator=g)
    return SparseTensor(feats, torch.cat([b, xyz], 1), batch_size)


def random_cloud(n_points: int, channels: int = 6, batch_size: int = 1, seed: int = 0) -> torch.Tensor:
    """Random clouds (B, N, C) in the unit ball: xyz, then the missing-colour constant as features."""
    if n_points < 1 or channels < 3:
        raise ValueError(f"a random cloud needs >= 1 point and >= 3 channels, got {n_points}, {channels}")
    g = torch.Generator().manual_seed(seed)
    d = torch.randn(batch_size, n_points, 3, generator=g)
    r = torch.rand(batch_size, n_points, 1, generator=g) ** (1 / 3)
    xyz = d / d.norm(dim=-1, keepdim=True).clamp_min(1e-12) * r
    return torch.cat([xyz, torch.full((batch_size, n_points, channels - 3), MISSING_COLOR)], -1)


def sparse_point_batch(st: Any) -> Any:
    """A PointBatch whose ``.sparse`` is already set, so a voxel model skips its own voxelization.

    This is how the release's random voxel input (already on the grid) reaches an E-3DSNN unchanged.
    """

    b = st.batch_size
    return PointBatch(
        xyz=torch.zeros(b, 0, 3), feats=torch.zeros(b, 0, st.num_channels), labels=None,
        index=torch.arange(b), sparse=st,
    )  # fmt: skip


def build_model(name: str | None = None, checkpoint: str | None = None, head: str | None = None) -> nn.Module:
    """A registered model by name, or the model a checkpoint describes (with its weights), with an
    optional Rep-VLI head file folded in (checked against the checkpoint's hash when both are given).
    Pretraining checkpoints keep the encoder under ``encoder.``.
    """
    return _build_with_meta(name, checkpoint, head)[0]


def _build_with_meta(
    name: str | None, checkpoint: str | None, head: str | None
) -> tuple[nn.Module, dict[str, Any]]:
    """`build_model`, plus the checkpoint's meta (what it reads: points, events or images; {} by name)."""
    if checkpoint is not None:
        loaded = load_model(checkpoint, head=head)
        return loaded.model, dict(loaded.meta)
    if name is None:
        raise ValueError("give a model name or a checkpoint to measure")
    model = create_model(name)
    if head is not None:
        attach_head(model, head)
    return model.eval(), {}


def _input_kind(model: nn.Module, meta: Mapping[str, Any]) -> str:
    """What the model reads: "images", "events", "detector", "segmenter", "voxels" or "points"."""
    data = meta.get("data") or {}
    if data.get("input") == "image":
        return "images"
    if data.get("input") == "events":
        return "events"
    arch = meta.get("model") or getattr(model, "model_name", None)
    info = model_info(arch) if isinstance(arch, str) else None
    if info is not None and info.inputs == "images":
        return "images"
    if (info is not None and info.family == "e3dsnn_det") or hasattr(model, "grid"):
        return "detector"
    if (info is not None and info.family == "e3dsnn_unet") or hasattr(model, "forward_voxels"):
        return "segmenter"  # voxelizes its own points: it maps the voxels' logits back to them
    return "voxels" if _is_voxel_model(model) else "points"


def _random_events(
    n: int, sensor: tuple[int, int], meta: Mapping[str, Any], T: int, seed: int
) -> dict[str, Any]:
    """One window of `n` uniform random events on the sensor, encoded as the classifier was trained."""
    rng = np.random.default_rng(seed)
    ev = np.zeros(n, EVENT_DTYPE)
    ev["x"], ev["y"] = rng.integers(0, sensor[0], n), rng.integers(0, sensor[1], n)
    ev["t"] = np.sort(rng.integers(0, 100_000, n))
    ev["p"] = rng.integers(0, 2, n).astype(bool)
    if meta.get("encoding", "cloud") == "bins":
        return events_to_steps(ev, T, sensor, n, seed=seed)
    return events_to_points(ev, sensor, n, seed=seed)


def random_input(
    model: nn.Module, n_points: int, meta: Mapping[str, Any] | None = None, seed: int = 0
) -> Any:
    """One random input the model reads, shaped and scaled as its checkpoint's meta says.

    - images (an image classifier, `svl distill`): a (1, C, S, S) image in [0, 1] of the trained size
      and channels (`n_points` is not used);
    - events (`task=event_classification`): `n_points` uniform random events on the trained sensor,
      encoded as trained (a cloud of x, y, t, polarity, or T time bins);
    - a detector: `n_points` points uniform in its point-cloud range, features as its input channels;
    - a segmenter (U-Net): `n_points` points in the unit ball, voxelized by the model itself;
    - other voxel encoders: the E-3DSNN release's random 64^3 integer grid (`random_voxel_input`) with
      the model's input channels; other point models: a random cloud in the unit ball.
    """
    meta = dict(meta or {})
    data = meta.get("data") or {}
    kind = _input_kind(model, meta)
    channels = int(getattr(model, "in_channels", 6) or 6)
    if kind != "images" and n_points < 1:
        raise ValueError(f"--random-points must be >= 1, got {n_points}")
    if kind == "images":
        size = int(data.get("image_size") or getattr(model, "img_size", 32))
        c = int(data.get("channels") or channels)
        img = torch.rand(c, size, size, generator=torch.Generator().manual_seed(seed))
        return collate_images([{"image": img, "label": 0, "index": 0}])
    if kind == "events":
        sensor = tuple(int(v) for v in (data.get("sensor_size") or (128, 128)))
        sample = _random_events(n_points, sensor, data, int(getattr(model, "T", 1)), seed)
        return collate_points([{**sample, "label": 0, "index": 0}])
    if kind == "detector":
        r = torch.tensor(model.grid.point_cloud_range, dtype=torch.float32)
        g = torch.Generator().manual_seed(seed)
        xyz = r[:3] + torch.rand(1, n_points, 3, generator=g) * (r[3:] - r[:3])
        feats = torch.rand(1, n_points, max(channels - 3, 0), generator=g)  # reflectance-like, [0, 1]
        return torch.cat([xyz, feats], -1)
    if kind == "voxels":
        return sparse_point_batch(random_voxel_input(n_points, channels=channels, batch_size=1, seed=seed))
    return random_cloud(n_points, channels=max(channels, 3), batch_size=1, seed=seed)


def _is_voxel_model(model: nn.Module) -> bool:
    """E-3DSNN-like models consume SparseTensors (their first synaptic layer is a sparse conv)."""
    for m in model.modules():
        if hasattr(m, "kernel_map") and isinstance(getattr(m, "weight", None), torch.Tensor):
            return True
        if isinstance(m, nn.Linear | nn.modules.conv._ConvNd):
            return False
    return False


def seeded_batches(
    ds: Any, samples: int, batch_size: int, seed: int, collate: Any = collate_points, what: str = "dataset"
) -> list[Any]:
    """Collated batches of `samples` seeded random items of `ds` (the same draw for the same seed)."""
    n = min(len(ds), int(samples))
    if n < 1:
        raise ValueError(f"{what} is empty (len {len(ds)}, {samples} samples asked)")
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(ds), generator=g)[:n].tolist()
    bs = max(1, int(batch_size))
    return [collate([ds[i] for i in idx[s : s + bs]]) for s in range(0, n, bs)]


def dataset_batches(dataset: str, split: str, batch_size: int, batches: int, seed: int = 0) -> list[Any]:
    """``batches`` collated batches of a seeded random subset of a registered dataset's split."""
    what = f"dataset {dataset!r} split {split!r}"
    return seeded_batches(build_dataset(dataset, split), batch_size * batches, batch_size, seed, what=what)


def image_batches(dataset: str, split: str, batch_size: int, batches: int, seed: int = 0) -> list[Any]:
    """`dataset_batches` of a registered image dataset (an image classifier's real inputs)."""
    ds, what = build_image_dataset(dataset, split), f"image dataset {dataset!r} split {split!r}"
    return seeded_batches(ds, batch_size * batches, batch_size, seed, collate_images, what)


def measure_model(
    model: nn.Module,
    *,
    data: str | None = None,
    random_points: int | None = None,
    split: str = "test",
    batch_size: int = 8,
    batches: int = 1,
    convention: str = "exact",
    energy: EnergyTable | None = None,
    mode: str = "integer",
    seed: int = 0,
    name: str | None = None,
    unit: str = "flops",
    meta: Mapping[str, Any] | None = None,
) -> EnergyReport:
    """Measure ``model`` on real data batches or on one random input (see `random_input`; ``meta``: the
    checkpoint's, which says what the model reads).

    ``unit``: ``"flops"`` (docs/SPEC.md §7) or ``"macs"`` (per synaptic event), see measure_energy.
    """

    set_spike_mode(model, mode)
    if (data is None) == (random_points is None):
        raise ValueError("give exactly one of data (a dataset name) or random_points (a point count)")
    if random_points is not None:
        inputs = [random_input(model, random_points, meta, seed)]
    elif _input_kind(model, meta or {}) == "images":
        inputs = image_batches(data, split, batch_size, batches, seed)
    else:
        inputs = dataset_batches(data, split, batch_size, batches, seed)
    reports = [
        measure_energy(model, b, convention=convention, energy=energy, name=name, unit=unit) for b in inputs
    ]
    return merge_reports(reports)


def energy_report(
    model: str | None = None,
    checkpoint: str | None = None,
    head: str | None = None,
    *,
    data: str | None = None,
    random_points: int | None = None,
    split: str = "test",
    batch_size: int = 8,
    batches: int = 1,
    convention: str = "exact",
    energy: EnergyTable | None = None,
    mode: str = "integer",
    seed: int = 0,
    unit: str = "flops",
) -> EnergyReport:
    """The report of a model given by registered name or checkpoint (+ head), see `build_model`.

    Seeds torch before building, so a model built by name gets the same random weights every run.
    """
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown convention {convention!r}: use one of {CONVENTIONS}")
    if unit not in UNITS:
        raise ValueError(f"unknown energy unit {unit!r}: use one of {UNITS}")
    torch.manual_seed(seed)
    net, meta = _build_with_meta(model, checkpoint, head)
    label = model or getattr(net, "name", None) or type(net).__name__
    return measure_model(
        net,
        data=data,
        random_points=random_points,
        split=split,
        batch_size=batch_size,
        batches=batches,
        convention=convention,
        energy=energy,
        mode=mode,
        seed=seed,
        name=label,
        unit=unit,
        meta=meta,
    )


def energy_per_sample(
    model: nn.Module, dataset: Any, samples: int = 16, collate: Callable[[list[Any]], Any] | None = None
) -> dict[str, Any]:
    """Spiking and ANN-equivalent energy per sample (mJ) of `model` on up to `samples` shapes spread
    over `dataset` (docs/SPEC.md §7), with the unit both figures count in."""
    step = max(1, len(dataset) // samples)
    batch = (collate or collate_points)([dataset[i] for i in range(0, len(dataset), step)][:samples])
    record_spikes(model, True)
    try:
        rep = measure_energy(model.eval(), batch.to(next(model.parameters()).device))
        rates = firing_rates(model)
    finally:
        record_spikes(model, False)
    return {
        "energy_snn_mj": rep.energy_snn_mj,
        "energy_ann_mj": rep.energy_ann_mj,
        "ratio": rep.ratio,
        "sops": rep.sops,
        "ann_flops": rep.ann_flops,
        "unit": rep.unit,
        "per_step_energy_snn_mj": (ps := rep.per_step())["energy_snn_mj"],  # one entry per timestep
        "per_step_spikes": ps["spikes"],
        # what the SNN figure rests on: the measured model's own spikes (mean spike per neuron and step)
        "firing_rate": rates["overall"],
        "firing_rates": rates["groups"],
    }


def firing_rates(model: nn.Module) -> dict[str, Any]:
    """Mean firing rate (integer spikes per neuron per step) of the last recorded forward pass, overall
    and per layer group (the first name part, with its index for a list: ``sps``, ``blocks.0``, ...).
    Needs `record_spikes` on during that pass; empty groups and None overall for an ANN."""
    spikes: dict[str, float] = {}
    cells: dict[str, float] = {}
    for name, st in spike_stats(model).items():
        parts = name.split(".")
        key = ".".join(parts[:2]) if len(parts) > 2 and parts[1].isdigit() else parts[0]
        spikes[key] = spikes.get(key, 0.0) + st["spikes"]
        cells[key] = cells.get(key, 0.0) + st["neurons"]
    total = sum(cells.values())
    return {
        "overall": sum(spikes.values()) / total if total else None,
        "groups": {k: spikes[k] / max(cells[k], 1.0) for k in spikes},
    }
