"""``microforge storage``: look after the blob store of the configured service.

Why a command an administrator runs (or schedules), not something the service does on
its own: deciding that a blob is garbage needs the database, and a worker started against
the wrong database would otherwise take every blob for garbage.
"""

from __future__ import annotations

from pathlib import Path

import click

from microforge.cli.formatting import human_size
from microforge.cli.local_servers import admin_settings, data_dir_option
from microforge.storage.blob_gc import NothingReferencedError, find_garbage, remove_garbage
from microforge.storage.blobs import get_blob_store
from microforge.storage.db import create_db_engine, make_session_factory, upgrade_database

DEFAULT_GRACE_HOURS = 24.0


@click.group("storage")
def storage_group() -> None:
    """Look after the blob store (MICROFORGE_BLOB_DIR) of the configured database."""


@storage_group.command("gc")
@click.option(
    "--older-than",
    "older_than_hours",
    type=click.FloatRange(min=0),
    default=DEFAULT_GRACE_HOURS,
    show_default=True,
    help="Only files untouched for this many hours (protects work under way).",
)
@click.option("--dry-run", is_flag=True, help="List what would go; delete nothing.")
@click.option("--force", is_flag=True, help="Proceed even when the database names no blob.")
@data_dir_option
def gc_command(older_than_hours: float, dry_run: bool, force: bool, data_dir: Path | None) -> None:
    """Delete blobs no dataset, job, generator or volume names, and scratch files left by
    killed processes (a worker killed while writing a volume leaves one of its size)."""
    settings = admin_settings(data_dir)
    url = settings.resolved_database_url
    upgrade_database(url)
    engine = create_db_engine(url)
    blobs = get_blob_store(settings)
    try:
        with make_session_factory(engine)() as session:
            garbage = find_garbage(
                blobs,
                session,
                older_than_seconds=older_than_hours * 3600,
                allow_empty_database=force,
            )
    except NothingReferencedError as error:
        raise click.ClickException(str(error)) from error
    finally:
        engine.dispose()
    for item in garbage:
        name = item.key or str(item.path)
        click.echo(
            f"{item.reason}: {name} ({human_size(item.size)}, {item.age_seconds / 3600:.1f} h old)"
        )
    total = sum(item.size for item in garbage)
    if dry_run:
        click.echo(f"would free {human_size(total)} in {len(garbage)} file(s) (dry run)")
        return
    freed = remove_garbage(blobs, garbage)
    click.echo(f"freed {human_size(freed)} in {len(garbage)} file(s)")
