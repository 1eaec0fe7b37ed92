"""Fidelity score, comparison, the `microforge stats` command and the PNG report."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
from click.testing import CliRunner
from PIL import Image
from scipy import ndimage

from microforge.models.stats import compare_with_references, fidelity_score
from microforge.models.stats.fidelity import fidelity_score_grayscale


def _blobs(shape, threshold=0.0, sigma=2.0, seed=0) -> np.ndarray:
    field = ndimage.gaussian_filter(np.random.default_rng(seed).standard_normal(shape), sigma)
    return (field > threshold * field.std()).astype(np.uint8)


def test_fidelity_is_zero_for_the_same_statistics_and_grows_with_errors():
    volume = _blobs((48, 48, 48))
    as_3d = fidelity_score(volume, [volume], 2)
    assert as_3d["score"] == pytest.approx(0.0, abs=1e-9)
    image = _blobs((300, 300), seed=1)
    start = time.perf_counter()
    close = fidelity_score(_blobs((64, 64, 64), seed=2), [image], 2)
    assert time.perf_counter() - start < 0.2
    coarse = fidelity_score(_blobs((64, 64, 64), sigma=5.0, seed=2), [image], 2)
    shifted = fidelity_score(_blobs((64, 64, 64), threshold=0.8, seed=2), [image], 2)
    assert close["score"] < coarse["score"] and close["score"] < shifted["score"]
    assert shifted["fraction_error"] > 0.1
    assert set(close["per_axis"]) == {"x", "y", "z"}
    with pytest.raises(ValueError, match="phase indices"):
        fidelity_score(volume * 255, [image], 2)


def test_anisotropy_error_shows_on_the_right_axes():
    # Stretched along z only: slices perpendicular to z (rows y, columns x) stay right.
    field = ndimage.gaussian_filter(
        np.random.default_rng(0).standard_normal((64, 64, 64)), (6.0, 1.5, 1.5)
    )
    volume = (field > 0).astype(np.uint8)
    image = _blobs((256, 256), sigma=1.5, seed=3)
    per_axis = fidelity_score(volume, [image], 2)["per_axis"]
    assert per_axis["z"]["s2_error"] < per_axis["x"]["s2_error"]
    assert per_axis["z"]["s2_error"] < per_axis["y"]["s2_error"]


def test_greyscale_fidelity():
    rng = np.random.default_rng(0)
    reference = rng.random((200, 200)).astype(np.float32)
    same = fidelity_score_grayscale(rng.random((32, 32, 32)).astype(np.float32), [reference])
    dark = fidelity_score_grayscale(rng.random((32, 32, 32)).astype(np.float32) * 0.5, [reference])
    assert same["score"] < 0.01 < dark["histogram_distance"]


def test_comparison_with_three_images_reports_every_axis():
    volume = _blobs((40, 40, 40)) * 255
    images = [volume[:, :, 5], volume[:, 7, :], volume[9]]
    result = compare_with_references(volume, images, tortuosity=False)
    assert result["layout"] == "anisotropic"
    assert set(result["phases"]["255"]["slices"]) == {"x", "y", "z"}
    assert result["summary"]["verdict"] in {"good", "fair", "poor"}
    with pytest.raises(ValueError, match="same labels"):
        compare_with_references(volume, [np.array([[1, 2], [3, 3]], np.uint8)])


def _write_volume(path: Path) -> np.ndarray:
    volume = (_blobs((24, 24, 24)) * 255).astype(np.uint8)
    tifffile.imwrite(path, volume)
    return volume


def test_cli_json_and_report(tmp_path):
    from microforge.cli.main import cli

    volume = _write_volume(tmp_path / "volume.tif")
    Image.fromarray(volume[:, :, 3]).save(tmp_path / "train.png")
    report = tmp_path / "report.png"
    result = CliRunner().invoke(
        cli,
        [
            "stats",
            str(tmp_path / "volume.tif"),
            "--reference",
            str(tmp_path / "train.png"),
            "--json",
            "--voxel-size",
            "2",
            "--no-tortuosity",
            "--report",
            str(report),
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert set(data["phases"]) == {"0", "255"}
    phase = data["phases"]["255"]
    assert phase["volume_fraction"] == pytest.approx((volume == 255).mean())
    assert set(phase["tpc"]) == {"x", "y", "z"} and len(phase["tpc"]["x"]) == 13
    assert "tortuosity" not in phase
    assert data["comparison"]["layout"] == "isotropic"
    with Image.open(report) as png:
        assert png.format == "PNG" and png.size[0] >= 800 and png.size[1] >= 600


def test_cli_table_with_tortuosity_and_errors(tmp_path):
    from microforge.cli.main import cli

    _write_volume(tmp_path / "volume.tif")
    result = CliRunner().invoke(cli, ["stats", str(tmp_path / "volume.tif")])
    assert result.exit_code == 0, result.output
    assert "255" in result.output
    bad = CliRunner().invoke(cli, ["stats", str(tmp_path / "volume.tif"), "--voxel-size", "-1"])
    assert bad.exit_code != 0 and "positive" in bad.output


def test_cli_table_sets_each_axis_slices_beside_the_training_image(tmp_path):
    from microforge.cli.main import cli

    volume = _write_volume(tmp_path / "volume.tif")
    Image.fromarray(volume[:, :, 3]).save(tmp_path / "train.png")
    args = ["stats", str(tmp_path / "volume.tif"), "--no-tortuosity", "--reference"]
    runner = CliRunner(env={"COLUMNS": "200"})  # rich wraps narrow tables otherwise
    result = runner.invoke(cli, [*args, str(tmp_path / "train.png")])
    assert result.exit_code == 0, result.output
    rows = [line for line in result.output.splitlines() if "perpendicular to" in line]
    assert len(rows) == 6  # two phases x three axes
    fraction = f"{(volume == 255).mean():.4g} | {(volume[:, :, 3] == 255).mean():.4g}"
    assert any("255" in row and "perpendicular to z" in row and fraction in row for row in rows)
    assert "against the isotropic reference" in result.output

    rng = np.random.default_rng(3)
    grey = rng.integers(0, 256, size=(12, 14, 16), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "grey.tif", grey)
    Image.fromarray(grey[6]).save(tmp_path / "grey.png")
    args = ["stats", str(tmp_path / "grey.tif"), "--no-tortuosity", "--reference"]
    result = runner.invoke(cli, [*args, str(tmp_path / "grey.png")])
    assert result.exit_code == 0, result.output
    assert "histogram distance" in result.output
    assert sum("perpendicular to" in line for line in result.output.splitlines()) == 3


def test_cli_reference_scale_compares_a_voxel_with_a_training_pixel(tmp_path):
    """A generator trained with --scale-factor 0.5 makes voxels of two raw pixels: the
    upload, rescaled as training did, is what the volume must be compared with."""
    from microforge.cli.main import cli

    volume = _write_volume(tmp_path / "volume.tif")
    as_trained = volume[:, :, 3]
    Image.fromarray(as_trained).save(tmp_path / "as_trained.png")
    raw = np.kron(as_trained, np.ones((2, 2), dtype=np.uint8))  # the upload, at 2x
    Image.fromarray(raw).save(tmp_path / "raw.png")

    def comparison(reference: str, scale: str) -> dict:
        args = ["stats", str(tmp_path / "volume.tif"), "--json", "--no-tortuosity"]
        args += ["--reference", str(tmp_path / reference), "--reference-scale", scale]
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 0, result.output
        return json.loads(result.output)["comparison"]

    rescaled = comparison("raw.png", "0.5")
    assert rescaled == comparison("as_trained.png", "1")
    assert rescaled["summary"]["s2_error"] < comparison("raw.png", "1")["summary"]["s2_error"]
