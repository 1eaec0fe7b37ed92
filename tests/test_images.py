"""Reading micrographs: real files with their quirks, synthetic files, and hostile files."""

from __future__ import annotations

import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from microforge.storage import images
from microforge.storage.images import (
    MAX_TIFF_PAGES,
    ImageError,
    ImageInfo,
    ImageTooLargeError,
    inspect_image,
    read_image,
)

SHARED_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"

# file -> (shape after quirks, dtype, exact set of values or None when many grey levels)
REAL_FILES = {
    "micrographs/micro001.png": ((500, 500), "uint8", {0, 255}),
    "micrographs/micro060.png": ((391, 333), "uint8", {0, 255}),
    "micrographs/micro376.png": ((366, 726), "uint8", {0, 255}),
    "micrographs/micro007.png": ((500, 500), "uint8", None),
    "micrographs/micro217.png": ((535, 800), "uint8", None),
    "micrographs/sem_3phase.tif": ((427, 427), "uint8", {0, 1, 2}),
    "micrographs/sofc_anode_3phase.tif": ((1024, 1024), "int8", {0, 1, 2}),
    "volumes/sofc_anode_3phase_62.tif": ((62, 62, 62), "int8", {0, 1, 2}),
    "volumes/nmc_binary_128.tif": ((128, 128, 128), "int8", {0, 1}),
    "volumes/separator_rods_32x300x300.tif": ((32, 300, 300), "int8", {0, 1}),
}


@pytest.mark.parametrize("name", sorted(REAL_FILES))
def test_real_files_read_as_documented(name: str) -> None:
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"{path} not present")
    shape, dtype, values = REAL_FILES[name]
    info = inspect_image(path)
    image = read_image(path)
    assert image.shape == shape
    assert image.dtype == np.dtype(dtype)
    assert info.dtype == dtype
    assert info.is_volume == (len(shape) == 3)
    assert info.pixels == int(np.prod(shape))
    if values is not None:
        assert set(np.unique(image).tolist()) == values
    else:
        assert len(np.unique(image)) > 16  # unsegmented grey levels survive


def test_real_rgba_png_header_reports_stored_channels() -> None:
    path = SHARED_DATA / "micrographs/micro001.png"
    if not path.exists():
        pytest.skip(f"{path} not present")
    assert inspect_image(path) == ImageInfo(
        format="png",
        shape=(500, 500, 4),
        dtype="uint8",
        pages=1,
        pixels=250_000,
        channels=4,
        is_volume=False,
    )


def test_real_one_page_stack_is_squeezed() -> None:
    path = SHARED_DATA / "micrographs/sofc_anode_3phase.tif"
    if not path.exists():
        pytest.skip(f"{path} not present")
    info = inspect_image(path)
    assert (info.shape, info.pages, info.is_volume) == ((1024, 1024), 1, False)


# --- synthetic files ---------------------------------------------------------------------


def _labels(shape: tuple[int, ...], values: tuple[int, ...] = (0, 1, 2)) -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.asarray(values, dtype=np.int64)[rng.integers(0, len(values), size=shape)]


def _save_png(path: Path, array: np.ndarray, mode: str | None = None) -> Path:
    Image.fromarray(array, mode=mode).save(path) if mode else Image.fromarray(array).save(path)
    return path


def test_png_grey_8_bit(tmp_path: Path) -> None:
    array = _labels((40, 60), (0, 128, 255)).astype(np.uint8)
    path = _save_png(tmp_path / "grey.png", array)
    assert inspect_image(path).shape == (40, 60)
    image = read_image(path)
    assert image.dtype == np.uint8
    np.testing.assert_array_equal(image, array)


def test_png_grey_16_bit(tmp_path: Path) -> None:
    array = (np.arange(40 * 60, dtype=np.uint16).reshape(40, 60) * 27).astype(np.uint16)
    path = _save_png(tmp_path / "grey16.png", array)
    assert inspect_image(path).dtype == "uint16"
    image = read_image(path)
    assert image.dtype == np.uint16
    np.testing.assert_array_equal(image, array)


