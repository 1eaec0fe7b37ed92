"""Specific surface area (3D) and perimeter per area (2D) of each phase.

Method: the phase indicator is smoothed with the binomial kernel [1, 2, 1] / 4 along every
axis (a Gaussian of sigma 1/sqrt 2 voxels, mirrored at the sample edges), and the magnitude
of its gradient (central differences, one-sided at the edges) is summed and divided by the
number of voxels: interface area per unit volume. This is the "gradient" method of
taufactor (which smooths with sigma = 1) and the tests check that both agree within a few
per cent; it is rewritten here for speed: the binomial kernel keeps every intermediate a
small integer (smoothed values 0..64, squared gradients < 2^16), so the work runs on
uint8/int16 arrays in cache-sized slabs, about five times faster than float32 and far
from taufactor's dense 3x3x3 convolution (about 30 s and several GB for 512^3).

Why this method: plain face counting is exact for interfaces aligned with the grid but
overestimates curved and oblique ones by up to 50%, whereas the smoothed gradient is exact
for grid-aligned planes and within about 1% for spheres a few voxels in radius. Its
weakness: features one or two voxels thin are blurred and under-counted. Sample edges are
not counted as surface.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: Voxels per slab along the first axis: keeps the int16 temporaries near cache size.
_SLAB_ELEMENTS = 1 << 21
#: Rows of neighbours a slab needs on each side: one for smoothing, one for the gradient.
_HALO = 2


def specific_surface_areas(
    labels: np.ndarray,
    phases: Sequence[int | float],
    *,
    voxel_size: float | None = None,
) -> dict[int | float, float]:
    """Interface area per unit volume of every phase (per unit area in 2D: perimeter).

    ``phases`` must list every value present in ``labels``. Units are 1/voxel, or
    1/length when ``voxel_size`` (edge length of a voxel) is given.
    """
    if labels.ndim not in (2, 3):
        raise ValueError(f"expected a 2D image or a 3D volume, got {labels.ndim} dimensions")
    if len(phases) < 2:
        return {value: 0.0 for value in phases}
    if min(labels.shape) < 2:
        raise ValueError(f"the sample {labels.shape} is too thin to measure a surface")
    totals = np.zeros(len(phases))
    depth = labels.shape[0]
    slab = max(_SLAB_ELEMENTS // labels[0].size, 1)
    for start in range(0, depth, slab):
        totals += _slab_gradient_sums(labels, phases, start, min(start + slab, depth))
    # Smoothed values are scaled by 4 per axis, central differences by 2.
    scale = 1.0 / (2 * 4**labels.ndim) / labels.size
    if voxel_size is not None:
        scale /= voxel_size
    return {value: float(total) * scale for value, total in zip(phases, totals)}


def _slab_gradient_sums(
    labels: np.ndarray, phases: Sequence[int | float], start: int, stop: int
) -> np.ndarray:
    """Sum of |grad| over rows start..stop of each phase, using a halo for the neighbours."""
    low, high = max(start - _HALO, 0), min(stop + _HALO, labels.shape[0])
    block = labels[low:high]
    core = slice(start - low, stop - low)
    sums = []
    others: list[np.ndarray] | None = None
    for value in phases[:-1]:
        smooth = _binomial_smooth((block == value).view(np.uint8))
        gradient = [_central_difference(smooth, dim)[core] for dim in range(block.ndim)]
        sums.append(_magnitude_sum(gradient))
        if others is None:
            others = gradient
        elif len(phases) > 2:
            others = [total + part for total, part in zip(others, gradient)]
    # The last indicator is 1 minus the others, so its gradient is minus theirs.
    sums.append(_magnitude_sum(others))
    return np.array(sums)


def _binomial_smooth(mask: np.ndarray) -> np.ndarray:
    """[1, 2, 1] along every axis, mirrored at the edges; 0/1 in, 0..4^ndim out (uint8)."""
    for dim in range(mask.ndim):
        n = mask.shape[dim]
        out = mask * np.uint8(2)
        if n > 1:
            _at(out, dim, 1, n)[...] += _at(mask, dim, 0, n - 1)
            _at(out, dim, 0, n - 1)[...] += _at(mask, dim, 1, n)
            _at(out, dim, 0, 1)[...] += _at(mask, dim, 1, 2)
            _at(out, dim, n - 1, n)[...] += _at(mask, dim, n - 2, n - 1)
        else:
            out *= np.uint8(2)
        mask = out
    return mask


def _central_difference(values: np.ndarray, dim: int) -> np.ndarray:
    """Twice the gradient along dim, as int16: f[i+1] - f[i-1], and 2 (f[1] - f[0]) at edges."""
    n = values.shape[dim]
    out = np.zeros(values.shape, dtype=np.int16)
    if n < 2:
        return out
    np.subtract(
        _at(values, dim, 2, n),
        _at(values, dim, 0, n - 2),
        out=_at(out, dim, 1, n - 1),
        dtype=np.int16,
    )
    np.subtract(
        _at(values, dim, 1, 2), _at(values, dim, 0, 1), out=_at(out, dim, 0, 1), dtype=np.int16
    )
    np.subtract(
        _at(values, dim, n - 1, n),
        _at(values, dim, n - 2, n - 1),
        out=_at(out, dim, n - 1, n),
        dtype=np.int16,
    )
    _at(out, dim, 0, 1)[...] *= 2
    _at(out, dim, n - 1, n)[...] *= 2
    return out


def _magnitude_sum(gradient: Sequence[np.ndarray]) -> float:
    """Sum of sqrt(gx^2 + gy^2 + gz^2) over voxels.

    Squared components are at most 2^14 and their sum below 2^16, so the squared norm is
    accumulated exactly in uint16 before one float32 square root.
    """
    squared = np.zeros(gradient[0].shape, dtype=np.uint16)
    for component in gradient:
        squared += np.square(component).view(np.uint16)
    return float(np.sqrt(squared, dtype=np.float32).sum(dtype=np.float64))


def _at(array: np.ndarray, dim: int, start: int, stop: int) -> np.ndarray:
    index = [slice(None)] * array.ndim
    index[dim] = slice(start, stop)
    return array[tuple(index)]
