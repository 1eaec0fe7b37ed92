"""Microstructure statistics: fractions, surface areas, two-point correlations, tortuosity,
triple-phase boundaries; comparison of a generated volume with its training images; and the
cheap fidelity score used during training. NumPy/SciPy, with taufactor (PyTorch) only for
tortuosity.
"""

from microforge.models.stats.comparison import compare_with_references
from microforge.models.stats.fidelity import fidelity_score, fidelity_score_grayscale
from microforge.models.stats.summary import detect_kind, microstructure_statistics

__all__ = [
    "compare_with_references",
    "detect_kind",
    "fidelity_score",
    "fidelity_score_grayscale",
    "microstructure_statistics",
]
