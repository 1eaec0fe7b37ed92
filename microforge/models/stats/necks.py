"""Each phase's narrowest passages: what is left of it, and what still crosses, once every
part thinner than three voxels is taken away.

Why: tortuosity depends on how wide a phase's paths are at their narrowest (the
constrictivity of transport models), not only on how many there are. In the real SOFC
anode phase 1 holds together through necks one voxel wide: an opening with the
6-neighbour cross keeps 61 % of it and none of what is left crosses the volume, while
generators with the same fraction, surface area and S2, and as much kept, still cross with
32-45 % of it, and their phase 1 is 24-49 % too easy to cross (docs/benchmarks.md, "One
slice is a lottery"). These figures show that where the others do not.

Method: a morphological opening with the 6-neighbour cross (erosion, then dilation) keeps
the voxels of parts at least three voxels across; outside the volume counts as the phase
for the erosion, so a face does not thin what touches it. ``kept`` is the share of the
phase the opening keeps; ``spanning`` per axis is the share of the phase in opened
face-connected regions that reach both faces across that axis.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from microforge.models.stats.axes import AXES_3D, slice_perpendicular
from microforge.models.stats.network import FACES


def opened(phase: np.ndarray) -> np.ndarray:
    """``phase`` opened with the 6-neighbour cross, its outside counted as the phase."""
    eroded = ndimage.binary_erosion(phase, FACES, border_value=1)
    return ndimage.binary_dilation(eroded, FACES) & phase


def neck_figures(
    labels: np.ndarray, phases: Sequence[int | float]
) -> dict[int | float, dict[str, float | dict[str, float]]]:
    """Per phase of a (z, y, x) volume: ``kept`` and ``spanning`` {x, y, z} (module doc);
    all zero for a phase the volume lacks."""
    if labels.ndim != 3:
        raise ValueError(f"neck figures need a 3D volume, got shape {labels.shape}")
    result: dict[int | float, dict[str, float | dict[str, float]]] = {}
    for value in phases:
        phase = labels == value
        total = int(phase.sum())
        kept = opened(phase)
        regions, _ = ndimage.label(kept, FACES)
        sizes = np.bincount(regions.ravel())
        spanning = {}
        for axis in AXES_3D:
            first = np.unique(slice_perpendicular(regions, axis, 0))
            last = np.unique(slice_perpendicular(regions, axis, -1))
            both = np.intersect1d(first, last)
            both = both[both > 0]
            spanning[axis] = float(sizes[both].sum() / total) if total else 0.0
        result[value] = {
            "kept": float(kept.sum() / total) if total else 0.0,
            "spanning": spanning,
        }
    return result
