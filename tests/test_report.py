"""The PNG report renders to a file object, with the verdict drawn from real statistics."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from microforge.models.stats import compare_with_references, microstructure_statistics
from microforge.report import render_report_png


def test_report_png_to_binary_file():
    field = ndimage.gaussian_filter(np.random.default_rng(0).standard_normal((32, 32, 32)), 2)
    volume = np.digitize(field, np.quantile(field, [0.3, 0.6])).astype(np.uint8)
    references = [volume[:, :, 4], volume[:, 6, :], volume[8]]
    stats = microstructure_statistics(volume, tortuosity=False)
    comparison = compare_with_references(volume, references, volume_stats=stats)
    buffer = io.BytesIO()
    render_report_png(volume, references, {"volume": stats, "comparison": comparison}, buffer)
    assert buffer.getvalue()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(io.BytesIO(buffer.getvalue())) as png:
        assert png.size == (1400, 1100)
        pixels = np.asarray(png.convert("L"))
    assert pixels.std() > 10  # something was drawn, not a blank canvas
    with pytest.raises(ValueError, match="comparison"):
        render_report_png(volume, references, {"volume": stats}, io.BytesIO())


def test_report_png_of_a_volume_with_one_of_three_phases():
    field = ndimage.gaussian_filter(np.random.default_rng(0).standard_normal((32, 32, 32)), 2)
    truth = np.digitize(field, np.quantile(field, [0.3, 0.6])).astype(np.uint8)
    volume = np.ones((20, 20, 20), np.uint8)
    references = [truth[16]]
    stats = microstructure_statistics(volume, tortuosity=False)
    comparison = compare_with_references(volume, references, volume_stats=stats)
    assert comparison["summary"]["missing_phases"] == ["0", "2"]
    buffer = io.BytesIO()
    render_report_png(volume, references, {"volume": stats, "comparison": comparison}, buffer)
    with Image.open(io.BytesIO(buffer.getvalue())) as png:
        assert png.size == (1400, 1100)
        pixels = np.asarray(png.convert("RGB")).astype(int)
    # The verdict is drawn in the colour of "poor".
    red = (pixels[..., 0] > 150) & (pixels[..., 1] < 80) & (pixels[..., 2] < 80)
    assert red.sum() > 100
