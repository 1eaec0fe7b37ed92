"""The ``microforge remote`` group and what its commands share: the connection, errors,
and how a job is described in one line.

Why apart: the commands that run jobs (``client_commands``) and those that only look
(``client_views``) both hang off this group.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click
import httpx
from rich.console import Console

from microforge.client import MicroForgeClient, MicroForgeError

T = TypeVar("T")

DEFAULT_URL = "http://127.0.0.1:8000"
err_console = Console(stderr=True, soft_wrap=True)  # ids and links must not wrap


def client_for(ctx: click.Context) -> MicroForgeClient:
    url, key = ctx.obj["url"], ctx.obj["key"]
    if not key:
        raise click.UsageError(
            "no API key: pass --key or set MICROFORGE_API_KEY (create one on the server with "
            "`microforge keys create NAME`)"
        )
    return MicroForgeClient(url, key)


def call_server(ctx: click.Context, action: Callable[[MicroForgeClient], T]) -> T:
    """Run ``action`` with a client for the group's server; a refused request becomes one
    line with the server's code and message."""
    with client_for(ctx) as client:
        try:
            return action(client)
        except MicroForgeError as error:
            raise fail(error) from error


def fail(error: MicroForgeError) -> click.ClickException:
    return click.ClickException(f"{error.code}: {error.detail}")


def eta_text(seconds: float | None) -> str:
    if seconds is None:
        return "ETA --"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"ETA {hours:d}:{rest // 60:02d}:{rest % 60:02d}"


def describe_job(job: dict[str, Any]) -> str:
    progress = job.get("progress") or {}
    if progress.get("iteration") is not None and progress.get("total"):
        where = f"iteration {progress['iteration']}/{progress['total']}"
    elif progress.get("chunks_total"):
        where = f"chunk {progress.get('chunks_done') or 0}/{progress['chunks_total']}"
    else:
        where = ""
    return f"{job['state']:<9} {where}  {eta_text(progress.get('eta_seconds'))}"


class _RemoteGroup(click.Group):
    """Turns a server that cannot be reached into one line that says what to check,
    whichever command met it (a traceback from the HTTP library helps nobody)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except httpx.TransportError as error:
            url = (ctx.obj or {}).get("url", DEFAULT_URL)
            raise click.ClickException(
                f"cannot reach the MicroForge server at {url} ({type(error).__name__}: "
                f"{error}): is it running (`microforge up`)? check --url or MICROFORGE_URL"
            ) from error


@click.group("remote", cls=_RemoteGroup)
@click.option(
    "--url",
    envvar="MICROFORGE_URL",
    default=DEFAULT_URL,
    show_default=True,
    help="Server URL [env MICROFORGE_URL].",
)
@click.option(
    "--key", envvar="MICROFORGE_API_KEY", default=None, help="API key [env MICROFORGE_API_KEY]."
)
@click.pass_context
def remote_group(ctx: click.Context, url: str, key: str | None) -> None:
    """Use a MicroForge server: upload, train, generate and download over HTTP."""
    ctx.obj = {"url": url, "key": key}
