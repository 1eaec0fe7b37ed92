"""Small text formats the CLI commands share."""

from __future__ import annotations


def human_size(count: float) -> str:
    """Bytes in decimal units, as disk tools and file browsers show them: 1.2 GB."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if count < 1000 or unit == "TB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    raise AssertionError("unreachable")
