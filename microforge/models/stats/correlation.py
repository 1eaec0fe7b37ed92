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

from collections.abc import Sequence

import numpy as np

from microforge.models.stats.axes import array_axis, axis_names
from microforge.models.stats.fft import irfft, next_fast_len, rfft
from microforge.models.stats.parallel import map_blocks

#: Elements per block of lines: small enough for its float32 spectra to stay in cache.
_BLOCK_ELEMENTS = 1 << 18


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
        lag = lag_for(labels.shape[axis], max_lag)
        result[name] = _axis_correlations(labels, axis, phases, lag, workers)
    return result


def greyscale_correlations(
    values: np.ndarray, *, max_lag: int | None = None, workers: int | None = None
) -> dict[str, np.ndarray]:
    """S2(r) = mean of v(x) v(x + r) along each axis, for values already scaled to [0, 1]."""
    result = {}
    for name in axis_names(values.ndim):
        axis = array_axis(name, values.ndim)
        lag = lag_for(values.shape[axis], max_lag)
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


def lag_for(length: int, max_lag: int | None) -> int:
    """The last lag of the S2 curves along an axis of this length (curves hold lag + 1)."""
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
    fft_length = next_fast_len(length + max_lag)
    n_lines = array.size // length
    # Blocks are cut across another axis, so every line stays whole inside one block and
    # no strided copy of the volume is ever made: the FFT runs along ``axis`` in place.
    block_axis = 1 if axis == 0 else 0
    step = max(_BLOCK_ELEMENTS // (array.size // array.shape[block_axis]), 1)
    spectra = _BlockSpectra(phases, axis, fft_length)

    def block(start: int) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        index = [slice(None)] * array.ndim
        index[block_axis] = slice(start, start + step)
        return spectra(array[tuple(index)])

    partials = map_blocks(block, range(0, array.shape[block_axis], step), workers)
    power = np.sum([p[0] for p in partials], axis=0)
    sums = [irfft(p, n=fft_length)[: max_lag + 1] for p in power]
    if phases is not None:
        if len(phases) == 2:
            others = sums[0]
        else:
            complement_power = np.sum([p[1] for p in partials], axis=0)
            others = irfft(complement_power, n=fft_length)[: max_lag + 1]
        profile = np.sum([p[2] for p in partials], axis=0)
        sums.append(_complement_sums(others, profile, n_lines))
    pairs = n_lines * (length - np.arange(max_lag + 1, dtype=np.float64))
    # float32 FFTs leave ~1e-8 noise; a probability is never negative.
    return np.clip(np.stack(sums) / pairs, 0.0, None)


class _BlockSpectra:
    """Power spectra along ``axis`` of one block of lines, summed over its lines.

    Returns (power per transformed signal, power of the sum of the indicators, profile of
    that sum along the axis), all float64. The indicators are made in float32 by one
    comparison (ten times faster than a table lookup), transformed, squared in place and
    reduced while the block is still in cache.
    """

    def __init__(self, phases: Sequence[int | float] | None, axis: int, fft_length: int) -> None:
        self.phases = phases
        self.axis = axis
        self.fft_length = fft_length

    def __call__(
        self, block: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        if self.phases is None:
            signals = [block.astype(np.float32, copy=False)]
        else:
            signals = [(block == value).astype(np.float32) for value in self.phases[:-1]]
        others = tuple(d for d in range(block.ndim) if d != self.axis)
        profile = None
        if self.phases is not None:
            # Sums of 0/1 over one block are integers below 2^24: exact in float32.
            profile = sum(s.sum(axis=others).astype(np.float64) for s in signals)
        spectra = [rfft(s, n=self.fft_length, axis=self.axis) for s in signals]
        del signals
        complement = None
        if len(spectra) > 1:
            total = spectra[0] + spectra[1]
            for spectrum in spectra[2:]:
                total += spectrum
            complement = _power_sum(total, self.axis)
        power = np.stack([_power_sum(s, self.axis) for s in spectra])
        return power, complement, profile


def _power_sum(spectrum: np.ndarray, axis: int) -> np.ndarray:
    """Sum of |F(k)|^2 over every line of a block, per frequency k along ``axis``.

    Squares in place and sums in float32 (one block holds a few hundred lines, so the
    relative rounding stays near 1e-6); blocks are added up in float64 by the caller.
    """
    spectrum = np.ascontiguousarray(spectrum)
    parts = spectrum.view(spectrum.real.dtype)
    np.square(parts, out=parts)
    if axis == spectrum.ndim - 1:
        # Real and imaginary parts interleave along the frequency axis: sum the lines
        # first (contiguous rows), then each (re, im) pair.
        summed = parts.reshape(-1, parts.shape[-1]).sum(axis=0).astype(np.float64)
        return summed[0::2] + summed[1::2]
    others = tuple(d for d in range(spectrum.ndim) if d != axis)
    return parts.sum(axis=others).astype(np.float64)


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
