"""The training preview: slices of a small generated volume above the fidelity score curve.

Why together: the slices show what the generator makes now, the curve whether it is still
getting closer to the training images (lower is better; the best iteration, the one the
trainer keeps, is marked). Slices are enlarged by an integer factor with nearest
neighbour, so that a 64-voxel preview is readable on a screen and no pixel is invented.
Without a score history yet the PNG is just the enlarged slices, drawn with Pillow only.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

#: Each of the three slices is enlarged to at least this width in pixels.
MIN_SLICE_WIDTH = 192
#: Slices side by side in ``Trainer.preview()`` images (perpendicular to x, y and z).
SLICES = 3
#: The score plot: at least this wide, this tall, this far below the slices (pixels).
MIN_PLOT_WIDTH = 600
PLOT_HEIGHT = 240
GAP = 8


def render_training_preview(slices: np.ndarray, quality_history: Sequence[dict[str, Any]]) -> bytes:
    """PNG bytes of the preview image (uint8, (H, W) or (H, W, 3), the x, y, z slices side
    by side as made by ``Trainer.preview()``) above a plot of the fidelity score over
    iterations; each history entry has "iteration" and "score" (lower is better)."""
    image = enlarge(_as_uint8(slices))
    points = sorted(
        (int(entry["iteration"]), float(entry["score"]))
        for entry in quality_history
        if entry.get("score") is not None and math.isfinite(float(entry["score"]))
    )
    if not points:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG")
        return buffer.getvalue()
    diversity = sorted(
        (int(entry["iteration"]), float(entry["diversity"]))
        for entry in quality_history
        if entry.get("diversity") is not None and math.isfinite(float(entry["diversity"]))
    )
    return _with_score_plot(image, points, diversity)


def enlarge(image: np.ndarray, min_slice_width: int = MIN_SLICE_WIDTH) -> np.ndarray:
    """Repeat every pixel k x k times, the smallest k making each slice this wide."""
    slice_width = max(image.shape[1] // SLICES, 1)
    factor = max(1, math.ceil(min_slice_width / slice_width))
    if factor == 1:
        return image
    return np.repeat(np.repeat(image, factor, axis=0), factor, axis=1)


def _as_uint8(slices: np.ndarray) -> np.ndarray:
    if slices.dtype != np.uint8:
        raise ValueError(f"the preview image must be uint8, got {slices.dtype}")
    if slices.ndim == 3 and slices.shape[2] == 1:
        slices = slices[:, :, 0]
    if slices.ndim != 2 and not (slices.ndim == 3 and slices.shape[2] == 3):
        raise ValueError(f"the preview image must be (H, W) or (H, W, 3), got {slices.shape}")
    return slices


def _with_score_plot(
    image: np.ndarray,
    points: list[tuple[int, float]],
    diversity: list[tuple[int, float]],
) -> bytes:
    """The slices pixel for pixel (Pillow), above the score plot drawn by matplotlib at the
    same width (at least ``MIN_PLOT_WIDTH``); the narrower part is centred on white."""
    plot = _score_plot(max(image.shape[1], MIN_PLOT_WIDTH), points, diversity)
    rgb = image if image.ndim == 3 else np.repeat(image[:, :, None], 3, axis=2)
    width = max(rgb.shape[1], plot.shape[1])
    canvas = np.full((rgb.shape[0] + GAP + plot.shape[0], width, 3), 255, dtype=np.uint8)
    left = (width - rgb.shape[1]) // 2
    canvas[: rgb.shape[0], left : left + rgb.shape[1]] = rgb
    left = (width - plot.shape[1]) // 2
    canvas[rgb.shape[0] + GAP :, left : left + plot.shape[1]] = plot
    buffer = io.BytesIO()
    Image.fromarray(canvas).save(buffer, format="PNG")
    return buffer.getvalue()


def _score_plot(
    width_px: int, points: list[tuple[int, float]], diversity: list[tuple[int, float]]
) -> np.ndarray:
    """The fidelity score over iterations with the best point starred, as (H, W, 3) uint8;
    the diversity (1 = independent samples, 0 = one repeated pattern) on a right axis."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    dpi = 100
    figure = Figure(figsize=(width_px / dpi, PLOT_HEIGHT / dpi), dpi=dpi, layout="constrained")
    canvas = FigureCanvasAgg(figure)
    curve = figure.add_subplot()
    iterations, scores = zip(*points)
    curve.plot(iterations, scores, "-o", markersize=3, color="C0", label="fidelity score")
    best = min(range(len(points)), key=lambda index: scores[index])
    curve.plot(
        [iterations[best]],
        [scores[best]],
        "*",
        markersize=12,
        color="C3",
        label=f"best: {scores[best]:.4g} at iteration {iterations[best]}",
    )
    curve.set_xlabel("iteration", fontsize=8)
    curve.set_ylabel("score (lower is better)", fontsize=8)
    curve.tick_params(labelsize=7)
    curve.grid(alpha=0.3)
    handles, labels = curve.get_legend_handles_labels()
    if diversity:
        right = curve.twinx()
        steps, values = zip(*diversity)
        right.plot(steps, values, "--", color="C2", label="diversity (0 = one repeated pattern)")
        right.set_ylim(0.0, max(1.05, max(values) * 1.05))
        right.set_ylabel("diversity", fontsize=8)
        right.tick_params(labelsize=7)
        more_handles, more_labels = right.get_legend_handles_labels()
        handles, labels = handles + more_handles, labels + more_labels
    curve.legend(handles, labels, fontsize=7)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[:, :, :3].copy()
