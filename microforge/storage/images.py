"""Reading uploaded micrographs (PNG, JPEG, TIFF) into NumPy arrays, safely.

Why this module checks before it decodes: an upload of a few kilobytes can claim to be
100000 x 100000 pixels (a decompression bomb). ``inspect_image`` reads headers only and
rejects such files before a single pixel is allocated; ``read_image`` always inspects
first. Limits are on pixels and on *decoded bytes* (width x height x channels x bytes per
sample x pages): memory is what a bomb exhausts, and a pixel count alone lets a 16-bit RGB
image take six times what it says. The format is taken from the file's magic bytes, never
its name, because the API stores uploads under server-generated names.

Why TIFF headers are read with care: tifffile's series detection is quadratic in the
number of series (a 10,000-page file took 25 s to refuse), so the IFD chain is counted up
to the page cap first, pages of different shapes are refused when tifffile's own
``is_uniform`` check says so, and tifffile's "shaped" metadata (one series per page when
slices are written one by one) is not used: equal pages make one stack.

Real micrographs carry quirks that would otherwise confuse training (segmented images
saved as RGBA with equal channels, a 2D slice saved as a one-page 3D stack, signed int8
labels); ``read_image`` resolves them here, once, so the engine only sees (H, W) grey or
labels, (H, W, 3) colour or (D, H, W) volumes.
"""

from __future__ import annotations

import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import tifffile
from PIL import ImageFile, JpegImagePlugin, PngImagePlugin

SUPPORTED = "PNG, JPEG or TIFF"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: The IEND chunk type and its (constant) CRC: a complete PNG ends with these 8 bytes.
_PNG_END = b"IEND\xaeB`\x82"
_JPEG_END = b"\xff\xd9"
_TIFF_SIGNATURES = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
#: Formats people upload by mistake, named so the error can say what to do.
_KNOWN_UNSUPPORTED = {
    b"GIF87a": "GIF",
    b"GIF89a": "GIF",
    b"BM": "BMP",
    b"\x00\x00\x01\x00": "ICO",
    b"8BPS": "Photoshop PSD",
    b"%PDF": "PDF",
}
#: How far from the end of a file to look for the end marker of a PNG or JPEG.
_TAIL_BYTES = 4096
#: Stored channels per Pillow mode (a palette image is counted as the colours it shows).
_MODE_CHANNELS = {"LA": 2, "P": 3, "PA": 4, "RGB": 3, "YCbCr": 3, "RGBA": 4, "CMYK": 4}
#: tifffile axis letters that mean "stack of 2D slices"; anything else is not a volume.
_STACK_AXES = {"Z", "Q", "I"}
#: Most TIFF pages (slices) the API accepts in one file. Far deeper than any stack SliceGAN
#: trains on, and it bounds the header walk of a hostile file to milliseconds.
MAX_TIFF_PAGES = 4096
#: Pixels per strip when Pillow's decoded image is copied into NumPy: the copy then costs
#: one image plus a strip, not the two or three whole images ``np.asarray`` takes.
_STRIP_PIXELS = 1 << 20


class ImageError(ValueError):
    """An image that cannot be used; the message says what is wrong and what to do."""


class ImageTooLargeError(ImageError):
    """An image over a size limit (pixels, pages or decoded bytes), known from its header.

    ``limit`` names the limit (``max_pixels``, ``max_pages`` or ``max_decoded_bytes``) so a
    caller can name the setting behind it.
    """

    def __init__(self, message: str, *, limit: str) -> None:
        super().__init__(message)
        self.limit = limit


@dataclass(frozen=True)
class ImageInfo:
    """What the header says, before any pixel is decoded.

    ``shape`` is as stored, after squeezing a one-page stack: (H, W), (H, W, C),
    (D, H, W) or (D, H, W, C). ``channels`` counts stored channels (an RGBA PNG has 4
    even when ``read_image`` later reduces it to grey). ``pixels`` counts pixels or
    voxels, not channel samples.
    """

    format: str
    shape: tuple[int, ...]
    dtype: str
    pages: int
    pixels: int
    channels: int
    is_volume: bool

    @property
    def decoded_bytes(self) -> int:
        """Bytes of the decoded samples: width x height x channels x bytes per sample x pages."""
        return math.prod(self.shape) * np.dtype(self.dtype).itemsize


