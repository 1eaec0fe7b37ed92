"""Fidelity score, comparison, the `microforge stats` command and the PNG report."""

from __future__ import annotations

import io
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
    wide = {"COLUMNS": "220"}  # one line per phase, whatever the terminal
    result = CliRunner().invoke(cli, ["stats", str(tmp_path / "volume.tif")], env=wide)
    assert result.exit_code == 0, result.output
    measured = CliRunner().invoke(cli, ["stats", str(tmp_path / "volume.tif"), "--json"])
    phases = json.loads(measured.output)["phases"]
    assert "no flow x/y/z" in result.output
    for name, phase in phases.items():  # tortuosity and the share that carries no flow
        row = next(line for line in result.output.splitlines() if line.startswith(f"│ {name} "))
        shares = " / ".join(f"{phase['stagnant_share'][a]:.0%}" for a in "xyz")
        assert f"{phase['tortuosity']['x']:.3g}" in row and shares in row, (row, shares)
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
    from microforge.models.stats.euler import euler_densities

    mine = euler_densities(volume, [255])[0][255]["z"]  # (densities, dispersions)
    theirs = euler_densities(volume[:, :, 3], [255])[0][255]["image"]
    euler = f"{mine:.4g} | {theirs:.4g}"
    assert any("255" in row and "perpendicular to z" in row and euler in row for row in rows)
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


def _three_phases(shape, seed=0) -> np.ndarray:
    field = ndimage.gaussian_filter(np.random.default_rng(seed).standard_normal(shape), 2)
    return (np.digitize(field, np.quantile(field, [0.3, 0.6])) * 100).astype(np.uint8)


@pytest.mark.parametrize("layout", ["isotropic", "anisotropic", "volume"])
def test_a_phase_the_volume_lacks_is_compared_as_an_empty_phase(layout):
    """A young or collapsed generator often makes one phase only: the comparison says how
    far off that is (poor) instead of refusing."""
    truth = _three_phases((32, 32, 32))
    references = {
        "isotropic": [truth[16]],
        "anisotropic": [truth[:, :, 4], truth[:, 6, :], truth[8]],
        "volume": [truth],
    }[layout]
    volume = np.zeros((24, 24, 24), np.uint8)  # phase 0 only
    result = compare_with_references(volume, references)
    assert result["layout"] == layout and result["phase_matching"] == "by value"
    summary = result["summary"]
    assert summary["missing_phases"] == ["100", "200"] and summary["extra_phases"] == []
    assert "no voxel of phases 100, 200" in summary["note"]
    assert summary["verdict"] == "poor"
    assert set(result["phases"]) == {"0", "100", "200"}
    for axis in ("x", "y", "z"):
        reference = references[{"x": 0, "y": 1, "z": 2}[axis] if len(references) == 3 else 0]
        for name in ("100", "200"):
            row = result["phases"][name]["slices"][axis]
            expected = (reference == int(name)).mean()
            assert row["area_fraction"]["volume"] == 0.0
            assert row["area_fraction"]["reference"] == pytest.approx(expected)
            assert row["perimeter_per_area"]["volume"] == 0.0
            assert row["perimeter_per_area"]["reference"] > 0
            for curve in row["tpc"].values():
                assert len(curve["volume"]) == 13 and not any(curve["volume"])
                assert curve["mean_abs_difference"] > 0.05
        # The one phase the volume has fills it: S2 = 1 at every lag.
        for curve in result["phases"]["0"]["slices"][axis]["tpc"].values():
            assert curve["volume"] == [1.0] * 13
    largest = max((truth == v).mean() for v in (100, 200))
    assert summary["fraction_error"] >= largest - 0.1
    if layout == "volume":
        missing = result["phases"]["200"]
        assert missing["volume_fraction"]["volume"] == 0.0
        assert missing["specific_surface_area"]["volume"] == 0.0
        assert missing["specific_surface_area"]["reference"] > 0
        assert all(not any(missing["tpc"][a]["volume"]) for a in ("x", "y", "z"))
        assert "tortuosity" not in missing
    json.dumps(result, allow_nan=False)


def test_a_volume_missing_one_of_three_phases_is_poor_and_says_which():
    truth = _three_phases((32, 32, 32))
    volume = np.where(truth == 200, 100, truth).astype(np.uint8)  # phase 200 never made
    result = compare_with_references(volume, [truth[:, :, 4], truth[:, 6, :], truth[8]])
    summary = result["summary"]
    assert summary["missing_phases"] == ["200"] and summary["extra_phases"] == []
    assert summary["verdict"] == "poor" and summary["fraction_error"] > 0.3
    row = result["phases"]["200"]["slices"]["z"]["area_fraction"]
    assert row == {
        "volume": 0.0,
        "reference": pytest.approx((truth[8] == 200).mean()),
        "difference": pytest.approx(-(truth[8] == 200).mean()),
    }
    # The phase that took its place is compared by value, as usual.
    assert result["phases"]["100"]["slices"]["z"]["area_fraction"]["volume"] == pytest.approx(
        (volume == 100).mean()
    )


