"""Microstructure statistics of uploaded training images, computed once at upload.

Why in the API and why bounded: the numbers (phase fractions, surface areas, S2 and
correlation lengths, TPB density) tell a user right away whether the upload is what they
meant, before any GPU time is spent, and they are the reference every generated volume is
later compared with. The API process never imports torch, so tortuosity (taufactor) is
left out, and the work is bounded: a central crop of at most ``MAX_EDGE_2D`` pixels a side
per image and ``MAX_EDGE_3D`` voxels a side per stack, on one thread, well under a second.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from microforge.models.stats.json_values import json_ready
from microforge.models.stats.summary import microstructure_statistics

log = logging.getLogger(__name__)

#: Largest side of the crop of a 2D image that statistics are computed on.
MAX_EDGE_2D = 2048
#: Largest side of the crop of a 3D stack (128^3 = 2 M voxels).
MAX_EDGE_3D = 128


def dataset_statistics(
    arrays: Sequence[np.ndarray],
    image_type: str,
    file_names: Sequence[str],
    *,
    pixel_size: float | None = None,
    unit: str | None = None,
) -> list[dict[str, Any]] | None:
    """One entry per image, in upload order: its statistics and, when it was cropped,
    ``sampled`` = {"shape": crop, "of": full shape}. None for colour images, which have
    no phases or grey levels to measure."""
    if image_type == "colour":
        return None
    kind = "nphase" if image_type == "nphase" else "grayscale"
    entries = []
    for array, name in zip(arrays, file_names):
        crop = central_crop(array, MAX_EDGE_3D if array.ndim == 3 else MAX_EDGE_2D)
        entry: dict[str, Any] = {"file_name": name}
        try:
            entry |= microstructure_statistics(
                crop, kind=kind, tortuosity=False, workers=1, voxel_size=pixel_size, unit=unit
            )
        except ValueError as error:  # e.g. more distinct labels than phases allow
            log.info("no statistics for %s: %s", name, error)
            entry["error"] = str(error)
        entry["sampled"] = (
            None
            if crop.shape == array.shape
            else {"shape": list(crop.shape), "of": list(array.shape), "region": "central"}
        )
        entries.append(json_ready(entry))
    return entries


def central_crop(array: np.ndarray, max_edge: int) -> np.ndarray:
    """The central part of ``array`` with at most ``max_edge`` elements along every axis."""
    window = []
    for length in array.shape:
        edge = min(length, max_edge)
        start = (length - edge) // 2
        window.append(slice(start, start + edge))
    return array[tuple(window)]
