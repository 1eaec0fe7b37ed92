"""``microforge keys``: create, list and revoke API keys on the configured database.

Why a CLI and no HTTP route: creating keys is an administrator's act on the server's
machine, and an HTTP route for it would need a key of its own.
"""

from __future__ import annotations

import os
from pathlib import Path

import click

from microforge.settings import Settings, get_settings
from microforge.storage.api_keys import (
    AmbiguousApiKeyError,
    ApiKeyNotFoundError,
    create_api_key,
    list_api_keys,
    revoke_api_key,
)
from microforge.storage.db import create_db_engine, make_session_factory, upgrade_database


def _session():
    settings = get_settings()
    _refuse_a_new_database(settings)
    url = settings.resolved_database_url
    upgrade_database(url)
    engine = create_db_engine(url)
    return engine, make_session_factory(engine)()


def _refuse_a_new_database(settings: Settings) -> None:
    """A key made in a database that no server uses is a key that gets 401 everywhere.

    Without MICROFORGE_DATABASE_URL the database is the SQLite file in the data dir; when
    that file does not exist, this is not the server's data dir (``microforge up`` makes
    the file on its first start), so say how to name the right one instead of creating it.
    """
    if settings.database_url:
        return
    database = Path(settings.resolved_database_url.removeprefix("sqlite:///"))
    if database.exists():
        return
    raise click.ClickException(
        f"no MicroForge database in {settings.data_dir.resolve()} (the data dir of this "
        "shell): a key made here would not work on your server. Name the server's data dir, "
        "the one `microforge up` printed after 'Data:', e.g. `microforge keys --data-dir "
        "./microforge-data create NAME` (or set MICROFORGE_DATA_DIR, or "
        "MICROFORGE_DATABASE_URL for a PostgreSQL deployment)."
    )


@click.group("keys")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="The server's data dir (default: MICROFORGE_DATA_DIR, else ./microforge-data).",
)
def keys_group(data_dir: Path | None) -> None:
    """Manage API keys (stored as hashes in the configured database)."""
    if data_dir is not None:
        os.environ["MICROFORGE_DATA_DIR"] = str(data_dir.resolve())
        get_settings.cache_clear()


@keys_group.command("create")
@click.argument("name")
def create_command(name: str) -> None:
    """Create a key called NAME and print it; it is shown only this once."""
    engine, session = _session()
    try:
        row, plaintext = create_api_key(session, name)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="NAME") from exc
    finally:
        session.close()
        engine.dispose()
    click.echo(plaintext)
    click.echo(
        f"Created key {row.id} ({row.prefix}...) named {row.name!r}. Store it now: it cannot "
        "be shown again. Use it as 'Authorization: Bearer <key>'.",
        err=True,
    )


@keys_group.command("list")
def list_command() -> None:
    """List keys: id, prefix, name, creation time and whether revoked."""
    engine, session = _session()
    try:
        rows = list_api_keys(session)
    finally:
        session.close()
        engine.dispose()
    if not rows:
        click.echo("No keys yet. Create one with `microforge keys create NAME`.", err=True)
        return
    click.echo(f"{'ID':<38} {'PREFIX':<14} {'CREATED':<20} {'STATUS':<8} NAME")
    for row in rows:
        status = "revoked" if row.revoked_at else "active"
        created = row.created_at.strftime("%Y-%m-%d %H:%M:%S")
        click.echo(f"{row.id:<38} {row.prefix + '...':<14} {created:<20} {status:<8} {row.name}")


@keys_group.command("revoke")
@click.argument("id_or_prefix")
def revoke_command(id_or_prefix: str) -> None:
    """Revoke the key with id or prefix ID_OR_PREFIX; requests with it then get 401."""
    engine, session = _session()
    try:
        row = revoke_api_key(session, id_or_prefix)
    except (ApiKeyNotFoundError, AmbiguousApiKeyError) as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        session.close()
        engine.dispose()
    click.echo(f"Revoked key {row.id} ({row.prefix}...) named {row.name!r}.")
