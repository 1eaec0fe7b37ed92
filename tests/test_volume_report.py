"""build_volume_report: real TIFF files in, the report JSON and PNG out."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from microforge.report.volume_report import (
    build_volume_report,
    read_central_sample,
    report_error,
)
from microforge.storage.tiff import write_volume_tiff


def _volume(shape, seed=0) -> np.ndarray:
    field = ndimage.gaussian_filter(np.random.default_rng(seed).standard_normal(shape), 2)
    return (np.digitize(field, np.quantile(field, [0.3, 0.6])) * 100).astype(np.uint8)


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(io.BytesIO(data)) as image:
        return image.size


def test_report_against_three_training_images(tmp_path):
    volume = _volume((40, 40, 40))
    path = tmp_path / "volume.tif"
    write_volume_tiff(path, volume)
    references = [volume[:, :, 5], volume[:, 9, :], volume[11]]
    report, png = build_volume_report(path, references)
    json.dumps(report, allow_nan=False)  # storable as JSON in PostgreSQL
    assert report["sampled"] is None
    phases = report["statistics"]["phases"]
    assert set(phases) == {"0", "100", "200"}
    assert phases["100"]["volume_fraction"] == pytest.approx((volume == 100).mean())
    assert report["comparison"]["layout"] == "anisotropic"
    assert report["verdict"] in ("good", "fair", "poor")
    assert report["summary"]["verdict"] == report["verdict"]
    assert _png_size(png) == (1400, 1100)


@pytest.mark.parametrize("compression", [None, "zlib"])
def test_big_volume_is_sampled_from_its_middle(tmp_path, compression):
    volume = _volume((30, 50, 44), seed=1)
    path = tmp_path / "volume.tif"
    write_volume_tiff(path, volume, compression=compression)
    sample, shape = read_central_sample(path, max_edge=20)
    assert shape == (30, 50, 44)
    assert np.array_equal(sample, volume[5:25, 15:35, 12:32])
    report, png = build_volume_report(path, [volume[15]], max_edge=20)
    assert report["sampled"]["shape"] == [20, 20, 20]
    assert report["sampled"]["of"] == [30, 50, 44]
    assert report["statistics"]["shape"] == [20, 20, 20]
    assert report["comparison"]["layout"] == "isotropic"
    assert _png_size(png)[0] > 0


def test_without_references_statistics_only(tmp_path):
    volume = _volume((24, 24, 24), seed=2)
    path = tmp_path / "volume.tif"
    write_volume_tiff(path, volume)
    report, png = build_volume_report(path, [], voxel_size=0.5)
    assert report["verdict"] is None and report["comparison"] is None
    assert "no training images" in report["note"]
    assert report["statistics"]["voxel_size"] == 0.5
    assert "triple_phase_boundary_density" in report["statistics"]
    assert _png_size(png) == (1200, 750)


def test_greyscale_volume_and_errors(tmp_path):
    rng = np.random.default_rng(3)
    grey = ndimage.gaussian_filter(rng.random((20, 22, 24)), 1.5)
    grey = (grey / grey.max() * 65535).astype(np.uint16)
    path = tmp_path / "grey.tif"
    write_volume_tiff(path, grey)
    report, _ = build_volume_report(path, [grey[10]], kind="grayscale")
    assert report["statistics"]["kind"] == "grayscale"
    assert report["comparison"]["layout"] == "isotropic"
    colour = tmp_path / "colour.tif"
    write_volume_tiff(colour, np.zeros((4, 5, 6, 3), np.uint8), rgb=True)
    with pytest.raises(ValueError, match="colour"):
        build_volume_report(colour, [])
    error = report_error(ValueError("boom"))
    assert error["error"]["code"] == "report_failed"
    assert "boom" in error["error"]["message"]


@pytest.mark.parametrize("one_image", [True, False])
def test_a_one_phase_volume_gets_a_poor_verdict_not_an_error(tmp_path, one_image):
    """An early or collapsed generator makes one phase only; the report must say so (and
    how far off it is), not fail with report_failed."""
    truth = _volume((40, 40, 40))
    path = tmp_path / "volume.tif"
    write_volume_tiff(path, np.full((24, 24, 24), 100, np.uint8))
    references = [truth[20]] if one_image else [truth[:, :, 5], truth[:, 9, :], truth[11]]
    report, png = build_volume_report(path, references, kind="nphase")
    json.dumps(report, allow_nan=False)
    assert report["verdict"] == "poor" and report["summary"]["verdict"] == "poor"
    assert report["summary"]["missing_phases"] == ["0", "200"]
    assert report["summary"]["extra_phases"] == []
    assert "no voxel of phases 0, 200" in report["summary"]["note"]
    assert list(report["statistics"]["phases"]) == ["100"]
    assert set(report["comparison"]["phases"]) == {"0", "100", "200"}
    assert report["summary"]["fraction_error"] > 0.25
    assert _png_size(png) == (1400, 1100)
