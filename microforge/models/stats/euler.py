"""Euler numbers of each phase: per area of 2D sections (the shape figure S2 cannot see),
and per volume in 3D (the connectivity no section shows, `connectivity_densities`).

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
#: Side in windows of the blocks an image is cut into to measure its dispersion: a few
#: features of the real images across (NMC particles are 5-8 pixels), so that blocks are
#: nearly independent, and 9 blocks or more even in the 62^2 SOFC slice.
BLOCK = 16
#: The key of a 2D image's one value: it is a section whose orientation in 3D is unknown.
IMAGE_KEY = "image"


def euler_number(mask: np.ndarray) -> np.ndarray:
    """Euler numbers of the 8-connected regions of boolean sections (..., rows, cols),
    each section taken whole (padded with "not the phase": a region cut by the edge counts)."""
    padding = [(0, 0)] * (mask.ndim - 2) + [(1, 1), (1, 1)]
    return _local_euler(np.pad(mask, padding))


def _local_euler(mask: np.ndarray) -> np.ndarray:
    """Sum of the bit-quad contributions (Q1 - Q3 - 2 QD) / 4 of every 2x2 window."""
    q1, q3, qd = _quad_counts(mask)
    return (q1 - q3 - 2 * qd) / 4


def _quad_counts(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Q1, Q3 and QD of each section: windows with one pixel of the phase, three, and two
    on a diagonal."""
    m = mask.astype(np.int8, copy=False)
    a, b = m[..., :-1, :-1], m[..., :-1, 1:]
    c, d = m[..., 1:, :-1], m[..., 1:, 1:]
    ones = a + b + c + d
    diagonal = (ones == 2) & (a == d)
    q1 = (ones == 1).sum(axis=(-2, -1))
    q3 = (ones == 3).sum(axis=(-2, -1))
    qd = diagonal.sum(axis=(-2, -1))
    return q1, q3, qd


def _phase_eulers(stack: np.ndarray, phases: Sequence[int | float]) -> list[np.ndarray]:
    """Euler sums of each phase's sections (windows inside them only).

    Two phases that fill the sections are counted in one pass, half the cost (the trainer's
    fidelity score runs this on every check): the other phase's windows are the first's
    complemented, so its Q1 is the first's Q3, its Q3 the first's Q1, and QD is shared.
    """
    if len(phases) == 2:
        first = stack == phases[1]
        if np.count_nonzero(first) + np.count_nonzero(stack == phases[0]) == stack.size:
            q1, q3, qd = _quad_counts(first)
            return [(q3 - q1 - 2 * qd) / 4, (q1 - q3 - 2 * qd) / 4]
    return [_local_euler(stack == value) for value in phases]


def disk_count_density(perimeter_per_area: float, area_fraction: float) -> float:
    """n* = P_A^2 / (4 pi phi): the Euler density of equal separate disks with this
    perimeter per area and area fraction (n disks of radius r per area have phi = n pi r^2
    and P_A = 2 n pi r, so P_A^2 / (4 pi phi) = n whatever r). The Euler density divided by
    it is a shape index free of the feature size: 1 for round separate particles, about 0
    for a labyrinth, negative for a phase with holes. 0 for an absent phase."""
    if area_fraction <= 0.0:
        return 0.0
    return perimeter_per_area * perimeter_per_area / (4.0 * np.pi * area_fraction)


