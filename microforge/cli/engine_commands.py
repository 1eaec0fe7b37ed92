"""``microforge train`` and ``microforge generate``: the engine on a local machine.

Torch is imported inside the commands so that the rest of the CLI starts fast and the
service commands work on machines without it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
import numpy as np

from microforge.cli.options import unit_option
from microforge.models.run_dir import RunDir
from microforge.units import LENGTH_UNITS

IMAGE_TYPES = ["nphase", "grayscale", "colour"]
ARCHS = ["paper", "reference", "tiny"]


@contextmanager
def user_errors() -> Iterator[None]:
    """Every known failure becomes a one-line message and a non-zero exit."""
    from pydantic import ValidationError

    from microforge.models.devices import DeviceError
    from microforge.models.generator_file import GeneratorFileError
    from microforge.models.phases import DataError
    from microforge.storage.images import ImageError
    from microforge.storage.tiff import VolumeTiffError

    try:
        yield
    except ValidationError as error:
        raise click.ClickException(summarise_validation(error)) from error
    except (ImageError, DataError, GeneratorFileError, VolumeTiffError, DeviceError) as error:
        raise click.ClickException(str(error)) from error
    except FileNotFoundError as error:
        raise click.ClickException(f"file not found: {error.filename}") from error


def summarise_validation(error: Any) -> str:
    parts = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"]) or "config"
        parts.append(f"{where}: {item['msg']}")
    return "invalid settings: " + "; ".join(parts)


def parse_periodic(text: str | None) -> tuple[bool, bool, bool]:
    """'z,x' or 'true,false,true' -> flags for (z, y, x)."""
    if not text:
        return (False, False, False)
    words = [w.strip().lower() for w in text.split(",") if w.strip()]
    if len(words) == 3 and all(w in ("true", "false", "1", "0") for w in words):
        return tuple(w in ("true", "1") for w in words)  # type: ignore[return-value]
    unknown = [w for w in words if w not in ("z", "y", "x")]
    if unknown:
        raise click.BadParameter(
            f"{unknown[0]!r} is not an axis: give axes like 'z,x' or three flags 'true,false,true'",
            param_hint="--periodic",
        )
    return ("z" in words, "y" in words, "x" in words)


@click.command("train")
@click.argument("images", nargs=-1, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Run directory: checkpoints, generator, preview and metrics go here.",
)
@click.option(
    "--type",
    "image_type",
    type=click.Choice(IMAGE_TYPES),
    help="Data type; detected from the images when not given.",
)
@click.option(
    "--arch", type=click.Choice(ARCHS), default=None, help="Network preset (default paper)."
)
@click.option("--iterations", type=int, help="Total critic iterations (default 10000).")
@click.option("--seed", type=int, help="Seed; a seeded CPU run is reproducible bit for bit.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--critic-batch", type=int, help="Real crops and fake volumes per critic step.")
@click.option("--generator-batch", type=int, help="Volumes per generator step (2 x critic).")
@click.option("--lr-generator", type=float)
@click.option("--lr-critic", type=float)
@click.option("--beta1", type=float, help="Adam beta1 of both optimisers (0.9).")
@click.option("--beta2", type=float, help="Adam beta2 of both optimisers (0.99).")
@click.option("--critic-steps", type=int, help="Critic iterations per generator update (5).")
@click.option("--gp-lambda", type=float, help="Gradient penalty weight (10).")
@click.option("--scale-factor", type=float, help="Resize the images first (0.5 = half).")
@click.option("--checkpoint-every", type=int, help="Iterations between checkpoints.")
@click.option("--quality-every", type=int, help="Iterations between fidelity checks; 0 = off.")
@click.option(
    "--early-stop",
    "early_stop_checks",
    type=int,
    help="Stop after this many fidelity checks without improvement.",
)
@click.option("--precision", type=click.Choice(["fp32", "tf32", "bf16"]))
@click.option(
    "--ema-decay",
    type=click.FloatRange(0, 1, max_open=True),
    help="Moving average of the generator's weights for previews, checks and the exported "
    "generators (0.99); 0 = the latest weights.",
)
@click.option(
    "--init",
    type=click.Choice(["dcgan", "pytorch"]),
    help="Weight initialisation (dcgan); pytorch = the public SliceGAN code's.",
)
@click.option(
    "--transposed-kernels",
    type=click.Choice(["lattice_free", "free"]),
    help="lattice_free (default): generator kernels that cannot tile a stride-period "
    "lattice; free: any kernel, as the public SliceGAN code.",
)
@click.option(
    "--channels-last/--no-channels-last",
    default=None,
    help="Channels-last memory layout (may be faster on GPUs in bf16).",
)
@click.option(
    "--pixel-size",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Edge of one pixel of the images: `generate` then writes that voxel size "
    "(divided by --scale-factor) unless told otherwise.",
)
@unit_option("--pixel-size", default=None, note=" (default um)")
@click.option(
    "--pixel-unit",
    type=click.Choice(LENGTH_UNITS),
    default=None,
    hidden=True,
    deprecated="Use --unit instead.",
)
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")
def train_command(
    images: Sequence[Path],
    out: Path,
    resume: bool,
    device: str,
    pixel_size: float | None,
    unit: str | None,
    pixel_unit: str | None,
    **options: Any,
) -> None:
    """Train a generator on IMAGE (isotropic), three images for x, y, z, or a 3D stack.

    With three images, the first is the plane perpendicular to x (rows along z, columns
    along y), the second perpendicular to y (rows z, columns x), the third perpendicular to
    z (rows y, columns x).
    """
    if unit and pixel_unit and unit != pixel_unit:
        raise click.UsageError("--pixel-unit is the old name of --unit: give only --unit")
    unit = unit or pixel_unit or "um"
    pixel = {"pixel_size": pixel_size, "pixel_unit": unit} if pixel_size else {}
    with user_errors():
        _train(list(images), RunDir(out), resume, device, options, pixel)


def _train(
    images: list[Path],
    run: RunDir,
    resume: bool,
    device: str,
    options: dict,
    pixel: dict[str, Any],
) -> None:
    from microforge.models.config import TrainConfig
    from microforge.models.data import prepare_training_data
    from microforge.models.trainer import Trainer, TrainingError
    from microforge.storage.images import read_image

    given = {k: v for k, v in options.items() if v is not None}
    if resume:
        if not run.exists():
            raise click.ClickException(f"{run.root} holds no run to resume: drop --resume")
        manifest = run.read_manifest()
        config_values = {**manifest["config"], **given}
        images = images or [Path(p) for p in manifest["images"]]
        pixel = pixel or {k: manifest[k] for k in ("pixel_size", "pixel_unit") if k in manifest}
    else:
        if run.exists():
            raise click.ClickException(
                f"{run.root} already holds a run: add --resume to continue it, or choose "
                "another --out"
            )
        if not images:
            raise click.ClickException("give one 2D image, three 2D images or one 3D stack")
        config_values = given
    config = TrainConfig(**config_values)
    arrays = [read_image(path) for path in images]
    data = prepare_training_data(arrays, config.image_type, config.scale_factor)
    trainer = Trainer(data, config, device)
    if resume and (checkpoint := run.latest_checkpoint()) is not None:
        try:
            trainer.load_checkpoint(checkpoint)
        except TrainingError as error:
            raise click.ClickException(error.message) from error
    click.echo(f"data: {data.describe()}")
    click.echo(
        f"network: {config.arch}, {trainer.crop}-pixel crops, device {trainer.device}, "
        f"seed {trainer.seed}, starting at iteration {trainer.iteration}"
    )
    run.write_manifest(
        {
            "config": {**trainer.config.model_dump(mode="json"), "seed": trainer.seed},
            "images": [str(p.resolve()) for p in images],
            "data": data.describe(),
            **pixel,
        }
    )
    try:
        _train_loop(trainer, run)
    except TrainingError as error:
        raise click.ClickException(error.message) from error
    except KeyboardInterrupt:
        path = _checkpoint(trainer, run)
        raise click.ClickException(
            f"interrupted at iteration {trainer.iteration}; checkpoint {path.name} written: "
            f"continue with `microforge train --out {run.root} --resume`"
        ) from None
    trainer.export_generator(run.generator)
    if trainer.best is not None:
        trainer.export_generator(run.best_generator, which="best")
    click.echo(f"generator written to {run.generator}")
    _warn_if_collapsed(trainer)


def _describe_quality(record: dict[str, Any]) -> str:
    text = f"score {record['score']:.4f}"
    if record.get("diversity") is not None:
        text += f" diversity {record['diversity']:.2f}"
    return text


def _warn_if_collapsed(trainer: Any) -> None:
    """Say so when the last check found volumes that barely depend on the noise."""
    latest = trainer.export_quality("latest")
    if latest is not None and latest["collapsed"]:
        where = f"diversity {latest['diversity']:.2f} at iteration {latest['iteration']}"
        click.echo(
            f"warning: {where}: the generator barely uses its noise, so every volume repeats "
            "one pattern (the usual first stage of GAN training); train longer "
            "(--resume --iterations N) or with a larger --arch",
            err=True,
        )


def _checkpoint(trainer: Any, run: RunDir) -> Path:
    path = trainer.save_checkpoint(run.checkpoint_path(trainer.iteration))
    run.prune_checkpoints(keep=3)
    return path


def _train_loop(trainer: Any, run: RunDir) -> None:
    from rich.progress import BarColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from microforge.cli.progress_display import progress_display
    from microforge.report.training_preview import render_training_preview
    from microforge.storage.png import write_png

    def write_preview(image: np.ndarray) -> None:
        write_png(run.preview, render_training_preview(image, trainer.quality_history))

    config = trainer.config
    columns = (
        TextColumn("[bold]train"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} it"),
        TextColumn("W {task.fields[wasserstein]}"),
        TextColumn("{task.fields[quality]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    line = "train {completed}/{total} it, W {wasserstein} {quality}"
    with progress_display(columns, line=line) as bar, run.metrics.open("a") as metrics:
        task = bar.add_task(
            "train",
            total=config.iterations,
            completed=trainer.iteration,
            wasserstein="-",
            quality="",
        )

        def on_progress(progress: Any) -> None:
            latest = progress.quality_history[-1] if progress.quality_history else None
            quality = _describe_quality(latest) if latest else ""
            bar.update(
                task,
                completed=progress.iteration,
                wasserstein=f"{progress.wasserstein:+.4f}",
                quality=quality,
            )
            metrics.write(json.dumps({**progress.metrics(), "time": time.time()}) + "\n")
            metrics.flush()
            if progress.iteration % config.preview_every < config.progress_every:
                write_preview(progress.preview())

        while trainer.iteration < config.iterations:
            next_stop = min(
                (trainer.iteration // config.checkpoint_every + 1) * config.checkpoint_every,
                config.iterations,
            )
            reached = trainer.run(until=next_stop, on_progress=on_progress)
            _checkpoint(trainer, run)
            if reached < next_stop:
                break  # early stop
        write_preview(trainer.preview())


@click.command("generate")
@click.argument("source", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--shape",
    nargs=3,
    type=int,
    required=True,
    metavar="Z Y X",
    help="Volume size in voxels (any size).",
)
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(path_type=Path),
    help="TIFF file to write, or an OME-Zarr store (chunked, multiscale; for napari and "
    "other viewers that stream big volumes) when the name ends in .zarr, e.g. volume.ome.zarr.",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--chunk",
    type=int,
    default=None,
    help="Chunk edge in output voxels; 0 = one shot; default sized to the device.",
)
@click.option("--periodic", default=None, help="Periodic axes, e.g. 'z,x' or 'true,false,true'.")
@click.option("--device", default="auto", show_default=True)
@click.option("--best", is_flag=True, help="Use the run's best generator by fidelity score.")
@click.option(
    "--compress",
    type=click.Choice(["zlib", "lzw"]),
    default=None,
    help="Lossless compression; the file is then OME-TIFF (Fiji opens it with Bio-Formats) "
    "instead of an ImageJ hyperstack.",
)
@click.option(
    "--voxel-size",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Voxel edge, stored in the TIFF (default: the run's --pixel-size / --scale-factor, "
    "or the one recorded in the generator file).",
)
@unit_option("--voxel-size")
def generate_command(
    source: Path,
    shape: tuple[int, int, int],
    out: Path,
    seed: int,
    chunk: int | None,
    periodic: str | None,
    device: str,
    best: bool,
    compress: str | None,
    voxel_size: float | None,
    unit: str,
) -> None:
    """Generate a volume from SOURCE (a run directory or a generator file) as a TIFF stack
    or an OME-Zarr store."""
    flags = parse_periodic(periodic)
    with user_errors():
        _generate(source, shape, out, seed, chunk, flags, device, best, compress, voxel_size, unit)


def _generator_path(source: Path, best: bool) -> Path:
    if source.is_file():
        return source
    run = RunDir(source)
    path = run.best_generator if best else run.generator
    if not path.exists():
        raise click.ClickException(
            f"{source} has no {'best ' if best else ''}generator yet: finish training "
            "(or resume it), or give a generator file"
        )
    return path


def _run_voxel_size(source: Path, unit: str) -> tuple[float | None, str]:
    """A run trained with --pixel-size makes voxels of that size over its scale factor."""
    run = RunDir(source)
    if source.is_file() or not run.exists():
        return None, unit
    manifest = run.read_manifest()
    if not manifest.get("pixel_size"):
        return None, unit
    scale = float(manifest["config"].get("scale_factor") or 1.0)
    return manifest["pixel_size"] / scale, manifest.get("pixel_unit") or unit


def _generate(
    source: Path,
    shape: tuple[int, int, int],
    out: Path,
    seed: int,
    chunk: int | None,
    periodic: tuple[bool, bool, bool],
    device: str,
    best: bool,
    compress: str | None,
    voxel_size: float | None,
    unit: str,
) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn

    from microforge.cli.progress_display import progress_display
    from microforge.models.chunk_plan import GenerationError, plan_volume
    from microforge.models.export import load_generator
    from microforge.models.generation import generate_volume
    from microforge.storage.volume_writers import open_volume_writer
    from microforge.storage.zarr_volume import is_zarr_path

    zarr_out = is_zarr_path(out)
    if zarr_out and compress:
        raise click.ClickException(
            "--compress is for TIFF files; an OME-Zarr store's chunks are always compressed"
        )
    loaded = load_generator(_generator_path(source, best), device)
    if voxel_size is None:
        voxel_size, unit = _run_voxel_size(source, unit)
    if voxel_size is None and loaded.info.voxel_size is not None:  # e.g. an imported file
        voxel_size, unit = loaded.info.voxel_size, loaded.info.voxel_unit or unit
    try:
        plan_volume(loaded.network, shape, periodic)
    except GenerationError as error:
        raise click.ClickException(str(error)) from error
    rgb = loaded.image_type == "colour"
    writer = open_volume_writer(
        "ome-zarr" if zarr_out else "tiff",
        out,
        shape,
        loaded,
        voxel_size=voxel_size,
        unit=unit,
        compression=compress,
    )
    columns = (
        TextColumn("[bold]generate"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("chunks"),
        TimeRemainingColumn(),
    )
    line = "generate {completed}/{total} chunks"
    with progress_display(columns, line=line) as bar, writer:
        task = bar.add_task("generate", total=None)
        result = generate_volume(
            loaded,
            shape,
            seed=seed,
            chunk=chunk,
            periodic=periodic,
            write_slab=writer.write,
            on_chunk=lambda done, total: bar.update(task, completed=done, total=total),
            background_writes=writer.overlap_writes,
        )
    size = np.prod(shape) * np.dtype(loaded.output_dtype).itemsize * (3 if rgb else 1)
    kind = "OME-Zarr" if zarr_out else "OME-TIFF" if writer.ome else "ImageJ TIFF"
    click.echo(
        f"wrote {out} ({kind}, {'x'.join(map(str, shape))} {loaded.output_dtype}, "
        f"{size / 2**20:.1f} MiB) in {result.seconds:.1f} s, {result.chunks} chunk(s) of "
        f"edge {result.chunk_edge or 'one-shot'} on {loaded.device}"
    )
