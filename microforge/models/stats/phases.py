"""Phase labels and fractions of a segmented image, fast on 512^3 volumes."""

from __future__ import annotations

import numpy as np

#: Elements per bincount pass: bounds the int32 copy to 16 MB whatever the volume size.
_CHUNK = 1 << 22


def label_counts(labels: np.ndarray) -> dict[int | float, int]:
    """Voxel count of every value present, keyed by the original value.

    Small integer types go through chunked ``np.bincount``: no sorting and no full-size
    copy, which is what keeps a 512^3 volume well under a second.
    """
    if labels.size == 0:
        raise ValueError("the image is empty (0 voxels): check the file")
    if labels.dtype.kind in "uib" and labels.dtype.itemsize <= 2:
        low = int(labels.min())
        flat = labels.reshape(-1)
        counts = np.zeros(int(labels.max()) - low + 1, dtype=np.int64)
        for start in range(0, flat.size, _CHUNK):
            chunk = flat[start : start + _CHUNK].astype(np.int32) - low
            counts += np.bincount(chunk, minlength=counts.size)
        present = np.nonzero(counts)[0]
        return {int(value) + low: int(counts[value]) for value in present}
    values, counts = np.unique(labels, return_counts=True)
    return {_plain(v): int(c) for v, c in zip(values, counts)}


def volume_fractions(labels: np.ndarray) -> dict[int | float, float]:
    """Fraction of the voxels (pixels in 2D) that each phase occupies."""
    counts = label_counts(labels)
    total = float(labels.size)
    return {value: count / total for value, count in counts.items()}


def label_name(value: int | float) -> str:
    """The JSON key of a phase: its original value as written in the file ("0", "255")."""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _plain(value: np.generic) -> int | float:
    item = value.item()
    return int(item) if isinstance(item, bool | int) else item