def test_png_rgb_with_equal_channels_is_grey(tmp_path: Path) -> None:
    grey = _labels((30, 20), (0, 255)).astype(np.uint8)
    path = _save_png(tmp_path / "rgb_grey.png", np.stack([grey] * 3, axis=-1))
    image = read_image(path)
    assert image.shape == (30, 20)
    np.testing.assert_array_equal(image, grey)


def test_png_rgba_with_equal_channels_drops_alpha(tmp_path: Path) -> None:
    grey = _labels((30, 20), (0, 255)).astype(np.uint8)
    alpha = np.where(grey > 0, 255, 40).astype(np.uint8)  # not all opaque: still not data
    path = _save_png(tmp_path / "rgba_grey.png", np.stack([grey, grey, grey, alpha], axis=-1))
    np.testing.assert_array_equal(read_image(path), grey)


def test_png_real_colour_stays_colour(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, size=(25, 35, 3), dtype=np.uint8)
    path = _save_png(tmp_path / "colour.png", rgb)
    image = read_image(path)
    assert image.shape == (25, 35, 3)
    np.testing.assert_array_equal(image, rgb)
    rgba = np.concatenate([rgb, np.full((25, 35, 1), 255, np.uint8)], axis=-1)
    path = _save_png(tmp_path / "colour_rgba.png", rgba)
    np.testing.assert_array_equal(read_image(path), rgb)


def test_png_palette_and_one_bit(tmp_path: Path) -> None:
    grey = _labels((16, 24), (0, 100, 200)).astype(np.uint8)
    palette_path = tmp_path / "palette.png"
    Image.fromarray(grey).convert("P").save(palette_path)
    with Image.open(palette_path) as stored:
        assert stored.mode == "P"
    np.testing.assert_array_equal(read_image(palette_path), grey)

    bits = _labels((16, 24), (0, 1)).astype(bool)
    bit_path = tmp_path / "bits.png"
    Image.fromarray(bits).save(bit_path)
    with Image.open(bit_path) as stored:
        assert stored.mode == "1"
    image = read_image(bit_path)
    assert image.dtype == np.uint8
    np.testing.assert_array_equal(image, bits.astype(np.uint8))


def test_jpeg_grey_and_colour(tmp_path: Path) -> None:
    grey = np.tile(np.linspace(0, 255, 64, dtype=np.uint8), (48, 1))
    path = tmp_path / "grey.jpg"
    Image.fromarray(grey).save(path, quality=95)
    info = inspect_image(path)
    assert (info.format, info.shape) == ("jpeg", (48, 64))
    image = read_image(path)
    assert image.shape == (48, 64)
    assert np.abs(image.astype(int) - grey).max() < 8  # lossy, but close

    colour = np.zeros((48, 64, 3), np.uint8)
    colour[..., 0] = 200
    colour[:, 32:, 2] = 180
    path = tmp_path / "colour.jpeg.bin"  # the name does not decide the format
    Image.fromarray(colour).save(path, format="JPEG", quality=95)
    assert inspect_image(path).format == "jpeg"
    assert read_image(path).shape == (48, 64, 3)


def test_tiff_2d_3d_and_16_bit(tmp_path: Path) -> None:
    plane = _labels((20, 30)).astype(np.uint8)
    tifffile.imwrite(tmp_path / "plane.tif", plane)
    np.testing.assert_array_equal(read_image(tmp_path / "plane.tif"), plane)

    volume = _labels((5, 20, 30)).astype(np.uint16) * 1000
    tifffile.imwrite(tmp_path / "volume.tif", volume)
    info = inspect_image(tmp_path / "volume.tif")
    assert (info.shape, info.dtype, info.pages, info.is_volume) == (
        (5, 20, 30),
        "uint16",
        5,
        True,
    )
    image = read_image(tmp_path / "volume.tif")
    assert image.dtype == np.uint16
    np.testing.assert_array_equal(image, volume)