def inspect_image(
    path: str | os.PathLike[str],
    *,
    max_pixels: int | None = None,
    max_pages: int | None = None,
    max_decoded_bytes: int | None = None,
) -> ImageInfo:
    """Read the headers of ``path`` and reject what cannot or should not be decoded.

    Raises ``ImageError`` for a missing, empty, truncated, corrupt or unsupported file and
    for zero-size dimensions; ``ImageTooLargeError`` for images over ``max_pixels``
    pixels/voxels, ``max_pages`` TIFF pages or ``max_decoded_bytes`` decoded bytes.
    """
    path = Path(path)
    limits = _Limits(max_pixels, max_pages, max_decoded_bytes)
    image_format = _detect_format(path)
    if image_format == "png":
        info = _inspect_png(path)
    elif image_format == "jpeg":
        info = _inspect_jpeg(path)
    else:
        info = _inspect_tiff(path, limits)
    _check_limits(path, info, limits)
    return info


def read_image(
    path: str | os.PathLike[str],
    *,
    max_pixels: int | None = None,
    max_pages: int | None = None,
    max_decoded_bytes: int | None = None,
) -> np.ndarray:
    """Decode ``path`` into (H, W), (H, W, 3) or (D, H, W) after checking its header.

    Quirks resolved: colour images whose channels are all equal become (H, W) grey
    (alpha is dropped: it is not data); RGBA with differing channels becomes (H, W, 3);
    palette PNGs are expanded through their palette; 1-bit images become uint8 {0, 1};
    a one-page stack becomes (H, W). Label dtypes (including signed int8) are kept.
    """
    path = Path(path)
    info = inspect_image(
        path, max_pixels=max_pixels, max_pages=max_pages, max_decoded_bytes=max_decoded_bytes
    )
    if info.format == "tiff":
        return _decode_tiff(path)
    array = _decode_pil(path, info)
    return _resolve_channels(array, has_channels=array.ndim == 3)


@dataclass(frozen=True)
class _Limits:
    pixels: int | None = None
    pages: int | None = None
    decoded_bytes: int | None = None


# --- format detection -------------------------------------------------------------------


def _detect_format(path: Path) -> str:
    try:
        with path.open("rb") as handle:
            head = handle.read(16)
    except FileNotFoundError:
        raise ImageError(f"{path.name}: no such file; check the path") from None
    except IsADirectoryError:
        raise ImageError(f"{path.name}: is a directory, not an image file") from None
    if not head:
        raise ImageError(f"{path.name}: the file is empty (0 bytes); upload the image again")
    if head.startswith(_PNG_SIGNATURE):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(_TIFF_SIGNATURES):
        return "tiff"
    for magic, name in _KNOWN_UNSUPPORTED.items():
        if head.startswith(magic):
            return _unsupported(path, name)
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return _unsupported(path, "WebP")
    raise ImageError(
        f"{path.name}: not a {SUPPORTED} image (it starts with bytes {head[:8]!r}); "
        f"save the micrograph as {SUPPORTED}"
    )


def _unsupported(path: Path, name: str) -> str:
    raise ImageError(
        f"{path.name}: {name} images are not supported; save the micrograph as PNG or TIFF "
        "(lossless) and upload that"
    )


# --- PNG and JPEG (Pillow) --------------------------------------------------------------


def _inspect_png(path: Path) -> ImageInfo:
    # The IHDR chunk must come first, at a fixed offset: read the size straight from it so
    # that nothing else (not even Pillow) runs on a file that claims to be enormous.
    with path.open("rb") as handle:
        head = handle.read(33)
    if len(head) < 33 or head[12:16] != b"IHDR":
        raise ImageError(f"{path.name}: truncated or corrupt PNG (no image header); re-export it")
    width, height, bit_depth, colour_type = struct.unpack(">IIBB", head[16:26])
    _check_dims(path, (height, width))
    if bit_depth == 16 and colour_type in (2, 6):
        raise ImageError(
            f"{path.name}: 16-bit-per-channel colour PNG cannot be read without losing "
            "precision; save it as a 16-bit TIFF, or as an 8-bit or greyscale PNG"
        )
    with path.open("rb") as handle:
        image = _open_with_pillow(path, handle, PngImagePlugin.PngImageFile, "PNG")
        mode = image.mode
    _check_tail(path, _PNG_END, "PNG")
    return _pil_info("png", mode, (height, width), bit_depth)


