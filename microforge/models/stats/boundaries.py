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

from microforge.models.stats.parallel import map_blocks

#: Planes per slab: bounds the uint8 temporaries whatever the volume size.
_SLAB_PLANES = 16


def triple_phase_boundary_count(
    labels: np.ndarray, phases: Sequence[int | float], *, workers: int | None = None
) -> int:
    """Number of voxel edges (3D) or pixel corners (2D) where all three phases meet.

    Volumes are counted in slabs of planes on up to ``workers`` threads.
    """
    if len(phases) != 3:
        raise ValueError(f"triple-phase boundaries need exactly 3 phases, got {len(phases)}")
    if labels.ndim == 2:
        return _in_plane_count(_codes(labels[None], phases))
    depth = labels.shape[0]

    def slab(start: int) -> int:
        stop = min(start + _SLAB_PLANES, depth)
        # One plane more than the slab: edges parallel to the planes lie between two planes.
        codes = _codes(labels[start : min(stop + 1, depth)], phases)
        total = _in_plane_count(codes[: stop - start])
        if codes.shape[0] > 1:
            across = codes[:-1] | codes[1:]
            # Squares spanning (z, x) surround edges along y; (z, y) ones edges along x.
            total += _full(across[:, :, :-1] | across[:, :, 1:])
            total += _full(across[:, :-1] | across[:, 1:])
        return total

    return sum(map_blocks(slab, range(0, depth, _SLAB_PLANES), workers))


def triple_phase_boundary_density(
    labels: np.ndarray,
    phases: Sequence[int | float],
    *,
    voxel_size: float | None = None,
    workers: int | None = None,
) -> float:
    """TPB length per unit volume (3D) or TPB points per unit area (2D)."""
    count = triple_phase_boundary_count(labels, phases, workers=workers)
    density = count / labels.size
    if voxel_size is not None:
        density /= voxel_size**2
    return float(density)


def _codes(labels: np.ndarray, phases: Sequence[int | float]) -> np.ndarray:
    """Bit 1, 2 or 4 per voxel for the first, second or third phase (4 - 3 m0 - 2 m1)."""
    codes = (labels == phases[0]).view(np.uint8) * np.uint8(3)
    codes += (labels == phases[1]).view(np.uint8) * np.uint8(2)
    return np.subtract(np.uint8(4), codes, out=codes)


def _in_plane_count(codes: np.ndarray) -> int:
    """2x2 squares within each plane (edges across the planes) holding all three phases."""
    if codes.shape[1] < 2 or codes.shape[2] < 2:
        return 0
    rows = codes[:, :-1] | codes[:, 1:]
    return _full(rows[:, :, :-1] | rows[:, :, 1:])


def _full(union: np.ndarray) -> int:
    return int(np.count_nonzero(union == 7))
