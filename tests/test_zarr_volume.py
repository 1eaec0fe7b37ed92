"""OME-Zarr volumes: written slab by slab with a strided pyramid, read back with zarr and
ome_zarr, equal to the TIFF of the same seed, memory flat in the volume's size."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import tifffile
import zarr
from click.testing import CliRunner
from ome_zarr.io import parse_url
from ome_zarr.reader import Reader

from microforge.storage.zarr_volume import VolumeZarrError, VolumeZarrWriter, pyramid_levels


def write_in_slabs(path, volume, thickness, **options):
    with VolumeZarrWriter(path, volume.shape[:3], volume.dtype, **options) as writer:
        for z in range(0, volume.shape[0], thickness):
            writer.write(volume[z : z + thickness])
    return writer


def test_slabs_fill_every_level_by_stride_with_scales_and_units(tmp_path) -> None:
    labels = (np.random.default_rng(0).integers(0, 3, (37, 20, 26)) * 2).astype(np.uint8)
    path = tmp_path / "labels.ome.zarr"
    # Slabs of 7 do not line up with chunks (8) nor with any level's stride.
    write_in_slabs(path, labels, 7, voxel_size=0.5, unit="nm", levels=3, chunk=8)
    group = zarr.open_group(path, mode="r")
    for level in range(3):
        step = 2**level
        assert np.array_equal(group[str(level)][:], labels[::step, ::step, ::step])
    assert set(np.unique(group["2"][:])) <= {0, 2, 4}  # no averaged, invented phases

    node = next(iter(Reader(parse_url(str(path)))()))
    assert [axis["name"] for axis in node.metadata["axes"]] == ["z", "y", "x"]
    assert {axis["unit"] for axis in node.metadata["axes"]} == {"nanometer"}
    scales = [level[0]["scale"] for level in node.metadata["coordinateTransformations"]]
    assert scales == [[0.5] * 3, [1.0] * 3, [2.0] * 3]
    assert [level.shape for level in node.data] == [(37, 20, 26), (19, 10, 13), (10, 5, 7)]


def test_colour_is_stored_channel_first_and_the_pyramid_stops_at_one_chunk(tmp_path) -> None:
    rgb = np.random.default_rng(1).integers(0, 255, (9, 6, 5, 3)).astype(np.uint8)
    path = tmp_path / "rgb.ome.zarr"
    write_in_slabs(path, rgb, 4, rgb=True)
    group = zarr.open_group(path, mode="r")
    assert np.array_equal(group["0"][:], np.moveaxis(rgb, -1, 0))
    axes = group.attrs["ome"]["multiscales"][0]["axes"]
    assert [axis["name"] for axis in axes] == ["c", "z", "y", "x"]
    assert "unit" not in axes[1]  # no voxel size given: voxel units
    assert pyramid_levels((9, 6, 5)) == 1 and pyramid_levels((300, 64, 64)) == 4


def test_an_unfinished_or_failed_store_leaves_nothing(tmp_path) -> None:
    path = tmp_path / "v.ome.zarr"
    with (
        pytest.raises(VolumeZarrError, match="only 4 of 8"),
        VolumeZarrWriter(path, (8, 4, 4), np.uint8) as writer,
    ):
        writer.write(np.zeros((4, 4, 4), np.uint8))
    with pytest.raises(RuntimeError), VolumeZarrWriter(path, (8, 4, 4), np.uint8):
        raise RuntimeError("the generator failed")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(VolumeZarrError, match="furlong"):
        VolumeZarrWriter(path, (8, 4, 4), np.uint8, unit="furlong")


def peak_traced_bytes(path, depth: int) -> int:
    """Peak Python/NumPy allocations while writing a (depth, 128, 128) volume in 16-slabs."""
    slab = np.random.default_rng(2).integers(0, 3, (16, 128, 128)).astype(np.uint8)
    tracemalloc.start()
    try:
        with VolumeZarrWriter(path, (depth, 128, 128), np.uint8, levels=3) as writer:
            for _ in range(depth // 16):
                writer.write(slab)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_does_not_grow_with_the_volume(tmp_path) -> None:
    peak_traced_bytes(tmp_path / "warm.ome.zarr", 16)  # imports and caches, once
    small = peak_traced_bytes(tmp_path / "small.ome.zarr", 64)
    large = peak_traced_bytes(tmp_path / "large.ome.zarr", 1024)  # 16x the voxels
    assert large < 1.5 * small, (small, large)
    assert large < 1024 * 128 * 128 / 2  # far less than the volume itself


def test_generate_writes_the_same_voxels_as_the_tiff_of_the_same_seed(tmp_path) -> None:
    from microforge.cli.main import cli

    from engine_helpers import untrained_generator_file

    image = np.zeros((64, 64), np.uint8)
    image[::3] = 255
    generator = untrained_generator_file(tmp_path / "g.safetensors", image)
    common = ["generate", str(generator), "--shape", "20", "24", "28", "--seed", "5"]
    common += ["--chunk", "12", "--device", "cpu", "--voxel-size", "0.25"]
    runner = CliRunner()
    for name in ("v.tif", "v.ome.zarr"):
        result = runner.invoke(cli, [*common, "--out", str(tmp_path / name)])
        assert result.exit_code == 0, result.output
    assert "OME-Zarr" in result.output
    tiff = tifffile.imread(tmp_path / "v.tif")
    group = zarr.open_group(tmp_path / "v.ome.zarr", mode="r")
    assert np.array_equal(group["0"][:], tiff) and set(np.unique(tiff)) <= {0, 255}
    multiscale = group.attrs["ome"]["multiscales"][0]
    assert multiscale["datasets"][0]["coordinateTransformations"][0]["scale"] == [0.25] * 3
    refused = runner.invoke(cli, [*common, "--out", str(tmp_path / "c.zarr"), "--compress", "zlib"])
    assert refused.exit_code != 0 and "--compress" in refused.output
