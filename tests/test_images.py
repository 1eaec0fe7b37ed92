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

from microforge.storage.images import ImageError, ImageInfo, inspect_image, read_image

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
    with pytest.raises(ImageError, match="12 TIFF pages is over the limit of 10"):
        inspect_image(tmp_path / "stack.tif", max_pages=10)
    with pytest.raises(ImageError, match="768 voxels"):
        inspect_image(tmp_path / "stack.tif", max_pixels=700)


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