def test_tiff_colour_is_not_a_volume_and_a_thin_volume_is(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    colour = rng.integers(0, 256, size=(20, 30, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "colour.tif", colour, photometric="rgb")
    info = inspect_image(tmp_path / "colour.tif")
    assert (info.shape, info.channels, info.is_volume) == ((20, 30, 3), 3, False)
    np.testing.assert_array_equal(read_image(tmp_path / "colour.tif"), colour)

    thin = _labels((3, 20, 30)).astype(np.uint8)  # three slices, not three channels
    tifffile.imwrite(tmp_path / "thin.tif", thin, photometric="minisblack")
    info = inspect_image(tmp_path / "thin.tif")
    assert (info.shape, info.channels, info.is_volume) == ((3, 20, 30), 1, True)
    np.testing.assert_array_equal(read_image(tmp_path / "thin.tif"), thin)

    planar = np.moveaxis(colour, -1, 0)
    tifffile.imwrite(tmp_path / "planar.tif", planar, photometric="rgb", planarconfig="separate")
    np.testing.assert_array_equal(read_image(tmp_path / "planar.tif"), colour)


def test_tiff_float_and_signed_labels_keep_dtype(tmp_path: Path) -> None:
    probabilities = np.random.default_rng(3).random((10, 12), dtype=np.float32)
    tifffile.imwrite(tmp_path / "float.tif", probabilities)
    image = read_image(tmp_path / "float.tif")
    assert image.dtype == np.float32
    np.testing.assert_array_equal(image, probabilities)

    labels = _labels((1, 10, 12), (-1, 0, 3)).astype(np.int8)
    tifffile.imwrite(tmp_path / "labels.tif", labels)
    image = read_image(tmp_path / "labels.tif")
    assert (image.shape, image.dtype) == ((10, 12), np.int8)
    np.testing.assert_array_equal(image, labels[0])


def test_tiff_of_mixed_shapes_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "mixed.tif"
    with tifffile.TiffWriter(path) as tif:
        tif.write(np.zeros((10, 10), np.uint8))
        tif.write(np.zeros((20, 20), np.uint8))
    with pytest.raises(ImageError, match="different shapes"):
        inspect_image(path)


# --- hostile and broken files ------------------------------------------------------------


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _bomb_png(path: Path, width: int, height: int) -> Path:
    """A valid-looking PNG header claiming width x height grey pixels, with garbage data."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", b"not zlib data at all")
        + _png_chunk(b"IEND", b"")
    )
    return path


def test_decompression_bomb_rejected_from_header(tmp_path: Path) -> None:
    path = _bomb_png(tmp_path / "bomb.png", 100_000, 100_000)
    start = time.perf_counter()
    # Header only: 10^10 pixels are reported without decoding (which would need 10 GB and
    # would fail on the garbage IDAT with a different error).
    info = inspect_image(path)
    assert info.pixels == 10**10
    assert info.shape == (100_000, 100_000)
    with pytest.raises(ImageError, match=r"10,000,000,000 pixels .* over the limit"):
        inspect_image(path, max_pixels=50_000_000)
    with pytest.raises(ImageError, match="over the limit"):
        read_image(path, max_pixels=50_000_000)
    assert time.perf_counter() - start < 2


def test_page_limit(tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "stack.tif", np.zeros((12, 8, 8), np.uint8))
    assert inspect_image(tmp_path / "stack.tif", max_pages=12).pages == 12
    with pytest.raises(ImageTooLargeError, match="more than 10 TIFF pages") as caught:
        inspect_image(tmp_path / "stack.tif", max_pages=10)
    assert caught.value.limit == "max_pages"
    with pytest.raises(ImageError, match="768 voxels"):
        inspect_image(tmp_path / "stack.tif", max_pixels=700)


def test_decoded_bytes_limit_counts_channels_samples_and_pages(tmp_path: Path) -> None:
    colour = np.zeros((10, 20, 3), np.uint16)  # 200 pixels, 1,200 bytes once decoded
    tifffile.imwrite(tmp_path / "colour.tif", colour, photometric="rgb")
    info = inspect_image(tmp_path / "colour.tif", max_decoded_bytes=1200)
    assert (info.pixels, info.decoded_bytes) == (200, 1200)
    with pytest.raises(
        ImageTooLargeError, match=r"decodes to 1,200 bytes .*crop or downscale"
    ) as caught:
        read_image(tmp_path / "colour.tif", max_pixels=10_000, max_decoded_bytes=1199)
    assert caught.value.limit == "max_decoded_bytes"
    assert "10 x 20 pixels x 3 channels x 2 bytes" in str(caught.value)

    tifffile.imwrite(tmp_path / "stack.tif", np.zeros((12, 8, 8), np.uint8))
    with pytest.raises(ImageTooLargeError, match="12 pages of 64 bytes"):
        inspect_image(tmp_path / "stack.tif", max_decoded_bytes=700)

    bomb = _bomb_png(tmp_path / "bomb.png", 40_000, 40_000)
    with pytest.raises(ImageTooLargeError, match=r"decodes to 1\.5 GiB"):
        inspect_image(bomb, max_pixels=2_000_000_000, max_decoded_bytes=512 * 1024**2)


def _one_page_per_write(path: Path, count: int, shape_of=lambda i: (1, 1), **kwargs) -> Path:
    with tifffile.TiffWriter(path) as tif:
        for index in range(count):
            tif.write(np.zeros(shape_of(index), np.uint8), contiguous=False, **kwargs)
    return path


def test_many_page_tiff_is_answered_in_well_under_a_second(many_page_tiff: Path) -> None:
    """10,000 1x1 pages took 25 s (tifffile paired up 10,000 one-page series)."""
    path = many_page_tiff
    start = time.perf_counter()
    with pytest.raises(ImageTooLargeError, match=f"more than {MAX_TIFF_PAGES:,} TIFF pages"):
        inspect_image(path, max_pages=MAX_TIFF_PAGES)
    assert time.perf_counter() - start < 0.5
    # Without a page cap (the CLI) equal pages are one stack, found in linear time.
    start = time.perf_counter()
    info = inspect_image(path)
    assert (info.shape, info.pages, info.is_volume) == ((10_000, 1, 1), 10_000, True)
    assert time.perf_counter() - start < 2


def test_tiff_of_many_different_pages_is_refused_fast(tmp_path: Path) -> None:
    """1,024 pages of different widths took 6.6 s (2,048: 25 s) in tifffile's grouping."""
    path = _one_page_per_write(
        tmp_path / "distinct.tif", 1024, shape_of=lambda i: (1, i + 1), metadata=None
    )
    start = time.perf_counter()
    with pytest.raises(ImageError, match="1,024 pages differ in size"):
        inspect_image(path, max_pages=MAX_TIFF_PAGES)
    assert time.perf_counter() - start < 1


def test_slices_written_one_by_one_are_one_stack(tmp_path: Path) -> None:
    volume = _labels((9, 6, 7)).astype(np.uint8)
    path = tmp_path / "slices.tif"
    with tifffile.TiffWriter(path) as tif:
        for plane in volume:
            tif.write(plane, contiguous=False)
    assert inspect_image(path).shape == (9, 6, 7)
    np.testing.assert_array_equal(read_image(path), volume)


def test_png_is_copied_strip_by_strip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Strips of a few rows give the same arrays as one whole-image copy, conversions too."""
    monkeypatch.setattr(images, "_STRIP_PIXELS", 50)  # 2 rows of 24 pixels per strip
    grey = _labels((17, 24), (0, 100, 200)).astype(np.uint8)
    Image.fromarray(grey).convert("P").save(tmp_path / "palette.png")
    np.testing.assert_array_equal(read_image(tmp_path / "palette.png"), grey)
    rgb = np.random.default_rng(4).integers(0, 256, size=(17, 24, 3), dtype=np.uint8)
    Image.fromarray(rgb).quantize(7).save(tmp_path / "colour_palette.png")
    expected = np.asarray(Image.open(tmp_path / "colour_palette.png").convert("RGB"))
    np.testing.assert_array_equal(read_image(tmp_path / "colour_palette.png"), expected)
    Image.fromarray(grey > 50).save(tmp_path / "bits.png")
    np.testing.assert_array_equal(read_image(tmp_path / "bits.png"), (grey > 50).astype(np.uint8))
    deep = (grey.astype(np.uint16) * 300).astype(np.uint16)
    Image.fromarray(deep).save(tmp_path / "deep.png")
    np.testing.assert_array_equal(read_image(tmp_path / "deep.png"), deep)


def test_empty_file(tmp_path: Path) -> None:
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageError, match="empty"):
        inspect_image(tmp_path / "empty.png")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="no such file"):
        read_image(tmp_path / "nope.png")


def test_truncated_png(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    path = _save_png(tmp_path / "full.png", rng.integers(0, 256, (64, 64), dtype=np.uint8))
    data = path.read_bytes()
    cut = tmp_path / "cut.png"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="truncated"):
        inspect_image(cut)
    with pytest.raises(ImageError, match="truncated"):
        read_image(cut)
    cut.write_bytes(data[:20])  # inside the header
    with pytest.raises(ImageError, match="truncated or corrupt"):
        inspect_image(cut)


def test_truncated_tiff(tmp_path: Path) -> None:
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, _labels((4, 32, 32)).astype(np.uint8), photometric="minisblack")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 500])
    with pytest.raises(ImageError, match="truncated"):
        inspect_image(path)


def test_compressed_tiff_reads_and_truncation_is_caught(tmp_path: Path) -> None:
    volume = _labels((4, 32, 32)).astype(np.uint8)
    path = tmp_path / "zlib.tif"
    tifffile.imwrite(path, volume, photometric="minisblack", compression="zlib")
    np.testing.assert_array_equal(read_image(path), volume)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 40])
    with pytest.raises(ImageError, match="truncated|corrupt"):
        read_image(path)


def test_zero_size_dimension(tmp_path: Path) -> None:
    path = _bomb_png(tmp_path / "zero.png", 0, 10)
    with pytest.raises(ImageError, match="zero-size"):
        inspect_image(path)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("random.png", bytes(np.random.default_rng(5).integers(0, 256, 4096, dtype=np.uint8)),
         "not a PNG, JPEG or TIFF"),
        ("notes.tif", b"micrograph of an anode, see lab book p. 12\n", "not a PNG, JPEG or TIFF"),
        ("bmp.png", b"BM" + bytes(100), "BMP images are not supported"),
    ],
)  # fmt: skip
def test_not_an_image(tmp_path: Path, name: str, content: bytes, message: str) -> None:
    (tmp_path / name).write_bytes(content)
    with pytest.raises(ImageError, match=message):
        read_image(tmp_path / name)


def test_gif_is_rejected_with_advice(tmp_path: Path) -> None:
    path = tmp_path / "anim.png"  # misnamed on purpose
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(path, format="GIF")
    with pytest.raises(ImageError, match="GIF images are not supported.*PNG or TIFF"):
        inspect_image(path)


def test_corrupt_png_data(tmp_path: Path) -> None:
    path = _bomb_png(tmp_path / "garbage.png", 16, 16)  # small, but IDAT is not zlib
    assert inspect_image(path).shape == (16, 16)
    with pytest.raises(ImageError, match="corrupt"):
        read_image(path)


def test_image_error_is_a_value_error() -> None:
    assert issubclass(ImageError, ValueError)
