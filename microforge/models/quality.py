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
    """1 - the correlation of two outputs of different latents, voxel by voxel.

    Why: GAN training can settle on one pattern that ignores the noise (mode collapse; with
    SliceGAN it is the usual first stage, see docs/benchmarks.md). Fractions and S2 of such a
    volume may still look right, yet every volume would repeat the same structure. Two
    independent samples of a material are uncorrelated at the same positions (about 1); a
    generator that ignores its noise gives the same volume twice (about 0).
    """
    a = first.double().flatten()
    b = second.double().flatten()
    a = a - a.mean()
    b = b - b.mean()
    spread = float(a.norm() * b.norm())
    if spread == 0.0:
        return 0.0  # constant outputs: nothing varies with the noise
    return float(1.0 - (a @ b) / spread)
