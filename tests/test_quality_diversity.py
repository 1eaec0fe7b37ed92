"""quality.diversity: about 1 for independent samples whatever the phase fractions, about 0
for one volume repeated, on spatially correlated structures like real ones."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from microforge.models.quality import COLLAPSE_DIVERSITY, diversity, quality_rank

SIDE = 48


def _field(seed: int, sigma: float = 2.0) -> np.ndarray:
    """A smooth random field of unit spread: blobs a few voxels across."""
    field = ndimage.gaussian_filter(
        np.random.default_rng(seed).standard_normal((SIDE, SIDE, SIDE)), sigma
    )
    return field / field.std()


def _one_hot(field: np.ndarray, fraction: float) -> torch.Tensor:
    """Two-phase (C=2) one-hot volume whose first phase takes ``fraction`` of the voxels."""
    minor = (field < np.quantile(field, fraction)).astype(np.float32)
    return torch.from_numpy(np.stack([minor, 1 - minor]))


def _soft(field: np.ndarray, fraction: float) -> torch.Tensor:
    """Softmax-like probabilities (C=2): smooth at the interfaces, not one-hot."""
    p = 1 / (1 + np.exp((field - np.quantile(field, fraction)) / 0.5))
    return torch.from_numpy(np.stack([p, 1 - p]).astype(np.float32))


@pytest.mark.parametrize("form", [_one_hot, _soft], ids=["one-hot", "soft"])
@pytest.mark.parametrize("fraction", [0.5, 0.1, 0.05], ids=["50/50", "10/90", "5/95"])
def test_independent_samples_read_about_one_whatever_the_fractions(form, fraction):
    """Before: 0.36 at 10/90 and 0.19 at 5/95 (below COLLAPSE_DIVERSITY), because the
    offsets between a rare and a common channel correlate in any two volumes."""
    first, second = form(_field(1), fraction), form(_field(2), fraction)
    value = diversity(first, second)
    assert value == pytest.approx(1.0, abs=0.06)
    assert quality_rank({"score": 0.1, "diversity": value})[0] is False  # not "collapsed"


@pytest.mark.parametrize("form", [_one_hot, _soft], ids=["one-hot", "soft"])
@pytest.mark.parametrize("fraction", [0.5, 0.1, 0.05], ids=["50/50", "10/90", "5/95"])
def test_one_volume_repeated_reads_about_zero_and_with_small_noise_stays_low(form, fraction):
    volume = form(_field(3), fraction)
    assert diversity(volume, volume.clone()) == pytest.approx(0.0, abs=1e-9)
    noise = torch.from_numpy(np.random.default_rng(4).normal(0, 0.05, volume.shape))
    noisy = volume + noise.float()
    assert diversity(volume, noisy) < 0.1 < COLLAPSE_DIVERSITY


def test_three_phases_with_a_rare_one():
    def three(field: np.ndarray) -> torch.Tensor:
        labels = np.digitize(field, np.quantile(field, [0.05, 0.3]))  # 5 / 25 / 70 %
        return torch.from_numpy(np.stack([labels == i for i in range(3)]).astype(np.float32))

    first, second = three(_field(5)), three(_field(6))
    assert diversity(first, second) == pytest.approx(1.0, abs=0.06)
    assert diversity(first, first.clone()) == pytest.approx(0.0, abs=1e-9)


def test_a_channel_that_never_varies_carries_no_weight():
    first, second = _one_hot(_field(7), 0.2), _one_hot(_field(8), 0.2)
    empty = torch.zeros((1, SIDE, SIDE, SIDE))
    padded = diversity(torch.cat([first, empty]), torch.cat([second, empty]))
    assert padded == pytest.approx(diversity(first, second), abs=1e-12)
    # Nothing varies at all: the generator ignores its noise.
    assert diversity(torch.full((3, 8, 8, 8), 1 / 3), torch.full((3, 8, 8, 8), 1 / 3)) == 0.0
    assert diversity(torch.ones(8), torch.ones(8)) == 0.0


def test_a_collapsed_generator_with_a_barely_used_phase_still_reads_collapsed():
    """One fixed two-phase pattern (the noise is ignored) and a third phase the generator
    barely uses, whose tiny probabilities do wiggle with the noise: still collapsed. (A
    plain average of the per-channel figures would read about 0.33 here.)"""
    pattern = 1 / (1 + np.exp(-_field(9) / 0.3))

    def output(seed: int) -> torch.Tensor:
        noise = np.random.default_rng(seed).standard_normal(pattern.shape)
        tiny = np.clip(1e-3 * (1 + 0.5 * noise), 0, None)
        channels = [(1 - tiny) * (1 - pattern), (1 - tiny) * pattern, tiny]
        return torch.from_numpy(np.stack(channels).astype(np.float32))

    assert diversity(output(10), output(11)) < 0.01


def test_grey_and_colour_outputs():
    grey = [torch.from_numpy(_field(s)[None].astype(np.float32)) for s in (12, 13)]
    assert diversity(*grey) == pytest.approx(1.0, abs=0.06)
    # Colour channels of very different brightness: independent images still read 1.
    means = torch.tensor([0.1, 0.5, 0.9]).reshape(3, 1, 1, 1)
    colour = [
        means + 0.05 * torch.from_numpy(np.stack([_field(s + c) for c in range(3)]))
        for s in (20, 30)
    ]
    assert diversity(colour[0].float(), colour[1].float()) == pytest.approx(1.0, abs=0.06)
    assert diversity(colour[0], colour[0].clone()) == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError, match="same shape"):
        diversity(grey[0], torch.cat(grey))
