"""Statistics of unsegmented (greyscale) images and volumes."""

from __future__ import annotations

import numpy as np

from microforge.models.stats.correlation import correlation_length, greyscale_correlations

HISTOGRAM_BINS = 64


def unit_scaled(values: np.ndarray) -> np.ndarray:
    """Values on [0, 1]: integers divided by their type's maximum, floats kept as they are.

    A fixed scale (not the image's own min and max) keeps a generated volume and its
    training image comparable even when one of them misses the extremes.
    """
    if values.dtype.kind in "ui":
        return values.astype(np.float32) / np.float32(np.iinfo(values.dtype).max)
    if values.dtype.kind == "b":
        return values.astype(np.float32)
    return values.astype(np.float32, copy=False)


def greyscale_statistics(
    values: np.ndarray, *, max_lag: int | None = None, workers: int | None = None
) -> dict:
    """Histogram (on [0, 1] after scaling), mean, standard deviation and S2 along each axis.

    S2(r) is the mean of v(x) v(x + r) of the scaled values; its characteristic length is
    that of the normalised autocovariance, as for a phase.
    """
    scaled = unit_scaled(values)
    counts, edges = np.histogram(scaled, bins=HISTOGRAM_BINS, range=(0.0, 1.0))
    mean = float(scaled.mean(dtype=np.float64))
    mean_square = float(np.square(scaled, dtype=np.float64).mean())
    tpc = greyscale_correlations(scaled, max_lag=max_lag, workers=workers)
    lengths = {axis: _grey_length(curve, mean, mean_square) for axis, curve in tpc.items()}
    return {
        "histogram": {"bin_edges": edges.tolist(), "counts": counts.tolist()},
        "mean": float(values.mean(dtype=np.float64)),
        "std": float(values.std(dtype=np.float64)),
        "scaled_mean": mean,
        "tpc": {axis: curve.tolist() for axis, curve in tpc.items()},
        "characteristic_length": lengths,
    }


def _grey_length(curve: np.ndarray, mean: float, mean_square: float) -> float | None:
    variance = mean_square - mean * mean
    if variance <= 1e-12:
        return None
    return correlation_length((curve - mean * mean) / variance)
