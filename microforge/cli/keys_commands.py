"""``microforge keys``: create, list and revoke API keys on the configured database.

Why a CLI and no HTTP route: creating keys is an administrator's act on the server's
machine, and an HTTP route for it would need a key of its own.
"""

from __future__ import annotations

import click

from microforge.settings import get_settings
from microforge.storage.api_keys import (
    AmbiguousApiKeyError,
    ApiKeyNotFoundError,
    create_api_key,
    list_api_keys,
    revoke_api_key,
)
from microforge.storage.db import create_db_engine, make_session_factory, upgrade_database


def _session():
    url = get_settings().resolved_database_url
    upgrade_database(url)
    engine = create_db_engine(url)
    return engine, make_session_factory(engine)()


@click.group("keys")
def keys_group() -> None:
    """Manage API keys (stored as hashes in the configured database)."""


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
