"""The overall verdict of a comparison, from two errors and thresholds (``agreement.py``
says how the errors are measured):

- fraction error: the largest |volume fraction - pooled fraction of the training images|
  over phases (greyscale: the Wasserstein-1 distance between the value histograms of the
  volume and of the images pooled, on [0, 1]);
- S2 error: the mean over phases, axes and in-plane directions of the mean |difference|
  of the normalised autocovariances, in S2 units.

Base thresholds: "good" when fraction error <= 0.02 and S2 error <= 0.01, within the
scatter between crops of one large real micrograph; "fair" when <= 0.05 and <= 0.03: the
structure is recognisable but fractions or feature sizes are visibly off; "poor" otherwise.

The fraction thresholds are widened by the uncertainty u of the comparison (the standard
error of the images' pooled fraction and of the volume's, see ``agreement.py``): each
becomes sqrt(threshold^2 + u^2). Why: the images are finite samples; three slices that
disagree by +-8 points (a real separator) cannot say the fraction to 2 points, and
demanding it calls the real volume poor. For a large isotropic image u is about 1 point
and changes little. A volume 10 points off stays poor unless the images themselves
disagree by more than that.
"""

from __future__ import annotations

import math

#: Standard errors of the Euler error the thresholds are widened by (module docs).
EULER_SPREAD = 2.0

THRESHOLDS = {
    "good": {"fraction_error": 0.02, "s2_error": 0.01, "euler_error": 0.15},
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
    for name, limits in thresholds(
        fraction_uncertainty, s2_uncertainty, euler_uncertainty
    ).items():
        if (
            fraction_error <= limits["fraction_error"]
            and s2_error <= limits["s2_error"]
            and (euler_error is None or euler_error <= limits["euler_error"])
        ):
            return name
    return "poor"