def _inspect_jpeg(path: Path) -> ImageInfo:
    with path.open("rb") as handle:
        image = _open_with_pillow(path, handle, JpegImagePlugin.JpegImageFile, "JPEG")
        mode, (width, height) = image.mode, image.size
    _check_dims(path, (height, width))
    _check_tail(path, _JPEG_END, "JPEG")
    return _pil_info("jpeg", mode, (height, width), 8)


def _open_with_pillow(
    path: Path, handle: BinaryIO, plugin: type[ImageFile.ImageFile], name: str
) -> ImageFile.ImageFile:
    """Parse headers with Pillow's format plugin directly.

    Why not ``Image.open``: it applies Pillow's process-wide decompression-bomb limit,
    which would override ours (``max_pixels``, from settings) in both directions.
    Constructing the plugin reads headers only, allocates no pixels and changes no
    global state.
    """
    try:
        return plugin(handle)
    except Exception as exc:  # Pillow raises SyntaxError, OSError, struct.error, ...
        raise ImageError(
            f"{path.name}: corrupt or truncated {name} ({exc}); re-export the image"
        ) from exc


def _pil_info(image_format: str, mode: str, size: tuple[int, int], bit_depth: int) -> ImageInfo:
    channels = _MODE_CHANNELS.get(mode, 1)
    if mode.startswith("I;16") or (mode == "I" and bit_depth == 16):
        dtype = "uint16"
    elif mode == "I":
        dtype = "int32"
    elif mode == "F":
        dtype = "float32"
    else:
        dtype = "uint8"
    shape = size if channels == 1 else (*size, channels)
    return ImageInfo(
        format=image_format,
        shape=tuple(int(n) for n in shape),
        dtype=dtype,
        pages=1,
        pixels=math.prod(size),
        channels=channels,
        is_volume=False,
    )


def _check_tail(path: Path, marker: bytes, name: str) -> None:
    """A cut-off upload lacks the end marker; say so before anyone tries to decode it."""
    size = path.stat().st_size
    with path.open("rb") as handle:
        handle.seek(max(0, size - _TAIL_BYTES))
        tail = handle.read()
    if marker not in tail:
        raise ImageError(
            f"{path.name}: truncated {name} (the file ends before the image does); "
            "upload the complete file"
        )


def _decode_pil(path: Path, info: ImageInfo) -> np.ndarray:
    plugin = PngImagePlugin.PngImageFile if info.format == "png" else JpegImagePlugin.JpegImageFile
    with path.open("rb") as handle:
        image = _open_with_pillow(path, handle, plugin, info.format.upper())
        try:
            image.load()
        except Exception as exc:
            raise ImageError(
                f"{path.name}: the {info.format.upper()} data is corrupt or truncated ({exc}); "
                "re-export the image"
            ) from exc
        convert = None
        if image.mode in ("P", "PA"):
            # The palette is what the user sees; expand it, grey palettes fold back below.
            has_alpha = image.mode == "PA" or "transparency" in image.info
            convert = "RGBA" if has_alpha else "RGB"
        elif image.mode == "CMYK":
            convert = "RGB"
        # 16-bit grey opened as 32-bit 'I': values fit in uint16.
        dtype = np.uint16 if info.dtype == "uint16" else None
        try:
            return _pil_to_array(image, convert=convert, dtype=dtype)
        finally:
            image.close()


