"""How far a volume is from its training images, allowing for what the images can tell.

The one comparison behind the report's verdict, ``microforge stats --reference`` and the
trainer's fidelity score (``comparison.py`` and ``fidelity.py`` both call these functions).

Why not "each axis against its own image": training images are samples of one material.
Three perpendicular slices of a real anisotropic separator hold 64 %, 56 % and 48 % of
its phase 0, the volume 54.5 %. A 3D volume has one fraction per phase, so comparing its
slices with each image in turn calls the real volume 10 points off (it was "poor" against
its own three middle slices). So:

- **Fractions** are compared with the pooled fraction of the images: the mean of their
  fractions, each image (one per axis; one image stands for all three) weighted equally,
  as each axis' critic weighs equally in training. How well that mean is known is the
  *uncertainty* below; the verdict widens its fraction thresholds by it.
- **S2** is compared per axis and in-plane direction, but through the normalised
  autocovariance rho(r) = (S2(r) - m^2) / (S2(0) - m^2) (m: the fraction, or the mean
  grey value): 1 at r = 0, 0 once two points are uncorrelated. Its shape and where it falls
  (the characteristic length) are the structure along that direction, free of the image's
  own fraction. The difference is scaled back to S2 units by the variance m(1 - m), the
  mean of the volume's and the images', so it equals the plain mean |S2 difference| when
  both fractions agree and the thresholds keep their meaning. Anisotropy still shows: a
  volume stretched along z has the wrong rho along z whatever its fractions.
- **Interface density per direction** is in S2 too: the slope of S2 at r = 0 is minus half
  the interfaces crossed per unit length along that direction, so rho's initial slope is
  that density over m(1 - m), again free of the fraction. The perimeter per area of the
  slices perpendicular to each axis is compared per axis (stereology ties it to the 3D
  surface area, S_V = 4/pi P_A, only for isotropic material; for anisotropic material it
  depends on the slicing direction), and reported, but not in the verdict: the smoothed
  gradient that measures it is blind to voxel-scale patterns (docs/benchmarks.md).

Uncertainty of a fraction measured on a sample of N pixels (voxels): the pixels are
correlated, so the variance of their mean is m(1 - m) A / N, A the integral range (in
pixels) of the normalised autocovariance (Lantuejoul, "Ergodicity and integral range",
J. Microscopy 1991). A is estimated from the S2 curves along the sample's axes, as the
product over axes of 1 + 2 sum_{r >= 1} rho(r), each sum stopped where rho first reaches
0 or rises again (beyond it the curve is noise, or the period of a lattice). On the real
volumes of shared/data, the middle slice's estimate against the scatter of all slices'
fractions: NMC 1.3-1.6 points for 1.3-2.5, SOFC 1.8-1.9 for 1.0-2.1; the separator, whose
fraction drifts along x, 1.5-3.0 for 2.0-5.4. It is a floor; with several images the
spread between their fractions is measured too: the uncertainty of the mean of n images
is the larger of sqrt(sum of their variances) / n and their sample standard deviation /
sqrt(n). The volume's own uncertainty (same formula) is added in quadrature.

The Euler error's uncertainty likewise (``euler_uncertainty``): the image's, from the
scatter of its density between blocks (with three images, one per axis, the volume's
sections when they scatter more: such an image cannot see along its own normal), and the
volume's own, from the scatter between its sections over the root of how many are
independent: sections closer than the integral range along the axis (the same
1 + 2 sum rho, about two correlation lengths) count as one.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from microforge.models.stats.euler import disk_count_density

#: Below this variance a phase is empty or fills everything: no fluctuation to normalise.
_NO_VARIANCE = 1e-12


def variance_of(curve: Sequence[float], mean: float) -> float:
    """S2(0) - m^2: f(1 - f) for a phase, the grey values' variance for greyscale."""
    return max(float(curve[0]) - mean * mean, 0.0) if len(curve) else 0.0


def normalised_autocovariance(curve: Sequence[float], mean: float) -> np.ndarray:
    """rho(r) = (S2(r) - m^2) / (S2(0) - m^2); all 0 for an empty or full phase."""
    values = np.asarray(curve, dtype=np.float64)
    variance = variance_of(values, mean)
    if variance <= _NO_VARIANCE:
        return np.zeros_like(values)
    return (values - mean * mean) / variance


