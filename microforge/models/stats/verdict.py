"""The overall verdict of a comparison, from three errors and thresholds (``agreement.py``
says how the errors are measured):

- fraction error: the largest |volume fraction - pooled fraction of the training images|
  over phases (greyscale: the Wasserstein-1 distance between the value histograms of the
  volume and of the images pooled, on [0, 1]);
- S2 error: the mean over phases, axes and in-plane directions of the mean |difference|
  of the normalised autocovariances, in S2 units;
- Euler error (phases only; greyscale has none and is judged on the other two): the mean
  over phases and axes of |chi_volume - chi_image| / n*_image, chi the Euler number per
  area of the sections perpendicular to the axis and n* = P_A^2 / (4 pi phi) the image's
  disk-equivalent count density (``euler.disk_count_density``): a difference of shape
  index, 1 between round separate particles and a labyrinth, free of the feature size.

Base thresholds: "good" when fraction error <= 0.02, S2 error <= 0.01 and Euler error <=
0.10, within the scatter between crops of one large real micrograph; "fair" when <= 0.05,
<= 0.03 and <= 0.40: the structure is recognisable but fractions, feature sizes or shapes
are visibly off; "poor" otherwise.

The fraction thresholds are widened by the uncertainty u of the comparison (the standard
error of the images' pooled fraction and of the volume's, see ``agreement.py``): each
becomes sqrt(threshold^2 + u^2). Why: the images are finite samples; three slices that
disagree by +-8 points (a real separator) cannot say the fraction to 2 points, and
demanding it calls the real volume poor. For a large isotropic image u is about 1 point
and changes little. A volume 10 points off stays poor unless the images themselves
disagree by more than that. The S2 thresholds likewise by the S2 uncertainty.

The Euler thresholds are widened by two standard errors: sqrt(threshold^2 + (2 u_E)^2),
u_E the mean over phases and axes of the Euler gap's standard error in n* units
(``agreement.euler_uncertainty``): the image's (the material's scatter of the density,
as the image's blocks measure it, over sqrt(its area)) and the volume's own (the spread
between its sections over sqrt(the number of independent ones, sections closer than the
integral range of the S2 along the axis counting as one)), in quadrature as for
fractions. Why two: a 128^2 slice holds a few hundred particles, a 62^2 one a few dozen,
and single sections of a real material scatter by 10-40 % of n*. The blocks' scatter is
raised by its own standard error (9 blocks of a 62^2 image say it to +-25 %); with three
images, one per axis, the volume's sections' scatter counts when larger, since such an
image cannot see the material vary along its own normal (one image of the separator,
whose sections drift along x, sits 1.6 of its sections' standard deviations from their
mean). Not with one image for every axis: it declares the material the same in every
direction, its blocks see how it varies along any, and a volume whose sections scatter
more is further from the material; counting that scatter widened a coarse volume's own
limit (a 2200-iteration NMC generator's: 0.45, and it passed with 0.39; half NMC, half
labyrinth: 0.46, passed with 0.41). Why the volume's own: a
32x64x64 corner of the separator is itself a small sample of a drifting material
(sections perpendicular to x are independent only 9 voxels apart, 7 of them in 64, and
their mean density is known to +-0.35-0.77 n*); without it the trainer called the
truth's corner "fair".

Calibration (``benchmarks/euler_calibration.py``, docs/benchmarks.md, "The Euler limit
of a volume that varies along an axis"), Euler error / u_E / widened "good" limit, report
| trainer score of a 64^3 corner: every real volume against its own middle slice(s) NMC
0.045 / 0.14 / 0.31 | 0.039 / 0.15 / 0.32, SOFC 0.24 / 0.45 / 0.91 (three slices 0.38 /
0.50 / 1.01, the same in the score: 62^3 is its own corner), separator (three slices)
0.93 / 0.61 / 1.23 | 0.78 / 0.48 / 0.97; NMC against any of 5 z slices at most 0.15 /
0.13 / 0.27, SOFC 0.72 (z = 20) / 0.46 / 0.92, 0.68 (z = 50) / 0.38 / 0.76; NMC 64^3
corners 0.04-0.06 / 0.15 / 0.32. Today's NMC generators at 2200 iterations (tiny, 128^3,
two seeds, two volumes each) 0.39-0.45 / 0.15 / 0.30-0.31 ("fair"; their fraction and S2
errors are "good"), at 1100 iterations 0.58-0.79 ("poor"); the NMC truth with its far
half along y a labyrinth 0.41 / 0.15 / 0.32 ("fair"); a thresholded Gaussian field with
the NMC fraction 0.86 ("poor"). In the trainer's score of the generators' 64^3 corners,
one is "good" (0.310 against 0.329): a corner is a small sample, and its score still
ranks it 0.03 worse than the truth's. Base 0.10 with two standard errors separates the
generators' volumes from every real volume in the report; a base above 0.25 calls a
generator's volume good, 1.5 standard errors the separator fair (0.78 against 0.73 in
the score).
"""

from __future__ import annotations

import math

#: Standard errors of the Euler error the thresholds are widened by (module docs).
EULER_SPREAD = 2.0

THRESHOLDS = {
    "good": {"fraction_error": 0.02, "s2_error": 0.01, "euler_error": 0.10},
    "fair": {"fraction_error": 0.05, "s2_error": 0.03, "euler_error": 0.40},
}


def thresholds(
    fraction_uncertainty: float = 0.0, s2_uncertainty: float = 0.0, euler_uncertainty: float = 0.0
) -> dict[str, dict[str, float]]:
    """The thresholds widened by the uncertainties (module docs)."""
    return {
        name: {
            "fraction_error": math.hypot(limits["fraction_error"], fraction_uncertainty),
            "s2_error": math.hypot(limits["s2_error"], s2_uncertainty),
            "euler_error": math.hypot(limits["euler_error"], EULER_SPREAD * euler_uncertainty),
        }
        for name, limits in THRESHOLDS.items()
    }


def verdict(
    fraction_error: float,
    s2_error: float,
    fraction_uncertainty: float = 0.0,
    s2_uncertainty: float = 0.0,
    euler_error: float | None = None,
    euler_uncertainty: float = 0.0,
) -> str:
    """'good', 'fair' or 'poor' (see the module docs for the thresholds and why).

    ``euler_error`` None (greyscale, or no phase of the images to compare shapes with):
    judged on the fraction and S2 errors alone."""
    for name, limits in thresholds(fraction_uncertainty, s2_uncertainty, euler_uncertainty).items():
        if (
            fraction_error <= limits["fraction_error"]
            and s2_error <= limits["s2_error"]
            and (euler_error is None or euler_error <= limits["euler_error"])
        ):
            return name
    return "poor"
