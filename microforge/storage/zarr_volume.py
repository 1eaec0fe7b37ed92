"""Streaming a generated volume into an OME-Zarr store, slab by slab, with its pyramid.

Why OME-Zarr: a 1e10-voxel volume as one TIFF must be downloaded whole before anything
can look at it; napari, neuroglancer and the Python ecosystem read chunked, multiscale
OME-Zarr and stream only the chunks (and the resolution level) they show.

Why streamed: the generator hands over consecutive z-slabs (see
``microforge.models.generation.generate_volume``); each slab is written into its region of
the full-resolution array and, strided, into every coarser level at once. Nothing holds
more than the slab it was given, so memory does not grow with the volume, and no TIFF is
written first.

Why stride, not averaging: a level keeps every 2^k-th voxel along each axis, so label
volumes keep their phase values (an average of phases 0 and 2 would invent phase 1) and
grey values stay values the generator made; it also needs nothing from the next slab.

The format is written by the ``zarr`` package (arrays, zarr v3) and ``ome_zarr.writer``
(NGFF 0.5 multiscales metadata: axes with units, a scale transform per level); the store
appears at its path only when complete (written beside it under a temporary name, then
renamed), as the TIFF writer does.

Why an n-phase volume's ``image-label`` metadata sits on the root group, beside its
``multiscales``, and not in a ``labels/`` group: NGFF's ``labels/`` group exists to attach
a segmentation to the *intensity* image it segments, and each label image in it is a
multiscale image of its own, with its own arrays (zarr v3 has no links, and a dataset's
``path`` is relative to its group). A generated volume has no intensity image: it *is*
the segmentation, so a ``labels/`` copy would store every voxel twice (10 GB volumes) next
to an image that would be the same labels again. A multiscale group with ``image-label``
is what the NGFF 0.5 label schema describes as a label image, and it is what readers
look for: ome-zarr-py's ``Label`` spec matches any group whose attributes have
``image-label`` (colours per label value, properties), and napari-ome-zarr opens such a
node as a Labels layer. ``source`` (the image that was segmented) is left out, since
there is none. Such a volume gets no ``omero`` window either: napari-ome-zarr would hand
its contrast limits and colour map to the Labels layer.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from microforge.phase_colours import phase_rgb
from microforge.storage.staged_write import StagedVolumeWriter, scratch_path
from microforge.units import NGFF_UNITS, UnitError, check_length_unit

#: Edge of a stored chunk (voxels): 64^3 bytes = 256 KiB per label chunk, the order of
#: size viewers fetch efficiently over HTTP.
DEFAULT_CHUNK = 64
#: Coarser levels are added until the largest edge fits in one chunk of this size.
SMALLEST_LEVEL_EDGE = DEFAULT_CHUNK


class VolumeZarrError(ValueError):
    """A volume that cannot be written as asked (bad unit, slabs missing, ...)."""


def is_zarr_path(path: str | Path) -> bool:
    """Whether a volume's path asks for OME-Zarr (``volume.ome.zarr``, ``volume.zarr``)."""
    return Path(path).name.lower().endswith(".zarr")


def pyramid_levels(shape: tuple[int, int, int], smallest: int = SMALLEST_LEVEL_EDGE) -> int:
    """How many levels (full resolution included): halve until the largest edge fits."""
    levels = 1
    while max(math.ceil(n / 2 ** (levels - 1)) for n in shape) > smallest:
        levels += 1
    return levels


def full_resolution(path: str | Path) -> Any:
    """The store's full-resolution array (its first multiscales dataset), opened for reading:
    indexing it reads only the chunks the selection touches, so a slice or a sample of a
    10 GB volume costs its own size, not the volume's. (z, y, x), or (c, z, y, x) for colour.

    Needs only ``zarr`` (a base dependency: the API reads slices with it), not ``ome_zarr``.
    """
    import zarr

    try:
        group = zarr.open_group(path, mode="r")
        multiscales = group.attrs.get("ome", {}).get("multiscales") or [{}]
        datasets = multiscales[0].get("datasets") or [{"path": "0"}]
        array = group[datasets[0]["path"]]
    except (FileNotFoundError, KeyError, TypeError, ValueError) as error:
        raise VolumeZarrError(f"{path} is not an OME-Zarr volume store: {error}") from error
    if not isinstance(array, zarr.Array):
        raise VolumeZarrError(f"{path}: {datasets[0]['path']!r} is not an array")
    return array


