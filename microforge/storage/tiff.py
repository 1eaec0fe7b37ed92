"""Streaming generated volumes to TIFF stacks that Fiji/ImageJ and napari open as Z stacks.

Why two formats: an uncompressed classic TIFF is an ImageJ hyperstack, the format
ImageJ and Fiji read natively (voxel size, unit, display range). ImageJ hyperstacks
cannot be compressed nor BigTIFF, so those files are OME-TIFF instead: tifffile writes
OME-XML with PhysicalSizeX/Y/Z and units, which Fiji (through Bio-Formats), napari and
tifffile read. Both also carry the x/y pixel size in the TIFF resolution tags, for
readers that know neither. ``read_volume_info`` reads the voxel size back from either.

Why streaming: a generated volume can be far larger than memory (tens of GB). The
generator hands over consecutive z-slabs; each is written page by page and released
before the next one is produced, so peak memory is one slab, whatever the volume size.

Why a thread: tifffile writes a series from an *iterator* of pages (the only way it
can compress a series, and the way it writes ImageJ hyperstacks in one go), which
pulls data; the generator pushes slabs. A background thread runs tifffile's write
and pulls pages from slabs handed over one at a time; ``write`` returns only once
tifffile has finished with the slab, so no more than one slab is ever held.

Why a temp file: readers (the download endpoint, a user's Fiji) must never see half a
volume. Data goes to a hidden file in the target directory, which is fsynced and
renamed over ``path`` only after every slice has been written.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from microforge.storage.staged_write import StagedVolumeWriter, scratch_path
from microforge.units import OME_SYMBOLS, UNIT_IN_CM, UnitError, check_length_unit, normalise_unit

#: dtypes a volume may be written as: labels/grey (uint8, uint16), probabilities (float32).
SUPPORTED_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.float32))
#: Classic TIFF addresses 4 GiB; past this (data plus per-page IFDs) switch to BigTIFF.
#: The 32 MiB margin is the one tifffile uses for descriptions and tags.
_CLASSIC_TIFF_LIMIT = 2**32 - 2**25
#: Bytes of IFD and tags per page, generously: only used to decide on BigTIFF.
_BYTES_PER_PAGE_OVERHEAD = 1024
#: Worst-case growth of incompressible data under deflate (stored blocks), plus slack.
_COMPRESSION_GROWTH = 1.01
#: User-facing names of lossless codecs and the TIFF compression they map to.
_COMPRESSION_NAMES = {
    "zlib": tifffile.COMPRESSION.ADOBE_DEFLATE,
    "deflate": tifffile.COMPRESSION.ADOBE_DEFLATE,
    "lzw": tifffile.COMPRESSION.LZW,
}


class VolumeTiffError(ValueError):
    """A volume or slab that cannot be written as asked; the message says what to change."""


class _Abort(Exception):
    """Raised inside the page iterator to make tifffile stop writing."""


class VolumeTiffWriter(StagedVolumeWriter):
    """Write a (Z, Y, X) or (Z, Y, X, 3) volume slab by slab; the file appears on success.

    Usage::

        with VolumeTiffWriter(path, (z, y, x), np.uint8, voxel_size=0.5) as writer:
            for slab in slabs:  # (k, y, x), any k >= 1, in order
                writer.write(slab)

    Uncompressed classic TIFFs are ImageJ hyperstacks (voxel size, unit and
    ``display_range`` for ImageJ and Fiji); compressed or BigTIFF files are OME-TIFF
    (``ome`` is True: OME-XML with the physical voxel size, axes ZYX or ZYXS), because
    ImageJ hyperstacks allow neither. ``display_range`` (low, high) is the grey range
    ImageJ shows, so that labels 0/1/2 are not drawn almost black; OME-XML has no field
    for it (Bio-Formats and napari scale the display to the data themselves).
    """

    error = VolumeTiffError

    def __init__(
        self,
        path: str | os.PathLike[str],
        shape: tuple[int, int, int],
        dtype: Any,
        *,
        rgb: bool = False,
        voxel_size: float | None = None,
        unit: str = "um",
        compression: str | None = None,
        bigtiff: bool | None = None,
        display_range: tuple[float, float] | None = None,
    ) -> None:
        self.path = Path(path)
        self.shape = _check_shape(shape)
        self.dtype = _check_dtype(dtype, rgb)
        self.rgb = rgb
        self.voxel_size = _check_voxel_size(voxel_size)
        self.unit = _check_unit(unit)
        self.compression = _check_compression(compression)
        self.bigtiff = _needs_bigtiff(self.page_shape, self.shape[0], self.dtype, self.compression)
        if bigtiff is not None:
            self.bigtiff = bool(bigtiff)
        self.imagej = self.compression is None and not self.bigtiff
        self.ome = not self.imagej
        self.display_range = _check_display_range(display_range)
        self.slices_written = 0
        self._temp_path: Path | None = None
        self._tiff: tifffile.TiffWriter | None = None
        self._thread: threading.Thread | None = None
        self._inbox: queue.Queue[np.ndarray | None] = queue.Queue(maxsize=1)
        self._slab_released = threading.Event()
        self._finished = threading.Event()
        self._aborted = threading.Event()
        self._failure: BaseException | None = None

    @property
    def page_shape(self) -> tuple[int, ...]:
        """Shape of one z-slice: (Y, X) or (Y, X, 3)."""
        return (*self.shape[1:], 3) if self.rgb else tuple(self.shape[1:])

    # --- context manager ---------------------------------------------------------------

    def __enter__(self) -> VolumeTiffWriter:
        if self._tiff is not None:
            raise RuntimeError("this VolumeTiffWriter is already open")
        if not self.path.parent.is_dir():
            raise VolumeTiffError(f"cannot write {self.path}: folder {self.path.parent} is missing")
        # Not mkstemp: its 0600 mode would survive the rename; this honours the umask.
        temp_path = scratch_path(self.path)
        os.close(os.open(temp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        self._temp_path = temp_path
        try:
            self._tiff = tifffile.TiffWriter(
                self._temp_path, bigtiff=self.bigtiff, imagej=self.imagej, ome=self.ome
            )
            self._thread = threading.Thread(
                target=self._write_series, name=f"tiff-writer:{self.path.name}", daemon=True
            )
            self._thread.start()
        except BaseException:
            self._discard()
            raise
        return self

    # --- writing -------------------------------------------------------------------------

    def write(self, slab: np.ndarray) -> None:
        """Append ``slab`` = (k, Y, X) or (k, Y, X, 3) next z-slices; returns once written."""
        if self._tiff is None or self._thread is None:
            raise RuntimeError("use VolumeTiffWriter as a context manager: `with ... as writer:`")
        slab = self._check_slab(slab)
        self._slab_released.clear()
        if self._finished.is_set():
            raise self._writer_failed()
        self._inbox.put(slab)
        self._slab_released.wait()
        self.slices_written += slab.shape[0]
        if self._failure is not None:
            raise self._writer_failed()

    def _check_slab(self, slab: np.ndarray) -> np.ndarray:
        if not isinstance(slab, np.ndarray):
            raise VolumeTiffError(
                f"a slab must be a NumPy array, not {type(slab).__name__} "
                "(for a torch tensor, pass tensor.cpu().numpy())"
            )
        if slab.dtype != self.dtype:
            raise VolumeTiffError(
                f"slab dtype {slab.dtype} does not match the volume's {self.dtype}; convert it "
                f"(e.g. slab.astype(np.{self.dtype.name})) after checking its values fit"
            )
        if slab.ndim != len(self.page_shape) + 1 or slab.shape[1:] != self.page_shape:
            raise VolumeTiffError(
                f"slab shape {slab.shape} does not fit the volume: expected (k, "
                f"{', '.join(str(n) for n in self.page_shape)}) with k >= 1"
            )
        if slab.shape[0] < 1:
            raise VolumeTiffError("empty slab (0 z-slices): write at least one slice")
        if self.slices_written + slab.shape[0] > self.shape[0]:
            raise VolumeTiffError(
                f"slab of {slab.shape[0]} slices after {self.slices_written} would exceed the "
                f"volume's {self.shape[0]} z-slices"
            )
        return slab

    def _write_series(self) -> None:
        """Thread body: one tifffile write of the whole series, pulling pages from slabs."""
        assert self._tiff is not None
        try:
            self._tiff.write(
                data=self._pages(),
                shape=(self.shape[0], *self.page_shape),
                dtype=self.dtype,
                photometric="rgb" if self.rgb else "minisblack",
                compression=self.compression,
                maxworkers=1,  # encode page by page: bounded memory
                **_metadata_kwargs(self),
            )
        except BaseException as exc:
            self._failure = exc
        finally:
            self._finished.set()
            self._slab_released.set()

    def _pages(self) -> Iterator[np.ndarray]:
        remaining = self.shape[0]
        while remaining > 0:
            slab = self._inbox.get()
            if slab is None:
                raise _Abort
            for page in slab:
                if self._aborted.is_set():
                    raise _Abort
                # A copy, so that tifffile's last reference is to one page, not the slab.
                yield np.array(page)
            remaining -= slab.shape[0]
            del slab, page
            self._slab_released.set()

    def _writer_failed(self) -> VolumeTiffError:
        failure = self._failure or RuntimeError("the writer stopped early")
        error = VolumeTiffError(f"writing {self.path.name} failed: {failure}")
        error.__cause__ = failure
        return error

    def _publish(self) -> None:
        assert self._thread is not None and self._tiff is not None and self._temp_path
        self._thread.join()
        if self._failure is not None:
            raise self._writer_failed()
        self._tiff.close()
        self._tiff = None
        with self._temp_path.open("rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(self._temp_path, self.path)
        self._temp_path = None
        _fsync_directory(self.path.parent)

    def _discard(self) -> None:
        """Stop the writer thread and delete the temp file; ``path`` is left untouched."""
        if self._thread is not None and self._thread.is_alive():
            self._aborted.set()  # stops the writer between pages
            with contextlib.suppress(queue.Empty):
                self._inbox.get_nowait()  # a slab it never took (interrupted hand-over)
            self._inbox.put_nowait(None)  # wakes it if it waits for the next slab
            self._thread.join()
        if self._tiff is not None:
            with contextlib.suppress(Exception):
                self._tiff.close()
            self._tiff = None
        if self._temp_path is not None:
            self._temp_path.unlink(missing_ok=True)
            self._temp_path = None


def write_volume_tiff(path: str | os.PathLike[str], volume: np.ndarray, **kwargs: Any) -> None:
    """Write an in-memory (Z, Y, X) or (Z, Y, X, 3) volume; options as for VolumeTiffWriter."""
    volume = np.asarray(volume)
    rgb = kwargs.pop("rgb", volume.ndim == 4)
    if volume.ndim != (4 if rgb else 3):
        raise VolumeTiffError(
            f"volume of shape {volume.shape} is not (Z, Y, X) or (Z, Y, X, 3) colour; "
            "for a 2D image pass image[np.newaxis]"
        )
    with VolumeTiffWriter(path, volume.shape[:3], volume.dtype, rgb=rgb, **kwargs) as writer:
        writer.write(volume)


def is_ome_tiff(path: str | os.PathLike[str]) -> bool:
    """Whether the file is an OME-TIFF (compressed and BigTIFF volumes are, see
    ``VolumeTiffWriter``), read from its first page's header only."""
    with tifffile.TiffFile(path) as tif:
        return bool(tif.is_ome)