def s2_error(
    volume_curve: Sequence[float],
    volume_mean: float,
    reference_curve: Sequence[float],
    reference_mean: float,
    reference_variance: float | None = None,
) -> float:
    """Mean over the lags both curves have of |rho_volume - rho_reference|, in S2 units.

    The scale is the mean of the volume's variance and ``reference_variance`` (default:
    the reference curve's own; pass the pooled variance of all the images so that every
    axis uses the same), so a phase present on one side only still counts.
    """
    lags = min(len(volume_curve), len(reference_curve))
    if not lags:
        return 0.0
    mine = normalised_autocovariance(volume_curve, volume_mean)[:lags]
    theirs = normalised_autocovariance(reference_curve, reference_mean)[:lags]
    if reference_variance is None:
        reference_variance = variance_of(reference_curve, reference_mean)
    scale = 0.5 * (variance_of(volume_curve, volume_mean) + reference_variance)
    return float(scale * np.abs(mine - theirs).mean())


def sampling_error(curves: Iterable[Sequence[float]], mean: float, size: int) -> float:
    """Standard error of a fraction (or mean) measured on ``size`` correlated pixels.

    ``curves``: the sample's S2 along each of its axes. See the module docs.
    """
    curves = [np.asarray(c, dtype=np.float64) for c in curves]
    if not curves or size <= 0:
        return 0.0
    variance = variance_of(curves[0], mean)
    if variance <= _NO_VARIANCE:
        return 0.0
    integral_range = float(np.prod([integral_range_along(curve, mean) for curve in curves]))
    return float(np.sqrt(variance * min(integral_range, size) / size))


def integral_range_along(curve: Sequence[float], mean: float) -> float:
    """1 + 2 sum_{r >= 1} rho(r) of one S2 curve, in pixels along it: the spacing beyond
    which two samples (pixels, or sections perpendicular to the curve's axis) count as
    independent, about twice the correlation length (for rho = exp(-r / l), 2 l). The sum
    stops at the first lag where rho reaches 0 or rises again: beyond it the curve is
    noise, or the period of a periodic pattern (whose fraction is well defined). 1 for an
    empty or full phase."""
    rho = normalised_autocovariance(curve, mean)
    if rho.size < 2:
        return 1.0
    ends = np.nonzero((rho[1:] <= 0.0) | (np.diff(rho) > 0.0))[0]
    stop = 1 + (ends[0] if ends.size else rho.size - 1)
    return max(1.0, 1.0 + 2.0 * float(rho[1:stop].sum()))


def pooled_uncertainty(values: Sequence[float], errors: Sequence[float]) -> float:
    """Standard error of the mean of ``values`` (one per image), each known to +-``errors``:
    the larger of what the errors predict and what the spread between the values shows."""
    n = len(values)
    predicted = float(np.sqrt(np.sum(np.square(errors)))) / n if n else 0.0
    if n < 2:
        return predicted
    return max(predicted, float(np.std(values, ddof=1)) / np.sqrt(n))


def s2_uncertainty(variance: float, *errors: float) -> float:
    """Standard error of a covariance estimate S2(r) - m^2 at any lag, in S2 units, from
    the standard errors of the two samples' fractions: by Bartlett's formula the variance
    of the estimate is about v^2 A / N (1 + rho(r)^2), i.e. sqrt(v) times the fraction's
    standard error sqrt(v A / N); the two samples' errors add in quadrature."""
    return float(np.sqrt(max(variance, 0.0))) * combined(*errors)


def combined(*errors: float) -> float:
    """Independent standard errors added in quadrature."""
    return float(np.sqrt(np.sum(np.square(errors))))


