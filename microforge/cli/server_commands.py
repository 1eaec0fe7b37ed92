"""``microforge up`` (the whole service locally) and ``microforge worker`` (production).

Settings come from ``MICROFORGE_*`` environment variables; the options here only set the
few that a person starting the service by hand usually wants to change.
"""

from __future__ import annotations

import os
from pathlib import Path

import click

from microforge.cli.local_servers import register_server, unregister_server
from microforge.settings import Settings, get_settings


def _settings_with_data_dir(data_dir: Path | None) -> Settings:
    if data_dir is not None:
        os.environ["MICROFORGE_DATA_DIR"] = str(data_dir.resolve())
        get_settings.cache_clear()
    return get_settings()


@click.command("up")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address the API binds to.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where the database, blobs and broker data live [env MICROFORGE_DATA_DIR; "
    "default ./microforge-data]. A second start reuses it.",
)
def up_command(host: str, port: int, data_dir: Path | None) -> None:
    """Run the API, a worker and (unless MICROFORGE_REDIS_URL is set) a broker; Ctrl-C stops all."""
    from microforge.worker.local_stack import (
        LocalStack,
        StackError,
        data_dir_hint,
        ensure_first_key,
    )

    settings = _settings_with_data_dir(data_dir)
    stack = LocalStack(settings, host=host, port=port)
    stack.install_signal_handlers()
    record = None
    try:
        stack.start()
        # `microforge keys create` in another terminal finds this data folder from the record.
        record = register_server(stack.url, settings.data_dir)
        key = ensure_first_key(settings)
        click.echo(f"MicroForge is running at {stack.url}  (API docs: {stack.url}/docs)")
        click.echo(f"Data: {settings.data_dir.resolve()}   Broker: {stack.broker_url}")
        if key:
            click.echo(f"Your first API key (shown only now): {key}")
        click.echo(f"Open {stack.url} in a browser and sign in with an API key.")
        click.echo(
            "More keys: microforge keys create NAME (in another terminal while this runs; "
            f"else {data_dir_hint(settings)} microforge keys create NAME)\n"
            f"Try: microforge remote --url {stack.url} --key <KEY> train IMAGE.png --wait\n"
            "Press Ctrl-C to stop."
        )
        stack.wait()
    except StackError as error:
        raise click.ClickException(str(error)) from error
    finally:
        click.echo("Stopping MicroForge...", err=True)
        if record is not None:
            unregister_server(record)
        stack.stop()
        click.echo("Stopped.", err=True)


@click.command("worker")
@click.option(
    "--queues",
    default="train,generate",
    show_default=True,
    help="Comma-separated queues to serve: train, generate or both.",
)
@click.option("--name", default=None, help="Worker name in logs (default microforge-PID@HOST).")
@click.option("--loglevel", default="INFO", show_default=True)
@click.option("--quiet", is_flag=True, help="No Celery start-up banner.")
@click.option(
    "--device",
    default=None,
    help="auto, cpu or cuda[:N] [env MICROFORGE_DEVICE]; one worker per GPU.",
)
def worker_command(
    queues: str, name: str | None, loglevel: str, quiet: bool, device: str | None
) -> None:
    """Run one job worker: one job at a time, on one device. Start one per GPU."""
    from microforge.worker.launch import WorkerSettingsError, run_worker

    if device:
        os.environ["MICROFORGE_DEVICE"] = device
        get_settings.cache_clear()
    settings = get_settings()
    try:
        run_worker(
            settings,
            [q.strip() for q in queues.split(",") if q.strip()],
            name=name,
            loglevel=loglevel,
            quiet=quiet,
        )
    except WorkerSettingsError as error:
        raise click.ClickException(str(error)) from error