def euler_densities(
    labels: np.ndarray,
    phases: Sequence[int | float],
    *,
    voxel_size: float | None = None,
) -> tuple[dict[int | float, dict[str, float]], dict[int | float, dict[str, float]]]:
    """Mean Euler number per area of each phase's sections, and its dispersion.

    For a (z, y, x) volume, per axis: over up to ``SECTIONS_PER_AXIS`` evenly spaced
    slices perpendicular to it; for a (y, x) image, the image itself (key ``"image"``).
    Per pixel area, or per ``voxel_size`` squared when given. Positive for a phase of
    separate particles, negative for a connected matrix with holes.

    The dispersion is the standard deviation of the density over samples of area a (a
    volume's sections; an image's blocks of ``BLOCK`` pixels) times sqrt(a): the density of
    any sample of area A scatters by dispersion / sqrt(A) (it is a sum of local counts), so
    it says how far one training image of a given size may be from the material's mean. An
    image's blocks show how the material varies within its plane; a volume's sections also
    show how it varies along the axis (the separator's sections perpendicular to x, drifting
    in fraction along x, scatter three times as much as the x image's blocks say), which
    ``agreement.euler_uncertainty`` lets count where the image cannot see it.
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
    densities: dict[int | float, dict[str, float]] = {value: {} for value in phases}
    dispersions: dict[int | float, dict[str, float]] = {value: {} for value in phases}
    for key, stack in sections.items():
        measured = _section_densities(stack, phases, area_unit)
        samples = (
            _section_densities(_blocks(labels), phases, area_unit) if key == IMAGE_KEY else measured
        )
        for value, (per_area, _), (spread, windows) in zip(phases, measured, samples):
            densities[value][key] = float(per_area.mean())
            deviation = float(spread.std(ddof=1)) if spread.size > 1 else 0.0
            dispersions[value][key] = deviation * float(np.sqrt(windows))
    return densities, dispersions


def _section_densities(
    stack: np.ndarray, phases: Sequence[int | float], area_unit: float
) -> list[tuple[np.ndarray, float]]:
    """Each phase's Euler density in every section of the stack, and the sections' area.

    Windows inside the section only (no padding): each window's contribution is an
    unbiased estimate of the density whatever the section's size, where counting regions
    cut by the edge would add edge / area (a 64^2 slice and a 128^2 image of one material
    differed by 20 %).
    """
    windows = (stack.shape[-2] - 1) * (stack.shape[-1] - 1) * area_unit
    return [(sums / windows, windows) for sums in _phase_eulers(stack, phases)]


def measured_area(
    shape: Sequence[int], key: str, voxel_size: float | None = None, integral_range: float = 1.0
) -> float:
    """The independent area the density ``euler_densities`` gives under ``key`` is measured
    on: the image's windows, or those of a volume's sections perpendicular to axis ``key``
    that are independent samples: of the ``SECTIONS_PER_AXIS`` at most, no more than the
    axis' length over ``integral_range`` (``agreement.integral_range_along``: sections
    closer than about two correlation lengths along the axis see the same features)."""
    area_unit = 1.0 if voxel_size is None else voxel_size * voxel_size
    if len(shape) == 2:
        return (shape[0] - 1) * (shape[1] - 1) * area_unit
    dim = array_axis(key, 3)
    rows, cols = (n for i, n in enumerate(shape) if i != dim)
    sections = min(shape[dim], SECTIONS_PER_AXIS, shape[dim] / max(integral_range, 1.0))
    return max(sections, 1.0) * (rows - 1) * (cols - 1) * area_unit


def euler_number_3d(mask: np.ndarray) -> int:
    """Euler characteristic of the face-connected regions of a boolean volume, taken whole
    (padded with "not the phase"): regions minus tunnels plus cavities."""
    return _alternating_sum(np.pad(mask, 1), (slice(None),) * 3)


def connectivity_densities(
    labels: np.ndarray, phases: Sequence[int | float], *, voxel_size: float | None = None
) -> dict[int | float, float]:
    """3D Euler characteristic per voxel (or per ``voxel_size`` cubed) of each phase of a
    (z, y, x) volume: positive for separate particles, negative for a network with tunnels.

    Why: connectivity is what a slice cannot show. Fraction, surface area and the section
    Euler densities above are stereological: one plane section estimates them. The number of
    tunnels is not (a network cut by a plane looks like separate islands; stereology needs
    two adjacent sections, the disector, to count connections), so a generator trained on
    slices can match every 2D figure and still connect a phase better than the material.
    Face connectivity, as diffusion and the tortuosity solver see it. In real data specks
    of a few voxels weigh in it as much as tunnels; ``network.network_topology`` counts the
    tunnels of the main network on their own (docs/benchmarks.md, "Specks and tunnels").

    Method: the cell complex on the phase's voxels (a vertex per voxel, an edge per pair of
    face neighbours, a square per 2x2 block in a plane, a cube per 2x2x2 block) has the
    topology of the face-connected regions, so chi = V - E + F - C. Each cell is counted at
    its lowest corner, and only corners whose 2x2x2 window lies inside the volume, so that
    every window contributes its local share and the sum over windows, divided by their
    number, is an estimate free of edge effects, like the section densities (counting each
    kind of cell over the places it fits biases the small difference of large counts).
    """
    if labels.ndim != 3:
        raise ValueError(f"connectivity needs a 3D volume, got shape {labels.shape}")
    unit = 1.0 if voxel_size is None else voxel_size**3
    windows = tuple(slice(0, n - 1) for n in labels.shape)
    count = max(int(np.prod([n - 1 for n in labels.shape])), 1)
    return {value: _alternating_sum(labels == value, windows) / count / unit for value in phases}


def _alternating_sum(mask: np.ndarray, where: tuple[slice, ...]) -> int:
    """V - E + F - C of the cells whose lowest corner is at ``where``."""
    cells = _cell_counts(mask)
    return sum(
        sign * sum(int(c[where].sum()) for c in kind) for sign, kind in zip((1, -1, 1, -1), cells)
    )


def _cell_counts(mask: np.ndarray) -> tuple[list[np.ndarray], ...]:
    """Vertices, edges (one array per axis), squares (one per plane) and cubes of the cell
    complex on the voxels of ``mask``, each as the indicator of where the cell is whole."""
    m = mask.astype(bool, copy=False)

    def pair(a: np.ndarray, axis: int) -> np.ndarray:
        head = [slice(None)] * 3
        tail = [slice(None)] * 3
        head[axis], tail[axis] = slice(None, -1), slice(1, None)
        return a[tuple(head)] & a[tuple(tail)]

    edges = [pair(m, axis) for axis in range(3)]
    squares = [pair(edges[first], second) for first, second in ((0, 1), (0, 2), (1, 2))]
    cubes = [pair(squares[0], 2)]
    return [m], edges, squares, cubes


def dispersion_samples(shape: Sequence[int], key: str) -> int:
    """How many samples the dispersion ``euler_densities`` gives under ``key`` is the
    spread of: an image's blocks, or a volume's sections perpendicular to axis ``key``.
    A standard deviation of n samples is itself uncertain by 1 / sqrt(2 (n - 1)) of it:
    a 62^2 image's 9 blocks say its dispersion to +-25 %, a 128^2 one's 49 to +-10 %."""
    if len(shape) == 2:
        _, rows, cols = _block_grid(shape)
        return rows * cols if rows >= 1 and cols >= 1 else 1
    return int(min(shape[array_axis(key, 3)], SECTIONS_PER_AXIS))


def _block_grid(shape: Sequence[int]) -> tuple[int, int, int]:
    """(side, rows, cols) of the blocks ``_blocks`` cuts an image of ``shape`` into."""
    side = max(2, min(BLOCK, (min(shape) - 1) // 2))
    return side, (shape[0] - 1) // side, (shape[1] - 1) // side


def _blocks(image: np.ndarray) -> np.ndarray:
    """The image cut into square blocks of ``BLOCK`` pixels (fewer when it is small, so
    that there are at least two per side), one per section: the mean of their densities
    is the density of the image's cropped area, their spread its dispersion. Blocks
    overlap by one pixel, so every 2x2 window of the cropped area is in exactly one."""
    side, rows, cols = _block_grid(image.shape)
    if rows < 1 or cols < 1:
        return image[None]
    return np.stack(
        [
            image[r * side : (r + 1) * side + 1, c * side : (c + 1) * side + 1]
            for r in range(rows)
            for c in range(cols)
        ]
    )
