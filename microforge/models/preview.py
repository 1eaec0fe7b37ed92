"""Preview images: what a person looks at to judge a generator at a glance."""

from __future__ import annotations

import numpy as np
import torch

SEPARATOR = 4


def to_display(volume: torch.Tensor, image_type: str) -> np.ndarray:
    """(C, D, H, W) network output -> uint8 (D, H, W) or (D, H, W, 3) for display.

    Phases are spread evenly over the grey range so that any number of them stays visible.
    """
    if image_type == "nphase":
        labels = volume.argmax(0)
        levels = max(volume.shape[0] - 1, 1)
        return (labels.float() * (255.0 / levels)).round().to(torch.uint8).numpy()
    values = (volume.clamp(0, 1) * 255).round().to(torch.uint8)
    if image_type == "colour":
        return values.permute(1, 2, 3, 0).numpy()
    return values[0].numpy()


def central_slices(volume: np.ndarray) -> list[np.ndarray]:
    """Middle slices perpendicular to x, y and z, oriented as the training images."""
    d, h, w = volume.shape[:3]
    return [volume[:, :, w // 2], volume[:, h // 2, :], volume[d // 2, :, :]]


def side_by_side(images: list[np.ndarray]) -> np.ndarray:
    height = max(im.shape[0] for im in images)
    pieces: list[np.ndarray] = []
    for index, image in enumerate(images):
        pad = [(0, height - image.shape[0]), (0, 0)] + [(0, 0)] * (image.ndim - 2)
        pieces.append(np.pad(image, pad, constant_values=255))
        if index < len(images) - 1:
            gap_shape = (height, SEPARATOR) + image.shape[2:]
            pieces.append(np.full(gap_shape, 255, dtype=np.uint8))
    return np.concatenate(pieces, axis=1)


def render_preview(volume: torch.Tensor, image_type: str) -> np.ndarray:
    return side_by_side(central_slices(to_display(volume, image_type)))
