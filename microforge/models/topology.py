"""The connectivity term: pull each phase's 3D Euler characteristic towards a known value.

Why: the critics judge single slices, and connectivity (the number of tunnels through a
phase) is the one figure no section shows: stereology needs two adjacent sections to count
connections. So a slice-trained generator picks it from its own prior, and on the real
SOFC anode it connects phase 1 several times better than the material, which makes that
phase 40-60 % too easy to cross (docs/benchmarks.md, "What one slice cannot tell"). When
the value is known (a 3D scan of a similar sample, or the 3D training volume itself), this
term supplies it.

Method: the same cell complex as the benchmark's exact figure
(``stats.euler.connectivity_densities``: V - E + F - C over the 2x2x2 windows inside the
volume), evaluated on the generator's phase probabilities with products in place of
logical ands. On one-hot volumes it is the exact count; on soft ones its gradient says how
the expected count changes with each voxel's probability.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from microforge.models.stats.euler import cell_indicators

#: The unit of targets and of the measured figure: Euler characteristic per this many
#: voxels (real electrodes: -15 to +5 per 1000 voxels; per voxel the numbers are tiny).
PER_VOXELS = 1000.0


def soft_connectivity(probabilities: torch.Tensor) -> torch.Tensor:
    """(N, C, D, H, W) phase probabilities -> (C,): each phase's Euler characteristic per
    ``PER_VOXELS`` voxels, over the windows inside the volumes of the batch."""
    windows = (slice(None), slice(None), *(slice(0, n - 1) for n in probabilities.shape[2:]))
    count = probabilities.shape[0] * (probabilities[windows][0, 0].numel())
    total = probabilities.new_zeros(probabilities.shape[1])
    for sign, kind in zip((1.0, -1.0, 1.0, -1.0), cell_indicators(probabilities), strict=True):
        for cells in kind:
            total = total + sign * cells[windows].sum(dim=(0, 2, 3, 4))
    return total * (PER_VOXELS / count)


def connectivity_loss(
    probabilities: torch.Tensor, targets: torch.Tensor, known: torch.Tensor
) -> torch.Tensor:
    """Squared distance, in units of ``PER_VOXELS``, between the batch's connectivity and
    the targets of the phases whose value is ``known`` (a boolean mask per phase): the batch
    mean is pulled, not each volume, which may differ as crops of the material do.

    Measured on the volumes as they will be exported (each voxel its most likely phase),
    with the probabilities' gradient passed straight through: at a one-hot volume the
    gradient of the cell products with respect to a voxel is exactly how much the count
    would change if that voxel changed phase, and the value cannot be met by blurring
    the phases instead of changing their topology, which the soft count allows."""
    hard = F.one_hot(probabilities.argmax(1), probabilities.shape[1]).movedim(-1, 1)
    volumes = hard.to(probabilities.dtype) + probabilities - probabilities.detach()
    difference = soft_connectivity(volumes) - targets
    return (difference[known] ** 2).sum()
