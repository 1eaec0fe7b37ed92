"""The colour each phase of an n-phase volume is drawn in, wherever it is drawn.

Why one module: the API's ``slice.png?colour=phases``, the web viewer's legend, the report
PNG's curves and bars, and the ``image-label`` colours of an OME-Zarr volume (which napari
shows) should all paint phase i the same colour, so that a phase is recognised from one
view to the next. Standard library only, so the API (no torch), storage and the CLI can
all import it.
"""

from __future__ import annotations

#: matplotlib's default colour cycle ("tab10", C0..C9): phase i gets PHASE_COLOURS[i % 10].
#: The web viewer's legend (microforge/web/static/app.css, --phase-N) lists the same colours.
PHASE_COLOURS = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)


def phase_rgb(index: int) -> tuple[int, int, int]:
    """The colour of the ``index``-th phase as (r, g, b) bytes."""
    code = PHASE_COLOURS[index % len(PHASE_COLOURS)]
    return int(code[1:3], 16), int(code[3:5], 16), int(code[5:7], 16)
