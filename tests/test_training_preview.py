"""The training preview PNG: enlarged slices, and the score curve once there is one."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from microforge.report.training_preview import enlarge, render_training_preview


def _slices(edge: int = 32, colour: bool = False) -> np.ndarray:
    """Three edge x edge slices with 4-pixel white gaps, as Trainer.preview() makes them."""
    rng = np.random.default_rng(0)
    width = 3 * edge + 2 * 4
    image = (rng.random((edge, width)) > 0.5).astype(np.uint8) * 255
    return np.repeat(image[:, :, None], 3, axis=2) if colour else image


def _decode(data: bytes) -> np.ndarray:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image)


def test_without_history_the_slices_are_enlarged_exactly():
    slices = _slices(32)
    pixels = _decode(render_training_preview(slices, []))
    factor = 6  # 192 / 33 slice pixels (the gaps share the width), rounded up
    assert pixels.shape == (32 * factor, slices.shape[1] * factor)
    assert np.array_equal(pixels[::factor, ::factor], slices)  # nearest neighbour, no blur
    big = _slices(256)
    assert np.array_equal(_decode(render_training_preview(big, [])), big)


def test_colour_previews_keep_their_channels():
    pixels = _decode(render_training_preview(_slices(64, colour=True), []))
    assert pixels.ndim == 3 and pixels.shape[2] == 3 and pixels.shape[1] >= 3 * 192


def test_score_curve_below_the_slices():
    slices = _slices(32)
    history = [
        {"iteration": 500, "score": 0.20},
        {"iteration": 100, "score": 0.40},
        {"iteration": 900, "score": 0.05},
        {"iteration": 1300, "score": 0.08},
        {"iteration": 1700, "score": None},
    ]
    pixels = _decode(render_training_preview(slices, history))
    plain = _decode(render_training_preview(slices, []))
    # The enlarged slices on top, pixel for pixel, and the plot below them.
    assert pixels.shape[0] > plain.shape[0] + 150
    assert pixels.shape[1] == plain.shape[1] == 624
    assert np.array_equal(pixels[: plain.shape[0], :, 0], plain)
    grey = pixels[..., :3].mean(axis=2)
    bottom = grey[plain.shape[0] + 40 :]
    assert bottom.std() > 5  # the plot is drawn, not blank
    # The best point is marked in red (C3) in the plot area.
    red = (pixels[..., 0] > 180) & (pixels[..., 1] < 80) & (pixels[..., 2] < 80)
    assert red[plain.shape[0] :].any()


def test_diversity_is_drawn_on_its_own_axis_when_recorded():
    slices = _slices(32)
    history = [{"iteration": i, "score": 0.3 - i / 1e4} for i in (100, 200, 300)]
    without = _decode(render_training_preview(slices, history))
    with_diversity = [{**entry, "diversity": 0.9} for entry in history]
    pixels = _decode(render_training_preview(slices, with_diversity))
    assert pixels.shape == without.shape
    # The diversity curve is drawn in green (C2), which the score-only plot does not use.
    green = (pixels[..., 1] > 120) & (pixels[..., 0] < 80) & (pixels[..., 2] < 80)
    green_before = (without[..., 1] > 120) & (without[..., 0] < 80) & (without[..., 2] < 80)
    assert green.sum() > 50 and green_before.sum() == 0


def test_bad_images_are_refused():
    with pytest.raises(ValueError, match="uint8"):
        render_training_preview(np.zeros((8, 30), np.float32), [])
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        render_training_preview(np.zeros((8, 30, 4), np.uint8), [])
    assert enlarge(np.zeros((10, 600), np.uint8)).shape == (10, 600)
