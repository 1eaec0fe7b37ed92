"""``microforge import-slicegan``: a generator trained by the public SliceGAN code as a
MicroForge generator file, usable by ``generate``, ``remote import`` and the service.

Torch-free, like the conversion itself (``microforge.models.slicegan_import``).
"""

from __future__ import annotations

from pathlib import Path

import click

from microforge.cli.engine_commands import IMAGE_TYPES, user_errors
from microforge.cli.options import unit_option


def parse_phases(text: str | None) -> list[int] | None:
    """'0,128,255' -> [0, 128, 255]; None when not given."""
    if text is None or not text.strip():
        return None
    try:
        return [int(word) for word in text.split(",") if word.strip()]
    except ValueError as error:
        raise click.BadParameter(
            f"{text!r} is not a list of integer label values such as 0,128,255",
            param_hint="--phases",
        ) from error


def slicegan_options(command):  # noqa: ANN001, ANN201 - a click decorator
    """--type, --phases, --pixel-size, --unit: what the SliceGAN files cannot record."""
    for option in reversed(
        [
            click.option(
                "--type",
                "image_type",
                type=click.Choice(IMAGE_TYPES),
                default=None,
                help="What the generator makes (default from its channels: 1 = grayscale, "
                "2 or 4+ = nphase; 3 channels must be told: colour or nphase).",
            ),
            click.option(
                "--phases",
                default=None,
                help="n-phase label values written to the volume, e.g. 0,128,255 (default 0..n-1).",
            ),
            click.option(
                "--pixel-size",
                type=click.FloatRange(min=0, min_open=True),
                default=None,
                help="Edge of one training pixel (= one generated voxel), recorded in the file.",
            ),
            unit_option("--pixel-size", name="pixel_unit"),
        ]
    ):
        command = option(command)
    return command


@click.command("import-slicegan")
@click.argument("weights", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("params", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Generator file to write (.safetensors).",
)
@slicegan_options
def import_slicegan_command(
    weights: Path,
    params: Path,
    out: Path,
    image_type: str | None,
    phases: str | None,
    pixel_size: float | None,
    pixel_unit: str,
) -> None:
    """Convert WEIGHTS (NAME_Gen.pt) and PARAMS (NAME_params.data), written by the public
    SliceGAN code or downloaded from MicroLib, into a MicroForge generator file.

    Neither file is unpickled as such: only plain tensors and lists of integers are read.
    """
    from microforge.models.slicegan_import import import_slicegan

    with user_errors():
        info = import_slicegan(
            weights,
            params,
            out,
            image_type=image_type,
            phases=parse_phases(phases),
            voxel_size=pixel_size,
            voxel_unit=pixel_unit if pixel_size else None,
        )
    kind = info.network.last_layer.replace("transpose", "all-transposed").replace("_", "-")
    what = (
        f"{info.channels} phases {info.phases}" if info.image_type == "nphase" else info.image_type
    )
    click.echo(
        f"wrote {out}: {what}, {kind} generator, {info.parameters} parameters, "
        f"period {info.network.period} voxels"
    )
