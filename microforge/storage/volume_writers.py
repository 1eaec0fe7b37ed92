"""The one place that opens a volume writer for an output format (TIFF or OME-Zarr).

Why: the CLI's ``generate`` and the worker's generate jobs write the same volumes; choosing
the writer and passing it the generator's type, voxel size and display range in one
function keeps the two from drifting apart, and a new format is added here once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def open_volume_writer(
    format: str,
    path: str | Path,
    shape: tuple[int, int, int],
    loaded: Any,
    *,
    voxel_size: float | None,
    unit: str,
    compression: str | None = None,
) -> Any:
    """A context manager with ``write(slab)`` that publishes the volume of ``loaded`` (a
    ``LoadedGenerator``) at ``path`` on a clean exit; ``format`` is one of
    ``jobs.VolumeFormat`` ('tiff' or 'ome-zarr'). ``compression`` is for TIFF only (an
    OME-Zarr store's chunks are always compressed). An n-phase OME-Zarr store is written as
    a label image (its phases' values and colours in ``image-label``)."""
    common = {
        "rgb": loaded.image_type == "colour",
        "voxel_size": voxel_size,
        "unit": unit,
        "display_range": loaded.display_range,
    }
    if format == "ome-zarr":
        from microforge.storage.zarr_volume import VolumeZarrWriter

        if compression:
            raise ValueError("compression is for TIFF files; OME-Zarr chunks are compressed")
        phases = loaded.phases if loaded.image_type == "nphase" else None
        return VolumeZarrWriter(path, shape, loaded.output_dtype, phases=phases, **common)
    from microforge.storage.tiff import VolumeTiffWriter

    return VolumeTiffWriter(path, shape, loaded.output_dtype, compression=compression, **common)
