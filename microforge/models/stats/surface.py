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

from collections.abc import Callable, Sequence

import numpy as np

from microforge.models.stats.axes import AXES_3D, array_axis
from microforge.models.stats.parallel import map_blocks
from microforge.models.stats.phases import label_counts

#: Voxels per slab along the first axis: keeps the int16 temporaries a few MB per thread.
_SLAB_ELEMENTS = 1 << 21
#: Planes of neighbours a slab needs on each side: one for smoothing, one for the gradient.
_HALO = 2
#: Slices per axis measured for perimeter per area (evenly spaced): enough for a stable
#: mean, cheap on 512^3.
SLICES_FOR_PERIMETER = 16


def specific_surface_areas(
    labels: np.ndarray,
    phases: Sequence[int | float],
    *,
    voxel_size: float | None = None,
    workers: int | None = None,
) -> dict[int | float, float]:
    """Interface area per unit volume of every phase (per unit area in 2D: perimeter).

    ``phases`` must list every value present in ``labels``. Units are 1/voxel, or
    1/length when ``voxel_size`` (edge length of a voxel) is given. Volumes are processed
    in slabs of planes on up to ``workers`` threads (default: the CPUs available).
    """
    if labels.ndim not in (2, 3):
        raise ValueError(f"expected a 2D image or a 3D volume, got {labels.ndim} dimensions")
    if len(phases) < 2:
        return {value: 0.0 for value in phases}
    if min(labels.shape) < 2:
        raise ValueError(f"the sample {labels.shape} is too thin to measure a surface")
    if labels.ndim == 2:
        totals = _phase_gradient_sums(labels, phases, _whole_gradients)
    else:
        depth = labels.shape[0]
        step = max(_SLAB_ELEMENTS // labels[0].size, 1)
        slabs = [(start, min(start + step, depth)) for start in range(0, depth, step)]
        totals = np.sum(
            map_blocks(
                lambda slab: _phase_gradient_sums(
                    labels, phases, lambda mask_of: _slab_gradients(mask_of, *slab, depth)
                ),
                slabs,
                workers,
            ),
            axis=0,
        )
    # Smoothed values are scaled by 4 per axis, central differences by 2.
    scale = 1.0 / (2 * 4**labels.ndim) / labels.size
    if voxel_size is not None:
        scale /= voxel_size
    return {value: float(total) * scale for value, total in zip(phases, totals)}


def slice_perimeters(
    volume: np.ndarray,
    values: dict[str, int | float],
    voxel_size: float | None = None,
    axes: Sequence[str] = AXES_3D,
) -> dict[str, dict[str, float]]:
    """Mean perimeter per area of each phase (``values``: name -> label) over evenly spaced
    slices perpendicular to each of ``axes``: the 2D figure a training image of that axis
    has, for the comparison and the Euler error's scale (``euler.disk_count_density``)."""
    result = {}
    all_values = sorted(label_counts(volume))
    for axis in axes:
        dim = array_axis(axis, 3)
        picks = np.unique(np.linspace(0, volume.shape[dim] - 1, SLICES_FOR_PERIMETER).round())
        totals = dict.fromkeys(values, 0.0)
        for index in picks.astype(int):
            plane = np.take(volume, index, axis=dim)
            present = [v for v in all_values if v in set(np.unique(plane).tolist())]
            measured = (
                specific_surface_areas(plane, present, voxel_size=voxel_size)
                if len(present) > 1
                else {}
            )
            for name, value in values.items():
                totals[name] += measured.get(value, 0.0)
        result[axis] = {name: total / len(picks) for name, total in totals.items()}
    return result


def _phase_gradient_sums(
    labels: np.ndarray,
    phases: Sequence[int | float],
    gradients: Callable[[Callable[[slice], np.ndarray]], list[np.ndarray]],
) -> np.ndarray:
    """Sum of |grad| of each phase's smoothed indicator over the region ``gradients`` covers.

    ``gradients(mask_of)`` returns the gradient components of one phase, given a function
    that makes the uint8 indicator of a value over the labels it needs.
    """
    sums = []
    others: list[np.ndarray] | None = None
    for value in phases[:-1]:
        gradient = gradients(lambda rows, v=value: (labels[rows] == v).view(np.uint8))
        sums.append(_magnitude_sum(gradient))
        if others is None:
            others = gradient
        elif len(phases) > 2:
            others = [total + part for total, part in zip(others, gradient)]
    # The last indicator is 1 minus the others, so its gradient is minus theirs.
    sums.append(_magnitude_sum(others))
    return np.array(sums)


def _whole_gradients(mask_of: Callable[[slice], np.ndarray]) -> list[np.ndarray]:
    """Gradient components over a whole (small, 2D) image."""
    smooth = _binomial_smooth(mask_of(slice(None)))
    return [_central_difference(smooth, dim) for dim in range(smooth.ndim)]


def _slab_gradients(
    mask_of: Callable[[slice], np.ndarray], start: int, stop: int, depth: int
) -> list[np.ndarray]:
    """Gradient components on planes start..stop of a volume ``depth`` planes deep.

    No halo work is wasted: in-plane smoothing runs on the slab plus two planes each side,
    smoothing across planes one plane each side (what the through-plane difference needs),
    and the in-plane differences on the slab only. Edges are mirrored exactly as
    :func:`_binomial_smooth` mirrors them.
    """
    low = max(start - _HALO, 0)
    planar = mask_of(slice(low, min(stop + _HALO, depth)))
    for dim in (1, 2):
        planar = _smooth_along(planar, dim)
    planes = np.arange(max(start - 1, 0), min(stop + 1, depth))
    before = np.where(planes > 0, planes - 1, 1)
    after = np.where(planes < depth - 1, planes + 1, depth - 2)
    smooth = planar[planes - low] * np.uint8(2)
    smooth += planar[before - low]
    smooth += planar[after - low]
    core = np.arange(start, stop)
    ahead = np.minimum(core + 1, depth - 1) - planes[0]
    behind = np.maximum(core - 1, 0) - planes[0]
    through = np.subtract(smooth[ahead], smooth[behind], dtype=np.int16)
    through[(core == 0) | (core == depth - 1)] *= 2
    inner = smooth[core - planes[0]]
    return [through] + [_central_difference(inner, dim) for dim in (1, 2)]


def _binomial_smooth(mask: np.ndarray) -> np.ndarray:
    """[1, 2, 1] along every axis, mirrored at the edges; 0/1 in, 0..4^ndim out (uint8)."""
    for dim in range(mask.ndim):
        mask = _smooth_along(mask, dim)
    return mask


def _smooth_along(mask: np.ndarray, dim: int) -> np.ndarray:
    """[1, 2, 1] along one axis, mirrored at the edges (plane -1 is plane 1)."""
    n = mask.shape[dim]
    out = mask * np.uint8(2)
    if n > 1:
        _at(out, dim, 1, n)[...] += _at(mask, dim, 0, n - 1)
        _at(out, dim, 0, n - 1)[...] += _at(mask, dim, 1, n)
        _at(out, dim, 0, 1)[...] += _at(mask, dim, 1, 2)
        _at(out, dim, n - 1, n)[...] += _at(mask, dim, n - 2, n - 1)
    else:
        out *= np.uint8(2)
    return out


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
    accumulated exactly in uint16 before one float32 square root; the float32 sum of one
    slab (pairwise, a few million terms) is within 1e-6 relative, and slabs add in float64.
    """
    squared = np.square(gradient[0]).view(np.uint16)
    term = np.empty_like(gradient[0])
    for component in gradient[1:]:
        squared += np.square(component, out=term).view(np.uint16)
    return float(np.sqrt(squared, dtype=np.float32).sum())


def _at(array: np.ndarray, dim: int, start: int, stop: int) -> np.ndarray:
    index = [slice(None)] * array.ndim
    index[dim] = slice(start, stop)
    return array[tuple(index)]
