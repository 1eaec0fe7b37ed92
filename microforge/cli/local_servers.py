"""Which database an administrator's command (``keys``, ``storage``) should open.

Why: ``microforge keys create`` used to open whatever ``./microforge-data`` was relative to
the folder it ran in, and create an empty database there when it found none, so the new key
then got 401 from the running server. A running ``microforge up`` now leaves a small record
of itself in the user's state folder (``$XDG_STATE_HOME/microforge/servers``, by default
``~/.local/state/microforge/servers``): its pid, URL and data folder. An administrator's
command uses, in this order: ``--data-dir``; ``MICROFORGE_DATABASE_URL`` or
``MICROFORGE_DATA_DIR`` when set; the one running local server; ``./microforge-data`` when it
already holds a database. Otherwise it refuses with a message that says how, and never
creates an empty database by surprise.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import click

from microforge.settings import Settings, get_settings

#: The variables that name a database explicitly: with one set, no guessing is needed.
EXPLICIT_DATABASE_VARIABLES = ("MICROFORGE_DATABASE_URL", "MICROFORGE_DATA_DIR")


@dataclass(frozen=True)
class LocalServer:
    """A ``microforge up`` that is (or was) running on this machine for this user."""

    pid: int
    url: str
    data_dir: Path
    record: Path


def registry_dir() -> Path:
    """Where running local servers leave their records (XDG state folder)."""
    state_home = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state_home) / "microforge" / "servers"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, but another user's
        return True
    return True


def register_server(url: str, data_dir: Path, pid: int | None = None) -> Path:
    """Record a running ``microforge up``; returns the record's path (remove it on stop)."""
    pid = os.getpid() if pid is None else pid
    folder = registry_dir()
    folder.mkdir(parents=True, exist_ok=True)
    record = folder / f"{pid}.json"
    temporary = record.with_suffix(".tmp")
    temporary.write_text(
        json.dumps({"pid": pid, "url": url, "data_dir": str(data_dir.resolve())}),
        encoding="utf-8",
    )
    temporary.replace(record)
    return record


def unregister_server(record: Path) -> None:
    with contextlib.suppress(OSError):
        record.unlink()


def running_servers() -> list[LocalServer]:
    """The live local servers; records of dead processes are removed on the way."""
    folder = registry_dir()
    if not folder.is_dir():
        return []
    servers = []
    for record in sorted(folder.glob("*.json")):
        try:
            content = json.loads(record.read_text(encoding="utf-8"))
            server = LocalServer(
                int(content["pid"]), str(content["url"]), Path(content["data_dir"]), record
            )
        except (OSError, ValueError, KeyError, TypeError):
            continue  # a record being written or not ours: leave it alone
        if _pid_alive(server.pid):
            servers.append(server)
        else:
            unregister_server(record)
    return servers


def _use_data_dir(data_dir: Path) -> Settings:
    os.environ["MICROFORGE_DATA_DIR"] = str(data_dir.resolve())
    get_settings.cache_clear()
    return get_settings()


def admin_settings(data_dir: Path | None) -> Settings:
    """The settings of the service an administrator means; ``click.ClickException`` if unsure."""
    if data_dir is not None:
        return _use_data_dir(data_dir)
    if any(os.environ.get(name) for name in EXPLICIT_DATABASE_VARIABLES):
        return get_settings()
    servers = running_servers()
    if len(servers) == 1:
        server = servers[0]
        click.echo(
            f"Using the data of the MicroForge running at {server.url} (pid {server.pid}): "
            f"{server.data_dir}",
            err=True,
        )
        return _use_data_dir(server.data_dir)
    if len(servers) > 1:
        listed = "\n".join(f"  {s.url}  --data-dir {s.data_dir}" for s in servers)
        raise click.ClickException(
            "several MicroForge servers are running; say which with --data-dir:\n" + listed
        )
    settings = get_settings()
    database = Path(settings.resolved_database_url.removeprefix("sqlite:///"))
    if database.is_file():
        return settings
    raise click.ClickException(
        f"no MicroForge database at {settings.data_dir.resolve()} and no running "
        "`microforge up` found: pass --data-dir with the folder `microforge up` printed "
        "(Data: ...), or set MICROFORGE_DATA_DIR or MICROFORGE_DATABASE_URL"
    )


data_dir_option = click.option(
    "--data-dir",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    default=None,
    help="The data folder of the service [env MICROFORGE_DATA_DIR; default: the running "
    "`microforge up`, else ./microforge-data if it holds a database].",
)
