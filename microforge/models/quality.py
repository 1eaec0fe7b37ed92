"""The cheap fidelity check run during training, in the trainer's own terms.

Wasserstein estimates drift with the critic and say little about the material; comparing
phase fractions and two-point correlations of a small generated volume with the training
images is the curve users can trust.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from microforge.models.data import TrainingData
from microforge.models.stats.fidelity import fidelity_score, fidelity_score_grayscale

#: Below this diversity, volumes from different seeds are mostly one repeated pattern.
COLLAPSE_DIVERSITY = 0.2
#: Outputs (probabilities, intensities in [0, 1]) that vary less than this (standard
#: deviation over the voxels) are constant for :func:`diversity`: float32 rounding of a
#: constant output wiggles by about 1e-7. Kept that low because tiny variations can be
#: real: an untrained generator's softmax sits near a tie (0.5 +- 2e-5) and its argmax
#: still changes with the noise.
CONSTANT_SPREAD = 1e-6


def measure_quality(
    volume: torch.Tensor, data: TrainingData, other: torch.Tensor | None = None
) -> dict[str, Any]:
    """Score a (C, D, H, W) generated volume against the training images; lower is better.

    With ``other``, a second volume from another latent, the record also holds its
    ``diversity`` (see :func:`diversity`); it is reported beside the score, not in it.
    """
    if data.image_type == "nphase":
        labels = volume.argmax(0).numpy().astype(np.uint8)
        record = fidelity_score(labels, data.arrays, len(data.phases))
    else:
        grey = volume.mean(0).numpy().astype(np.float32)
        references = [array.mean(0) for array in data.arrays]
        record = fidelity_score_grayscale(grey, references)
    if other is not None:
        record["diversity"] = diversity(volume, other)
    return record


def quality_rank(record: dict[str, Any]) -> tuple[bool, float]:
    """Sort key of fidelity checks, best first: every check that did not look collapsed
    before any that did, then by score. Why: a collapsed generator (one pattern whatever
    the noise, usual early in SliceGAN training) can match fractions and S2 well, yet is
    useless as a generator, so it must not be kept as the best one."""
    value = record.get("diversity")
    return (value is not None and value < COLLAPSE_DIVERSITY, record["score"])


def diversity(first: torch.Tensor, second: torch.Tensor) -> float:
    """1 - the correlation of two outputs of different latents, voxel by voxel, per channel.

    Why: GAN training can settle on one pattern that ignores the noise (mode collapse; with
    SliceGAN it is the usual first stage, see docs/benchmarks.md). Fractions and S2 of such a
    volume may still look right, yet every volume would repeat the same structure. Two
    independent samples of a material are uncorrelated at the same positions (about 1); a
    generator that ignores its noise gives the same volume twice (about 0).

    How: outputs are (C, D, H, W) (phase probabilities, grey or colour channels; any other
    shape is one channel). Each channel is centred on its own mean, and the correlation is
    sum_c cov_c / sqrt(sum_c var_c(first) * sum_c var_c(second)): a mean of the channels'
    correlations weighted by how much each channel varies. Centring each channel on its own
    mean is what makes the figure independent of the phase fractions: centred on one mean
    over all channels, as before, the offsets between a 5 % and a 95 % channel are the same
    in both volumes and read as correlation (two independent volumes gave 0.84 at 30/70,
    0.36 at 10/90, 0.195 at 5/95, as if collapsed). The weights leave out what does not
    vary: a channel constant in both volumes carries no information, and the wiggles of a
    phase the generator barely uses (probabilities of 1e-3) do not make a collapsed
    generator look diverse. An output whose spread (standard deviation over the voxels, all
    channels together) is below ``CONSTANT_SPREAD`` counts as constant: both constant is
    collapsed (0), one constant and one not is no correlation (1).
    """
    a, b = _channels(first), _channels(second)
    if a.shape != b.shape:
        raise ValueError(
            f"diversity needs two outputs of the same shape, got {tuple(first.shape)} "
            f"and {tuple(second.shape)}"
        )
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    variance_a = float(a.square().mean(dim=1).sum())
    variance_b = float(b.square().mean(dim=1).sum())
    constant_a = variance_a < CONSTANT_SPREAD**2
    constant_b = variance_b < CONSTANT_SPREAD**2
    if constant_a and constant_b:
        return 0.0  # nothing varies with the noise
    if constant_a or constant_b:
        return 1.0
    covariance = float((a * b).mean(dim=1).sum())
    return float(1.0 - covariance / (variance_a * variance_b) ** 0.5)


def _channels(output: torch.Tensor) -> torch.Tensor:
    """(C, voxels) in float64: the channels of a (C, D, H, W) output, else one channel."""
    values = torch.as_tensor(output).double()
    if values.ndim == 4:
        return values.reshape(values.shape[0], -1)
    return values.reshape(1, -1)
