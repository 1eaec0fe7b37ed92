"""``microforge stats``: statistics of a volume or image, optionally against references.

The heavy imports (scipy, taufactor, matplotlib) happen inside the command so that
``microforge --help`` stays fast.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from microforge.cli.options import unit_option
from microforge.cli.stats_table import print_statistics_table

_TRAINING_AXES = ("x", "y", "z")


@click.command("stats")
@click.argument("volume", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--reference",
    "references",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Training image(s): one 2D (isotropic), three 2D perpendicular to x, y, z in that "
    "order, or one 3D volume. Repeat the option for three images.",
)
@click.option(
    "--reference-scale",
    type=click.FloatRange(min=0.01, max=16, min_open=True),
    default=1.0,
    show_default=True,
    help="The --scale-factor the generator was trained with: the references are rescaled "
    "the same way, so that a voxel compares with a training pixel.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option(
    "--voxel-size",
    type=float,
    default=None,
    help="Voxel edge length; default: the one stored in VOLUME (ImageJ or OME-TIFF metadata).",
)
@unit_option("--voxel-size", default=None)
@click.option(
    "--voxels",
    "in_voxels",
    is_flag=True,
    help="Lengths in voxels, whatever voxel size VOLUME stores.",
)
@click.option("--no-tortuosity", is_flag=True, help="Skip tortuosity (slow on large volumes).")
@click.option("--max-lag", type=int, default=None, help="Largest S2 lag in voxels.")
@click.option(
    "--report",
    "report_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write a PNG report here (needs --reference and a 3D VOLUME).",
)
def stats_command(
    volume: Path,
    references: tuple[Path, ...],
    reference_scale: float,
    as_json: bool,
    voxel_size: float | None,
    unit: str | None,
    in_voxels: bool,
    no_tortuosity: bool,
    max_lag: int | None,
    report_path: Path | None,
) -> None:
    """Statistics of VOLUME (3D TIFF, or a 2D image): phase fractions, surface areas,
    two-point correlations, tortuosity; and their comparison with training images.

    Lengths and surface densities are physical when VOLUME stores its voxel size (as
    `microforge generate` writes it), in voxels with --voxels or when it stores none."""
    from microforge.models.stats import compare_with_references, microstructure_statistics
    from microforge.storage.images import ImageError, read_image

    if len(references) not in (0, 1, 3):
        raise click.UsageError("give one --reference (isotropic or 3D) or three (x, y, z)")
    if voxel_size is not None and voxel_size <= 0:
        raise click.BadParameter("must be positive", param_hint="--voxel-size")
    if in_voxels and (voxel_size is not None or unit is not None):
        raise click.UsageError("--voxels means no voxel size: drop --voxel-size and --unit")
    if unit is not None and voxel_size is None:
        raise click.UsageError("--unit names the unit of --voxel-size: give both")
    if report_path is not None and not references:
        raise click.UsageError("--report compares with training images: add --reference")
    try:
        array = read_image(volume)
        reference_arrays = [read_image(path) for path in references]
    except ImageError as error:
        raise click.ClickException(str(error)) from error
    if voxel_size is None and not in_voxels:
        voxel_size, unit = _stored_voxel_size(volume)
    if reference_arrays and reference_scale != 1.0:
        from microforge.models.data import DataError, prepare_training_data

        try:
            data = prepare_training_data(reference_arrays, scale_factor=reference_scale)
        except DataError as error:
            raise click.ClickException(str(error)) from error
        reference_arrays = data.as_images()
    try:
        result = microstructure_statistics(
            array, voxel_size=voxel_size, unit=unit, tortuosity=not no_tortuosity, max_lag=max_lag
        )
        output: dict = dict(result)
        if reference_arrays:
            if array.ndim != 3:
                raise ValueError("comparison needs a 3D VOLUME; this file holds a 2D image")
            output["comparison"] = compare_with_references(
                array,
                reference_arrays,
                volume_stats=result,
                voxel_size=voxel_size,
                tortuosity=False,
                max_lag=max_lag,
            )
        if report_path is not None:
            from microforge.report import render_report_png

            render_report_png(
                array,
                reference_arrays,
                {"volume": result, "comparison": output["comparison"]},
                report_path,
            )
    except ValueError as error:
        raise click.ClickException(str(error)) from error
    if as_json:
        click.echo(json.dumps(output, allow_nan=False, default=_json_default))
        return
    print_statistics_table(output, volume.name)


def _stored_voxel_size(path: Path) -> tuple[float | None, str | None]:
    """The voxel edge and unit VOLUME's TIFF metadata holds, said on stderr; (None, None)
    when it holds none, is not a TIFF, or its voxels are not cubes (one edge needed)."""
    from microforge.storage.tiff import read_volume_info

    try:
        info = read_volume_info(path)
    except Exception:  # noqa: BLE001 - not a TIFF (PNG, JPEG): no stored voxel size
        return None, None
    sizes, unit = info["voxel_size"], info["unit"]
    if sizes is None or unit is None:
        return None, None
    if max(sizes) > min(sizes) * (1 + 1e-6):
        click.echo(
            f"{path.name} stores voxels of {sizes[0]:g} x {sizes[1]:g} x {sizes[2]:g} {unit} "
            "(z, y, x), not cubes: lengths are in voxels (give --voxel-size to choose one)",
            err=True,
        )
        return None, None
    click.echo(
        f"voxel size {sizes[2]:g} {unit}, read from {path.name} (--voxels for voxel units)",
        err=True,
    )
    return sizes[2], unit


def _json_default(value: object) -> object:
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")
