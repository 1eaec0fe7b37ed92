"""What kind of training data a set of images is, decided with NumPy alone.

This module is deliberately torch-free: the API calls it at upload time to report the
detected type, phases and fractions, and the API process must never import torch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

IMAGE_TYPES = ("nphase", "grayscale", "colour")
#: Up to this many distinct values, an integer image is taken for segmented labels.
MAX_AUTO_PHASES = 8
#: More phases than this is almost certainly an unsegmented image passed as nphase.
MAX_PHASES = 16
AXES = ("x", "y", "z")


class DataError(ValueError):
    """Training data that cannot be used; the message says what to change."""


@dataclass(frozen=True)
class ImageAnalysis:
    """The facts about a set of training images that decide how a model is trained."""

    image_type: str
    layout: str  # isotropic (one 2D image) | anisotropic (three 2D images) | volume (one 3D)
    phases: list[int | float] = field(default_factory=list)
    fractions: list[float] = field(default_factory=list)
    channels: int = 1
    detected: bool = False
    shapes: list[tuple[int, ...]] = field(default_factory=list)

    def describe(self) -> str:
        how = "detected" if self.detected else "given"
        parts = [f"{self.image_type} ({how})", self.layout]
        if self.image_type == "nphase":
            listed = ", ".join(
                f"{_format_value(v)}: {f:.1%}" for v, f in zip(self.phases, self.fractions)
            )
            parts.append(f"{len(self.phases)} phases [{listed}]")
        parts.append(" + ".join("x".join(str(n) for n in s) for s in self.shapes))
        return ", ".join(parts)


def _format_value(value: int | float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def is_colour(image: np.ndarray) -> bool:
    """Colour is (H, W, 3) or (D, H, W, 3); a grey volume's edges are all far above 3."""
    return image.ndim in (3, 4) and image.shape[-1] == 3


def layout_of(images: Sequence[np.ndarray]) -> str:
    spatial = [im.ndim - (1 if is_colour(im) else 0) for im in images]
    if len(images) == 1 and spatial[0] == 2:
        return "isotropic"
    if len(images) == 1 and spatial[0] == 3:
        return "volume"
    if len(images) == 3 and all(n == 2 for n in spatial):
        return "anisotropic"
    raise DataError(
        f"got {len(images)} image(s) of {spatial} spatial dimensions: give one 2D image "
        "(isotropic material), three 2D images perpendicular to x, y and z (anisotropic), "
        "or one 3D stack"
    )


#: Elements per chunk when counting values: bounds the temporary arrays to a few MB
#: whatever the image's size (a whole-image int64 copy took 8x the image).
_COUNT_CHUNK = 1 << 22


