"""Two-point correlation S2(r) along each axis, by 1D FFTs, and its characteristic length.

Definitions (lags r in voxels, r = 0 .. max_lag):

    S2_p(r) along axis a = P(voxel x is phase p and voxel x + r e_a is phase p),

estimated over every pair that lies inside the array (no periodic wrap-around, because
generated volumes and micrographs are not periodic): the sum of I_p(i) I_p(i + r) over all
lines along a and all i < N - r, divided by the number of such pairs. So S2_p(0) is the
phase fraction and S2_p(r) tends to f_p^2 for uncorrelated distances.

Why it is fast: the correlation sum of a line is the inverse FFT of its power spectrum, and
the inverse FFT is linear, so the power spectra of all lines are summed first and only one
tiny inverse FFT is done per phase and axis; the cost is one real forward FFT of the
volume per phase and axis. Lines are zero-padded to N + max_lag so nothing wraps around.
The last phase needs no FFT at all: its indicator is 1 minus the sum of the others, so its
correlation follows from the power spectrum of that sum and two prefix sums.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import scipy.fft

from microforge.models.stats.axes import array_axis, axis_names

#: Elements per batch of lines: small enough for the spectra to stay in cache.
_BATCH_ELEMENTS = 1 << 20


def default_max_lag(length: int) -> int:
    """Half the side: beyond it too few pairs remain for a trustworthy estimate."""
    return max(length // 2, 1)


def phase_correlations(
    labels: np.ndarray,
    phases: Sequence[int | float],
    *,
    max_lag: int | None = None,
    workers: int | None = None,
) -> dict[str, np.ndarray]:
    """S2 of every phase along every axis: {"x": array (n_phases, lags), "y": ..., ...}.

    ``phases`` must list every value present in ``labels`` (the last one is derived from
    the others); ``max_lag`` is capped per axis at half its length.
    """
    if len(phases) < 2:
        raise ValueError("two-point correlations need at least two phases")
    result = {}
    for name in axis_names(labels.ndim):
        axis = array_axis(name, labels.ndim)
        lag = _lag_for(labels.shape[axis], max_lag)
        result[name] = _axis_correlations(labels, axis, phases, lag, workers)
    return result


def greyscale_correlations(
    values: np.ndarray, *, max_lag: int | None = None, workers: int | None = None
) -> dict[str, np.ndarray]:
    """S2(r) = mean of v(x) v(x + r) along each axis, for values already scaled to [0, 1]."""
    result = {}
    for name in axis_names(values.ndim):
        axis = array_axis(name, values.ndim)
        lag = _lag_for(values.shape[axis], max_lag)
        result[name] = _axis_correlations(values, axis, None, lag, workers)[0]
    return result


def characteristic_length(s2: np.ndarray, fraction: float) -> float | None:
    """Correlation length of a phase: where its normalised autocovariance falls to 1/e.

    The normalised autocovariance is (S2(r) - f^2) / (f - f^2): 1 at r = 0 and 0 once the
    two points are uncorrelated. None when the phase is empty or fills everything.
    """
    variance = fraction - fraction * fraction
    if variance <= 1e-12:
        return None
    return correlation_length((np.asarray(s2, dtype=np.float64) - fraction**2) / variance)


def correlation_length(rho: np.ndarray) -> float | None:
    """First lag where a normalised autocovariance reaches 1/e, linearly interpolated.

    None when the curve never gets there within the lags computed (the structure is
    larger than half the sample).
    """
    threshold = np.exp(-1.0)
    below = np.nonzero(np.asarray(rho) <= threshold)[0]
    if below.size == 0:
        return None
    r = int(below[0])
    if r == 0:
        return 0.0
    before, after = rho[r - 1], rho[r]
    return float(r - 1 + (before - threshold) / (before - after))


def _lag_for(length: int, max_lag: int | None) -> int:
    if max_lag is not None and max_lag < 0:
        raise ValueError(f"max_lag must be 0 or more, got {max_lag}")
    cap = default_max_lag(length)
    return cap if max_lag is None else min(max_lag, cap)


def _axis_correlations(
    array: np.ndarray,
    axis: int,
    phases: Sequence[int | float] | None,
    max_lag: int,
    workers: int | None,
) -> np.ndarray:
    """Correlation of each phase (or of the grey values when phases is None) along axis."""
    length = array.shape[axis]
    fft_length = scipy.fft.next_fast_len(length + max_lag, real=True)
    lines = np.moveaxis(array, axis, -1).reshape(-1, length)
    n_lines = lines.shape[0]
    batch = max(_BATCH_ELEMENTS // length, 1)
    batches = [lines[start : start + batch] for start in range(0, n_lines, batch)]
    spectra = _LineSpectra(phases, fft_length)
    threads = max(1, min(workers or os.cpu_count() or 1, len(batches)))
    if threads == 1:
        partials = [spectra(chunk) for chunk in batches]
    else:
        with ThreadPoolExecutor(threads) as pool:
            partials = list(pool.map(spectra, batches))
    power = sum(p[0] for p in partials)
    sums = [scipy.fft.irfft(p, n=fft_length)[: max_lag + 1] for p in power]
    if phases is not None:
        if len(phases) == 2:
            others = sums[0]
        else:
            complement_power = sum(p[1] for p in partials)
            others = scipy.fft.irfft(complement_power, fft_length)[: max_lag + 1]
        profile = sum(p[2] for p in partials)
        sums.append(_complement_sums(others, profile, n_lines))
    pairs = n_lines * (length - np.arange(max_lag + 1, dtype=np.float64))
    # float32 FFTs leave ~1e-8 noise; a probability is never negative.
    return np.clip(np.stack(sums) / pairs, 0.0, None)


class _LineSpectra:
    """Power spectra of one batch of lines, summed over the lines.

    Returns (power per transformed signal, power of the sum of the indicators, profile of
    that sum along the line). Batches are small enough to stay in cache and independent,
    so they run on several threads (NumPy and scipy.fft release the GIL).
    """

    def __init__(self, phases: Sequence[int | float] | None, fft_length: int) -> None:
        self.phases = phases
        self.fft_length = fft_length
        self.lookups = [] if phases is None else [_lookup(phases, v) for v in phases[:-1]]

    def __call__(self, chunk: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        chunk = np.ascontiguousarray(chunk)
        if self.phases is None:
            signals = [chunk.astype(np.float32)]
        else:
            signals = [
                lookup[chunk]
                if lookup is not None and chunk.dtype == np.uint8
                else (chunk == value).astype(np.float32)
                for lookup, value in zip(self.lookups, self.phases[:-1])
            ]
        profile = np.zeros(chunk.shape[-1])
        running = None
        power = []
        for signal in signals:
            spectrum = scipy.fft.rfft(signal, n=self.fft_length, axis=-1, workers=1)
            if self.phases is not None:
                profile += signal.sum(axis=0, dtype=np.float64)
                if len(signals) > 1:
                    running = spectrum.copy() if running is None else running + spectrum
            power.append(_power_sum(spectrum))
        complement = None if running is None else _power_sum(running)
        return np.stack(power), complement, profile


def _lookup(phases: Sequence[int | float], value: int | float) -> np.ndarray | None:
    """A 256-entry table mapping a uint8 label to its indicator: one gather, no temporaries."""
    if not all(float(p).is_integer() and 0 <= p < 256 for p in phases):
        return None
    table = np.zeros(256, dtype=np.float32)
    table[int(value)] = 1.0
    return table


def _power_sum(spectrum: np.ndarray) -> np.ndarray:
    """Sum over lines of |F(k)|^2, squaring in place (the spectrum is not needed after)."""
    parts = spectrum.view(np.float32)
    np.square(parts, out=parts)
    summed = parts.sum(axis=0, dtype=np.float64)
    return summed[0::2] + summed[1::2]


def _complement_sums(others: np.ndarray, profile: np.ndarray, n_lines: int) -> np.ndarray:
    """Correlation sums of 1 - S from those of S = sum of the other indicators.

    sum_i (1 - S_i)(1 - S_{i+r}) = pairs - sum_{i < N-r} S_i - sum_{i >= r} S_i + sum S_i S_{i+r}
    with the S sums taken over all lines (``profile``); prefix sums give every lag at once.
    """
    length = profile.size
    lags = np.arange(others.size)
    prefix = np.concatenate([[0.0], np.cumsum(profile)])
    head = prefix[length - lags]  # sum over i < N - r
    tail = prefix[length] - prefix[lags]  # sum over i >= r
    return n_lines * (length - lags) - head - tail + others
