"""One PNG that tells a user whether a generated volume looks like the training data.

Top row: the training image(s) beside the middle slices of the volume perpendicular to x,
y and z. Middle: S2 curves of volume (solid) and reference (dashed) per phase, one panel
per axis. Bottom: phase fractions side by side, and the verdict with the numbers behind it
(see ``microforge.models.stats.verdict``). Uses matplotlib's Agg backend through a Figure
object, so it works without a display and never touches pyplot's global state.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from microforge.models.stats.axes import AXES_3D, SLICE_PLANE_AXES, slice_perpendicular

_VERDICT_COLOURS = {"good": "#2e7d32", "fair": "#ef6c00", "poor": "#c62828"}


def render_report_png(
    volume: np.ndarray,
    references: Sequence[np.ndarray],
    stats: dict,
    out: str | Path | BinaryIO,
    *,
    dpi: int = 100,
) -> None:
    """Write the report of ``volume`` against ``references`` as PNG to a path or binary file.

    ``stats`` is {"volume": microstructure_statistics(volume), "comparison":
    compare_with_references(volume, references)}, what ``microforge stats --json`` prints.
    """
    if volume.ndim != 3:
        raise ValueError(f"the report needs a 3D volume, got shape {volume.shape}")
    if "comparison" not in stats or "volume" not in stats:
        raise ValueError("stats must hold 'volume' and 'comparison' results")
    figure = Figure(figsize=(14, 11), dpi=dpi, layout="constrained")
    FigureCanvasAgg(figure)
    grid = figure.add_gridspec(3, 6, height_ratios=[1.2, 1.0, 0.9])
    _draw_images(figure, grid, volume, references)
    _draw_curves(figure, grid, stats)
    _draw_fractions(figure.add_subplot(grid[2, :3]), stats)
    _draw_verdict(figure.add_subplot(grid[2, 3:]), stats["comparison"])
    figure.savefig(out, format="png")


def render_statistics_png(
    volume: np.ndarray, stats: dict, out: str | Path | BinaryIO, *, dpi: int = 100
) -> None:
    """The report of a volume with no training images to compare with: its middle slices
    and its S2 curves per axis (``stats`` from ``microstructure_statistics(volume)``)."""
    if volume.ndim != 3:
        raise ValueError(f"the report needs a 3D volume, got shape {volume.shape}")
    figure = Figure(figsize=(12, 7.5), dpi=dpi, layout="constrained")
    FigureCanvasAgg(figure)
    grid = figure.add_gridspec(2, 6, height_ratios=[1.2, 1.0])
    _draw_images(figure, grid, volume, [])
    curves = (
        {name: phase["tpc"] for name, phase in stats["phases"].items()}
        if "phases" in stats
        else {"grey": stats["grayscale"]["tpc"]}
    )
    panel = figure.add_subplot(grid[1, :4])
    for index, (name, per_axis) in enumerate(curves.items()):
        for style, (axis, curve) in zip(("-", "--", ":"), per_axis.items()):
            panel.plot(curve, style, color=f"C{index}", label=f"{name} along {axis}")
    panel.set_title("S2 of the volume (no training images to compare with)", fontsize=9)
    panel.set_xlabel("lag r (voxels)", fontsize=8)
    panel.set_ylabel("S2(r)", fontsize=8)
    panel.tick_params(labelsize=7)
    panel.legend(fontsize=6)
    notes = figure.add_subplot(grid[1, 4:])
    notes.axis("off")
    lines = [f"shape: {' x '.join(str(n) for n in volume.shape)}"]
    for name, phase in stats.get("phases", {}).items():
        lines.append(
            f"phase {name}: fraction {phase['volume_fraction']:.4f}, "
            f"SSA {phase['specific_surface_area']:.4g}"
        )
    if "triple_phase_boundary_density" in stats:
        lines.append(f"TPB density: {stats['triple_phase_boundary_density']:.4g}")
    notes.text(0.0, 0.95, "\n".join(lines), fontsize=9, va="top", family="monospace")
    figure.savefig(out, format="png")


def _draw_images(figure: Figure, grid, volume: np.ndarray, references) -> None:
    images = [
        (r if r.ndim == 2 else r[r.shape[0] // 2], f"training {i + 1}")
        for i, r in enumerate(references[:3])
    ]
    for axis in AXES_3D:
        dim_size = volume.shape[2 - AXES_3D.index(axis)]
        columns, rows = SLICE_PLANE_AXES[axis]
        images.append(
            (
                slice_perpendicular(volume, axis, dim_size // 2),
                f"volume, slice ⊥ {axis} (rows {rows}, cols {columns})",
            )
        )
    low = min(float(np.min(im)) for im, _ in images)
    high = max(float(np.max(im)) for im, _ in images)
    for column, (image, title) in enumerate(images[:6]):
        panel = figure.add_subplot(grid[0, column])
        panel.imshow(image, cmap="gray", vmin=low, vmax=high, interpolation="nearest")
        panel.set_title(title, fontsize=8)
        panel.set_xticks([])
        panel.set_yticks([])


def _draw_curves(figure: Figure, grid, stats: dict) -> None:
    comparison = stats["comparison"]
    entries = comparison.get("phases") or {"grey": {"slices": comparison["grayscale"]["slices"]}}
    for column, axis in enumerate(AXES_3D):
        panel = figure.add_subplot(grid[1, 2 * column : 2 * column + 2])
        for index, (name, entry) in enumerate(entries.items()):
            colour = f"C{index}"
            for direction, curve in entry["slices"].get(axis, {}).get("tpc", {}).items():
                style = "-" if direction == SLICE_PLANE_AXES[axis][0] else ":"
                lags = min(len(curve["volume"]), len(curve["reference"]))
                panel.plot(
                    curve["volume"][:lags],
                    style,
                    color=colour,
                    label=f"{name} volume along {direction}",
                )
                panel.plot(
                    curve["reference"][:lags],
                    "--",
                    color=colour,
                    alpha=0.6,
                    label=f"{name} reference along {direction}",
                )
        panel.set_title(f"S2, slices ⊥ {axis}", fontsize=9)
        panel.set_xlabel("lag r (voxels)", fontsize=8)
        panel.set_ylabel("S2(r)", fontsize=8)
        panel.tick_params(labelsize=7)
        panel.legend(fontsize=6)


def _draw_fractions(panel, stats: dict) -> None:
    phases = stats["comparison"].get("phases")
    if not phases:
        grey = stats["comparison"]["grayscale"]["slices"]
        means = [(a, grey[a]["mean"]) for a in AXES_3D]
        panel.bar(np.arange(3) - 0.2, [m["volume"] for _, m in means], 0.4, label="volume")
        panel.bar(np.arange(3) + 0.2, [m["reference"] for _, m in means], 0.4, label="reference")
        panel.set_xticks(range(3), [f"mean, ⊥ {a}" for a, _ in means])
        panel.set_title("grey-level mean", fontsize=9)
        panel.legend(fontsize=7)
        return
    names = list(phases)
    volume = [phases[n]["slices"]["x"]["area_fraction"]["volume"] for n in names]
    refs = {
        a: [phases[n]["slices"][a]["area_fraction"]["reference"] for n in names] for a in AXES_3D
    }
    positions = np.arange(len(names))
    panel.bar(positions - 0.3, volume, 0.2, label="volume")
    for offset, axis in enumerate(AXES_3D):
        panel.bar(
            positions - 0.1 + 0.2 * offset, refs[axis], 0.2, alpha=0.7, label=f"reference ⊥ {axis}"
        )
    panel.set_xticks(positions, [f"phase {n}" for n in names])
    panel.set_ylabel("fraction")
    panel.set_title("phase fractions", fontsize=9)
    panel.legend(fontsize=7)


def _figure(value: float | None, spec: str) -> str:
    """A number of the verdict, or "-" where the report has none (greyscale has no Euler
    error; reports made before it was measured lack it)."""
    return "-" if value is None else format(value, spec)


def _draw_verdict(panel, comparison: dict) -> None:
    summary = comparison["summary"]
    good, fair = summary["thresholds"]["good"], summary["thresholds"]["fair"]
    verdict = summary["verdict"]
    panel.axis("off")
    panel.text(
        0.02,
        0.85,
        f"verdict: {verdict.upper()}",
        fontsize=22,
        weight="bold",
        color=_VERDICT_COLOURS[verdict],
        transform=panel.transAxes,
    )
    lines = [
        f"layout: {comparison['layout']}",
        f"fraction error (max |Δf| vs pooled images): {summary['fraction_error']:.4f}",
        f"S2 error (normalised autocovariance): {summary['s2_error']:.4f}",
        f"Euler error (mean |Δχ| / n*): {_figure(summary.get('euler_error'), '.3f')}",
        f"good: fraction ≤ {good['fraction_error']:.3f}, S2 ≤ {good['s2_error']:.3f}, "
        f"Euler ≤ {_figure(good.get('euler_error'), '.2f')}",
        f"fair: fraction ≤ {fair['fraction_error']:.3f}, S2 ≤ {fair['s2_error']:.3f}, "
        f"Euler ≤ {_figure(fair.get('euler_error'), '.2f')}; else poor",
    ]
    if summary.get("missing_phases"):
        lines.append(f"not in the volume: phase {', '.join(summary['missing_phases'])}")
    if summary.get("extra_phases"):
        lines.append(f"not in the training images: phase {', '.join(summary['extra_phases'])}")
    panel.text(
        0.02,
        0.7,
        "\n".join(lines),
        fontsize=10,
        va="top",
        family="monospace",
        transform=panel.transAxes,
    )
