"""``microforge remote`` commands that look without changing anything: a job's status, a
volume's report, listings with sizes, the disk a key uses, the newest jobs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from microforge.cli.formatting import human_size
from microforge.cli.remote_group import (
    call_server,
    client_for,
    describe_job,
    err_console,
    fail,
    remote_group,
)
from microforge.cli.stats_table import print_statistics_table
from microforge.client import LISTABLE, MicroForgeError


@remote_group.command("report")
@click.argument("volume_id")
@click.option("--json", "as_json", is_flag=True, help="Print the whole report as JSON.")
@click.option(
    "--png",
    "png_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also save the report drawn as a PNG here.",
)
@click.pass_context
def remote_report(ctx: click.Context, volume_id: str, as_json: bool, png_path: Path | None) -> None:
    """How faithful a volume is: its statistics against the training images, and a verdict."""
    with client_for(ctx) as client:
        try:
            report = client.volume_report(volume_id)
            if png_path is not None:
                client.download_volume_report_png(volume_id, png_path)
        except MicroForgeError as error:
            raise fail(error) from error
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        _print_report(report)
    if png_path is not None:
        err_console.print(f"Report drawn in {png_path}.")


def _print_report(report: dict[str, Any]) -> None:
    problem = report.get("error")
    if problem:
        click.echo(f"{problem['code']}: {problem['message']}")
    if report.get("statistics"):
        output = {**report["statistics"], "comparison": report.get("comparison")}
        print_statistics_table(output, report["volume_id"])
    sampled = report.get("sampled")
    if sampled:
        region = "x".join(str(n) for n in sampled["shape"])
        whole = "x".join(str(n) for n in sampled["of"])
        click.echo(f"measured on the {sampled['region']} {region} of {whole}: {sampled['reason']}")
    if report.get("note"):
        click.echo(report["note"])


@remote_group.command("preview")
@click.argument("job_id")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.pass_context
def remote_preview(ctx: click.Context, job_id: str, out: Path) -> None:
    """Save a training job's latest preview (slices along x, y, z and the fidelity curve)."""
    call_server(ctx, lambda client: client.download_job_preview(job_id, out))
    click.echo(str(out))


@remote_group.command("ls")
@click.argument("collection", type=click.Choice(LISTABLE))
@click.option("--limit", type=click.IntRange(1, 100), default=20, show_default=True)
@click.pass_context
def remote_ls(ctx: click.Context, collection: str, limit: int) -> None:
    """List your newest datasets, generators, volumes or jobs, with their sizes."""
    page = call_server(ctx, lambda client: client.list_page(collection, limit=limit))
    for item in page["items"]:
        click.echo(f"{item['id']}  {_SUMMARIES[collection](item)}")
    if page.get("next_cursor"):
        err_console.print(f"(newest {limit} shown; --limit for more)")


def _dataset_summary(item: dict[str, Any]) -> str:
    shapes = ", ".join("x".join(str(n) for n in shape) for shape in item["shapes"])
    kind = f"{item['image_type']} {item['layout']}"
    return f"{item['name']}  {kind} {shapes}  {human_size(item['size_bytes'])}"


def _generator_summary(item: dict[str, Any]) -> str:
    config = item.get("config") or {}
    words = [str(config.get("arch") or "custom"), f"iteration {config.get('iteration', '?')}"]
    if config.get("weights"):
        words.append(f"({config['weights']})")
    quality = config.get("quality")
    if quality:
        words.append(f"score {quality['score']:.3f}")
        if quality.get("collapsed"):
            words.append("COLLAPSED")
    return f"{' '.join(words)}  {human_size(item['size_bytes'])}"


def _volume_summary(item: dict[str, Any]) -> str:
    shape = "x".join(str(n) for n in item["shape"])
    verdict = (item.get("report") or {}).get("verdict") or "-"
    return f"{shape} {item['image_type']}  verdict {verdict}  {human_size(item['size_bytes'])}"


def _job_summary(item: dict[str, Any]) -> str:
    return f"{item['kind']:<8} {describe_job(item)}"


_SUMMARIES = {
    "datasets": _dataset_summary,
    "generators": _generator_summary,
    "volumes": _volume_summary,
    "jobs": _job_summary,
}


@remote_group.command("usage")
@click.pass_context
def remote_usage(ctx: click.Context) -> None:
    """How much you keep on the server, to see what to delete."""
    usage = call_server(ctx, lambda client: client.usage())
    for name in ("datasets", "generators", "volumes", "checkpoints"):
        click.echo(f"{name:<12} {usage[name]['count']:>6}  {human_size(usage[name]['bytes']):>10}")
    click.echo(f"{'total':<12} {'':>6}  {human_size(usage['total_bytes']):>10}")


@remote_group.command("jobs")
@click.option("--limit", type=click.IntRange(1, 100), default=20, show_default=True)
@click.option("--kind", type=click.Choice(["train", "generate"]), default=None)
@click.option(
    "--state",
    type=click.Choice(["queued", "running", "succeeded", "failed", "cancelled"]),
    default=None,
)
@click.pass_context
def remote_jobs(ctx: click.Context, limit: int, kind: str | None, state: str | None) -> None:
    """List your newest jobs, optionally of one kind or in one state."""
    page = call_server(
        ctx, lambda client: client.list_page("jobs", limit=limit, kind=kind, state=state)
    )
    for job in page["items"]:
        click.echo(f"{job['id']}  {_job_summary(job)}")


@remote_group.command("status")
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="Print the whole job as JSON.")
@click.pass_context
def remote_status(ctx: click.Context, job_id: str, as_json: bool) -> None:
    """Show a job's state, progress, error and results."""
    job = call_server(ctx, lambda client: client.get_job(job_id))
    if as_json:
        click.echo(json.dumps(job, indent=2))
        return
    click.echo(f"{job['id']} ({job['kind']}): {describe_job(job)}")
    if job.get("error"):
        click.echo(f"error {job['error']['code']}: {job['error']['message']}")
    for name, value in (job.get("result") or {}).items():
        if value:
            click.echo(f"{name}: {value}")
