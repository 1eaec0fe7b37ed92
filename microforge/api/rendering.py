"""PNG rendering of images and volume slices, with Pillow.

Why labels are mapped to spread-out greys: segmented images store labels such as 0, 1,
2, which all look black; a preview must show the phases apart. Slices can also be drawn
with one colour per phase (``labels_to_colour``): the i-th phase of the training data gets
the i-th colour of matplotlib's default cycle, the colour the report PNG draws that
phase's curves and bars in, so a phase looks the same in the slices and in the plots.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

from microforge.phase_colours import phase_rgb
from microforge.storage.zarr_volume import read_zarr_slice

MAX_PREVIEW_EDGE = 1024
GAP_PIXELS = 4


def labels_to_grey(image: np.ndarray, phases: Sequence[int | float]) -> np.ndarray:
    """Map each phase value to a distinct grey (0 .. 255, evenly spread)."""
    out = np.zeros(image.shape, dtype=np.uint8)
    count = len(phases)
    for index, value in enumerate(phases):
        grey = 0 if count < 2 else round(255 * index / (count - 1))
        out[image == value] = grey
    return out


def labels_to_colour(image: np.ndarray, phases: Sequence[int | float]) -> np.ndarray:
    """(H, W, 3) uint8: each phase value in its colour; a value that is no phase is black."""
    out = np.zeros((*image.shape, 3), dtype=np.uint8)
    for index, value in enumerate(phases):
        out[image == value] = phase_rgb(index)
    return out


def to_uint8(
    image: np.ndarray,
    image_type: str,
    phases: Sequence[int | float],
    *,
    value_range: tuple[float, float] | None = None,
    phase_colours: bool = False,
) -> np.ndarray:
    """Displayable uint8 grey (H, W) or colour (H, W, 3) for any stored image.

    Grey levels are stretched over ``value_range`` (default: the image's own min and max),
    so a downsampled panel can keep the contrast of the image it was taken from. With
    ``phase_colours``, an n-phase image is drawn in PHASE_COLOURS instead of greys (other
    types are unaffected: their values are not labels).
    """
    if image_type == "nphase" and phases:
        if phase_colours:
            return labels_to_colour(image, phases)
        return labels_to_grey(image, phases)
    if image.dtype == np.uint8:
        return image
    data = image.astype(np.float64)
    low, high = value_range or (float(np.min(data)), float(np.max(data)))
    if high <= low:
        return np.zeros(image.shape, dtype=np.uint8)
    return np.round((data - low) * (255.0 / (high - low))).astype(np.uint8)


def _downsample(image: np.ndarray, max_edge: int = MAX_PREVIEW_EDGE) -> np.ndarray:
    step = max(1, -(-max(image.shape[:2]) // max_edge))
    return image[::step, ::step]


def preview_panels(images: Sequence[np.ndarray]) -> list[np.ndarray]:
    """2D panels to show: the images themselves, or the middle z, y and x slices of a volume."""
    panels: list[np.ndarray] = []
    for image in images:
        spatial = image.ndim - (1 if image.ndim >= 3 and image.shape[-1] == 3 else 0)
        if spatial == 3:
            depth, height, width = image.shape[:3]
            panels += [image[depth // 2], image[:, height // 2], image[:, :, width // 2]]
        else:
            panels.append(image)
    return panels


def side_by_side(panels: Sequence[np.ndarray]) -> np.ndarray:
    """Panels left to right on a white background, each at most MAX_PREVIEW_EDGE pixels."""
    panels = [_downsample(panel) for panel in panels]
    colour = any(panel.ndim == 3 for panel in panels)
    if colour:
        panels = [panel if panel.ndim == 3 else np.stack([panel] * 3, axis=-1) for panel in panels]
    height = max(panel.shape[0] for panel in panels)
    width = sum(panel.shape[1] for panel in panels) + GAP_PIXELS * (len(panels) - 1)
    canvas = np.full((height, width, 3) if colour else (height, width), 255, dtype=np.uint8)
    x = 0
    for panel in panels:
        canvas[: panel.shape[0], x : x + panel.shape[1]] = panel
        x += panel.shape[1] + GAP_PIXELS
    return canvas


def encode_png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buffer, format="PNG")
    return buffer.getvalue()


def render_dataset_preview(
    images: Sequence[np.ndarray], image_type: str, phases: Sequence[int | float]
) -> bytes:
    """The dataset's preview PNG: each image (or a volume's middle slices), side by side.

    Each panel is downsampled *before* it is converted (a float64 copy of a full
    40000 x 40000 image would take 12.8 GB); min and max come from the full panel, read
    without copying, so the contrast is the full image's.
    """
    shown = []
    for panel in preview_panels(images):
        value_range = None
        if panel.dtype != np.uint8 and not (image_type == "nphase" and phases):
            value_range = (float(np.min(panel)), float(np.max(panel)))
        shown.append(to_uint8(_downsample(panel), image_type, phases, value_range=value_range))
    return encode_png(side_by_side(shown))


AXES = ("z", "y", "x")


def read_volume_slice(path: Path, axis: str, index: int) -> np.ndarray:
    """One slice of a (z, y, x[, c]) TIFF stack or OME-Zarr store (a directory) without
    loading the whole volume.

    Uncompressed files are memory-mapped (only the touched bytes are read); otherwise a z
    slice reads one page, and a y or x slice reads the pages one at a time. A store reads
    the chunks of its full-resolution level that the slice crosses.
    """
    if path.is_dir():
        return read_zarr_slice(path, axis, index)
    position = AXES.index(axis)
    try:
        volume = tifffile.memmap(path, mode="r")
    except (ValueError, OSError, tifffile.TiffFileError):
        volume = None
    if volume is not None:
        try:
            return np.array(np.take(volume, index, axis=position))
        finally:
            del volume
    with tifffile.TiffFile(path) as tiff:
        pages = tiff.pages
        if axis == "z":
            return pages[index].asarray()
        rows = []
        for page_index in range(len(pages)):
            page = pages[page_index].asarray()
            rows.append(page[index] if axis == "y" else page[:, index])
        return np.stack(rows)
