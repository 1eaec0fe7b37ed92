"""Each phase's main network: the tunnels through its largest region, and what lies apart.

Why: the Euler characteristic per voxel (``euler.connectivity_densities``) is regions minus
tunnels plus cavities, a small difference of large counts. In the real SOFC anode most of
phase 1's 1,491 regions are specks of 1-3 voxels (segmentation noise), so its figure is
specks minus tunnels, and a generator can match it with more of both: one that was pulled
to the truth's value did so with 18-25 % more regions apart from its network and still
31-33 % more tunnels through it (10 % fewer than without the pull); one trained on the
whole volume reads far from the truth with the truth's tunnels and almost no specks
(docs/benchmarks.md, "Specks and tunnels"). Transport sees only the network, so its
tunnels, counted on their own, are the figure to compare tortuosity with.

Method: label the phase's face-connected regions (the connectivity diffusion sees) and take
the largest. Its Betti numbers follow from the Euler characteristic of the whole region
(``euler.euler_number_3d``): one region, cavities = the regions of its complement
(26-connected, the dual of face connectivity) enclosed by it, so tunnels = 1 + cavities -
chi. A tunnel cut by the volume's faces is not closed there and does not count, so compare
volumes of the same shape (a generated volume of the truth's size with the truth).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from microforge.models.stats.euler import euler_number_3d

FACES = ndimage.generate_binary_structure(3, 1)
FULL = np.ones((3, 3, 3), dtype=bool)


def network_topology(
    labels: np.ndarray, phases: Sequence[int | float], *, voxel_size: float | None = None
) -> dict[int | float, dict[str, float]]:
    """Per phase of a (z, y, x) volume: ``tunnels`` through its largest face-connected
    region and ``other_regions`` (every other region), both per voxel of the volume (or
    per ``voxel_size`` cubed), and ``share``, the fraction of the phase in that region."""
    if labels.ndim != 3:
        raise ValueError(f"network topology needs a 3D volume, got shape {labels.shape}")
    unit = labels.size * (1.0 if voxel_size is None else voxel_size**3)
    result: dict[int | float, dict[str, float]] = {}
    for value in phases:
        regions, count = ndimage.label(labels == value, FACES)
        if count == 0:
            result[value] = {"tunnels": 0.0, "share": 0.0, "other_regions": 0.0}
            continue
        sizes = np.bincount(regions.ravel())
        sizes[0] = 0
        largest = regions == int(sizes.argmax())
        tunnels = 1 + _cavities(largest) - euler_number_3d(largest)
        result[value] = {
            "tunnels": tunnels / unit,
            "share": float(sizes.max() / sizes.sum()),
            "other_regions": (count - 1) / unit,
        }
    return result


def _cavities(region: np.ndarray) -> int:
    """Regions of the complement that the region encloses (all but the one outside)."""
    _, count = ndimage.label(np.pad(~region, 1, constant_values=True), FULL)
    return count - 1
