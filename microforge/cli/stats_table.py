"""The statistics table that ``microforge stats`` and ``microforge remote report`` print.

Why shared: a volume measured here and a volume's report fetched from a server carry the
same statistics JSON, and a user comparing them should see the same table.
"""

from __future__ import annotations

from rich.console import Console
from rich.table import Table


def print_statistics_table(output: dict, title: str) -> None:
    """Per-phase statistics (or greyscale summary), the comparison with the training
    images and its verdict, on stdout."""
    console = Console()
    shape = "x".join(str(n) for n in output["shape"])
    if output["kind"] == "grayscale":
        grey = output["grayscale"]
        console.print(
            f"{title}: greyscale {shape}, mean {grey['mean']:.4g}, "
            f"std {grey['std']:.4g}, correlation length "
            f"{_axes_text(grey['characteristic_length'])}"
        )
    else:
        table = Table(title=f"{title}: {shape}, lengths in {output['length_unit']}")
        columns = ("phase", "fraction", "surface area", "corr. length x/y/z", "Euler/area x/y/z")
        for column in (*columns, "tau x/y/z", "no flow x/y/z"):
            table.add_column(column)
        for name, phase in output["phases"].items():
            table.add_row(
                name,
                f"{phase['volume_fraction']:.4f}",
                f"{phase['specific_surface_area']:.4g}",
                _axes_text(phase["characteristic_length"]),
                # Reports made before the Euler density (or the stagnant share) was
                # measured have none.
                _axes_text(phase.get("euler_density", {})) or "-",
                _axes_text(phase["tortuosity"], missing="no path")
                if "tortuosity" in phase
                else "-",
                # The share of the phase that carries no flow along the axis (dead ends).
                " / ".join(f"{share:.0%}" for share in phase["stagnant_share"].values())
                if "stagnant_share" in phase
                else "-",
            )
        console.print(table)
        if "triple_phase_boundary_density" in output:
            console.print(
                f"triple-phase boundary density: {output['triple_phase_boundary_density']:.4g}"
            )
    comparison = output.get("comparison")
    if comparison:
        console.print(_comparison_table(comparison))
        summary = comparison["summary"]
        # Greyscale has no Euler error, and records made before it was measured lack it.
        euler = summary.get("euler_error")
        console.print(
            f"against the {comparison['layout']} reference: fraction error "
            f"{summary['fraction_error']:.4f}, S2 error {summary['s2_error']:.4f}, Euler error "
            f"{'-' if euler is None else f'{euler:.3f}'} -> [bold]{summary['verdict']}[/bold]"
        )
        if summary.get("note"):
            console.print(summary["note"])


def _comparison_table(comparison: dict) -> Table:
    """Slices of the volume perpendicular to each axis against the training image of that
    axis, side by side, so that an error along one axis only (anisotropy) shows."""
    table = Table(title="slices of the volume against the training image(s): volume | training")
    if "grayscale" in comparison:
        for column in ("slices", "mean", "std", "histogram distance", "S2 error"):
            table.add_column(column)
        for axis, row in comparison["grayscale"]["slices"].items():
            table.add_row(
                f"perpendicular to {axis}",
                _pair(row["mean"]),
                _pair(row["std"]),
                f"{row['histogram_distance']:.4f}",
                f"{_curve_error(row['tpc']):.4f}",
            )
        return table
    # The row labels never wrap (a reader, and scripts, look for "perpendicular to z"); the
    # figures wrap at their " | " when the terminal is narrow.
    table.add_column("phase", no_wrap=True)
    table.add_column("slices", no_wrap=True)
    for column in ("area fraction", "perimeter per area", "Euler per area", "S2 error"):
        table.add_column(column)
    for name, phase in comparison["phases"].items():
        for axis, row in phase["slices"].items():
            table.add_row(
                name,
                f"perpendicular to {axis}",
                _pair(row["area_fraction"]),
                _pair(row["perimeter_per_area"]),
                _pair(row["euler_density"]) if "euler_density" in row else "-",
                f"{_curve_error(row['tpc']):.4f}",
            )
    return table


def _pair(values: dict) -> str:
    mine, theirs = values["volume"], values["reference"]
    if mine is None or theirs is None:
        return "-"
    return f"{mine:.4g} | {theirs:.4g}"


def _curve_error(curves: dict) -> float:
    """The slice's S2 error (normalised autocovariance, see ``stats/agreement.py``), mean
    over its two in-plane directions."""
    errors = [curve.get("s2_error", curve["mean_abs_difference"]) for curve in curves.values()]
    return sum(errors) / len(errors) if errors else 0.0


def _axes_text(values: dict, missing: str = "-") -> str:
    return " / ".join(missing if v is None else f"{v:.3g}" for v in values.values())
