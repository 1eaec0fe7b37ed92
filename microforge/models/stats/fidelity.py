"""A cheap score of how well a small generated volume matches its training images.

Meant to run every few hundred training iterations (a 64^3 volume against a 500x500 image
costs a few milliseconds), so it uses only phase fractions and S2 curves, the two
statistics SliceGAN users check first.

Reference layouts (as in training): one 2D image = isotropic, compared with the slices
perpendicular to every axis; three 2D images = the slices perpendicular to x, y and z, in
that order; one 3D array = compared axis by axis with the volume directly. A slice
perpendicular to an axis is compared through the volume's S2 along the two axes lying in
it (see ``axes``): the image's S2 along its columns against the first, along its rows
against the second. So a volume that is right along y but wrong along z shows up as an
error on the x and y axes only.

Definitions, for each axis a in x, y, z (P phases, lags r = 0..L with
L = min(32, smallest volume side // 2)):

    fraction_error[a] = mean over phases p of |f_volume(p) - f_reference_a(p)|
    s2_error[a]       = mean over phases p, over the two in-plane directions d and over
                        r = 0..L of |S2_volume(p, d, r) - S2_reference_a(p, d, r)|

and ``fraction_error``, ``s2_error`` are the means over the three axes; ``score`` is their
sum (0 = perfect, lower is better; both terms are probabilities, so a score of 0.01 means
about 1% absolute error). The greyscale variant replaces the fraction error by the
Wasserstein-1 distance between the value distributions on [0, 1] (histogram_distance) and
uses the S2 of the values.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from microforge.models.stats.axes import AXES_3D, SLICE_PLANE_AXES
from microforge.models.stats.correlation import greyscale_correlations, phase_correlations
from microforge.models.stats.greyscale import unit_scaled

MAX_FIDELITY_LAG = 32
_HISTOGRAM_BINS = 64


def fidelity_score(volume: np.ndarray, references: Sequence[np.ndarray], n_phases: int) -> dict:
    """Score a (D, H, W) volume of phase indices 0..n-1 against indexed training images."""
    if n_phases < 2:
        raise ValueError(f"fidelity needs at least 2 phases, got {n_phases}")
    phases = list(range(n_phases))
    _check_indices(volume, n_phases, "volume")
    for index, reference in enumerate(references):
        _check_indices(reference, n_phases, f"reference {index + 1}")
    max_lag = _max_lag(volume)

    def describe(array: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        counts = np.bincount(array.reshape(-1).astype(np.intp), minlength=n_phases)
        curves = phase_correlations(array, phases, max_lag=max_lag)
        return counts / array.size, curves

    return _score(volume, references, describe, "fraction_error", _fraction_distance)


def fidelity_score_grayscale(volume: np.ndarray, references: Sequence[np.ndarray]) -> dict:
    """Score a (D, H, W) greyscale volume against greyscale training images (values in [0, 1]).

    Returns {"score", "histogram_distance", "s2_error", "per_axis"}; see the module docs.
    """
    max_lag = _max_lag(volume)

    def describe(array: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        scaled = np.clip(unit_scaled(array), 0.0, 1.0)
        counts, _ = np.histogram(scaled, bins=_HISTOGRAM_BINS, range=(0.0, 1.0))
        curves = greyscale_correlations(scaled, max_lag=max_lag)
        return counts / scaled.size, {axis: curve[None] for axis, curve in curves.items()}

    return _score(volume, references, describe, "histogram_distance", _histogram_distance)


def _score(
    volume: np.ndarray,
    references: Sequence[np.ndarray],
    describe: Callable[[np.ndarray], tuple[np.ndarray, dict[str, np.ndarray]]],
    distribution_key: str,
    distribution_distance: Callable[[np.ndarray, np.ndarray], float],
) -> dict:
    if volume.ndim != 3:
        raise ValueError(f"the generated volume must be 3D (D, H, W), got shape {volume.shape}")
    per_reference = _references_per_axis(references)
    volume_distribution, volume_curves = describe(volume)
    described = {id(r): describe(r) for r in per_reference.values()}
    per_axis = {}
    for axis in AXES_3D:
        reference = per_reference[axis]
        distribution, curves = described[id(reference)]
        if reference.ndim == 3:
            pairs = [(volume_curves[d], curves[d]) for d in SLICE_PLANE_AXES[axis]]
        else:
            columns, rows = SLICE_PLANE_AXES[axis]
            pairs = [(volume_curves[columns], curves["x"]), (volume_curves[rows], curves["y"])]
        per_axis[axis] = {
            distribution_key: distribution_distance(volume_distribution, distribution),
            "s2_error": float(np.mean([_curve_distance(v, r) for v, r in pairs])),
        }
    distribution_error = float(np.mean([e[distribution_key] for e in per_axis.values()]))
    s2_error = float(np.mean([e["s2_error"] for e in per_axis.values()]))
    return {
        "score": distribution_error + s2_error,
        distribution_key: distribution_error,
        "s2_error": s2_error,
        "per_axis": per_axis,
    }


def _references_per_axis(references: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
    dims = [r.ndim for r in references]
    if dims == [2]:
        return dict.fromkeys(AXES_3D, references[0])
    if dims == [2, 2, 2]:
        return dict(zip(AXES_3D, references))
    if dims == [3]:
        return dict.fromkeys(AXES_3D, references[0])
    raise ValueError(
        f"references must be one 2D image, three 2D images (x, y, z) or one 3D array; "
        f"got arrays of {dims} dimensions"
    )


def _check_indices(array: np.ndarray, n_phases: int, what: str) -> None:
    if array.dtype.kind not in "uib":
        raise ValueError(f"the {what} must hold integer phase indices, got dtype {array.dtype}")
    if array.size and (int(array.min()) < 0 or int(array.max()) >= n_phases):
        raise ValueError(
            f"the {what} holds values {int(array.min())}..{int(array.max())}; phase indices "
            f"must be 0..{n_phases - 1} (map original labels to indices first)"
        )


def _max_lag(volume: np.ndarray) -> int:
    return max(1, min(MAX_FIDELITY_LAG, min(volume.shape) // 2))


def _curve_distance(volume_curves: np.ndarray, reference_curves: np.ndarray) -> float:
    lags = min(volume_curves.shape[-1], reference_curves.shape[-1])
    return float(np.abs(volume_curves[:, :lags] - reference_curves[:, :lags]).mean())


def _fraction_distance(volume: np.ndarray, reference: np.ndarray) -> float:
    return float(np.abs(volume - reference).mean())


def _histogram_distance(volume: np.ndarray, reference: np.ndarray) -> float:
    """Wasserstein-1 distance on [0, 1]: the area between the two cumulative histograms."""
    gap = np.abs(np.cumsum(volume) - np.cumsum(reference))
    return float(gap.sum() / len(volume))
