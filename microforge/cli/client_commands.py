"""``microforge remote ...`` commands that run jobs: train, continue, generate, cancel,
download, delete (the group is in ``remote_group``, the read-only views in ``client_views``).

Why: the same walk-through a script does with ``MicroForgeClient`` (upload, train, wait,
generate, download), with a progress bar for people. Results (ids, file paths) go to
stdout so they can be captured; progress and messages go to stderr.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.progress import BarColumn, TaskProgressColumn, TextColumn

from microforge.cli.engine_commands import parse_periodic
from microforge.cli.import_commands import parse_phases, slicegan_options
from microforge.cli.options import unit_option
from microforge.cli.progress_display import progress_display
from microforge.cli.remote_group import (
    call_server,
    client_for,
    describe_job,
    err_console,
    fail,
    remote_group,
)
from microforge.client import JobFailed, MicroForgeClient, MicroForgeError


def wait_with_progress(client: MicroForgeClient, job: dict[str, Any]) -> dict[str, Any]:
    """Poll the job with a progress bar on stderr; raise a ClickException if it fails."""
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[status]}"),
    )
    line = "{description} {percent}: {status}"
    with progress_display(columns, line=line, console=err_console, local_eta=False) as bar:
        task = bar.add_task(f"{job['kind']} {job['id']}", total=1.0, status=describe_job(job))

        def show(update: dict[str, Any]) -> None:
            fraction = float((update.get("progress") or {}).get("fraction") or 0.0)
            bar.update(task, completed=fraction, status=describe_job(update))

        try:
            return client.wait(job["id"], on_update=show)
        except JobFailed as failed:
            raise click.ClickException(
                f"job {job['id']} {failed.job['state']}: {failed.code}: {failed.detail}"
            ) from failed
        except KeyboardInterrupt:
            # Ctrl-C stops the waiting, not the job: say so, and how to reach it again.
            err_console.print(
                f"Stopped waiting; job {job['id']} goes on on the server. Follow it with "
                f"`microforge remote status {job['id']}`, stop it with "
                f"`microforge remote cancel {job['id']}`."
            )
            raise SystemExit(130) from None


def _load_config(config: str | None, overrides: dict[str, Any]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    if config:
        text = Path(config[1:]).read_text() if config.startswith("@") else config
        try:
            values = json.loads(text)
        except json.JSONDecodeError as error:
            raise click.BadParameter(f"not valid JSON: {error}", param_hint="--config") from error
        if not isinstance(values, dict):
            raise click.BadParameter("must be a JSON object", param_hint="--config")
    values.update({k: v for k, v in overrides.items() if v is not None})
    return values


@remote_group.command("train")
@click.argument("images", nargs=-1, type=click.Path(exists=True, dir_okay=False))
@click.option("--config", default=None, help="TrainConfig as JSON, or @FILE with JSON.")
@click.option("--arch", type=click.Choice(["paper", "reference", "tiny"]), default=None)
@click.option("--iterations", type=click.IntRange(min=1), default=None)
@click.option(
    "--type",
    "--image-type",
    "image_type",
    type=click.Choice(["nphase", "grayscale", "colour"]),
    default=None,
    help="Image type (as for `microforge train`); detected when not given.",
)
@click.option("--name", default=None, help="Dataset name (default: first file's name).")
@click.option(
    "--pixel-size",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Edge of one pixel of IMAGES: statistics and generated volumes become physical.",
)
@unit_option("--pixel-size")
@click.option(
    "--dataset",
    "dataset_id",
    default=None,
    help="Train on a dataset already uploaded (ds_...) instead of IMAGES.",
)
@click.option("--wait", is_flag=True, help="Show progress until the job ends.")
@click.pass_context
def remote_train(
    ctx: click.Context,
    images: tuple[str, ...],
    config: str | None,
    arch: str | None,
    iterations: int | None,
    image_type: str | None,
    name: str | None,
    pixel_size: float | None,
    unit: str,
    dataset_id: str | None,
    wait: bool,
) -> None:
    """Upload IMAGES (one 2D, three x/y/z, or one 3D TIFF) and train, or train on an
    uploaded --dataset; prints the job id."""
    if bool(images) == bool(dataset_id):
        raise click.UsageError("give IMAGES to upload, or --dataset ds_... (not both)")
    if dataset_id and (image_type or name or pixel_size):
        raise click.UsageError(
            "--type, --name and --pixel-size describe an upload: drop them with --dataset"
        )
    values = _load_config(config, {"arch": arch, "iterations": iterations})

    def start(client: MicroForgeClient) -> dict[str, Any]:
        if dataset_id:
            return client.create_train_job(dataset_id, values)
        return client.train(
            images, values, image_type=image_type, name=name, pixel_size=pixel_size, unit=unit
        )

    _run_training(ctx, start, "Training job {id} queued.", wait)


def _run_training(
    ctx: click.Context,
    start: Callable[[MicroForgeClient], dict[str, Any]],
    announcement: str,
    wait: bool,
) -> None:
    """Start a training job; print its id, or with ``wait`` follow it and print the
    generator id (stdout, for scripts) and the best one when other (stderr)."""
    with client_for(ctx) as client:
        try:
            job = start(client)
            err_console.print(announcement.format(id=job["id"]))
            if not wait:
                click.echo(job["id"])
                return
            job = wait_with_progress(client, job)
        except MicroForgeError as error:
            raise fail(error) from error
    result = job["result"]
    click.echo(result["generator_id"])
    err_console.print(f"Generator {result['generator_id']} is ready.")
    best = result.get("best_generator_id")
    if best and best != result["generator_id"]:
        err_console.print(f"The best fidelity check's weights are generator {best}.")


@remote_group.command("continue")
@click.argument("job_id")
@click.option(
    "--iterations",
    type=click.IntRange(min=1),
    required=True,
    help="The new total, more than where the job stopped.",
)
@click.option("--wait", is_flag=True, help="Show progress until the job ends.")
@click.pass_context
def remote_continue(ctx: click.Context, job_id: str, iterations: int, wait: bool) -> None:
    """Continue an ended training job from its last checkpoint; prints the new job id
    (with --wait, the generator id)."""
    _run_training(
        ctx,
        lambda client: client.continue_training(job_id, iterations),
        f"Training job {{id}} continues {job_id}.",
        wait,
    )


@remote_group.command("cancel")
@click.argument("job_id")
@click.pass_context
def remote_cancel(ctx: click.Context, job_id: str) -> None:
    """Ask a job to stop; a running job stops within seconds."""
    job = call_server(ctx, lambda client: client.cancel_job(job_id))
    click.echo(f"{job['id']}: {job['state']} (cancel requested)")


@remote_group.command("generate")
@click.argument("generator_id")
@click.option(
    "--shape",
    nargs=3,
    type=click.IntRange(min=1),
    required=True,
    metavar="Z Y X",
    help="Volume size in voxels.",
)
@click.option("--seed", type=click.IntRange(min=0), default=None)
@click.option(
    "--periodic",
    default=None,
    help="Periodic axes, e.g. 'z,x' or 'true,false,true' (as for `microforge generate`).",
)
@click.option("--chunk", type=click.IntRange(min=1), default=None, help="Chunk edge in voxels.")
@click.option(
    "--compress",
    type=click.Choice(["zlib", "lzw"]),
    default=None,
    help="Lossless TIFF compression (labels shrink many-fold); the file is then OME-TIFF.",
)
@click.option(
    "--format",
    "volume_format",
    type=click.Choice(["tiff", "ome-zarr"]),
    default="tiff",
    show_default=True,
    help="ome-zarr: a chunked, multiscale store (--out then saves it as a zip).",
)
@click.option(
    "--voxel-size",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Voxel edge (a training pixel): stored in the TIFF, physical units in the report.",
)
@unit_option("--voxel-size")
@click.option("--wait", is_flag=True, help="Show progress until the volume is ready.")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="With --wait: download the volume here.",
)
@click.pass_context
def remote_generate(
    ctx: click.Context,
    generator_id: str,
    shape: tuple[int, int, int],
    seed: int | None,
    periodic: str | None,
    chunk: int | None,
    compress: str | None,
    volume_format: str,
    voxel_size: float | None,
    unit: str,
    wait: bool,
    out: Path | None,
) -> None:
    """Generate a Z x Y x X volume; prints the job id (or, with --wait, the volume id)."""
    if out is not None and not wait:
        raise click.UsageError("--out needs --wait")
    flags = parse_periodic(periodic)
    with client_for(ctx) as client:
        try:
            job = client.generate(
                generator_id,
                shape,
                seed=seed,
                periodic=flags,
                chunk=chunk,
                compression=compress,
                voxel_size=voxel_size,
                unit=unit,
                format=volume_format,
            )
            err_console.print(f"Generation job {job['id']} queued.")
            if not wait:
                click.echo(job["id"])
                return
            job = wait_with_progress(client, job)
            volume_id = job["result"]["volume_id"]
            if out is not None:
                _download(client, volume_id, out)
        except MicroForgeError as error:
            raise fail(error) from error
    click.echo(volume_id)


@remote_group.command("delete")
@click.argument("artifact_ids", nargs=-1, required=True)
@click.pass_context
def remote_delete(ctx: click.Context, artifact_ids: tuple[str, ...]) -> None:
    """Delete datasets (ds_...), generators (gen_...), volumes (vol_...) or ended jobs
    (job_...: record, history, preview and checkpoint) with their files."""
    with client_for(ctx) as client:
        for artifact_id in artifact_ids:
            try:
                client.delete(artifact_id)
            except ValueError as error:
                raise click.BadParameter(str(error), param_hint="ARTIFACT_IDS") from error
            except MicroForgeError as error:
                raise fail(error) from error
            click.echo(f"{artifact_id} deleted")


@remote_group.command("import")
@click.argument("generator_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument(
    "params", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@slicegan_options
@click.pass_context
def remote_import(
    ctx: click.Context,
    generator_file: Path,
    params: Path | None,
    image_type: str | None,
    phases: str | None,
    pixel_size: float | None,
    pixel_unit: str,
) -> None:
    """Upload a generator file (from `microforge train` or another server), or the two
    files of the public SliceGAN code (NAME_Gen.pt NAME_params.data); prints its id."""
    if params is None:
        if image_type or phases or pixel_size:
            raise click.UsageError(
                "--type, --phases and --pixel-size are for SliceGAN files: give NAME_Gen.pt "
                "and NAME_params.data (a MicroForge file already records them)"
            )
        generator = call_server(ctx, lambda client: client.import_generator(generator_file))
    else:
        labels = parse_phases(phases)
        generator = call_server(
            ctx,
            lambda client: client.import_slicegan(
                generator_file,
                params,
                image_type=image_type,
                phases=labels,
                pixel_size=pixel_size,
                unit=pixel_unit if pixel_size else None,
            ),
        )
    click.echo(generator["id"])


@remote_group.command("share")
@click.argument("volume_id")
@click.option(
    "--hours",
    type=click.FloatRange(min=1 / 60, max=30 * 24),
    default=24.0,
    show_default=True,
    help="How long the link works.",
)
@click.pass_context
def remote_share(ctx: click.Context, volume_id: str, hours: float) -> None:
    """Print a download link for a volume that needs no API key (for a colleague, a
    browser or a batch job); it dies when it expires or the volume is deleted."""
    link = call_server(
        ctx, lambda client: client.share_volume(volume_id, expires_in=round(hours * 3600))
    )
    click.echo(link["url"])
    err_console.print(f"Anyone with this link can download {volume_id} until {link['expires_at']}.")


@remote_group.command("download")
@click.argument("artifact_id")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.pass_context
def remote_download(ctx: click.Context, artifact_id: str, out: Path) -> None:
    """Download a volume (vol_...) as TIFF or a generator (gen_...) file to OUT."""
    with client_for(ctx) as client:
        try:
            _download(client, artifact_id, out)
        except MicroForgeError as error:
            raise fail(error) from error
    click.echo(str(out))


def _download(client: MicroForgeClient, artifact_id: str, out: Path) -> None:
    columns = (TextColumn("[bold]download"), BarColumn(), TaskProgressColumn())
    line = "download {completed} of {total} bytes ({percent})"
    with progress_display(columns, line=line, console=err_console) as bar:
        task = bar.add_task("download", total=None)

        def show(done: int, total: int | None) -> None:
            bar.update(task, completed=done, total=total)

        if artifact_id.startswith("gen_"):
            client.download_generator(artifact_id, out, on_bytes=show)
        else:
            client.download_volume(artifact_id, out, on_bytes=show)
