"""Euler number per area of each phase in 2D sections: the shape figure S2 cannot see.

Why: fraction, surface area and S2 can all match while the shapes do not. Generators
trained on the real NMC electrode matched those three within the targets and drew the
particle phase as a labyrinth of worms where the truth has round, mostly separate particles
(tortuosity 3.2 against 5.5; docs/benchmarks.md, "Shapes S2 does not see"). In a section
the difference is topological: separate particles are many regions of the particle phase
and as many holes in the matrix; a labyrinth is few regions with few holes. The Euler
number of a section, its regions minus the holes in them, counts exactly that, and its
density per area is one of the Minkowski functionals of the section (with the area
fraction and the perimeter), the standard trio of stereology.

Method: Gray's bit quads (S. B. Gray, "Local properties of binary images in two
dimensions", IEEE Trans. Computers 1971). Every 2x2 window of the phase indicator is a
local pattern; with Q1 windows holding one pixel of the phase, Q3 three and QD two on a
diagonal, the Euler number of the phase's 8-connected regions (holes 4-connected) is
(Q1 - Q3 - 2 QD) / 4. The count is local and additive, so it needs no labelling and runs
as a few array operations. The density sums the windows inside a section and divides by
their number: an estimate free of edge effects, so slices of a small volume and a large
training image are comparable.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from microforge.models.stats.axes import AXES_3D, array_axis

#: Sections per axis of a volume (evenly spaced): the density's scatter between single
#: sections of the real volumes in shared/data is 9-12 % (NMC 128^2) and 18-23 % (SOFC
#: 62^2), so 64 give its mean within a few per cent, and big volumes are not read whole
#: once more.
SECTIONS_PER_AXIS = 64
#: The key of a 2D image's one value: it is a section whose orientation in 3D is unknown.
IMAGE_KEY = "image"


def euler_number(mask: np.ndarray) -> np.ndarray:
    """Euler numbers of the 8-connected regions of boolean sections (..., rows, cols),
    each section taken whole (padded with "not the phase": a region cut by the edge counts)."""
    padding = [(0, 0)] * (mask.ndim - 2) + [(1, 1), (1, 1)]
    return _local_euler(np.pad(mask, padding))


def _local_euler(mask: np.ndarray) -> np.ndarray:
    """Sum of the bit-quad contributions (Q1 - Q3 - 2 QD) / 4 of every 2x2 window."""
    m = mask.astype(np.int8, copy=False)
    a, b = m[..., :-1, :-1], m[..., :-1, 1:]
    c, d = m[..., 1:, :-1], m[..., 1:, 1:]
    ones = a + b + c + d
    diagonal = (ones == 2) & (a == d)
    q1 = (ones == 1).sum(axis=(-2, -1))
    q3 = (ones == 3).sum(axis=(-2, -1))
    qd = diagonal.sum(axis=(-2, -1))
    return (q1 - q3 - 2 * qd) / 4


def euler_densities(
    labels: np.ndarray,
    phases: Sequence[int | float],
    *,
    voxel_size: float | None = None,
) -> dict[int | float, dict[str, float]]:
    """Mean Euler number per area of each phase's sections.

    For a (z, y, x) volume, per axis: over up to ``SECTIONS_PER_AXIS`` evenly spaced
    slices perpendicular to it; for a (y, x) image, the image itself (key ``"image"``).
    Per pixel area, or per ``voxel_size`` squared when given. Positive for a phase of
    separate particles, negative for a connected matrix with holes.
    """
    area_unit = 1.0 if voxel_size is None else voxel_size * voxel_size
    if labels.ndim == 2:
        sections = {IMAGE_KEY: labels[None]}
    elif labels.ndim == 3:
        sections = {}
        for axis in AXES_3D:
            dim = array_axis(axis, 3)
            size = labels.shape[dim]
            picks = np.unique(np.linspace(0, size - 1, min(size, SECTIONS_PER_AXIS)).round())
            sections[axis] = np.moveaxis(np.take(labels, picks.astype(int), axis=dim), dim, 0)
    else:
        raise ValueError(f"expected a 2D image or a 3D volume, got shape {labels.shape}")
    result: dict[int | float, dict[str, float]] = {value: {} for value in phases}
    for key, stack in sections.items():
        # Windows inside the section only (no padding): each window's contribution is an
        # unbiased estimate of the density whatever the section's size, where counting
        # regions cut by the edge would add edge / area (a 64^2 slice and a 128^2 image of
        # one material differed by 20 %).
        windows = (stack.shape[-2] - 1) * (stack.shape[-1] - 1) * area_unit
        for value in phases:
            result[value][key] = float(_local_euler(stack == value).mean() / windows)
    return result