def euler_term(
    volume: tuple[float, float],
    reference: tuple[float, float],
    reference_perimeter: float,
    reference_fraction: float,
    reference_area: float,
    volume_area: float = 0.0,
    *,
    reference_samples: int = 0,
    per_axis_image: bool = False,
) -> dict:
    """One phase and axis of the Euler error, for the report and the trainer's score alike:
    ``volume`` and ``reference`` are (Euler density, dispersion) of the sections
    (``euler.euler_densities``); the reference's perimeter per area and area fraction give
    its n* (``euler.disk_count_density``); ``reference_area`` and ``volume_area`` are the
    independent areas each density is measured on (``euler.measured_area``; 0: the volume's
    own uncertainty is not known, as in records made before it was counted);
    ``reference_samples`` and ``per_axis_image`` as in ``euler_uncertainty``. Returns n*,
    the gap and its uncertainty."""
    scale = disk_count_density(reference_perimeter, reference_fraction)
    return {
        "disk_count_density": scale,
        "error": euler_gap(volume[0], reference[0], scale),
        "uncertainty": euler_uncertainty(
            (volume[1], reference[1]),
            reference_area,
            scale,
            volume_area,
            reference_samples=reference_samples,
            per_axis_image=per_axis_image,
        ),
    }


def one_image_per_axis(references: Iterable[np.ndarray]) -> bool:
    """Whether the references of the three axes are three different arrays (the
    anisotropic layout: one 2D image per axis), which ``euler_uncertainty`` lets the
    volume's sections tell how the material varies along each image's normal."""
    return len({id(reference) for reference in references}) == 3


def euler_gap(
    volume_density: float, reference_density: float, reference_scale: float
) -> float | None:
    """|chi_volume - chi_reference| / n*_reference for one phase and axis: the Euler
    densities' difference in units of the reference's disk-equivalent count density
    (``euler.disk_count_density``), so a difference of shape index, free of the feature size.
    None where the reference lacks the phase (n* = 0): there is no shape to compare with,
    and the fraction error already counts the phase."""
    if reference_scale <= 0.0:
        return None
    return abs(volume_density - reference_density) / reference_scale


def euler_uncertainty(
    dispersions: Sequence[float],
    reference_area: float,
    reference_scale: float,
    volume_area: float = 0.0,
    *,
    reference_samples: int = 0,
    per_axis_image: bool = False,
) -> float:
    """Standard error of one phase's Euler gap, in units of the reference's n*: the
    reference's and the volume's standard errors added in quadrature, as for fractions.
    ``dispersions``: the volume's and the reference's (``euler.euler_densities``).

    The reference's: the material's dispersion over sqrt(``reference_area``). The
    material's dispersion is the reference's own (its blocks, or a 3D reference's
    sections), raised by one standard error of a standard deviation of
    ``reference_samples`` samples (``euler.dispersion_samples``; 0: not raised): a 62^2
    image's 9 blocks say it to +-25 %. With ``per_axis_image`` (the reference is one of
    three images, one per axis) it is the larger of that and the volume's: such an image
    cannot see the material vary along its own normal (the separator drifts along x, its
    sections perpendicular to x scatter three times as much as the x image's blocks), the
    volume's sections can. Not otherwise: one image for every axis declares the material
    the same in every direction, so its blocks see how it varies along any, and a volume
    whose sections scatter more than the image's is further from the material, not a
    reason to widen its own limit (a coarse NMC generator's sections scatter 0.29 against
    the image's 0.11 and widened its "good" limit from 0.29 to 0.48).

    The volume's own: its dispersion over sqrt(``volume_area``), the area of its
    independent sections (``euler.measured_area`` with the integral range along the axis:
    sections closer than it are one sample). Small for a large volume of a uniform
    material; a small corner of a material that drifts along the axis (the separator along
    x) is a small, scattered sample whose mean density is itself uncertain."""
    if reference_scale <= 0.0 or reference_area <= 0.0:
        return 0.0
    volume_dispersion, reference_dispersion = dispersions
    if reference_samples > 1:
        reference_dispersion *= 1.0 + 1.0 / float(np.sqrt(2.0 * (reference_samples - 1)))
    if per_axis_image:
        reference_dispersion = max(reference_dispersion, volume_dispersion)
    image = reference_dispersion / float(np.sqrt(reference_area))
    own = volume_dispersion / float(np.sqrt(volume_area)) if volume_area > 0 else 0.0
    return combined(image, own) / reference_scale


def euler_error(gaps: Iterable[float | None]) -> float | None:
    """The mean of the measured ``euler_gap`` over phases and axes (None when none is)."""
    measured = [gap for gap in gaps if gap is not None]
    return float(np.mean(measured)) if measured else None
