"""Tortuosity factor and effective diffusivity of a phase along each axis, via taufactor.

taufactor solves steady diffusion through the phase with fixed concentrations on the two
faces normal to the flow axis and no flux elsewhere; tau = fraction / (D_eff / D_0).
It runs on CUDA when available (much faster) and on CPU otherwise. Percolation is checked
first with a connected-component labelling (faces shared = connected), so a phase with no
path from one face to the other is reported as not percolating instead of being solved.
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
        return AxisTortuosity(None, 0.0, percolates=False, converged=True)
    if mask.all():
        return AxisTortuosity(1.0, 1.0, percolates=True, converged=True)
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
    if not np.isfinite(tau) or tau <= 0:
        return AxisTortuosity(None, 0.0, percolates=False, converged=bool(solver.converged))
    return AxisTortuosity(tau, relative, percolates=True, converged=bool(solver.converged))
