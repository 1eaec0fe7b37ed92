"""The fast paths of the statistics give the same numbers as the plain ones.

Threads split volumes into slabs or blocks of lines, and the API process (no SciPy) falls
back to numpy.fft: neither may change a result beyond float32 rounding.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from microforge.models.stats import fft
from microforge.models.stats.boundaries import triple_phase_boundary_count
from microforge.models.stats.correlation import phase_correlations
from microforge.models.stats.phases import label_counts
from microforge.models.stats.surface import specific_surface_areas


def _labels(shape, phases=3, seed=0) -> np.ndarray:
    field = ndimage.gaussian_filter(np.random.default_rng(seed).standard_normal(shape), 1.5)
    cuts = np.quantile(field, np.linspace(0, 1, phases + 1)[1:-1])
    return (np.digitize(field, cuts) * 5 + 2).astype(np.uint8)


@pytest.mark.parametrize("shape", [(2, 3, 4), (9, 70, 33), (70, 5, 40)])
def test_threads_and_slabs_do_not_change_results(shape, monkeypatch):
    labels = _labels(shape)
    phases = sorted(label_counts(labels))
    one = specific_surface_areas(labels, phases, workers=1)
    boundaries = triple_phase_boundary_count(labels, phases, workers=1)
    # Tiny slabs: every slab boundary and both volume edges are crossed.
    monkeypatch.setattr("microforge.models.stats.surface._SLAB_ELEMENTS", 1)
    monkeypatch.setattr("microforge.models.stats.boundaries._SLAB_PLANES", 1)
    many = specific_surface_areas(labels, phases, workers=3)
    assert many == pytest.approx(one, rel=1e-6)
    assert triple_phase_boundary_count(labels, phases, workers=3) == boundaries
    curves = phase_correlations(labels, phases, workers=1)
    monkeypatch.setattr("microforge.models.stats.correlation._BLOCK_ELEMENTS", 1)
    threaded = phase_correlations(labels, phases, workers=3)
    for axis, curve in curves.items():
        assert np.allclose(threaded[axis], curve, atol=1e-6)


def test_slab_surface_matches_whole_volume_smoothing():
    labels = _labels((12, 20, 18), phases=2)
    ours = specific_surface_areas(labels, [2, 7])
    # The same smoothing and differences on the whole volume at once, in float64.
    mask = (labels == 7).astype(float)
    smooth = ndimage.correlate1d(mask, [1, 2, 1], axis=0, mode="mirror")
    smooth = ndimage.correlate1d(smooth, [1, 2, 1], axis=1, mode="mirror")
    smooth = ndimage.correlate1d(smooth, [1, 2, 1], axis=2, mode="mirror") / 64
    gradient = np.gradient(smooth)
    expected = np.sqrt(sum(g**2 for g in gradient)).mean()
    assert ours[7] == pytest.approx(expected, rel=1e-6)
    assert ours[2] == pytest.approx(expected, rel=1e-6)


def test_numpy_fft_fallback_matches_scipy(monkeypatch):
    labels = _labels((10, 24, 31))
    phases = sorted(label_counts(labels))
    with_scipy = phase_correlations(labels, phases)
    monkeypatch.setattr(fft, "_scipy_fft", None)
    without = phase_correlations(labels, phases)
    for axis in with_scipy:
        assert np.allclose(without[axis], with_scipy[axis], atol=1e-6)
    for target in (1, 7, 97, 257, 513, 1000, 1025):
        length = fft.next_fast_len(target)
        assert length >= target
        assert length == min(
            n
            for n in range(target, 2 * target + 1)
            if n // (2 ** _power(n, 2) * 3 ** _power(n, 3) * 5 ** _power(n, 5)) == 1
        )


def test_label_counts_both_paths():
    rng = np.random.default_rng(4)
    few = rng.choice(np.array([3, 9, 12], np.uint8), size=(40, 41))
    many = rng.integers(0, 200, size=(40, 41)).astype(np.uint8)
    for labels in (few, many, few.astype(np.int16) - 10, few > 8):
        values, counts = np.unique(labels, return_counts=True)
        assert label_counts(labels) == {int(v): int(c) for v, c in zip(values, counts)}


def _power(n: int, prime: int) -> int:
    count = 0
    while n % prime == 0:
        n //= prime
        count += 1
    return count
