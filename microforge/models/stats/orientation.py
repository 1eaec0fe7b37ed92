"""How strongly a phase's features lean one way in the plane of the sections: the
anisotropy of the sections' two-point correlation near the origin, at any angle.

Why: S2 is measured along the axes, and a structure elongated along a diagonal of a
plane has the same S2 along both of that plane's axes as round features. Generators
draw such streaks (docs/benchmarks.md, "Features that lean"), and neither
fractions, surface area, S2 nor the Euler number of the sections sees them.

For a phase p and the sections perpendicular to one axis: rho(d), the normalised
autocovariance (S2_p(d) - f^2) / (f - f^2) of the sections for every in-plane lag d with
|d_i| <= ``max_lag`` (pairs inside the sections only, no wrap-around); its central lobe,
the lags connected to the origin where rho > ``LOBE_LEVEL``, which is the shape of a
typical feature (of its neighbourhood when the phase is the matrix); and that lobe's
second moments M = sum rho(d) d d^T / sum rho(d). Only the lobe: small correlations far
out weigh with |d|^2 and would swamp it, and a periodic pattern's next lobe is not the
feature's shape. The anisotropy is 1 - l_min / l_max of M's eigenvalues (0: round
features; towards 1: lines) and the angle that of l_max's eigenvector, in degrees from
the plane's rows towards its columns (planes (z, y), (z, x), (y, x) for the normals x,
y, z, as in the slices pictures, stats/axes.py), in [-90, 90). A 2D image gives its own
plane's figure, a noisy one: single 128^2 sections of the NMC truth scatter from 0.06 to
0.15 where its stack of sections gives 0.30.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from microforge.models.stats.axes import AXES_3D, array_axis

#: Lags per in-plane direction: the features' lobe of the correlation for the shared
#: volumes (particles 3-15 pixels across); a lobe that reaches the window is cut there.
MAX_LAG = 8
#: Where the central lobe ends: above the scatter of rho at lags without correlation.
LOBE_LEVEL = 0.05


def section_orientation(sections: np.ndarray, values: Sequence, max_lag: int = MAX_LAG) -> dict:
    """{value: {"anisotropy", "angle"}} of the 2D sections ``sections`` (n, rows, cols)."""
    rows, cols = sections.shape[1:]
    lag_r, lag_c = min(max_lag, rows - 1), min(max_lag, cols - 1)
    shape = (rows + lag_r, cols + lag_c)
    dr = np.arange(-lag_r, lag_r + 1)[:, None]
    dc = np.arange(-lag_c, lag_c + 1)[None, :]
    pairs = sections.shape[0] * (rows - np.abs(dr)) * (cols - np.abs(dc))
    result = {}
    for value in values:
        indicator = (sections == value).astype(np.float32)
        fraction = float(indicator.mean())
        if not 0.0 < fraction < 1.0:
            result[value] = {"anisotropy": None, "angle": None}
            continue
        spectrum = np.fft.rfft2(indicator, s=shape)
        sums = np.fft.irfft2((spectrum * spectrum.conj()).sum(axis=0), s=shape)
        sums = np.roll(sums, (lag_r, lag_c), axis=(0, 1))[: 2 * lag_r + 1, : 2 * lag_c + 1]
        rho = (sums / pairs - fraction**2) / (fraction - fraction**2)
        lobe, _ = ndimage.label(rho > LOBE_LEVEL)
        weight = np.where(lobe == lobe[lag_r, lag_c], rho, 0.0)
        total = weight.sum() - weight[lag_r, lag_c]
        moments = np.array(
            [
                [(weight * dr * dr).sum(), (weight * dr * dc).sum()],
                [(weight * dr * dc).sum(), (weight * dc * dc).sum()],
            ]
        ) / max(total, 1e-12)
        eigenvalues, vectors = np.linalg.eigh(moments)
        major = vectors[:, 1]
        angle = float(np.degrees(np.arctan2(major[1], major[0])))
        angle = (angle + 90.0) % 180.0 - 90.0
        result[value] = {
            "anisotropy": float(1.0 - eigenvalues[0] / eigenvalues[1]) if total > 0 else None,
            "angle": angle if total > 0 else None,
        }
    return result


def orientation(labels: np.ndarray, values: Sequence, max_lag: int = MAX_LAG) -> dict:
    """{value: {axis: {"anisotropy", "angle"}}} of the sections perpendicular to each axis
    of a 3D volume (a 2D image: its own plane, under "z")."""
    if labels.ndim == 2:
        per_value = section_orientation(labels[None], values, max_lag)
        return {value: {"z": figure} for value, figure in per_value.items()}
    result: dict = {value: {} for value in values}
    for axis in AXES_3D:
        sections = np.moveaxis(labels, array_axis(axis, 3), 0)
        for value, figure in section_orientation(sections, values, max_lag).items():
            result[value][axis] = figure
    return result


def orientation_difference(figure: dict, reference: dict) -> float | None:
    """How far apart two orientations are: |a1 e^(2i t1) - a2 e^(2i t2)|, the distance of
    their order parameters (anisotropy a, angle t): 0 for equal ones, about the
    anisotropy when the other is round whatever the angles, up to a1 + a2 for crossed
    ones. Angles alone would mean nothing where the features are round."""
    if figure["anisotropy"] is None or reference["anisotropy"] is None:
        return None
    mine = figure["anisotropy"] * np.exp(2j * np.radians(figure["angle"]))
    theirs = reference["anisotropy"] * np.exp(2j * np.radians(reference["angle"]))
    return float(abs(mine - theirs))
