"""Physical units end to end: `microforge stats` reads the voxel size a volume stores
(ImageJ or OME-TIFF), and every command refuses a unit it does not know with one line
that lists the valid ones."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
from click.testing import CliRunner

from microforge.cli.main import cli
from microforge.storage.tiff import write_volume_tiff
from microforge.units import LENGTH_UNITS, UnitError, check_length_unit, normalise_unit

from engine_helpers import blobs

VALID = "nm, um, mm, cm, m"


def _labels() -> np.ndarray:
    return (blobs((12, 16, 16)) * 2).astype(np.uint8)  # labels 0 and 2


def _stats(*args: object) -> tuple[dict, str]:
    result = CliRunner().invoke(cli, ["stats", *map(str, args), "--json", "--no-tortuosity"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout), result.stderr


@pytest.mark.parametrize("compression", [None, "zlib"], ids=["imagej", "ome"])
def test_stats_reports_the_stored_voxel_size(tmp_path: Path, compression: str | None) -> None:
    path = tmp_path / "volume.tif"
    volume = _labels()
    write_volume_tiff(path, volume, voxel_size=0.5, unit="nm", compression=compression)
    stored, said = _stats(path)
    assert (stored["voxel_size"], stored["length_unit"]) == (0.5, "nm")
    assert "voxel size 0.5 nm, read from volume.tif" in said
    voxels, _ = _stats(path, "--voxels")
    assert (voxels["voxel_size"], voxels["length_unit"]) == (None, "voxel")
    # Physical lengths are the voxel ones times the voxel size.
    for phase, values in voxels["phases"].items():
        scaled = stored["phases"][phase]["specific_surface_area"]
        assert scaled == pytest.approx(values["specific_surface_area"] / 0.5)
    told, _ = _stats(path, "--voxel-size", 2, "--unit", "um")
    assert (told["voxel_size"], told["length_unit"]) == (2.0, "um")


def test_stats_without_a_stored_size_or_with_non_cubic_voxels_stays_in_voxels(tmp_path):
    plain = tmp_path / "plain.tif"
    tifffile.imwrite(plain, _labels())
    assert _stats(plain)[0]["length_unit"] == "voxel"
    flat = tmp_path / "flat.tif"
    tifffile.imwrite(
        flat,
        _labels(),
        imagej=True,
        resolution=(2, 2),
        metadata={"axes": "ZYX", "spacing": 3, "unit": "um"},
    )
    result, said = _stats(flat)
    assert result["length_unit"] == "voxel" and "not cubes" in said


def test_stats_option_conflicts_are_usage_errors(tmp_path: Path) -> None:
    path = tmp_path / "volume.tif"
    write_volume_tiff(path, _labels())
    for args, message in (
        (["--voxels", "--voxel-size", "1"], "--voxels means no voxel size"),
        (["--unit", "nm"], "give both"),
    ):
        result = CliRunner().invoke(cli, ["stats", str(path), *args])
        assert result.exit_code == 2 and message in result.output


def test_the_one_list_of_units() -> None:
    assert LENGTH_UNITS == ("nm", "um", "mm", "cm", "m")
    assert check_length_unit("um") == "um"
    with pytest.raises(UnitError, match=f"^unit 'furlong' is not offered: use one of {VALID}$"):
        check_length_unit("furlong")
    assert normalise_unit("micron") == normalise_unit("\u00b5m") == "um"
    assert normalise_unit("pixel") is None and normalise_unit("inch") == "inch"


@pytest.mark.parametrize(
    "args",
    [
        ["train", "{tmp}/x.png", "--out", "{tmp}/run", "--pixel-size", "1", "--unit", "furlong"],
        [
            "generate",
            "{tmp}",
            "--shape",
            "4",
            "4",
            "4",
            "--out",
            "{tmp}/v.tif",
            "--unit",
            "furlong",
        ],
        ["stats", "{tmp}/x.png", "--voxel-size", "1", "--unit", "furlong"],
        ["remote", "--key", "mf_k", "train", "{tmp}/x.png", "--unit", "furlong"],
        ["remote", "--key", "mf_k", "generate", "gen_x", "--shape", "4", "4", "4", "--unit", "ft"],
    ],
    ids=["train", "generate", "stats", "remote-train", "remote-generate"],
)
def test_every_command_refuses_an_unknown_unit_listing_the_valid_ones(tmp_path, args) -> None:
    (tmp_path / "x.png").write_bytes(b"")
    result = CliRunner().invoke(cli, [a.format(tmp=tmp_path) for a in args])
    assert result.exit_code == 2
    error = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(error) == 1 and "'nm', 'um', 'mm', 'cm', 'm'" in error[0], result.output


def test_the_old_pixel_unit_option_still_works_but_is_hidden() -> None:
    help_text = CliRunner().invoke(cli, ["train", "--help"]).output
    assert "--unit" in help_text and "--pixel-unit" not in help_text
    conflict = CliRunner().invoke(
        cli, ["train", "x.png", "--out", "r", "--unit", "nm", "--pixel-unit", "um"]
    )
    assert conflict.exit_code == 2 and "give only --unit" in conflict.output


def test_the_web_pages_offer_the_same_units() -> None:
    import re

    from microforge.web import __file__ as web_init

    source = (Path(web_init).parent / "static" / "js" / "format.js").read_text()
    labels = re.search(r"UNIT_LABEL = \{([^}]*)\}", source)
    assert labels is not None
    assert tuple(re.findall(r"(\w+):", labels.group(1))) == LENGTH_UNITS


def test_a_generator_shows_its_labels_over_their_own_range() -> None:
    from types import SimpleNamespace

    from microforge.models.export import LoadedGenerator

    def loaded(image_type, phases=(), value_range=(0.0, 1.0), dtype="uint8"):
        info = SimpleNamespace(
            image_type=image_type, phases=list(phases), value_range=value_range, output_dtype=dtype
        )
        return LoadedGenerator(net=None, info=info, device=None)

    assert loaded("nphase", [0, 1, 2]).display_range == (0, 2)
    assert loaded("nphase", [100, 7, 255]).display_range == (7, 255)
    assert loaded("grayscale", value_range=(12.0, 900.0)).display_range == (12, 255)
    assert loaded("grayscale", value_range=(12.0, 900.0), dtype="uint16").display_range == (12, 900)
    assert loaded("colour").display_range is None
