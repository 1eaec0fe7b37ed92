"""Real FFTs for the correlation functions: scipy.fft when installed, else numpy.fft.

The worker image has SciPy (pocketfft in C++, float32 kept as float32, several times faster
than numpy.fft); the API image installs only the base dependencies and computes the
statistics of uploaded datasets on bounded samples, where numpy.fft is fast enough. Both
give the same numbers to float32 rounding.
"""

from __future__ import annotations

import numpy as np

try:
    import scipy.fft as _scipy_fft
except ImportError:  # the API image: base dependencies only
    _scipy_fft = None


def rfft(signal: np.ndarray, n: int, axis: int) -> np.ndarray:
    """Real FFT along ``axis``, zero-padded to ``n``; single-threaded (callers split work)."""
    if _scipy_fft is not None:
        return _scipy_fft.rfft(signal, n=n, axis=axis, workers=1)
    return np.fft.rfft(signal, n=n, axis=axis)


def irfft(spectrum: np.ndarray, n: int) -> np.ndarray:
    """Inverse of :func:`rfft` along the last axis."""
    if _scipy_fft is not None:
        return _scipy_fft.irfft(spectrum, n=n)
    return np.fft.irfft(spectrum, n=n)


def next_fast_len(target: int) -> int:
    """The smallest length >= target whose prime factors are 2, 3 and 5 (fast to transform)."""
    if _scipy_fft is not None:
        return int(_scipy_fft.next_fast_len(target, real=True))
    best = 1
    while best < target:
        best *= 2
    power5 = 1
    while power5 < best:
        power35 = power5
        while power35 < best:
            candidate = power35
            while candidate < target:
                candidate *= 2
            best = min(best, candidate)
            power35 *= 3
        power5 *= 5
    return best
