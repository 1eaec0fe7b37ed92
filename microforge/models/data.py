"""Training data: images encoded for the network, and crops sampled on the fly.

The public SliceGAN code pre-cuts tens of thousands of crops per axis into host memory
(about 4 GiB); here the (downscaled) images themselves live on the training device and each
batch of crops is gathered from random offsets, which costs nothing up front and lets the
critic see every position of the image.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from microforge.models.phases import AXES, DataError, ImageAnalysis, analyse_images, is_colour

__all__ = ["AXES", "CropSampler", "DataError", "TrainingData", "prepare_training_data"]


@dataclass
class TrainingData:
    """Images ready for training, with what is needed to decode the generator's output.

    ``arrays`` hold phase indices (uint8, nphase) or channel-first float32 in [0, 1]
    (grey, colour); for anisotropic data they are ordered x, y, z: image i is the plane
    perpendicular to axis i, rows along the first remaining axis of (z, y, x).
    """

    analysis: ImageAnalysis
    arrays: list[np.ndarray]
    value_range: tuple[float, float] = (0.0, 1.0)
    source_dtype: str = "uint8"

    @property
    def image_type(self) -> str:
        return self.analysis.image_type

    @property
    def layout(self) -> str:
        return self.analysis.layout

    @property
    def phases(self) -> list[int | float]:
        return self.analysis.phases

    @property
    def channels(self) -> int:
        return self.analysis.channels

    def describe(self) -> str:
        return self.analysis.describe()

    def as_images(self) -> list[np.ndarray]:
        """The images at the resolution they are trained at, in their original values
        (phase labels, grey levels; colour as (..., 3)).

        Why: a generated voxel is a training pixel after the scale factor, so statistics
        of a volume (S2 lags, surface per length) compare with these, not the raw uploads.
        """
        if self.image_type == "nphase":
            values = np.asarray(self.phases)
            return [values[indices] for indices in self.arrays]
        low, high = self.value_range
        images = [array * (high - low) + low for array in self.arrays]
        if self.image_type == "colour":
            return [np.moveaxis(image, 0, -1) for image in images]
        return [image[0] for image in images]


def prepare_training_data(
    images: Sequence[np.ndarray], image_type: str | None = None, scale_factor: float = 1.0
) -> TrainingData:
    """Check, detect and encode images; downscale first when ``scale_factor`` is not 1."""
    analysis = analyse_images(images, image_type)
    if analysis.image_type == "nphase":
        lookup = {value: index for index, value in enumerate(analysis.phases)}
        arrays = [_phase_indices(image, lookup) for image in images]
        if scale_factor != 1.0:
            arrays = [_rescale_labels(a, scale_factor, len(analysis.phases)) for a in arrays]
        return TrainingData(analysis, arrays, source_dtype=str(images[0].dtype))
    low, high = _value_range(images)
    arrays = [_normalise(image, low, high) for image in images]
    if scale_factor != 1.0:
        arrays = [_rescale_values(a, scale_factor) for a in arrays]
    return TrainingData(analysis, arrays, (low, high), str(images[0].dtype))


def _phase_indices(image: np.ndarray, lookup: dict[int | float, int]) -> np.ndarray:
    indices = np.zeros(image.shape, dtype=np.uint8)
    for value, index in lookup.items():
        indices[image == value] = index
    return indices


def _value_range(images: Sequence[np.ndarray]) -> tuple[float, float]:
    """Integer images keep their dtype's range so that output values mean the same thing."""
    dtype = images[0].dtype
    if dtype.kind in "ui":
        info = np.iinfo(dtype)
        return float(info.min), float(info.max)
    low = min(float(np.min(im)) for im in images)
    high = max(float(np.max(im)) for im in images)
    return low, high if high > low else low + 1.0


def _normalise(image: np.ndarray, low: float, high: float) -> np.ndarray:
    values = (image.astype(np.float32) - low) / (high - low)
    if is_colour(image):
        return np.ascontiguousarray(np.moveaxis(values, -1, 0))
    return values[None]


