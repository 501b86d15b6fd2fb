"""Energy meter: per-layer FLOPs, synaptic operations and energy of spiking networks (docs/SPEC.md §7).

SNN and ANN are counted in one unit: ``"flops"`` by default (ANN FLOPs; SOP = rate x FLOPs x T) or
``"macs"`` (ANN MACs; one accumulate per synaptic event); see svl.energy.meter.

report.py holds what was measured (rows, report, table, chart), meter.py the hooks that measure one
forward pass, measure.py whole-model measurement (build the model, pick inputs, merge the batches).
"""

from svl.energy.measure import (
    dataset_batches,
    energy_per_sample,
    energy_report,
    measure_model,
    random_cloud,
    random_voxel_input,
    sparse_point_batch,
)
from svl.energy.meter import CONVENTIONS, UNITS, measure_energy
from svl.energy.report import (
    ENERGY_PRESETS,
    EnergyReport,
    EnergyTable,
    LayerEnergy,
    energy_line,
    merge_reports,
)

__all__ = [
    "CONVENTIONS",
    "ENERGY_PRESETS",
    "EnergyReport",
    "EnergyTable",
    "LayerEnergy",
    "UNITS",
    "dataset_batches",
    "energy_line",
    "energy_per_sample",
    "energy_report",
    "measure_energy",
    "measure_model",
    "merge_reports",
    "random_cloud",
    "random_voxel_input",
    "sparse_point_batch",
]
