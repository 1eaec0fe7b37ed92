"""The orientation of features in the sections (stats/orientation.py): what S2 along the
axes cannot see."""

import numpy as np
import pytest
from scipy import ndimage

from microforge.models.stats.correlation import phase_correlations
from microforge.models.stats.orientation import orientation, orientation_difference


def round_blobs(size: int = 48, seed: int = 0) -> np.ndarray:
    field = ndimage.gaussian_filter(np.random.default_rng(seed).standard_normal((size,) * 3), 2.0)
    return (field > 0).astype(np.uint8)


def diagonal_streaks(size: int = 48, seed: int = 0) -> np.ndarray:
    """Blobs stretched along the (z, x) diagonal: the sections perpendicular to y show
    them whole, as streaks at 45 degrees; the others cut them at a slant, a little longer
    along x (z sections) or z (x sections)."""
    noise = np.random.default_rng(seed).standard_normal((size,) * 3)
    stretched = ndimage.gaussian_filter(noise, (1.5, 1.5, 1.5))
    field = np.zeros_like(stretched)
    for step in range(-4, 5):  # a line kernel along +z +x
        field += np.roll(stretched, (step, step), axis=(0, 2))
    return (field > 0).astype(np.uint8)


def test_round_features_lean_nowhere_and_lines_lean_fully_at_their_angle():
    figures = orientation(round_blobs(), [0, 1])
    for axis in "xyz":
        assert figures[1][axis]["anisotropy"] < 0.2
    stripes = np.zeros((8, 32, 32), dtype=np.uint8)
    stripes[:, :, ::4] = 1  # walls of constant x: lines along y in every z section
    stripes[:, :, 1::4] = 1
    along_y = orientation(stripes, [1])[1]["z"]
    assert along_y["anisotropy"] > 0.9
    assert along_y["angle"] == pytest.approx(0.0, abs=1)  # rows (y) are the plane's first axis


def test_diagonal_streaks_are_seen_where_s2_along_the_axes_is_alike():
    streaks = diagonal_streaks()
    figures = orientation(streaks, [1])[1]
    assert figures["y"]["anisotropy"] > 0.5
    assert figures["y"]["angle"] == pytest.approx(45.0, abs=5)  # from z towards x
    assert figures["z"]["anisotropy"] < figures["y"]["anisotropy"]
    assert abs(figures["z"]["angle"]) == pytest.approx(90.0, abs=5)  # cut at a slant: along x
    # The same streaks mirrored lean the other way; S2 along every axis is the same.
    mirrored = streaks[:, :, ::-1]
    assert orientation(mirrored, [1])[1]["y"]["angle"] == pytest.approx(-45.0, abs=5)
    s2, s2_mirrored = phase_correlations(streaks, [0, 1]), phase_correlations(mirrored, [0, 1])
    for axis in "xyz":
        np.testing.assert_allclose(s2[axis], s2_mirrored[axis], atol=1e-6)
    difference = orientation_difference(figures["y"], orientation(mirrored, [1])[1]["y"])
    assert difference == pytest.approx(2 * figures["y"]["anisotropy"], rel=0.05)


def test_an_image_has_the_orientation_of_its_plane_and_a_missing_phase_none():
    image = diagonal_streaks(96)[:, 48, :]  # one section perpendicular to y
    figure = orientation(image, [0, 1, 2])
    assert figure[1]["z"]["angle"] == pytest.approx(45.0, abs=8)
    assert figure[2]["z"] == {"anisotropy": None, "angle": None}
    assert orientation_difference(figure[1]["z"], figure[2]["z"]) is None
    assert orientation_difference(figure[1]["z"], figure[1]["z"]) == 0.0