def _rescale_labels(indices: np.ndarray, factor: float, phases: int) -> np.ndarray:
    """Labels are resampled by majority (area-averaged one-hot, then argmax): no new labels."""
    one_hot = F.one_hot(torch.from_numpy(indices).long(), phases).movedim(-1, 0).float()
    resized = _resize(one_hot[None], factor, smooth=True)
    return resized[0].argmax(0).to(torch.uint8).numpy()


def _rescale_values(values: np.ndarray, factor: float) -> np.ndarray:
    return _resize(torch.from_numpy(values)[None], factor, smooth=True)[0].numpy()


def _resize(batch: torch.Tensor, factor: float, smooth: bool) -> torch.Tensor:
    size = [max(1, round(n * factor)) for n in batch.shape[2:]]
    if factor < 1:
        # Area averaging is the anti-aliased downscale that works in 2D and 3D alike.
        return F.interpolate(batch, size=size, mode="area")
    mode = "bilinear" if batch.dim() == 4 else "trilinear"
    return F.interpolate(batch, size=size, mode=mode, align_corners=False)


class CropSampler:
    """Random 2D crops of the training images for each axis, gathered on the device.

    For 2D images, axis i draws from image i (or the single image when isotropic); for a
    3D volume, axis i draws a random slice perpendicular to axis i, then a crop of it.
    """

    def __init__(self, data: TrainingData, crop: int, device: torch.device) -> None:
        self.crop = crop
        self.device = device
        self.nphase = data.image_type == "nphase"
        self.phases = len(data.phases)
        self.volume = data.layout == "volume"
        tensors = [torch.from_numpy(np.ascontiguousarray(a)).to(device) for a in data.arrays]
        if self.nphase:
            tensors = [t.long() for t in tensors]
        self.tensors = tensors
        for index, array in enumerate(data.arrays):
            spatial = array.shape if self.nphase else array.shape[1:]
            if min(spatial) < crop:
                raise DataError(
                    f"image {index + 1} is {'x'.join(map(str, spatial))} pixels but the network "
                    f"trains on {crop}-pixel crops: use a larger image, a scale factor above 1, "
                    "or a smaller network (--arch tiny uses 32)"
                )
        self.offsets = torch.arange(crop, device=device)

    def sample(self, axis: int, batch: int, generator: torch.Generator) -> torch.Tensor:
        """(batch, C, crop, crop) float crops for the critic of ``axis`` (0=x, 1=y, 2=z)."""
        if self.volume:
            image = self._volume_slices(axis, batch, generator)
        else:
            source = self.tensors[axis if len(self.tensors) == 3 else 0]
            image = self._crops(source, batch, generator)
        if self.nphase:
            return F.one_hot(image, self.phases).movedim(-1, 1).float()
        return image

    def _random(self, high: int, batch: int, generator: torch.Generator) -> torch.Tensor:
        return torch.randint(0, high, (batch,), generator=generator, device=self.device)

    def _crops(self, source: torch.Tensor, batch: int, g: torch.Generator) -> torch.Tensor:
        height, width = source.shape[-2:]
        rows = self._random(height - self.crop + 1, batch, g)[:, None] + self.offsets
        cols = self._random(width - self.crop + 1, batch, g)[:, None] + self.offsets
        if self.nphase:
            return source[rows[:, :, None], cols[:, None, :]]
        return source[:, rows[:, :, None], cols[:, None, :]].movedim(1, 0)

    def _volume_slices(self, axis: int, batch: int, g: torch.Generator) -> torch.Tensor:
        volume = self.tensors[0]
        spatial_dim = 2 - axis  # x is the last array axis, z the first
        offset = 0 if self.nphase else 1
        sizes = volume.shape[offset:]
        depth = self._random(sizes[spatial_dim], batch, g)
        plane = [d for d in range(3) if d != spatial_dim]
        rows = self._random(sizes[plane[0]] - self.crop + 1, batch, g)[:, None] + self.offsets
        cols = self._random(sizes[plane[1]] - self.crop + 1, batch, g)[:, None] + self.offsets
        index: list[torch.Tensor] = [torch.empty(0)] * 3
        index[spatial_dim] = depth[:, None, None]
        index[plane[0]] = rows[:, :, None]
        index[plane[1]] = cols[:, None, :]
        if self.nphase:
            return volume[index[0], index[1], index[2]]
        return volume[:, index[0], index[1], index[2]].movedim(1, 0)