def _pil_to_array(
    image: ImageFile.ImageFile, *, convert: str | None, dtype: type | None
) -> np.ndarray:
    """Copy a decoded Pillow image into NumPy strip by strip (converting each strip).

    ``np.asarray(image)`` goes through ``tobytes``, which holds the image, its encoded
    chunks and their join at once (3x the decoded size); a whole-image ``convert`` adds a
    fourth copy. Strips keep the peak at the image plus the array. 1-bit images become
    uint8 {0, 1} on the way.
    """
    width, height = image.size
    rows = max(1, _STRIP_PIXELS // max(width, 1))
    out: np.ndarray | None = None
    for top in range(0, height, rows):
        strip = image.crop((0, top, width, min(height, top + rows)))
        if convert is not None:
            strip = strip.convert(convert)
        part = np.asarray(strip)
        if out is None:
            kind = dtype or (np.uint8 if part.dtype == np.bool_ else part.dtype)
            out = np.empty((height, *part.shape[1:]), dtype=kind)
        out[top : top + part.shape[0]] = part
    assert out is not None
    return out


# --- TIFF (tifffile) --------------------------------------------------------------------


def _open_tiff(path: Path, max_pages: int | None = None) -> tuple[tifffile.TiffFile, int]:
    """Open a TIFF as both ``inspect_image`` and ``read_image`` see it; count its pages.

    tifffile's "shaped" metadata (written by tifffile itself) is used only when the first
    page's metadata covers every page, i.e. the file is one series. A file whose slices
    were written one by one has one shaped series per page, and tifffile pairs those up
    (``pyramidize_series``) in quadratic time; it is reopened with ``is_shaped=False``,
    where equal pages form one stack ('I' axis). ImageJ and OME metadata are honoured.
    """
    tif = tifffile.TiffFile(path)
    try:
        pages = _count_pages(path, tif, max_pages)
        if pages > 1 and tif.is_shaped and not _one_shaped_series(tif.pages.first, pages):
            tif.close()
            tif = tifffile.TiffFile(path, is_shaped=False)
    except BaseException:
        tif.close()
        raise
    return tif, pages


def _one_shaped_series(first: tifffile.TiffPage, pages: int) -> bool:
    try:
        shape = tifffile.shaped_description_metadata(first.shaped_description)["shape"]
    except Exception:  # malformed metadata: let tifffile fall back to the pages themselves
        return False
    page_size = math.prod(first.shape)
    return page_size > 0 and math.prod(shape) // page_size >= pages


def _inspect_tiff(path: Path, limits: _Limits) -> ImageInfo:
    try:
        tif, pages = _open_tiff(path, limits.pages)
        with tif:
            first = tif.pages.first
            # Before any series detection: the first page's header times the page count.
            _check_stack_size(path, first, pages, limits)
            if pages >= 8 and not (tif.is_ome or tif.is_imagej) and not tif.is_uniform:
                # tifffile samples pages 1, 7 and the last: cheap, and it keeps files of
                # many different pages out of its quadratic series grouping.
                raise ImageError(
                    f"{path.name}: the TIFF's {pages:,} pages differ in size or type; save "
                    "one image or one stack of equal slices per file"
                )
            all_series = tif.series
            if pages == 0 or not all_series:
                raise ImageError(f"{path.name}: the TIFF holds no image; re-export it")
            if len(all_series) > 1:
                shapes = ", ".join(str(tuple(s.shape)) for s in all_series[:4])
                raise ImageError(
                    f"{path.name}: the TIFF holds {len(all_series)} images of different shapes "
                    f"({shapes}); save one image or one stack of equal slices per file"
                )
            series = all_series[0]
            shape, axes, dtype = tuple(int(n) for n in series.shape), series.axes, series.dtype
            _check_tiff_compression(path, series.keyframe)
            _check_tiff_complete(path, series, pages)
    except ImageError:
        raise
    except Exception as exc:  # tifffile raises TiffFileError, ValueError, struct.error, ...
        raise ImageError(f"{path.name}: corrupt or truncated TIFF ({exc}); re-export it") from exc
    if dtype is None:
        raise ImageError(f"{path.name}: the TIFF's sample format is not supported; re-export it")
    shape, axes = _normalise_tiff_axes(path, shape, axes)
    _check_dims(path, shape)
    if np.dtype(dtype).kind not in "biuf":
        raise ImageError(
            f"{path.name}: TIFF samples of type {np.dtype(dtype)} are not supported; "
            "save integer labels, grey levels or float values"
        )
    channels = shape[-1] if axes.endswith("S") else 1
    spatial = shape[:-1] if axes.endswith("S") else shape
    return ImageInfo(
        format="tiff",
        shape=shape,
        dtype=str(np.dtype(dtype)),
        pages=pages,
        pixels=math.prod(spatial),
        channels=channels,
        is_volume=len(spatial) == 3,
    )


def _normalise_tiff_axes(
    path: Path, shape: tuple[int, ...], axes: str
) -> tuple[tuple[int, ...], str]:
    """Map tifffile's series axes to 'YX', 'YXS', 'ZYX' or 'ZYXS'; reject the rest.

    Axes, not shape, decide: (H, W, 3) 'YXS' is a colour image, while (3, H, W) 'ZYX'
    is a three-slice volume. Length-1 axes other than Y and X are dropped (a one-page
    stack, a single channel), and channels stored first ('SYX', planar) are counted last.
    """
    kept = [(n, a) for n, a in zip(shape, axes, strict=True) if n != 1 or a in "YX"]
    samples = [(n, a) for n, a in kept if a == "S"]
    kept = [(n, a) for n, a in kept if a != "S"] + samples
    shape = tuple(n for n, _ in kept)
    axes = "".join(a for _, a in kept)
    core = axes.removesuffix("S")
    if core == "YX":
        return shape, axes
    if len(core) == 3 and core.endswith("YX") and core[0] in _STACK_AXES:
        return shape, "Z" + axes[1:]
    raise ImageError(
        f"{path.name}: TIFF with axes {axes} and shape {shape} is neither a 2D image nor a "
        "3D stack; save a single 2D image or one stack of 2D slices (axes ZYX)"
    )


def _check_tiff_compression(path: Path, page: tifffile.TiffPage) -> None:
    compression = page.compression
    if compression != 1 and compression not in tifffile.TIFF.DECOMPRESSORS:
        raise ImageError(
            f"{path.name}: the TIFF is compressed with {compression.name}, which this server "
            "cannot decode; save it uncompressed or with deflate/zlib compression"
        )


def _check_tiff_complete(path: Path, series: tifffile.TiffPageSeries, pages: int) -> None:
    """The image data must lie inside the file: cut-off uploads fail here, cheaply.

    A contiguous series (tifffile, ImageJ) is one block whose extent the header gives;
    otherwise the last page is checked, as a cut-off file loses its end first.
    """
    size = path.stat().st_size
    if series.dataoffset is not None:
        end = series.dataoffset + series.nbytes
    else:
        last_page = series.parent.pages[pages - 1]
        ends = [
            offset + count
            for offset, count in zip(last_page.dataoffsets, last_page.databytecounts, strict=False)
        ]
        end = max(ends, default=0)
    if end > size:
        raise ImageError(
            f"{path.name}: truncated TIFF (image data runs past the end of the file); "
            "upload the complete file"
        )


def _count_pages(path: Path, tif: tifffile.TiffFile, limit: int | None) -> int:
    """Pages in the IFD chain, walking no further than ``limit`` + 1 of them.

    tifffile's ``pages.get(n)`` follows the chain's offsets to page n (a few bytes each,
    nothing parsed on the way); only then is ``len`` taken, so a file of millions of
    tiny pages costs ``limit`` steps, not millions.
    """
    if limit is not None:
        try:
            tif.pages.get(limit)
        except IndexError:
            pass
        else:
            raise ImageTooLargeError(
                f"{path.name}: more than {limit:,} TIFF pages (slices); the limit is "
                f"{limit:,}: upload a shorter stack (crop it along z)",
                limit="max_pages",
            )
    return len(tif.pages)


def _check_stack_size(path: Path, first: tifffile.TiffPage, pages: int, limits: _Limits) -> None:
    """Refuse a stack from its first page and page count, before tifffile groups pages."""
    if pages <= 1:
        return  # the full check after series detection covers one page
    page_pixels = math.prod(first.shape) // max(first.samplesperpixel, 1)
    per_page = math.prod(first.shape) * np.dtype(first.dtype or np.uint8).itemsize
    _check_limits(
        path,
        ImageInfo(
            format="tiff",
            shape=(pages, *first.shape),
            dtype=str(np.dtype(first.dtype or np.uint8)),
            pages=pages,
            pixels=pages * page_pixels,
            channels=max(first.samplesperpixel, 1),
            is_volume=True,
        ),
        limits,
        what=f"{pages:,} pages of {per_page:,} bytes",
    )


def _decode_tiff(path: Path) -> np.ndarray:
    try:
        tif, _pages = _open_tiff(path)
        with tif:
            series = tif.series[0]
            array = series.asarray()
            axes = series.axes
    except Exception as exc:
        raise ImageError(
            f"{path.name}: the TIFF data is corrupt or truncated ({exc}); re-export it"
        ) from exc
    if "S" in axes:
        array = np.moveaxis(array, axes.index("S"), -1)
        axes = axes.replace("S", "") + "S"
    shape, axes = _normalise_tiff_axes(path, tuple(array.shape), axes)
    return _resolve_channels(array.reshape(shape), has_channels=axes.endswith("S"))


# --- shared checks and quirks -----------------------------------------------------------


def _check_dims(path: Path, shape: tuple[int, ...]) -> None:
    if any(n <= 0 for n in shape):
        raise ImageError(f"{path.name}: the image has a zero-size dimension {shape}; re-export it")


def _check_limits(path: Path, info: ImageInfo, limits: _Limits, *, what: str = "") -> None:
    if limits.pages is not None and info.pages > limits.pages:
        raise ImageTooLargeError(
            f"{path.name}: {info.pages:,} TIFF pages (slices); the limit is {limits.pages:,}: "
            "upload a shorter stack (crop it along z)",
            limit="max_pages",
        )
    if limits.pixels is not None and info.pixels > limits.pixels:
        kind = "voxels" if info.is_volume else "pixels"
        raise ImageTooLargeError(
            f"{path.name}: {info.pixels:,} {kind} (shape {info.shape}) is over the limit of "
            f"{limits.pixels:,}; crop or downsample the image",
            limit="max_pixels",
        )
    if limits.decoded_bytes is not None and info.decoded_bytes > limits.decoded_bytes:
        raise ImageTooLargeError(
            f"{path.name}: decodes to {format_bytes(info.decoded_bytes)} "
            f"({what or describe_layout(info)}), over the limit of "
            f"{format_bytes(limits.decoded_bytes)}; crop or downscale the image (or save it "
            "as 8-bit grey or labels)",
            limit="max_decoded_bytes",
        )


def describe_layout(info: ImageInfo) -> str:
    """'40,000 x 40,000 pixels x 1 channel x 1 byte' style: where decoded bytes come from."""
    spatial = info.shape[:-1] if info.channels > 1 else info.shape
    kind = "voxels" if info.is_volume else "pixels"
    size = " x ".join(f"{n:,}" for n in spatial)
    itemsize = np.dtype(info.dtype).itemsize
    channels = "channel" if info.channels == 1 else "channels"
    unit = "byte" if itemsize == 1 else "bytes"
    return f"{size} {kind} x {info.channels} {channels} x {itemsize} {unit}"


def format_bytes(count: int) -> str:
    """Readable bytes: exact below 1 MiB ('1,200 bytes'), else MiB or GiB ('1.5 GiB')."""
    if count < 1024**2:
        return f"{count:,} bytes"
    if count < 1024**3:
        return f"{count / 1024**2:,.1f} MiB"
    return f"{count / 1024**3:,.1f} GiB"


def _resolve_channels(array: np.ndarray, *, has_channels: bool) -> np.ndarray:
    """Grey stored as colour becomes grey; alpha is dropped; real colour stays (..., 3)."""
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    if not has_channels:
        return array
    channels = array.shape[-1]
    if channels in (2, 4):
        array = array[..., : channels - 1]  # alpha is not data (LA -> L, RGBA -> RGB)
    first = array[..., 0]
    if all(np.array_equal(first, array[..., c]) for c in range(1, array.shape[-1])):
        return np.ascontiguousarray(first)
    if array.shape[-1] != 3:
        raise ImageError(
            f"image with {channels} differing channels is not supported; save it as grey "
            "or RGB colour"
        )
    return np.ascontiguousarray(array)
