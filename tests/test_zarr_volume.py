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
from ome_zarr.reader import Label, Multiscales, Reader

from microforge.storage.zarr_volume import (
    VolumeZarrError,
    VolumeZarrWriter,
    pyramid_levels,
    read_zarr_slice,
)


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


def test_an_n_phase_volume_is_a_label_image_with_one_colour_per_phase(tmp_path) -> None:
    """image-label on the store's own multiscales group (no labels/ copy of the voxels):
    ome_zarr reads it as a label image with the phases' values, colours and indices."""
    phases = [7, 100, 255]
    labels = np.array(phases, np.uint8)[np.random.default_rng(3).integers(0, 3, (12, 10, 9))]
    path = tmp_path / "labels.ome.zarr"
    write_in_slabs(path, labels, 5, phases=phases, display_range=(7, 255), chunk=8)

    ome = zarr.open_group(path, mode="r").attrs["ome"]
    assert "omero" not in ome  # napari would give a Labels layer its window and colour map
    colours = ome["image-label"]["colors"]
    assert colours == [
        {"label-value": 7, "rgba": [0x1F, 0x77, 0xB4, 255]},
        {"label-value": 100, "rgba": [0xFF, 0x7F, 0x0E, 255]},
        {"label-value": 255, "rgba": [0x2C, 0xA0, 0x2C, 255]},
    ]
    assert sorted(zarr.open_group(path, mode="r").keys()) == ["0"]  # the voxels once
    nodes = list(Reader(parse_url(str(path)))())
    assert len(nodes) == 1
    node = nodes[0]
    assert node.load(Label) is not None and node.load(Multiscales) is not None
    assert node.metadata["color"] == {
        7: [0x1F / 255, 0x77 / 255, 0xB4 / 255, 1.0],
        100: [1.0, 0x7F / 255, 0x0E / 255, 1.0],
        255: [0x2C / 255, 0xA0 / 255, 0x2C / 255, 1.0],
    }
    assert node.metadata["properties"] == {7: {"phase": 0}, 100: {"phase": 1}, 255: {"phase": 2}}
    assert np.array_equal(np.asarray(node.data[0]), labels)

    grey = tmp_path / "grey.ome.zarr"
    write_in_slabs(grey, labels, 5, display_range=(7, 255))
    ome = zarr.open_group(grey, mode="r").attrs["ome"]
    assert "image-label" not in ome and ome["omero"]["channels"][0]["window"]["start"] == 7
    node = next(iter(Reader(parse_url(str(grey)))()))
    assert node.load(Label) is None and "color" not in node.metadata

    for bad, match in (
        ({"phases": [0, 1.5]}, "not an integer"),
        ({"phases": [0, 256]}, "not an integer that uint8"),
        ({"phases": [1, 1]}, "distinct"),
        ({"phases": [0, 1], "rgb": True}, "colour"),
    ):
        with pytest.raises(VolumeZarrError, match=match):
            VolumeZarrWriter(tmp_path / "bad.ome.zarr", (4, 4, 4), np.uint8, **bad)
    with pytest.raises(VolumeZarrError, match="float32"):
        VolumeZarrWriter(tmp_path / "bad.ome.zarr", (4, 4, 4), np.float32, phases=[0, 1])


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


def test_a_slice_of_a_store_is_the_plane_of_the_volume_for_every_axis(tmp_path) -> None:
    """read_zarr_slice (what slice.png reads): (rows, columns[, 3]) as a TIFF plane is."""
    rng = np.random.default_rng(4)
    rgb = rng.integers(0, 255, (11, 9, 13, 3)).astype(np.uint8)
    grey = rng.integers(0, 65535, (11, 9, 13)).astype(np.uint16)
    for name, volume, options in (("rgb", rgb, {"rgb": True}), ("grey", grey, {})):
        path = tmp_path / f"{name}.ome.zarr"
        write_in_slabs(path, volume, 4, chunk=4, **options)
        for axis, index in (("z", 10), ("y", 0), ("x", 6)):
            plane = read_zarr_slice(path, axis, index)
            assert np.array_equal(plane, np.take(volume, index, axis="zyx".index(axis)))
    # Only the chunks the plane crosses are read: a broken chunk elsewhere is not touched.
    (tmp_path / "grey.ome.zarr" / "0" / "c" / "0" / "0" / "0").write_bytes(b"not a chunk")
    assert np.array_equal(read_zarr_slice(tmp_path / "grey.ome.zarr", "z", 10), grey[10])
    with pytest.raises(RuntimeError, match="decompression"):
        read_zarr_slice(tmp_path / "grey.ome.zarr", "z", 0)
    with pytest.raises(VolumeZarrError, match="not an OME-Zarr volume store"):
        read_zarr_slice(tmp_path / "missing.ome.zarr", "z", 0)


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


def test_generate_writes_the_same_voxels_as_the_tiff_of_the_same_seed(
    tmp_path, monkeypatch
) -> None:
    """...and writes each OME-Zarr slab before generating the next (overlap_writes): a
    compressed write is slow, and overlapping it kept two slabs in memory."""
    import threading

    from microforge.cli.main import cli
    from microforge.storage.tiff import VolumeTiffWriter

    from engine_helpers import untrained_generator_file

    threads: dict[str, set[str]] = {"tiff": set(), "zarr": set()}
    for name, writer_class in (("tiff", VolumeTiffWriter), ("zarr", VolumeZarrWriter)):

        def write(self, slab, _name=name, _write=writer_class.write):  # noqa: ANN001, ANN202
            threads[_name].add(threading.current_thread().name)
            return _write(self, slab)

        monkeypatch.setattr(writer_class, "write", write)

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
    assert threads["zarr"] == {threading.main_thread().name}  # the generator waited
    assert threads["tiff"] and threading.main_thread().name not in threads["tiff"]
    tiff = tifffile.imread(tmp_path / "v.tif")
    group = zarr.open_group(tmp_path / "v.ome.zarr", mode="r")
    assert np.array_equal(group["0"][:], tiff) and set(np.unique(tiff)) <= {0, 255}
    multiscale = group.attrs["ome"]["multiscales"][0]
    assert multiscale["datasets"][0]["coordinateTransformations"][0]["scale"] == [0.25] * 3
    refused = runner.invoke(cli, [*common, "--out", str(tmp_path / "c.zarr"), "--compress", "zlib"])
    assert refused.exit_code != 0 and "--compress" in refused.output
