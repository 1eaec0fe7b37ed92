"""Streaming volume TIFFs: round trips, metadata readers rely on, atomicity and memory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tifffile

from microforge.storage.images import read_image
from microforge.storage.tiff import (
    VolumeTiffError,
    VolumeTiffWriter,
    read_volume_info,
    write_volume_tiff,
)


def _volume(shape: tuple[int, ...], dtype: type) -> np.ndarray:
    rng = np.random.default_rng(0)
    if np.dtype(dtype).kind == "f":
        return rng.random(shape, dtype=dtype)
    return rng.integers(0, np.iinfo(dtype).max, size=shape, dtype=dtype, endpoint=True)


def _write_in_slabs(writer: VolumeTiffWriter, volume: np.ndarray, sizes: list[int]) -> None:
    start = 0
    for size in sizes:
        writer.write(volume[start : start + size])
        start += size


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".partial"))


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_round_trip_is_an_imagej_z_stack(tmp_path: Path, dtype: type) -> None:
    volume = _volume((7, 24, 40), dtype)
    path = tmp_path / "volume.tif"
    with VolumeTiffWriter(path, volume.shape, dtype, voxel_size=0.25) as writer:
        _write_in_slabs(writer, volume, [3, 1, 3])  # uneven slabs
    with tifffile.TiffFile(path) as tif:
        assert tif.is_imagej
        assert not tif.is_bigtiff
        assert tif.series[0].axes == "ZYX"
        assert tif.imagej_metadata["slices"] == 7
        assert tif.imagej_metadata["spacing"] == pytest.approx(0.25)
        assert tif.imagej_metadata["unit"] == "um"
        x_resolution = tif.pages[0].tags["XResolution"].value
        assert x_resolution[0] / x_resolution[1] == pytest.approx(4.0)  # pixels per um
        stored = tif.asarray()
    assert stored.dtype == dtype
    np.testing.assert_array_equal(stored, volume)
    info = read_volume_info(path)
    assert info["shape"] == (7, 24, 40)
    assert info["dtype"] == np.dtype(dtype).name
    assert info["axes"] == "ZYX"
    assert info["voxel_size"] == pytest.approx((0.25, 0.25, 0.25))
    assert info["unit"] == "um"
    assert (info["bigtiff"], info["compression"]) == (False, None)
    assert info["bytes"] == path.stat().st_size >= volume.nbytes


def test_rgb_round_trip(tmp_path: Path) -> None:
    volume = _volume((4, 16, 20, 3), np.uint8)
    path = tmp_path / "colour.tif"
    write_volume_tiff(path, volume, voxel_size=2.0, unit="nm")
    with tifffile.TiffFile(path) as tif:
        assert tif.is_imagej
        assert tif.series[0].axes == "ZYXS"
        np.testing.assert_array_equal(tif.asarray(), volume)
    assert read_volume_info(path)["voxel_size"] == pytest.approx((2.0, 2.0, 2.0))
    np.testing.assert_array_equal(read_image(path), volume)  # the reader agrees


def test_without_voxel_size(tmp_path: Path) -> None:
    volume = _volume((3, 8, 8), np.uint8)
    write_volume_tiff(tmp_path / "plain.tif", volume)
    info = read_volume_info(tmp_path / "plain.tif")
    assert (info["axes"], info["voxel_size"]) == ("ZYX", None)


@pytest.mark.parametrize("compression", ["zlib", "deflate"])
def test_compression_round_trip(tmp_path: Path, compression: str) -> None:
    volume = np.zeros((6, 64, 64), np.uint8)
    volume[:, 16:48, 16:48] = 2  # compressible, like real labels
    path = tmp_path / "packed.tif"
    with VolumeTiffWriter(path, volume.shape, np.uint8, compression=compression) as writer:
        _write_in_slabs(writer, volume, [5, 1])
    with tifffile.TiffFile(path) as tif:
        assert tif.pages[0].compression == tifffile.COMPRESSION.ADOBE_DEFLATE
        assert tif.series[0].axes == "ZYX"
        np.testing.assert_array_equal(tif.asarray(), volume)
    assert path.stat().st_size < volume.nbytes / 4
    np.testing.assert_array_equal(read_image(path), volume)


#: The three layouts a volume can get: ImageJ hyperstack, and OME-TIFF when compressed or big.
_LAYOUTS = {
    "classic": {},
    "zlib": {"compression": "zlib"},
    "bigtiff": {"bigtiff": True},
}


def _ome_pixels(tif: tifffile.TiffFile) -> dict:
    return tifffile.xml2dict(tif.ome_metadata)["OME"]["Image"]["Pixels"]


@pytest.mark.parametrize("layout", sorted(_LAYOUTS))
def test_every_layout_carries_voxel_size_units_and_axes(tmp_path: Path, layout: str) -> None:
    """What Fiji, napari and tifffile read: ImageJ metadata for the classic file,
    OME-XML for compressed and BigTIFF ones, resolution tags in both."""
    volume = np.zeros((4, 16, 24), np.uint8)
    volume[:, 4:12, 6:18] = 2
    path = tmp_path / "volume.tif"
    write_volume_tiff(
        path, volume, voxel_size=0.5, unit="nm", display_range=(0, 2), **_LAYOUTS[layout]
    )
    with tifffile.TiffFile(path) as tif:
        assert tif.series[0].axes == "ZYX"
        np.testing.assert_array_equal(tif.asarray(), volume)
        if layout == "classic":
            assert tif.is_imagej and not tif.is_ome and not tif.is_bigtiff
            meta = tif.imagej_metadata
            assert (meta["spacing"], meta["unit"], meta["slices"]) == (0.5, "nm", 4)
            assert (meta["min"], meta["max"]) == (0, 2)  # labels 0..2 span the grey range
            assert tif.pages[0].resolution == pytest.approx((2.0, 2.0))  # pixels per nm
        else:
            assert tif.is_ome and not tif.is_imagej
            assert tif.is_bigtiff == (layout == "bigtiff")
            compressed = tif.pages[0].compression == tifffile.COMPRESSION.ADOBE_DEFLATE
            assert compressed == (layout == "zlib")
            pixels = _ome_pixels(tif)
            assert (pixels["SizeZ"], pixels["SizeY"], pixels["SizeX"]) == (4, 16, 24)
            for axis in "XYZ":
                assert pixels[f"PhysicalSize{axis}"] == 0.5
                assert pixels[f"PhysicalSize{axis}Unit"] == "nm"
            assert tif.pages[0].resolutionunit == tifffile.RESUNIT.CENTIMETER
            assert tif.pages[0].resolution == pytest.approx((2e7, 2e7))  # 0.5 nm a pixel
    info = read_volume_info(path)
    assert info["voxel_size"] == pytest.approx((0.5, 0.5, 0.5))
    assert (info["unit"], info["axes"]) == ("nm", "ZYX")
    assert info["format"] == ("imagej" if layout == "classic" else "ome")
    assert info["display_range"] == ((0, 2) if layout == "classic" else None)
    np.testing.assert_array_equal(read_image(path), volume)


def test_ome_micrometres_use_the_ome_symbol(tmp_path: Path) -> None:
    path = tmp_path / "packed.tif"
    write_volume_tiff(path, _volume((3, 8, 8), np.uint16), voxel_size=0.25, compression="zlib")
    with tifffile.TiffFile(path) as tif:
        assert _ome_pixels(tif)["PhysicalSizeXUnit"] == "\u00b5m"
        assert tif.pages[0].resolution[0] == pytest.approx(40_000)  # 0.25 um a pixel, per cm
    info = read_volume_info(path)
    assert (info["voxel_size"], info["unit"]) == (pytest.approx((0.25,) * 3), "um")


def test_ome_colour_volume(tmp_path: Path) -> None:
    volume = _volume((3, 8, 10, 3), np.uint8)
    path = tmp_path / "colour.tif"
    write_volume_tiff(path, volume, voxel_size=2.0, unit="mm", compression="zlib")
    with tifffile.TiffFile(path) as tif:
        assert tif.is_ome and tif.series[0].axes == "ZYXS"
        np.testing.assert_array_equal(tif.asarray(), volume)
    assert read_volume_info(path)["unit"] == "mm"


def test_big_volumes_become_ome_bigtiff_by_themselves(tmp_path: Path, monkeypatch) -> None:
    """Past the classic limit (lowered here instead of writing 4 GB) the file is OME BigTIFF."""
    monkeypatch.setattr("microforge.storage.tiff._CLASSIC_TIFF_LIMIT", 10_000)
    volume = _volume((8, 32, 64), np.uint8)  # 16 KiB
    path = tmp_path / "big.tif"
    with VolumeTiffWriter(path, volume.shape, np.uint8, voxel_size=3.0) as writer:
        assert (writer.bigtiff, writer.ome) == (True, True)
        _write_in_slabs(writer, volume, [5, 3])
    with tifffile.TiffFile(path) as tif:
        assert tif.is_bigtiff and tif.is_ome
        np.testing.assert_array_equal(tif.asarray(), volume)
    info = read_volume_info(path)
    assert (info["voxel_size"], info["unit"]) == (pytest.approx((3.0,) * 3), "um")


def test_voxel_sizes_written_by_other_tools_are_read(tmp_path: Path) -> None:
    volume = np.zeros((2, 8, 8), np.uint8)
    fiji = tmp_path / "fiji.tif"  # ImageJ spells micrometres "micron"
    tifffile.imwrite(
        fiji, volume, imagej=True, resolution=(4, 4), metadata={"spacing": 0.5, "unit": "micron"}
    )
    assert read_volume_info(fiji)["voxel_size"] == pytest.approx((0.5, 0.25, 0.25))
    assert read_volume_info(fiji)["unit"] == "um"
    uncalibrated = tmp_path / "pixels.tif"
    tifffile.imwrite(uncalibrated, volume, imagej=True, metadata={"unit": "pixel"})
    assert read_volume_info(uncalibrated)["voxel_size"] is None
    mixed = tmp_path / "mixed.ome.tif"  # OME with z in another unit than x
    tifffile.imwrite(
        mixed,
        volume,
        ome=True,
        metadata={
            "axes": "ZYX",
            "PhysicalSizeX": 100,
            "PhysicalSizeXUnit": "nm",
            "PhysicalSizeY": 100,
            "PhysicalSizeYUnit": "nm",
            "PhysicalSizeZ": 0.2,
            "PhysicalSizeZUnit": "\u00b5m",
        },
    )
    info = read_volume_info(mixed)
    assert (info["voxel_size"], info["unit"]) == (pytest.approx((200, 100, 100)), "nm")


def test_unavailable_or_unknown_compression_is_refused(tmp_path: Path) -> None:
    with pytest.raises(VolumeTiffError, match="not offered"):
        VolumeTiffWriter(tmp_path / "x.tif", (2, 8, 8), np.uint8, compression="jpeg")
    if tifffile.COMPRESSION.LZW not in tifffile.TIFF.COMPRESSORS:
        with pytest.raises(VolumeTiffError, match="needs the imagecodecs package"):
            VolumeTiffWriter(tmp_path / "x.tif", (2, 8, 8), np.uint8, compression="lzw")


def test_bigtiff_override(tmp_path: Path) -> None:
    volume = _volume((5, 16, 24), np.uint8)
    path = tmp_path / "big.tif"
    write_volume_tiff(path, volume, bigtiff=True, voxel_size=1.5)
    with tifffile.TiffFile(path) as tif:
        assert tif.is_bigtiff
        assert not tif.is_imagej  # ImageJ hyperstacks cannot be BigTIFF
        assert tif.series[0].axes == "ZYX"
        np.testing.assert_array_equal(tif.asarray(), volume)
    info = read_volume_info(path)
    assert info["bigtiff"] is True
    assert info["voxel_size"] == pytest.approx((1.5, 1.5, 1.5))


def test_bigtiff_chosen_past_4_gb_without_writing(tmp_path: Path) -> None:
    small = VolumeTiffWriter(tmp_path / "a.tif", (1000, 2048, 2048), np.uint8)  # 4.19e9 B
    large = VolumeTiffWriter(tmp_path / "b.tif", (1030, 2048, 2048), np.uint8)  # 4.32e9 B
    assert (small.bigtiff, small.imagej) == (False, True)
    assert (large.bigtiff, large.imagej) == (True, False)
    assert VolumeTiffWriter(tmp_path / "c.tif", (300, 2048, 2048), np.float32).bigtiff
    assert not VolumeTiffWriter(
        tmp_path / "d.tif", (1030, 2048, 2048), np.uint8, bigtiff=False
    ).bigtiff
    assert not list(tmp_path.iterdir())  # constructing writes nothing


def test_fewer_slices_than_declared_saves_nothing(tmp_path: Path) -> None:
    path = tmp_path / "short.tif"
    volume = _volume((4, 8, 8), np.uint8)
    with (
        pytest.raises(VolumeTiffError, match="only 3 of 4 z-slices"),
        VolumeTiffWriter(path, volume.shape, np.uint8) as writer,
    ):
        writer.write(volume[:3])
    assert not path.exists()
    assert _leftovers(tmp_path) == []


def test_more_slices_than_declared_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "long.tif"
    volume = _volume((4, 8, 8), np.uint8)
    with (
        pytest.raises(VolumeTiffError, match="after 2 would exceed the volume's 3 z-slices"),
        VolumeTiffWriter(path, (3, 8, 8), np.uint8) as writer,
    ):
        writer.write(volume[:2])
        writer.write(volume[2:])
    assert not path.exists()
    assert _leftovers(tmp_path) == []


def test_exception_inside_with_keeps_the_previous_file(tmp_path: Path) -> None:
    path = tmp_path / "volume.tif"
    path.write_bytes(b"previous version")
    with (
        pytest.raises(RuntimeError, match="GPU fell over"),
        VolumeTiffWriter(path, (4, 8, 8), np.uint8, compression="zlib") as writer,
    ):
        writer.write(_volume((2, 8, 8), np.uint8))
        raise RuntimeError("GPU fell over")
    assert path.read_bytes() == b"previous version"
    assert _leftovers(tmp_path) == []


def test_file_appears_only_on_clean_exit(tmp_path: Path) -> None:
    path = tmp_path / "volume.tif"
    volume = _volume((2, 8, 8), np.uint8)
    with VolumeTiffWriter(path, volume.shape, np.uint8) as writer:
        writer.write(volume[:1])
        assert not path.exists()
        assert len(_leftovers(tmp_path)) == 1
        writer.write(volume[1:])
        assert not path.exists()
    assert path.exists()
    assert _leftovers(tmp_path) == []
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's private 0600


def test_bad_slabs_are_refused_with_advice(tmp_path: Path) -> None:
    with VolumeTiffWriter(tmp_path / "v.tif", (2, 8, 8), np.uint8) as writer:
        with pytest.raises(VolumeTiffError, match=r"dtype int64 .*astype\(np.uint8\)"):
            writer.write(np.zeros((1, 8, 8), np.int64))
        with pytest.raises(VolumeTiffError, match=r"shape \(1, 8, 9\) does not fit"):
            writer.write(np.zeros((1, 8, 9), np.uint8))
        with pytest.raises(VolumeTiffError, match="must be a NumPy array"):
            writer.write([[[0] * 8] * 8])  # type: ignore[arg-type]
        with pytest.raises(VolumeTiffError, match="0 z-slices"):
            writer.write(np.zeros((0, 8, 8), np.uint8))
        writer.write(np.zeros((2, 8, 8), np.uint8))  # still usable after refusals
    assert read_volume_info(tmp_path / "v.tif")["shape"] == (2, 8, 8)


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "v.tif"
    with pytest.raises(VolumeTiffError, match="cannot write int8"):
        VolumeTiffWriter(path, (2, 8, 8), np.int8)
    with pytest.raises(VolumeTiffError, match="colour volumes are written as uint8"):
        VolumeTiffWriter(path, (2, 8, 8), np.uint16, rgb=True)
    with pytest.raises(VolumeTiffError, match="three positive ints"):
        VolumeTiffWriter(path, (0, 8, 8), np.uint8)
    with pytest.raises(VolumeTiffError, match="voxel size must be a positive"):
        VolumeTiffWriter(path, (2, 8, 8), np.uint8, voxel_size=-1.0)
    for unit in ("furlong", "\u00b5m", ""):
        with pytest.raises(VolumeTiffError, match="not offered: use one of nm, um, mm, cm, m$"):
            VolumeTiffWriter(path, (2, 8, 8), np.uint8, unit=unit)
    with pytest.raises(VolumeTiffError, match="low <= high"):
        VolumeTiffWriter(path, (2, 8, 8), np.uint8, display_range=(2, 0))
    with pytest.raises(VolumeTiffError, match="not .Z, Y, X. or"):
        write_volume_tiff(path, np.zeros((8, 8), np.uint8))
    with (
        pytest.raises(VolumeTiffError, match="is missing"),
        VolumeTiffWriter(tmp_path / "no" / "v.tif", (1, 8, 8), np.uint8),
    ):
        pass
    with pytest.raises(RuntimeError, match="context manager"):
        VolumeTiffWriter(path, (1, 8, 8), np.uint8).write(np.zeros((1, 8, 8), np.uint8))


_MEMORY_SCRIPT = textwrap.dedent(
    """
    import json, resource, sys
    import numpy as np
    from microforge.storage.tiff import VolumeTiffWriter

    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    options = json.loads(sys.argv[2])
    with VolumeTiffWriter(sys.argv[1], (256, 1024, 1024), np.uint8, **options) as writer:
        for z in range(0, 256, 16):
            writer.write(np.full((16, 1024, 1024), z % 251, np.uint8))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print((peak - baseline) * 1024)  # ru_maxrss is in KiB on Linux
    """
)


@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss units differ off Linux")
@pytest.mark.timeout(60)
@pytest.mark.parametrize("layout", sorted(_LAYOUTS))
def test_memory_stays_bounded_by_the_slab(tmp_path: Path, layout: str) -> None:
    """256 MiB of data written in 16 MiB slabs must not cost anything like 256 MiB, as an
    ImageJ hyperstack or as OME-TIFF (compressed or BigTIFF)."""
    path = tmp_path / "big.tif"
    options = json.dumps({**_LAYOUTS[layout], "voxel_size": 0.5})
    result = subprocess.run(
        [sys.executable, "-c", _MEMORY_SCRIPT, str(path), options],
        capture_output=True,
        text=True,
        timeout=50,
        check=True,
    )
    growth = int(result.stdout.strip())
    assert growth < 100 * 2**20, f"peak RSS grew by {growth / 2**20:.0f} MiB"
    info = read_volume_info(path)
    assert info["shape"] == (256, 1024, 1024)
    with tifffile.TiffFile(path) as tif:
        assert tif.pages[255].asarray()[0, 0] == 240
