"""Tortuosity factor and effective diffusivity of a phase along each axis, via taufactor.

taufactor solves steady diffusion through the phase with fixed concentrations on the two
faces normal to the flow axis and no flux elsewhere; tau = fraction / (D_eff / D_0).
It runs on CUDA when available (much faster) and on CPU otherwise. Percolation is checked
first with a connected-component labelling (faces shared = connected), so a phase with no
path from one face to the other is reported as not percolating instead of being solved.

Beside tau, the solved field says how much of the phase carries the flow: the stagnant
share is the part where no face carries a tenth of what a face of a straight channel does
(dead ends, bulges beside the path, isolated specks). tau = fraction / D_rel counts that
volume in the fraction and not in the flow, so it is where two phases of the same
fraction and equally long paths differ: SOFC's phase 1 is half stagnant, the generators'
a fifth to two fifths (docs/benchmarks.md, "Dead ends").
"""

from __future__ import annotations

import contextlib
import io
import warnings
from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

from microforge.models.stats.axes import array_axis, axis_names


@dataclass(frozen=True)
class AxisTortuosity:
    """The diffusion result of one phase along one axis; tau is None when it does not flow."""

    tortuosity: float | None
    effective_diffusivity: float
    percolates: bool
    converged: bool
    #: The share of the phase that carries (almost) none of the flow along this axis.
    stagnant_share: float

    def as_dict(self) -> dict:
        return asdict(self)


def percolates(mask: np.ndarray, axis: int) -> bool:
    """True when a face-connected cluster of the mask touches both faces normal to axis."""
    if not mask.any():
        return False
    clusters, _ = ndimage.label(mask)
    first = np.unique(np.take(clusters, 0, axis=axis))
    last = np.unique(np.take(clusters, -1, axis=axis))
    return bool(np.intersect1d(first[first > 0], last[last > 0]).size)


def phase_tortuosity(
    labels: np.ndarray,
    value: int | float,
    *,
    device: str | None = None,
    iter_limit: int = 10000,
) -> dict[str, AxisTortuosity]:
    """Tortuosity of one phase along x, y and z of a (z, y, x) volume."""
    if labels.ndim != 3:
        raise ValueError("tortuosity needs a 3D volume; a 2D image has no through-thickness path")
    mask = labels == value
    return {
        name: _solve_axis(mask, array_axis(name, 3), device, iter_limit) for name in axis_names(3)
    }


def _solve_axis(mask: np.ndarray, axis: int, device: str | None, iter_limit: int) -> AxisTortuosity:
    if not percolates(mask, axis):
        return AxisTortuosity(None, 0.0, percolates=False, converged=True, stagnant_share=1.0)
    if mask.all():
        return AxisTortuosity(1.0, 1.0, percolates=True, converged=True, stagnant_share=0.0)
    import taufactor  # heavy (torch); only needed when a solve is actually required
    import torch

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    # taufactor flows along its first axis.
    flow_first = np.ascontiguousarray(np.moveaxis(mask, axis, 0)).astype(np.uint8)
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        solver = taufactor.Solver(flow_first, device=device)
        solver.solve(iter_limit=iter_limit, verbose=False)
    tau = float(np.asarray(solver.tau).reshape(-1)[0])
    relative = float(np.asarray(solver.D_rel).reshape(-1)[0])
    converged = bool(solver.converged)
    if not np.isfinite(tau) or tau <= 0:
        return AxisTortuosity(None, 0.0, False, converged, stagnant_share=1.0)
    # The solved concentration inside the volume (taufactor pads one layer on every side).
    field = solver.field[0, 1:-1, 1:-1, 1:-1].cpu().numpy()
    channel_drop = abs(solver.bot_bc - solver.top_bc) / flow_first.shape[0]
    stagnant = stagnant_share(flow_first.astype(bool), field, channel_drop)
    return AxisTortuosity(tau, relative, True, converged, stagnant_share=stagnant)


#: A voxel whose faces all carry less than this share of a straight channel's flux is
#: stagnant. The truth-against-generator contrast it shows holds from 0.01 to 0.3.
STAGNANT_BELOW = 0.1


def stagnant_share(mask: np.ndarray, field: np.ndarray, channel_drop: float) -> float:
    """The share of ``mask`` where no face to a neighbour of the phase carries
    ``STAGNANT_BELOW`` of ``channel_drop``, the concentration drop across one face of a
    straight channel along the flow (the flux of a face is its drop: unit diffusivity)."""
    busiest = np.zeros(mask.shape)
    for axis in range(3):
        inside = np.swapaxes(mask, 0, axis)
        values = np.swapaxes(field, 0, axis)
        drop = np.abs(values[1:] - values[:-1]) * (inside[1:] & inside[:-1])
        most = np.swapaxes(busiest, 0, axis)  # a view: writes land in busiest
        np.maximum(most[1:], drop, out=most[1:])
        np.maximum(most[:-1], drop, out=most[:-1])
    carrying = (busiest >= STAGNANT_BELOW * channel_drop) & mask
    return float(1.0 - carrying.sum() / mask.sum())
