"""Energy meter: per-layer FLOPs, synaptic operations and energy of spiking networks (SPEC §7)."""

from svl.energy.meter import (
    CONVENTIONS,
    ENERGY_PRESETS,
    EnergyReport,
    EnergyTable,
    LayerEnergy,
    measure_energy,
    merge_reports,
)

__all__ = [
    "CONVENTIONS",
    "ENERGY_PRESETS",
    "EnergyReport",
    "EnergyTable",
    "LayerEnergy",
    "measure_energy",
    "merge_reports",
]