def read_zarr_slice(path: str | Path, axis: str, index: int) -> np.ndarray:
    """One plane of a store, as ``microforge.api.rendering.read_volume_slice`` returns one
    of a TIFF stack: the plane normal to ``axis`` ('z', 'y' or 'x') at ``index``, (rows,
    columns), or (rows, columns, 3) for colour. Only the chunks the plane crosses are read
    (for a z plane of 64^3 chunks: one layer of them)."""
    array = full_resolution(path)
    channels = array.ndim == 4  # colour is stored channel-first
    selection: list[Any] = [slice(None)] * array.ndim
    selection[("z", "y", "x").index(axis) + int(channels)] = index
    plane = np.asarray(array[tuple(selection)])
    return np.moveaxis(plane, 0, -1) if channels else plane


class VolumeZarrWriter(StagedVolumeWriter):
    """Context manager: ``with VolumeZarrWriter(path, shape, dtype) as w: w.write(slab)``.

    ``shape`` is (z, y, x); slabs are (k, y, x), or (k, y, x, 3) with ``rgb`` (stored as
    channel-first (c, z, y, x), as NGFF orders axes). ``voxel_size`` in ``unit`` becomes the
    scale of level 0 (level k: 2^k times it); ``display_range`` becomes the ``omero``
    channel window, so that grey volumes with few values are not shown black. ``phases``
    (an n-phase volume's label values, in the training data's order) makes the store a
    label image: ``image-label`` metadata gives phase i its value, the i-th colour of
    ``microforge.phase_colours`` and its index as a property, instead of an ``omero`` window.
    """

    error = VolumeZarrError
    #: Not while the next slab is generated. A write compresses every 64^3 chunk of the slab
    #: and of its pyramid: seconds a slab on a CPU, long enough for the generator to fill
    #: most of the next slab meanwhile, so two slabs were resident (peak RSS 1.50 GB for
    #: 1000^3 against 1.25 GB for 256 slices, 2026-12-02; the writer alone stays flat). On a
    #: CPU host the two share the same cores, so overlapping saved no time; on a GPU host
    #: the run is bound by the compression, so it saves only the (short) generation time.
    overlap_writes = False

    def __init__(
        self,
        path: str | Path,
        shape: tuple[int, int, int],
        dtype: Any,
        *,
        rgb: bool = False,
        voxel_size: float | None = None,
        unit: str = "um",
        levels: int | None = None,
        chunk: int = DEFAULT_CHUNK,
        display_range: tuple[float, float] | None = None,
        phases: Sequence[int | float] | None = None,
        name: str | None = None,
    ) -> None:
        self.path = Path(path)
        self.shape = tuple(int(n) for n in shape)
        if len(self.shape) != 3 or min(self.shape) < 1:
            raise VolumeZarrError(f"shape {shape!r} must be three positive edges (z, y, x)")
        self.dtype = np.dtype(dtype)
        self.rgb = rgb
        if voxel_size is not None and not (np.isfinite(voxel_size) and voxel_size > 0):
            raise VolumeZarrError(f"voxel size {voxel_size!r} must be a positive number")
        self.voxel_size = None if voxel_size is None else float(voxel_size)
        try:
            self.unit = check_length_unit(unit)
        except UnitError as error:
            raise VolumeZarrError(str(error)) from None
        self.levels = levels or pyramid_levels(self.shape)
        self.chunk = int(chunk)
        self.display_range = display_range
        self.phases = None if phases is None else self._label_values(phases)
        self.name = name or self.path.name
        self.slices_written = 0
        self._temp: Path | None = None
        self._arrays: list[Any] = []

    # --- opening and closing -------------------------------------------------------------

    def __enter__(self) -> VolumeZarrWriter:
        import zarr

        if self._temp is not None:
            raise RuntimeError("this VolumeZarrWriter is already open")
        if not self.path.parent.is_dir():
            raise VolumeZarrError(f"cannot write {self.path}: folder {self.path.parent} is missing")
        self._temp = scratch_path(self.path)
        try:
            group = zarr.open_group(self._temp, mode="w-", zarr_format=3)
            for level in range(self.levels):
                shape = self._level_shape(level)
                chunks = tuple(min(self.chunk, n) for n in shape)
                if self.rgb:
                    shape, chunks = (3, *shape), (3, *chunks)
                array = group.create_array(
                    str(level), shape=shape, chunks=chunks, dtype=self.dtype, fill_value=0
                )
                self._arrays.append(array)
            self._write_metadata(group)
        except BaseException:
            self._discard()
            raise
        return self

    def _publish(self) -> None:
        assert self._temp is not None
        if self.path.exists():
            shutil.rmtree(self.path) if self.path.is_dir() else self.path.unlink()
        self._temp.rename(self.path)
        self._temp = None

    def _discard(self) -> None:
        if self._temp is not None:
            shutil.rmtree(self._temp, ignore_errors=True)
            self._temp = None

    # --- writing -------------------------------------------------------------------------

    def write(self, slab: np.ndarray) -> None:
        """Write ``slab`` as the next z-slices, into every level of the pyramid."""
        if self._temp is None:
            raise RuntimeError("use VolumeZarrWriter as a context manager: `with ... as writer:`")
        expected = (*self.shape[1:], 3) if self.rgb else self.shape[1:]
        if slab.ndim != len(expected) + 1 or tuple(slab.shape[1:]) != expected:
            raise VolumeZarrError(f"slab {slab.shape} is not (k, {', '.join(map(str, expected))})")
        z0 = self.slices_written
        if z0 + slab.shape[0] > self.shape[0]:
            raise VolumeZarrError(f"slab of {slab.shape[0]} slices runs past z={self.shape[0]}")
        slab = np.asarray(slab, dtype=self.dtype)
        if self.rgb:
            slab = np.moveaxis(slab, -1, 0)  # (3, k, y, x): a view, no copy
        for level, array in enumerate(self._arrays):
            step = 2**level
            first = -z0 % step  # the first slice of this slab that lies on the level's grid
            picked = slab[..., first::step, ::step, ::step]
            if picked.shape[-3] == 0:
                continue
            start = (z0 + first) // step
            array[..., start : start + picked.shape[-3], :, :] = picked
        self.slices_written = z0 + slab.shape[-3]

    # --- metadata ------------------------------------------------------------------------

    def _label_values(self, phases: Sequence[int | float]) -> list[int]:
        """The phases as the integers stored: NGFF labels are integers of the array's type."""
        if self.rgb or self.dtype.kind not in "ui":
            raise VolumeZarrError(
                f"phases are labels of a single-channel integer volume, not of a "
                f"{'colour' if self.rgb else self.dtype.name} one"
            )
        limits = np.iinfo(self.dtype)
        values = []
        for value in phases:
            if not (float(value).is_integer() and limits.min <= value <= limits.max):
                raise VolumeZarrError(
                    f"phase value {value!r} is not an integer that {self.dtype.name} can hold"
                )
            values.append(int(value))
        if not values or len(set(values)) != len(values):
            raise VolumeZarrError(f"phases {list(phases)!r} must be distinct values, at least one")
        return values

    def _level_shape(self, level: int) -> tuple[int, int, int]:
        return tuple(math.ceil(n / 2**level) for n in self.shape)  # type: ignore[return-value]

    def _write_metadata(self, group: Any) -> None:
        from ome_zarr.writer import add_metadata, write_multiscales_metadata

        size = self.voxel_size or 1.0
        space = [{"name": axis, "type": "space"} for axis in ("z", "y", "x")]
        if self.voxel_size is not None:
            for axis in space:
                axis["unit"] = NGFF_UNITS[self.unit]
        axes = ([{"name": "c", "type": "channel"}] if self.rgb else []) + space
        datasets = []
        for level in range(self.levels):
            scale = [size * 2**level] * 3
            datasets.append(
                {
                    "path": str(level),
                    "coordinateTransformations": [
                        {"type": "scale", "scale": ([1.0] if self.rgb else []) + scale}
                    ],
                }
            )
        metadata: dict[str, Any] = {}
        if self.display_range is not None and not self.rgb and self.phases is None:
            low, high = (float(v) for v in self.display_range)
            window = {"min": low, "max": high, "start": low, "end": high}
            metadata["omero"] = {
                "channels": [{"window": window, "color": "FFFFFF", "active": True}]
            }
        write_multiscales_metadata(
            group,
            datasets,
            axes=axes,
            name=self.name,
            **({"metadata": metadata} if metadata else {}),
        )
        if self.phases is not None:
            add_metadata(group, {"image-label": self._image_label()})

    def _image_label(self) -> dict[str, Any]:
        """NGFF ``image-label``: each phase's value, colour (opaque) and index."""
        phases = self.phases or []
        return {
            "colors": [
                {"label-value": value, "rgba": [*phase_rgb(index), 255]}
                for index, value in enumerate(phases)
            ],
            "properties": [
                {"label-value": value, "phase": index} for index, value in enumerate(phases)
            ],
        }
