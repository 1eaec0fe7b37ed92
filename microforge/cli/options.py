"""Options that several commands share, written once so that they read the same everywhere."""

from __future__ import annotations

from typing import Any

import click

from microforge.units import LENGTH_UNITS


def unit_option(of: str, *, default: str | None = "um", name: str = "unit", note: str = "") -> Any:
    """``--unit``: the length unit of ``of`` (e.g. ``--pixel-size``), one of LENGTH_UNITS."""
    return click.option(
        "--unit",
        name,
        type=click.Choice(LENGTH_UNITS),
        default=default,
        show_default=default is not None,
        help=f"Unit of {of}{note}.",
    )
