"""The quality report of one generated volume: statistics, comparison with the training
images, a verdict, and the PNG that shows them.

Why a bounded central sample: a generated volume may be far larger than memory (it is
streamed to disk chunk by chunk), while the statistics converge long before that; a cube
of at most ``MAX_SAMPLE_EDGE`` voxels a side (64 MB of labels at 256^3) is read from the
middle of the file, never the whole volume, and the JSON says so under "sampled". The
middle is taken because a non-periodic generator's edges are its least typical region.

The worker builds the report after a generation job; a failure here must never fail the
job, so callers catch exceptions and record :func:`report_error` instead.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import tifffile

from microforge.models.stats import compare_with_references, microstructure_statistics
from microforge.models.stats.json_values import json_ready
from microforge.report.png import render_report_png, render_statistics_png

#: Largest edge of the cube the statistics are computed on.
MAX_SAMPLE_EDGE = 256
#: Bumped when the JSON layout changes, so that clients can tell old reports apart.
REPORT_VERSION = 1


def build_volume_report(
    volume_path: str | os.PathLike[str],
    reference_arrays: Sequence[np.ndarray],
    *,
    voxel_size: float | None = None,
    unit: str | None = None,
    tortuosity: bool = False,
    kind: str | None = None,
    max_edge: int = MAX_SAMPLE_EDGE,
) -> tuple[dict[str, Any], bytes]:
    """Statistics of the volume TIFF (a central sample when big), compared with the
    training images when there are any; returns (JSON-ready report, PNG bytes).

    ``reference_arrays``: one 2D image (isotropic), three 2D images perpendicular to x, y,
    z, or one 3D stack; empty when the training data is unknown (an imported generator),
    then the report holds the statistics without a verdict. ``kind`` ('nphase' or
    'grayscale') overrides the detection from the values. Raises ``ValueError`` for a
    volume the statistics cannot describe (colour) and ``OSError`` for an unreadable file.
    """
    sample, full_shape = read_central_sample(volume_path, max_edge)
    stats = microstructure_statistics(
        sample, kind=kind, voxel_size=voxel_size, tortuosity=tortuosity, unit=unit
    )
    comparison = None
    if reference_arrays:
        comparison = compare_with_references(
            sample,
            reference_arrays,
            volume_stats=stats,
            voxel_size=voxel_size,
            tortuosity=False,
        )
    sampled = None
    if tuple(sample.shape) != tuple(full_shape):
        sampled = {
            "shape": list(sample.shape),
            "of": list(full_shape),
            "region": "central",
            "reason": f"statistics are computed on at most {max_edge}^3 voxels",
        }
    report: dict[str, Any] = {
        "version": REPORT_VERSION,
        "sampled": sampled,
        "statistics": stats,
        "comparison": comparison,
        "verdict": None if comparison is None else comparison["summary"]["verdict"],
        "summary": None if comparison is None else comparison["summary"],
    }
    if comparison is None:
        report["note"] = (
            "no training images are known for this volume's generator, so there is "
            "nothing to compare with: statistics only, no verdict"
        )
    png = io.BytesIO()
    if comparison is None:
        render_statistics_png(sample, stats, png)
    else:
        both = {"volume": stats, "comparison": comparison}
        render_report_png(sample, reference_arrays, both, png)
    return json_ready(report), png.getvalue()


def report_error(error: BaseException) -> dict[str, Any]:
    """The report JSON stored when building the report failed: the volume is still fine."""
    return {
        "version": REPORT_VERSION,
        "error": {
            "code": "report_failed",
            "message": f"the quality report could not be built: {error}".strip(),
            "type": type(error).__name__,
        },
    }


def read_central_sample(
    path: str | os.PathLike[str], max_edge: int = MAX_SAMPLE_EDGE
) -> tuple[np.ndarray, tuple[int, ...]]:
    """The central cube of at most ``max_edge`` voxels a side of a (z, y, x) TIFF stack
    (or OME-Zarr store: its full-resolution level), and the full shape. Uncompressed files
    are memory-mapped (only the sample's bytes are read); compressed ones are read one page
    at a time, only the pages the sample needs; a store, only the chunks the sample needs."""
    if max_edge < 2:
        raise ValueError(f"max_edge must be at least 2, got {max_edge}")
    if os.path.isdir(path):
        return _central_sample_of_zarr(path, max_edge)
    with tifffile.TiffFile(path) as tiff:
        shape = tuple(int(n) for n in tiff.series[0].shape)
        if len(shape) == 2:
            shape = (1, *shape)
        if len(shape) != 3:
            raise ValueError(
                f"the volume has shape {shape}: statistics need a (z, y, x) stack of labels "
                "or grey values, not colour"
            )
        window = tuple(_central(n, max_edge) for n in shape)
        try:
            mapped = tifffile.memmap(path, mode="r")
        except (ValueError, OSError, tifffile.TiffFileError):
            mapped = None
        if mapped is not None:
            try:
                return np.array(mapped.reshape(shape)[window]), shape
            finally:
                del mapped
        pages = tiff.pages
        planes = [
            pages[z].asarray()[window[1], window[2]] for z in range(window[0].start, window[0].stop)
        ]
    return np.stack(planes), shape


def _central_sample_of_zarr(
    path: str | os.PathLike[str], max_edge: int
) -> tuple[np.ndarray, tuple[int, ...]]:
    from microforge.storage.zarr_volume import full_resolution

    level0 = full_resolution(path)
    shape = tuple(int(n) for n in level0.shape)
    if len(shape) != 3:
        raise ValueError(
            f"the volume has shape {shape}: statistics need a (z, y, x) stack of labels "
            "or grey values, not colour"
        )
    window = tuple(_central(n, max_edge) for n in shape)
    return np.asarray(level0[window]), shape


def _central(length: int, max_edge: int) -> slice:
    edge = min(length, max_edge)
    start = (length - edge) // 2
    return slice(start, start + edge)
