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


def measure_quality(volume: torch.Tensor, data: TrainingData) -> dict[str, Any]:
    """Score a (C, D, H, W) generated volume against the training images; lower is better."""
    if data.image_type == "nphase":
        labels = volume.argmax(0).numpy().astype(np.uint8)
        return fidelity_score(labels, data.arrays, len(data.phases))
    grey = volume.mean(0).numpy().astype(np.float32)
    references = [array.mean(0) for array in data.arrays]
    return fidelity_score_grayscale(grey, references)
