"""Input conventions shared by every floor: values a sample's arrays are agreed to hold.

Why a module of its own at the bottom: the renderer, the embedding store, the model contracts and
the energy meter all need the colour of a point without colour, and none of them should import the
data pipeline for one number. Standard library only, so any svl module may import it.
"""

from __future__ import annotations

__all__ = ["MISSING_COLOR"]

MISSING_COLOR = 0.4  # the colour of a point without colour, in [0, 1] (docs/SPEC.md §3); written only here