def read_volume_info(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Shape, dtype, axes, voxel size (z, y, x) or None and its unit, format ('imagej',
    'ome' or 'tiff'), display range or None, BigTIFF, compression, size in bytes.

    The voxel size is read from OME-XML, else ImageJ metadata, else the shaped metadata
    of files from older MicroForge versions, else the resolution tags in centimetres (x
    and y only, taken for z too). Known units come back as one of LENGTH_UNITS ('micron'
    as 'um'); a unit meaning pixels gives no voxel size.
    """
    path = Path(path)
    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        page = series.keyframe
        ij = tif.imagej_metadata or {}
        if tif.is_ome:
            voxel_size, unit = _ome_voxel_size(tif.ome_metadata or "")
        else:
            shaped = (tif.shaped_metadata or ({},))[0]
            voxel_size, unit = _voxel_size_of(page, ij, shaped)
        display = (float(ij["min"]), float(ij["max"])) if "min" in ij and "max" in ij else None
        return {
            "shape": tuple(int(n) for n in series.shape),
            "dtype": str(series.dtype),
            "axes": series.axes,
            "voxel_size": voxel_size,
            "unit": unit,
            "format": "ome" if tif.is_ome else "imagej" if tif.is_imagej else "tiff",
            "display_range": display,
            "bigtiff": tif.is_bigtiff,
            "imagej": tif.is_imagej,
            "compression": None if page.compression == 1 else page.compression.name.lower(),
            "bytes": path.stat().st_size,
        }


# --- helpers -------------------------------------------------------------------------------


def _check_shape(shape: tuple[int, int, int]) -> tuple[int, int, int]:
    if len(shape) != 3 or any(int(n) != n or n < 1 for n in shape):
        raise VolumeTiffError(f"volume shape {tuple(shape)} must be three positive ints (Z, Y, X)")
    return (int(shape[0]), int(shape[1]), int(shape[2]))


def _check_dtype(dtype: Any, rgb: bool) -> np.dtype:
    dtype = np.dtype(dtype)
    if rgb and dtype != np.uint8:
        raise VolumeTiffError(f"colour volumes are written as uint8, not {dtype}")
    if dtype not in SUPPORTED_DTYPES:
        names = ", ".join(d.name for d in SUPPORTED_DTYPES)
        raise VolumeTiffError(f"cannot write {dtype} volumes: use one of {names}")
    return dtype


def _check_voxel_size(voxel_size: float | None) -> float | None:
    if voxel_size is None:
        return None
    if not np.isfinite(voxel_size) or voxel_size <= 0:
        raise VolumeTiffError(f"voxel size must be a positive number, not {voxel_size!r}")
    return float(voxel_size)


def _check_unit(unit: str) -> str:
    try:
        return check_length_unit(unit)
    except UnitError as error:
        raise VolumeTiffError(str(error)) from None


def _check_display_range(display_range: tuple[float, float] | None) -> tuple[float, float] | None:
    if display_range is None:
        return None
    low, high = (float(v) for v in display_range)
    if not (np.isfinite(low) and np.isfinite(high) and low <= high):
        raise VolumeTiffError(f"display range {display_range!r} must be two numbers, low <= high")
    if low == high:  # one value (a single phase): a range ImageJ accepts, the value shown dark
        high = low + 1
    return low, high


def _check_compression(compression: str | None) -> tifffile.COMPRESSION | None:
    if compression is None or compression.lower() == "none":
        return None
    codec = _COMPRESSION_NAMES.get(compression.lower())
    if codec is None:
        raise VolumeTiffError(
            f"compression {compression!r} is not offered: use None, 'zlib' or 'deflate' (lossless)"
        )
    if codec not in tifffile.TIFF.COMPRESSORS:
        raise VolumeTiffError(
            f"compression {compression!r} needs the imagecodecs package, which is not "
            "installed: use 'zlib' instead"
        )
    return codec


def _needs_bigtiff(
    page_shape: tuple[int, ...], pages: int, dtype: np.dtype, compression: object
) -> bool:
    data_bytes = int(np.prod(page_shape)) * dtype.itemsize * pages
    if compression is not None:
        data_bytes = int(data_bytes * _COMPRESSION_GROWTH)
    return data_bytes + pages * _BYTES_PER_PAGE_OVERHEAD > _CLASSIC_TIFF_LIMIT


def _metadata_kwargs(writer: VolumeTiffWriter) -> dict[str, Any]:
    """Description metadata (ImageJ or OME-XML) and resolution tags for ``writer``'s file.

    The resolution tags are in pixels per unit for ImageJ (which takes the unit from its
    description) and pixels per centimetre in OME-TIFF (the TIFF standard's unit, for
    readers that skip the XML).
    """
    axes = "ZYXS" if writer.rgb else "ZYX"
    size, unit = writer.voxel_size, writer.unit
    metadata: dict[str, Any] = {"axes": axes}
    kwargs: dict[str, Any] = {"metadata": metadata}
    if writer.imagej:
        if writer.display_range is not None and not writer.rgb:
            metadata.update(min=writer.display_range[0], max=writer.display_range[1])
        if size is not None:
            metadata.update(spacing=size, unit=unit)
            kwargs["resolution"] = (1 / size, 1 / size)
        return kwargs
    if size is not None:
        symbol = OME_SYMBOLS[unit]
        for axis in "XYZ":
            metadata[f"PhysicalSize{axis}"] = size
            metadata[f"PhysicalSize{axis}Unit"] = symbol
        per_cm = 1 / (size * UNIT_IN_CM[unit])
        kwargs.update(resolution=(per_cm, per_cm), resolutionunit=tifffile.RESUNIT.CENTIMETER)
    return kwargs


def _ome_voxel_size(xml: str) -> tuple[tuple[float, float, float] | None, str | None]:
    """PhysicalSizeZ/Y/X of the first OME image, in the unit of X (OME's default: µm)."""
    try:
        ome = tifffile.xml2dict(xml).get("OME", {})
    except Exception:  # noqa: BLE001 - unreadable XML: no voxel size, the pixels still read
        return None, None
    image = ome.get("Image") or {}
    pixels = (image[0] if isinstance(image, list) else image).get("Pixels") or {}
    if "PhysicalSizeX" not in pixels:
        return None, None
    unit = normalise_unit(str(pixels.get("PhysicalSizeXUnit", "\u00b5m")))
    sizes = []
    for axis in "ZYX":
        value = pixels.get(f"PhysicalSize{axis}", pixels["PhysicalSizeX"])
        axis_unit = normalise_unit(str(pixels.get(f"PhysicalSize{axis}Unit", "\u00b5m")))
        if axis_unit != unit and axis_unit in UNIT_IN_CM and unit in UNIT_IN_CM:
            value = float(value) * UNIT_IN_CM[axis_unit] / UNIT_IN_CM[unit]
        sizes.append(float(value))
    if unit is None or not all(v > 0 for v in sizes):
        return None, None
    return (sizes[0], sizes[1], sizes[2]), unit


def _voxel_size_of(
    page: tifffile.TiffPage, imagej: dict[str, Any], shaped: dict[str, Any]
) -> tuple[tuple[float, float, float] | None, str | None]:
    """ImageJ, shaped-metadata or resolution-tag voxel size of a file without OME-XML."""
    if "voxel_size" in shaped:  # files written by MicroForge before OME-TIFF
        z, y, x = (float(v) for v in shaped["voxel_size"])
        return (z, y, x), normalise_unit(shaped.get("unit"))
    tags = page.tags
    if "XResolution" not in tags or "YResolution" not in tags:
        return None, None
    x_per_unit = _rational(tags["XResolution"].value)
    y_per_unit = _rational(tags["YResolution"].value)
    if not x_per_unit or not y_per_unit:
        return None, None
    if imagej.get("unit") is not None or "spacing" in imagej:
        unit = normalise_unit(imagej.get("unit"))
        if unit is None:
            return None, None  # ImageJ's "pixel": not calibrated
        x, y = 1 / x_per_unit, 1 / y_per_unit
        z = float(imagej.get("spacing", x))
        return (z, y, x), unit
    if page.resolutionunit == tifffile.RESUNIT.CENTIMETER:
        x, y = 1e4 / x_per_unit, 1e4 / y_per_unit  # micrometres
        return (float(shaped.get("spacing", x)), y, x), "um"
    return None, None


def _rational(value: tuple[int, int]) -> float:
    numerator, denominator = value
    return numerator / denominator if denominator else 0.0


def _fsync_directory(directory: Path) -> None:
    """Make the rename durable; some platforms cannot open directories, which is fine."""
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)