def test_a_phase_the_reference_lacks_is_named_and_counted():
    """Before: the volume's extra phase was left out of the errors, with no comparison at
    all (and the PNG report failed on it). Now it is compared with an empty phase."""
    truth = _three_phases((32, 32, 32))
    image = np.where(truth[16] == 200, 100, truth[16]).astype(np.uint8)  # no phase 200
    result = compare_with_references(truth, [image])
    summary = result["summary"]
    assert summary["extra_phases"] == ["200"] and summary["missing_phases"] == []
    assert "phase 200 of the volume is not in the training image" in summary["note"]
    extra = result["phases"]["200"]["slices"]
    assert set(extra) == {"x", "y", "z"}
    fraction = extra["x"]["area_fraction"]
    assert fraction["volume"] == pytest.approx((truth == 200).mean())
    assert fraction["reference"] == 0.0
    assert summary["fraction_error"] >= (truth == 200).mean()
    assert not any(extra["x"]["tpc"]["y"]["reference"])
    assert summary["verdict"] == "poor"
    from microforge.models.stats import microstructure_statistics
    from microforge.report import render_report_png

    buffer = io.BytesIO()
    stats = {"volume": microstructure_statistics(truth, tortuosity=False), "comparison": result}
    render_report_png(truth, [image], stats, buffer)
    assert buffer.getvalue()[:8] == b"\x89PNG\r\n\x1a\n"


def test_phase_sets_of_the_same_size_are_still_matched_in_sorted_order():
    truth = _three_phases((32, 32, 32))
    relabelled = (truth // 100).astype(np.uint8)  # 0, 1, 2 instead of 0, 100, 200
    result = compare_with_references(relabelled, [truth[16]])
    assert result["phase_matching"] == "by order"
    assert set(result["phases"]) == {"0", "1", "2"}
    assert result["summary"]["missing_phases"] == [] == result["summary"]["extra_phases"]
    assert "note" not in result["summary"]
    same = compare_with_references(truth, [truth[16]])["summary"]
    assert result["summary"]["fraction_error"] == pytest.approx(same["fraction_error"])


def test_cli_table_names_the_phases_the_volume_lacks(tmp_path):
    from microforge.cli.main import cli

    tifffile.imwrite(tmp_path / "volume.tif", np.zeros((16, 16, 16), np.uint8))
    Image.fromarray(_three_phases((1, 40, 40))[0]).save(tmp_path / "train.png")
    args = ["stats", str(tmp_path / "volume.tif"), "--no-tortuosity", "--reference"]
    result = CliRunner(env={"COLUMNS": "200"}).invoke(
        cli, [*args, str(tmp_path / "train.png"), "--report", str(tmp_path / "report.png")]
    )
    assert result.exit_code == 0, result.output
    assert "poor" in result.output and "no voxel of phases 100, 200" in result.output
    with Image.open(tmp_path / "report.png") as png:
        assert png.format == "PNG"


def _without_euler(stats: dict, comparison: dict) -> dict:
    """A report as stored before the Euler error: no Euler figure anywhere."""
    old = json.loads(json.dumps({**stats, "comparison": comparison}))
    for phase in old["phases"].values():
        phase.pop("euler_density", None)
        phase.pop("euler_dispersion", None)
    for phase in old["comparison"]["phases"].values():
        for row in phase["slices"].values():
            row.pop("euler_density")
    summary = old["comparison"]["summary"]
    for key in ("euler_error", "euler_uncertainty"):
        summary.pop(key)
    for limits in (*summary["thresholds"].values(), *summary["base_thresholds"].values()):
        limits.pop("euler_error")
    return old


def test_reports_made_before_the_euler_error_still_print_and_draw(capsys, monkeypatch):
    """Stored reports and comparison records made before the Euler error have none of its
    keys: the CLI table (``microforge remote report`` prints stored reports) shows "-",
    the PNG draws "-", and a comparison from such statistics still runs."""
    from microforge.cli.stats_table import print_statistics_table
    from microforge.models.stats import microstructure_statistics
    from microforge.report import render_report_png

    monkeypatch.setenv("COLUMNS", "200")  # rich wraps the verdict line at 80 columns
    volume = _blobs((24, 24, 24))
    references = [volume[:, :, 3]]
    stats = microstructure_statistics(volume, tortuosity=False)
    comparison = compare_with_references(volume, references, volume_stats=stats)
    assert comparison["summary"]["euler_error"] is not None
    old = _without_euler(stats, comparison)
    print_statistics_table(old, "old")
    printed = capsys.readouterr().out
    assert "Euler error - ->" in printed
    rows = [line for line in printed.splitlines() if "perpendicular to" in line]
    assert len(rows) == 6 and all("-" in row for row in rows)
    buffer = io.BytesIO()
    old_stats = {k: v for k, v in old.items() if k != "comparison"}
    render_report_png(
        volume, references, {"volume": old_stats, "comparison": old["comparison"]}, buffer
    )
    assert buffer.getvalue()[:8] == b"\x89PNG\r\n\x1a\n"
    # Statistics stored without Euler figures: compared as density 0, no dispersion.
    again = compare_with_references(volume, references, volume_stats=old_stats)
    assert again["summary"]["verdict"] in {"good", "fair", "poor"}
    print_statistics_table({**stats, "comparison": comparison}, "new")
    assert f"Euler error {comparison['summary']['euler_error']:.3f} ->" in capsys.readouterr().out
