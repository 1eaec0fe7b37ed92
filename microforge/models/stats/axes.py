"""Axis names and the slicing convention every statistic and comparison shares.

Arrays are indexed (z, y, x) for volumes and (y, x) for images, so "x" is always the last
array axis. A slice perpendicular to an axis keeps the two remaining axes in array order,
the same convention the trainer uses when it shows slices to its critics:

    perpendicular to x: volume[:, :, k] -> rows are z, columns are y
    perpendicular to y: volume[:, k, :] -> rows are z, columns are x
    perpendicular to z: volume[k, :, :] -> rows are y, columns are x

So the training image of an axis has its columns ("horizontal", image x) along the first
name below and its rows ("vertical", image y) along the second.
"""

from __future__ import annotations

import numpy as np

AXES_3D = ("x", "y", "z")
AXES_2D = ("x", "y")

#: For the slices perpendicular to each volume axis: (volume axis along image columns,
#: volume axis along image rows).
SLICE_PLANE_AXES: dict[str, tuple[str, str]] = {
    "x": ("y", "z"),
    "y": ("x", "z"),
    "z": ("x", "y"),
}


def axis_names(ndim: int) -> tuple[str, ...]:
    """Names of the axes of a 2D image or 3D volume, x first."""
    if ndim == 2:
        return AXES_2D
    if ndim == 3:
        return AXES_3D
    raise ValueError(f"expected a 2D image or a 3D volume, got an array with {ndim} dimensions")


def array_axis(name: str, ndim: int) -> int:
    """The array axis an axis name refers to: x is the last one, z (3D only) the first."""
    names = axis_names(ndim)
    if name not in names:
        raise ValueError(f"axis {name!r} is not one of {', '.join(names)} for a {ndim}D array")
    return ndim - 1 - names.index(name)


def slice_perpendicular(volume: np.ndarray, axis: str, index: int) -> np.ndarray:
    """The 2D slice of a (z, y, x) volume perpendicular to ``axis`` at ``index``."""
    return np.take(volume, index, axis=array_axis(axis, 3))
