"""How large a phase's regions look in the crops a critic sees, and how typical one slice is.

Why: in the SOFC anode, phase 1 is too easy to cross in every slice-trained generator,
and the middle z-slice they learn from is among the most connected of the volume's 62
z-sections for that phase: its regions in 32-pixel crops average 71 pixels against 46 over
all z-sections (more than in 57 of them; docs/benchmarks.md, "One slice is a lottery").
A generator that reproduces its slice faithfully inherits that. The figure makes such a
slice visible before any training, and shows whether a generator follows its slice or
the truth.

Method: in every crop of ``crop`` x ``crop`` pixels (a stride of half a crop) of a 2D image,
or of every section of a 3D volume along each axis, label the phase's 4-connected regions
and take the size of the region a random pixel of the phase lies in (the area-weighted mean
region size, in pixels). Crops bound it the way the critic's field of view does.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
from scipy import ndimage

from microforge.models.stats.axes import AXES_3D, array_axis, slice_perpendicular

EDGES = ndimage.generate_binary_structure(2, 1)


def region_size(
    labels: np.ndarray | Sequence[np.ndarray], phases: Sequence[int | float], crop: int
) -> dict:
    """Per phase: the area-weighted mean size of its regions in crops of a 2D image (or of
    several, pooled), or of the sections of a 3D volume along each axis pooled; 0 for a
    phase that is absent."""
    images = [labels] if isinstance(labels, np.ndarray) else list(labels)
    sections: list[np.ndarray] = []
    for image in images:
        if image.ndim not in (2, 3):
            raise ValueError(f"region sizes need 2D images or a 3D volume, got {image.shape}")
        sections.extend([image] if image.ndim == 2 else _sections(image))
    return {value: _weighted_size(sections, value, crop) for value in phases}


def section_spread(
    volume: np.ndarray, image: np.ndarray, axis: str, phases: Sequence[int | float], crop: int
) -> dict:
    """Per phase: ``image``'s region size against that of each section of ``volume``
    perpendicular to ``axis`` ("x", "y" or "z"): ``image``, the sections' ``mean``,
    ``p10`` and ``p90``, and ``rank``, the share of sections whose regions are smaller."""
    sections = list(_sections(volume, [axis]))
    result = {}
    for value in phases:
        mine = _weighted_size([image], value, crop)
        each = _each_section(sections, value, crop)
        result[value] = {
            "image": mine,
            "mean": float(each.mean()),
            "p10": float(np.percentile(each, 10)),
            "p90": float(np.percentile(each, 90)),
            "rank": float((each < mine).mean()),
        }
    return result


def typical_section(volume: np.ndarray, axis: str, phases: Sequence[int | float], crop: int) -> int:
    """The index of the section of ``volume`` perpendicular to ``axis`` whose region sizes
    are the most typical of all its sections: the one whose worst phase ranks closest to
    the median (mid-ranks, so that a section's own value counts half); of equals, the one
    nearest the middle.

    Why: to ask what a recipe does from a representative slice rather than from the one
    the lottery of a small volume dealt (SOFC's middle z-slice ranks 0.92 for phase 1).
    """
    sections = list(_sections(volume, [axis]))
    count = len(sections)
    worst = np.zeros(count)
    for value in phases:
        each = _each_section(sections, value, crop)
        smaller = (each[None, :] < each[:, None]).sum(axis=1)
        equal = (each[None, :] == each[:, None]).sum(axis=1)
        worst = np.maximum(worst, np.abs((smaller + equal / 2) / count - 0.5))
    middle = count // 2
    return min(range(count), key=lambda index: (worst[index], abs(index - middle)))


def _each_section(sections: Sequence[np.ndarray], value: int | float, crop: int) -> np.ndarray:
    return np.array([_weighted_size([section], value, crop) for section in sections])


def _sections(volume: np.ndarray, axes: Sequence[str] = AXES_3D) -> Iterator[np.ndarray]:
    for axis in axes:
        for index in range(volume.shape[array_axis(axis, 3)]):
            yield slice_perpendicular(volume, axis, index)


def _weighted_size(sections: Sequence[np.ndarray], value: int | float, crop: int) -> float:
    squares = pixels = 0.0
    for section in sections:
        phase = section == value
        for window in _crops(phase, crop):
            regions, _ = ndimage.label(window, EDGES)
            sizes = np.bincount(regions.ravel())[1:].astype(float)
            squares += float((sizes**2).sum())
            pixels += float(sizes.sum())
    return squares / pixels if pixels else 0.0


def _crops(image: np.ndarray, crop: int) -> Iterator[np.ndarray]:
    """Windows of ``crop`` pixels at a stride of half a crop, the last flush with the edge
    (the whole image when it is smaller)."""
    starts = [_starts(n, crop) for n in image.shape]
    for y in starts[0]:
        for x in starts[1]:
            yield image[y : y + crop, x : x + crop]


def _starts(length: int, crop: int) -> list[int]:
    if length <= crop:
        return [0]
    step = max(crop // 2, 1)
    starts = list(range(0, length - crop + 1, step))
    if starts[-1] != length - crop:
        starts.append(length - crop)
    return starts