def _value_counts(image: np.ndarray, limit: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Distinct values (sorted) and how often each occurs, or None past ``limit`` values.

    Works chunk by chunk on a flat view, so the extra memory is a chunk, not a copy of
    the image: 8- and 16-bit integers are counted with ``bincount`` on their unsigned
    view (signed values are mapped back), anything else with ``unique`` per chunk.
    """
    flat = image.reshape(-1)
    small_int = image.dtype.kind in "uib" and image.dtype.itemsize <= 2
    if small_int:
        unsigned = np.dtype(f"u{image.dtype.itemsize}")
        totals = np.zeros(1 << (8 * image.dtype.itemsize), dtype=np.int64)
    tallies: dict = {}
    for start in range(0, flat.size, _COUNT_CHUNK):
        chunk = flat[start : start + _COUNT_CHUNK]
        if small_int:
            totals += np.bincount(chunk.view(unsigned), minlength=totals.size)
            continue
        values, counts = np.unique(chunk, return_counts=True)
        for value, count in zip(values.tolist(), counts.tolist()):
            tallies[value] = tallies.get(value, 0) + count
        if len(tallies) > limit:
            return None
    if small_int:
        codes = np.nonzero(totals)[0]
        if len(codes) > limit:
            return None
        counts = totals[codes]
        values = codes.astype(unsigned).view(image.dtype)  # signed labels come back negative
        order = np.argsort(values, kind="stable")
        return values[order], counts[order]
    values = np.array(sorted(tallies), dtype=image.dtype)
    return values, np.array([tallies[v] for v in values.tolist()], dtype=np.int64)


def analyse_images(images: Sequence[np.ndarray], image_type: str | None = None) -> ImageAnalysis:
    """Decide type, layout and phases; reject data that would train a useless model."""
    if not images:
        raise DataError("no image given: give one 2D image, three 2D images or one 3D stack")
    if image_type is not None and image_type not in IMAGE_TYPES:
        raise DataError(
            f"image type {image_type!r} is unknown: use one of {', '.join(IMAGE_TYPES)}"
        )
    for image in images:
        if image.size == 0:
            raise DataError("an image is empty (0 pixels): check the file")
    layout = layout_of(images)
    shapes = [tuple(int(n) for n in im.shape) for im in images]
    colour = [is_colour(im) for im in images]
    if any(colour) and not all(colour):
        raise DataError("mix of colour and single-channel images: give images of one kind")

    counted: dict[int, tuple[np.ndarray, np.ndarray] | None] = {}

    def counts_of(index: int) -> tuple[np.ndarray, np.ndarray] | None:
        """Each image is counted once (a pass over it), for detection and fractions alike."""
        if index not in counted:
            counted[index] = _value_counts(images[index], MAX_PHASES)
        return counted[index]

    detected = image_type is None
    if image_type is None:
        if all(colour):
            image_type = "colour"
        elif all(
            im.dtype.kind in "uib"
            and (found := counts_of(index)) is not None
            and len(found[0]) <= MAX_AUTO_PHASES
            for index, im in enumerate(images)
        ):
            image_type = "nphase"
        else:
            image_type = "grayscale"
    if image_type == "colour" and not all(colour):
        raise DataError("image type colour needs RGB images; these have one channel")
    if image_type != "colour" and all(colour):
        raise DataError(
            f"image type {image_type} needs single-channel images; these are RGB colour: "
            "choose image type colour (--type colour; image_type in the API), or convert the "
            "images to greyscale/labels first"
        )

    if image_type != "nphase":
        return ImageAnalysis(
            image_type=image_type,
            layout=layout,
            channels=3 if image_type == "colour" else 1,
            detected=detected,
            shapes=shapes,
        )
    return _analyse_phases(images, layout, detected, shapes, counts_of)


def _analyse_phases(
    images: Sequence[np.ndarray],
    layout: str,
    detected: bool,
    shapes: list[tuple[int, ...]],
    counts_of: Callable[[int], tuple[np.ndarray, np.ndarray] | None],
) -> ImageAnalysis:
    per_image: list[np.ndarray] = []
    per_image_counts: list[np.ndarray] = []
    for index in range(len(images)):
        found = counts_of(index)
        if found is None:
            raise DataError(
                f"image {index + 1} has more than {MAX_PHASES} distinct values, too many phases "
                "for nphase: segment it first, or choose image type grayscale (--type grayscale; "
                "image_type in the API)"
            )
        per_image.append(found[0])
        per_image_counts.append(found[1])
    phases = per_image[0]
    for index, values in enumerate(per_image[1:], start=2):
        if not np.array_equal(values, phases):
            raise DataError(
                f"anisotropic images have different phase sets: image 1 has "
                f"{[_format_value(v) for v in phases]}, image {index} has "
                f"{[_format_value(v) for v in values]}; segment them with the same labels"
            )
    if len(phases) < 2:
        raise DataError(
            f"the image has a single value ({_format_value(phases[0])}): there is no "
            "microstructure to learn; check the segmentation"
        )
    counts = np.sum(per_image_counts, axis=0).astype(np.float64)
    fractions = (counts / counts.sum()).tolist()
    return ImageAnalysis(
        image_type="nphase",
        layout=layout,
        phases=[v.item() for v in phases],
        fractions=fractions,
        channels=len(phases),
        detected=detected,
        shapes=shapes,
    )
