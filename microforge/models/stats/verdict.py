"""The overall verdict of a comparison, from two errors and fixed thresholds.

- fraction error: the largest |volume fraction - reference fraction| over phases and axes
  (for greyscale: the largest Wasserstein-1 distance between value histograms on [0, 1]);
- S2 error: the mean over phases, axes and in-plane directions of the mean |S2 difference|
  over the lags both curves have.

"good" when fraction error <= 0.02 and S2 error <= 0.01: within the scatter between crops
of one real micrograph; "fair" when <= 0.05 and <= 0.03: the structure is recognisable but
fractions or feature sizes are visibly off; "poor" otherwise.
"""

from __future__ import annotations

THRESHOLDS = {
    "good": {"fraction_error": 0.02, "s2_error": 0.01},
    "fair": {"fraction_error": 0.05, "s2_error": 0.03},
}


def verdict(fraction_error: float, s2_error: float) -> str:
    """'good', 'fair' or 'poor' (see the module docs for the thresholds and why)."""
    for name, limits in THRESHOLDS.items():
        if fraction_error <= limits["fraction_error"] and s2_error <= limits["s2_error"]:
            return name
    return "poor"
