"""Triple-phase boundary (TPB) density of three-phase images.

A TPB is where three phases meet. On a voxel grid it lives on the edges of the voxels
(3D) or on the pixel corners (2D): an edge is a TPB edge when the four voxels around it
hold all three phases, the counting of taufactor's ``triple_phase_boundary`` (which
reports the count divided by the number of interior edges; the tests check the counts
agree). Reported here as TPB length per unit volume (1/voxel^2, or 1/length^2 with a voxel
size) in 3D, and TPB points per unit area in 2D.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: Planes per slab: bounds the uint8 temporaries whatever the volume size.
_SLAB_PLANES = 32


def triple_phase_boundary_count(labels: np.ndarray, phases: Sequence[int | float]) -> int:
    """Number of voxel edges (3D) or pixel corners (2D) where all three phases meet."""
    if len(phases) != 3:
        raise ValueError(f"triple-phase boundaries need exactly 3 phases, got {len(phases)}")
    codes = np.zeros(labels.shape, dtype=np.uint8)
    for bit, value in enumerate(phases):
        codes[labels == value] = np.uint8(1 << bit)
    if labels.ndim == 2:
        return _count_full_squares(codes[None], planes=(1, 2))
    total = 0
    # Edges along axis d are surrounded by 2x2 squares in the plane of the other two axes.
    for plane in ((1, 2), (0, 2), (0, 1)):
        total += _count_full_squares(codes, plane)
    return total


def triple_phase_boundary_density(
    labels: np.ndarray, phases: Sequence[int | float], *, voxel_size: float | None = None
) -> float:
    """TPB length per unit volume (3D) or TPB points per unit area (2D)."""
    count = triple_phase_boundary_count(labels, phases)
    density = count / labels.size
    if voxel_size is not None:
        density /= voxel_size**2
    return float(density)


def _count_full_squares(codes: np.ndarray, planes: tuple[int, int]) -> int:
    """2x2 squares in the given pair of axes whose four codes OR to all three bits."""
    first, second = planes
    total = 0
    # Slabs along axis 0; when axis 0 is a side of the squares they overlap by one plane.
    overlap = 1 if first == 0 else 0
    for start in range(0, codes.shape[0], _SLAB_PLANES):
        block = codes[start : start + _SLAB_PLANES + overlap]
        if block.shape[first] < 2 or block.shape[second] < 2:
            continue
        low_a = _shift(block, first, 0)
        high_a = _shift(block, first, 1)
        union = _shift(low_a, second, 0) | _shift(low_a, second, 1)
        union |= _shift(high_a, second, 0)
        union |= _shift(high_a, second, 1)
        total += int(np.count_nonzero(union == 7))
    return total


def _shift(array: np.ndarray, dim: int, offset: int) -> np.ndarray:
    index = [slice(None)] * array.ndim
    index[dim] = slice(offset, array.shape[dim] - 1 + offset)
    return array[tuple(index)]
