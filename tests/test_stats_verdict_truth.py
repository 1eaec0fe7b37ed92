"""The verdict and the trainer's fidelity score against the truth (issue #12 §1).

A real volume compared with its own middle slices must be called good (the anisotropic
separator was "poor" before: its three slices hold 64 / 56 / 48 % of phase 0, the volume
54.5 %); clearly wrong volumes (a fraction 10 points off, a lattice, a phase removed) must
never be good. Report and trainer score use one comparison, so they must agree.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import tifffile
from scipy import ndimage

from microforge.models.stats import compare_with_references, fidelity_score
from microforge.models.stats.agreement import s2_error, sampling_error
from microforge.models.stats.correlation import phase_correlations
from microforge.models.stats.verdict import verdict

VOLUMES = {
    "separator": "separator_rods_32x300x300.tif",
    "nmc": "nmc_binary_128.tif",
    "sofc": "sofc_anode_3phase_62.tif",
}


def _middle_slices(volume: np.ndarray) -> list[np.ndarray]:
    """Perpendicular to x, y and z, in that order (the anisotropic layout)."""
    z, y, x = (n // 2 for n in volume.shape)
    return [volume[:, :, x], volume[:, y, :], volume[z]]


def _references(volume: np.ndarray, layout: str) -> list[np.ndarray]:
    if layout == "three-slices":
        return _middle_slices(volume)
    if layout == "slice":
        return [volume[volume.shape[0] // 2]]
    return [volume]


def _shifted(volume: np.ndarray, points: float) -> np.ndarray:
    """The truth with phase 0's fraction moved by ``points``: threshold its blurred
    indicator, give lost voxels to the nearest other phase (the shape stays realistic)."""
    phase = volume.min()
    blurred = ndimage.gaussian_filter((volume == phase).astype(np.float32), 1.0)
    grown = blurred > np.quantile(blurred, 1 - (volume == phase).mean() - points / 100)
    out = np.where(grown, phase, volume).astype(volume.dtype)
    lost = ~grown & (volume == phase)
    nearest = ndimage.distance_transform_edt(volume == phase, return_indices=True)[1]
    out[lost] = volume[tuple(i[lost] for i in nearest)]
    return out


def _lattice(volume: np.ndarray) -> np.ndarray:
    """The truth's fractions laid out on a 16-voxel lattice (what a collapsed SliceGAN makes)."""
    z, y, x = np.indices(volume.shape)
    field = sum(np.sin(2 * np.pi * c / 16) for c in (x, y, z)).ravel()
    out = np.empty(volume.size, volume.dtype)
    order, start = np.argsort(field, kind="stable"), 0
    for value in np.unique(volume):
        count = int((volume == value).sum())
        out[order[start : start + count]] = value
        start += count
    return out.reshape(volume.shape)


def _indices(volume: np.ndarray, references: list[np.ndarray]):
    values = np.unique(np.concatenate([np.unique(a) for a in [volume, *references]]))
    return (
        np.searchsorted(values, volume).astype(np.uint8),
        [np.searchsorted(values, r).astype(np.uint8) for r in references],
        len(values),
    )


def _verdicts(volume: np.ndarray, references: list[np.ndarray]) -> tuple[str, str]:
    """(the report's verdict, the trainer score's verdict on a 64^3 corner)."""
    report = compare_with_references(volume, references, tortuosity=False)["summary"]
    labels, images, n = _indices(volume, references)
    corner = labels[:64, :64, :64]
    return report["verdict"], fidelity_score(corner, images, n)["verdict"]


@functools.cache
def _read(path: str) -> np.ndarray:
    return tifffile.imread(path)


@pytest.fixture
def truths(shared_data):
    return {k: _read(str(shared_data / "volumes" / f)) for k, f in VOLUMES.items()}


CASES = [
    ("separator", "three-slices"),
    ("separator", "volume"),
    ("nmc", "slice"),
    ("nmc", "three-slices"),
    ("sofc", "slice"),
    ("sofc", "three-slices"),
    ("sofc", "volume"),
]


@pytest.mark.parametrize(("name", "layout"), CASES)
def test_the_truth_against_its_own_slices_is_good(truths, name, layout):
    volume = truths[name]
    assert _verdicts(volume, _references(volume, layout)) == ("good", "good")


def test_the_separator_is_compared_with_the_pooled_fraction(truths):
    """Before: each axis' slices against that axis' image, fraction error 0.097 -> poor."""
    volume = truths["separator"]
    result = compare_with_references(volume, _middle_slices(volume), tortuosity=False)
    fraction = result["phases"]["0"]["fraction"]
    images = [(s == 0).mean() for s in _middle_slices(volume)]
    assert fraction["image_fractions"] == pytest.approx(images)
    assert max(images) - min(images) > 0.15  # the slices disagree by +-8 points
    assert fraction["reference"] == pytest.approx(np.mean(images))
    assert abs(fraction["difference"]) < 0.02  # the volume's 54.5 % against their 56 %
    summary = result["summary"]
    # The widened thresholds: the images' spread, not 2 points, is what can be demanded.
    assert 0.03 < summary["fraction_uncertainty"] < 0.07
    assert summary["thresholds"]["good"]["fraction_error"] < 0.085  # 10 points stays out
    # Each image's slice fraction is still shown against the volume's, per axis.
    row = result["phases"]["0"]["slices"]["x"]["area_fraction"]
    assert row["reference"] == pytest.approx(images[0])


WRONG_CASES = [
    ("separator", "three-slices"),
    ("nmc", "slice"),
    ("sofc", "slice"),
    ("sofc", "three-slices"),
    ("sofc", "volume"),
]


@pytest.mark.parametrize(("name", "layout"), WRONG_CASES)
def test_clearly_wrong_volumes_are_never_good(truths, name, layout):
    volume = truths[name]
    references = _references(volume, layout)
    volume = volume[:64, :150, :150]  # a crop is as wrong, and measured 4x faster
    wrong = {"+10 points": _shifted(volume, 10), "lattice": _lattice(volume)}
    if name == "sofc":
        wrong["phase removed"] = np.where(volume == 2, 1, volume).astype(volume.dtype)
    for what, candidate in wrong.items():
        report, score = _verdicts(candidate, references)
        assert report == "poor", (what, report)
        assert score == "poor", (what, score)


def test_the_trainer_score_of_the_truth_dropped_with_the_fix(truths):
    """The training-time score of the real separator against its slices was 0.123
    (fraction 0.061 + S2 0.062): as bad as a lattice. Now its fraction and S2 terms, what
    the fix changed, are a fraction of that (0.031).

    The whole score also holds 0.1 x the Euler error, added later: 0.078 here (0.78 +-
    0.48: a 32x64x64 corner of a material that drifts along x, against three single
    slices; the lattice 1.64), so the score is 0.11 against the lattice's 0.26. That term
    is the same for every checkpoint of a run against the same images, so it does not
    change which one is best; it stays under half the lattice's, and the verdict good."""
    volume = truths["separator"]
    labels, images, n = _indices(volume, _middle_slices(volume))
    truth = fidelity_score(labels[:, :64, :64], images, n)
    lattice = fidelity_score(_indices(_lattice(volume[:, :64, :64]), [])[0], images, n)

    def fraction_and_s2(score):
        return score["fraction_error"] + score["s2_error"]

    assert fraction_and_s2(truth) < 0.05 < fraction_and_s2(lattice)
    assert truth["score"] == pytest.approx(fraction_and_s2(truth) + 0.1 * truth["euler_error"])
    assert truth["score"] < lattice["score"] / 2
    assert truth["euler_error"] < lattice["euler_error"]
    assert truth["verdict"] == "good" and lattice["verdict"] == "poor"


def test_s2_error_ignores_a_fraction_offset_but_not_a_coarser_structure():
    rng = np.random.default_rng(0)
    field = ndimage.gaussian_filter(rng.standard_normal((400, 400)), 3.0)
    image = (field > 0).astype(np.uint8)
    denser = (field > -0.3 * field.std()).astype(np.uint8)  # same structure, +12 points
    coarse = (ndimage.gaussian_filter(rng.standard_normal((400, 400)), 6.0) > 0).astype(np.uint8)

    def curve(array):
        f = float(array.mean())
        return phase_correlations(array, [0, 1], max_lag=40)["x"][1], f

    reference = curve(image)
    plain_gap = np.abs(curve(denser)[0] - reference[0]).mean()
    assert plain_gap > 0.05  # the raw S2 is off by the fraction alone
    assert s2_error(*curve(denser), *reference) < 0.01
    assert s2_error(*curve(coarse), *reference) > 0.02


def test_sampling_error_grows_with_the_feature_size_and_falls_with_the_sample():
    rng = np.random.default_rng(1)

    def error(sigma, size):
        image = ndimage.gaussian_filter(rng.standard_normal((size, size)), sigma) > 0
        curves = phase_correlations(image.astype(np.uint8), [0, 1])
        f = float(image.mean())
        return sampling_error([c[1] for c in curves.values()], f, image.size)

    assert error(2.0, 256) < error(6.0, 256)
    assert error(3.0, 512) < error(3.0, 128)
    white = rng.random((200, 200)) < 0.3
    curves = phase_correlations(white.astype(np.uint8), [0, 1])
    expected = np.sqrt(0.3 * 0.7 / white.size)  # uncorrelated pixels: binomial
    assert sampling_error([c[1] for c in curves.values()], white.mean(), white.size) == (
        pytest.approx(expected, rel=0.3)
    )


def test_uncertainty_widens_the_thresholds_but_a_10_point_error_stays_poor():
    assert verdict(0.03, 0.005) == "fair"
    assert verdict(0.03, 0.005, fraction_uncertainty=0.03) == "good"
    assert verdict(0.10, 0.005, fraction_uncertainty=0.05) == "poor"
    assert verdict(0.01, 0.014, s2_uncertainty=0.011) == "good"
    assert verdict(0.01, 0.014) == "fair"


def _disks(size: int, radius: float, count: int, seed: int) -> np.ndarray:
    """Separate round disks (phase 1) in a matrix (phase 0)."""
    rng = np.random.default_rng(seed)
    y, x = np.indices((size, size))
    image = np.zeros((size, size), np.uint8)
    for cy, cx in rng.uniform(radius + 1, size - radius - 1, (count, 2)):
        image[(y - cy) ** 2 + (x - cx) ** 2 <= radius**2] = 1
    return image


def _z_euler_errors(volume: np.ndarray, image: np.ndarray) -> list[float]:
    """The Euler gaps of the sections perpendicular to z, per phase."""
    result = compare_with_references(volume, [image], tortuosity=False)
    return [p["slices"]["z"]["euler_density"]["error"] for p in result["phases"].values()]


def _twice(array: np.ndarray) -> np.ndarray:
    """The same structure at twice the pixels per length, in y and x."""
    return np.repeat(np.repeat(array, 2, axis=-1), 2, axis=-2)


def test_euler_error_is_zero_for_the_same_shapes_large_for_a_labyrinth_and_scale_free():
    """The labyrinth is a Gaussian field thresholded at its median: both phases wind
    through the image (14 and 10 regions where the disks image has 40 disks and one
    matrix). Thresholded at the disks' 20 % instead, the field is 24 separate blobs in a
    matrix, the disks' topology, and its matrix' gap is 0.01: not a labyrinth.

    Scale-free within 20 %, not exactly: doubling the pixels keeps every Euler number, but
    the smoothed-gradient perimeter (``surface.py``) measures a disk of radius 4 pixels
    3 % short and one of 8 pixels 6 % long, so n* = P_A^2 / (4 pi phi) grows by 1.2 and
    the gaps shrink by as much (measured 0.81 and 0.82)."""
    disks = _disks(96, 4.0, 40, 0)
    stack = np.stack([disks] * 8)  # every section perpendicular to z is the disks image
    assert _z_euler_errors(stack, disks) == pytest.approx([0.0, 0.0], abs=1e-9)
    field = ndimage.gaussian_filter(np.random.default_rng(1).standard_normal((96, 96)), 3)
    maze = (field > np.median(field)).astype(np.uint8)
    labyrinth = _z_euler_errors(np.stack([maze] * 8), disks)
    assert min(labyrinth) > 0.5  # separate disks (index 1) against a labyrinth (about 0)
    assert _z_euler_errors(_twice(np.stack([maze] * 8)), _twice(disks)) == pytest.approx(
        labyrinth, rel=0.25
    )


def test_the_disk_count_density_of_disks_is_their_number():
    from microforge.models.stats.euler import disk_count_density, euler_densities
    from microforge.models.stats.surface import specific_surface_areas

    disks = _disks(400, 8.0, 60, 2)
    fraction = (disks == 1).mean()
    densities, _ = euler_densities(disks, [0, 1])
    perimeter = specific_surface_areas(disks, [0, 1])[1]
    shape_index = densities[1]["image"] / disk_count_density(perimeter, fraction)
    assert 0.8 < shape_index < 1.2  # a few disks touch: a little below 1


def test_euler_thresholds_widen_by_two_standard_errors_and_a_greyscale_has_none():
    assert verdict(0.01, 0.005, euler_error=0.09) == "good"
    assert verdict(0.01, 0.005, euler_error=0.2) == "fair"
    assert verdict(0.01, 0.005, euler_error=0.2, euler_uncertainty=0.1) == "good"
    assert verdict(0.01, 0.005, euler_error=0.5) == "poor"
    assert verdict(0.01, 0.005, euler_error=None) == "good"


@pytest.mark.parametrize(("name", "layout"), CASES)
def test_the_truth_has_a_small_euler_error_against_its_own_slices(truths, name, layout):
    """Measured: NMC 0.045 (slice) / 0.038 (three slices), SOFC 0.24 / 0.38, separator
    0.93 (three slices, sections drifting along x; its uncertainty 0.60); 0 in 3D."""
    volume = truths[name]
    summary = compare_with_references(volume, _references(volume, layout), tortuosity=False)[
        "summary"
    ]
    assert summary["euler_error"] <= summary["thresholds"]["good"]["euler_error"]
    assert summary["euler_error"] < {"nmc": 0.1, "sofc": 0.5, "separator": 1.0}[name]


def test_a_labyrinth_with_the_nmc_fraction_and_feature_size_is_not_good(truths):
    """Today's NMC generators draw worms: fraction and S2 match, the Euler error does not
    (0.38-0.42 against a widened limit of 0.31; a Gaussian labyrinth: 0.86)."""
    image = truths["nmc"][64]
    field = ndimage.gaussian_filter(np.random.default_rng(0).standard_normal((64,) * 3), 2.0)
    maze = (field > np.quantile(field, 1 - (image == 1).mean())).astype(np.int8)
    summary = compare_with_references(maze, [image], tortuosity=False)["summary"]
    assert summary["euler_error"] > 0.5
    assert summary["verdict"] != "good"
    labels, images, n = _indices(maze, [image])
    score = fidelity_score(labels, images, n)
    assert score["euler_error"] > 0.5 and score["verdict"] != "good"
    truth = fidelity_score(_indices(truths["nmc"][:64, :64, :64], [image])[0], images, n)
    assert truth["euler_error"] < 0.1
    assert truth["score"] < score["score"] - 0.03  # the shapes decide the best generator


def test_the_trainer_score_holds_the_euler_error(truths):
    """A labyrinth with the NMC fraction and feature size against the truth's 64^3 corner:
    their fraction and S2 terms are within 0.01 of each other (truth 0.007, labyrinth
    0.012), so without the Euler term the best-checkpoint choice could barely tell them
    apart; with 0.1 x the Euler error (0.90 against 0.04) the labyrinth scores 0.09 worse."""
    image = truths["nmc"][64]
    truth, images, n = _indices(truths["nmc"][:64, :64, :64], [image])
    field = ndimage.gaussian_filter(np.random.default_rng(0).standard_normal((64,) * 3), 2.0)
    maze = (field > np.quantile(field, 1 - (image == 1).mean())).astype(np.uint8)
    scores = {"truth": fidelity_score(truth, images, n), "maze": fidelity_score(maze, images, n)}
    terms = {k: s["fraction_error"] + s["s2_error"] for k, s in scores.items()}
    for key, score in scores.items():
        assert score["score"] == pytest.approx(terms[key] + 0.1 * score["euler_error"])
        assert score["euler_uncertainty"] > 0
    assert abs(terms["maze"] - terms["truth"]) < 0.01
    assert scores["maze"]["euler_error"] > 0.5 > 0.1 > scores["truth"]["euler_error"]
    assert scores["maze"]["score"] > scores["truth"]["score"] + 0.05


def test_the_euler_uncertainty_adds_the_volumes_own_over_its_independent_sections():
    """The volume's mean density is a sample too: its standard error, the spread between
    its sections over the root of how many are independent (sections closer than the
    integral range of the S2 along the axis see the same features), adds in quadrature."""
    from microforge.models.stats.agreement import euler_uncertainty, integral_range_along
    from microforge.models.stats.euler import measured_area

    assert measured_area((64, 64, 64), "x") == 64 * 63 * 63
    assert measured_area((64, 64, 64), "x", integral_range=8.0) == 8 * 63 * 63
    assert measured_area((32, 64, 64), "z", integral_range=0.5) == 32 * 63 * 63
    assert measured_area((100, 50), "image", integral_range=8.0) == 99 * 49
    # (volume's dispersion, reference's), the reference's area, its n*: old records.
    assert euler_uncertainty((3.0, 2.0), 400.0, 0.5) == pytest.approx(2.0 / 20 / 0.5)
    assert euler_uncertainty((3.0, 2.0), 400.0, 0.5, 100.0) == pytest.approx(
        np.hypot(2.0 / 20, 3.0 / 10) / 0.5
    )
    # rho = exp(-r / 4): 1 + 2 sum_{r >= 1} rho(r) = 1 + 2 / (e^(1/4) - 1), about 2 x 4.
    r = np.arange(200)
    curve = 0.25 + 0.25 * np.exp(-r / 4.0)  # S2 of a phase of fraction 0.5
    assert integral_range_along(curve, 0.5) == pytest.approx(1 + 2 / (np.exp(0.25) - 1), 1e-3)
    assert integral_range_along([0.5] * 10, 1.0 / np.sqrt(2)) == 1.0  # no variance


def test_the_reference_term_is_the_materials_dispersion_not_the_volumes():
    """One image for every axis: its blocks are the material's scatter, raised by the
    standard error of a standard deviation of its blocks; a volume whose sections scatter
    more does not widen its own limit. One image per axis cannot see along its normal: the
    volume's sections count, the larger of the two."""
    from microforge.models.stats.agreement import euler_uncertainty, one_image_per_axis
    from microforge.models.stats.euler import _blocks, dispersion_samples

    assert euler_uncertainty((3.0, 2.0), 400.0, 0.5, per_axis_image=True) == pytest.approx(
        3.0 / 20 / 0.5
    )
    assert euler_uncertainty((1.0, 2.0), 400.0, 0.5, per_axis_image=True) == pytest.approx(
        2.0 / 20 / 0.5
    )
    nine = euler_uncertainty((3.0, 2.0), 400.0, 0.5, reference_samples=9)
    assert nine == pytest.approx(2.0 * (1 + 1 / 4) / 20 / 0.5)  # 1 / sqrt(2 x 8)
    for shape in ((62, 62), (128, 128), (32, 300), (5, 5)):
        assert dispersion_samples(shape, "image") == len(_blocks(np.zeros(shape)))
    assert dispersion_samples((62, 62), "image") == 9
    assert dispersion_samples((32, 300, 300), "z") == 32
    assert dispersion_samples((32, 300, 300), "x") == 64  # SECTIONS_PER_AXIS
    image = np.zeros((8, 8))
    assert not one_image_per_axis([image] * 3)
    assert one_image_per_axis([image, image.copy(), image.copy()])


def test_a_volume_half_labyrinth_is_not_good_against_one_image(truths):
    """The NMC truth with the far half along y replaced by a labyrinth of its fraction and
    feature size: fractions and S2 still match, the Euler error is 0.42. Its sections
    perpendicular to y scatter between particles and labyrinth, and when that scatter
    counted as the material's the "good" limit widened to 0.42 and the volume passed (a
    coarse generator's 128^3 volume, Euler error 0.44, passed so). Against one image the
    material's scatter is the image's: "fair". Against three per-axis images, which cannot
    see along their normals, the volume's sections still count."""
    truth = truths["nmc"][:96, :96, :96]
    image = truths["nmc"][64]
    field = ndimage.gaussian_filter(np.random.default_rng(0).standard_normal((96,) * 3), 2.0)
    maze = np.where(field > np.quantile(field, 1 - (truth == 1).mean()), 1, 0)
    mixed = truth.copy()
    mixed[:, 48:, :] = maze[:, 48:, :]
    summary = compare_with_references(mixed, [image], tortuosity=False)["summary"]
    own = compare_with_references(truth, [image], tortuosity=False)["summary"]
    assert summary["fraction_error"] < 0.02 and summary["s2_error"] < 0.01
    assert summary["euler_error"] > 0.4 > 0.33 > summary["thresholds"]["good"]["euler_error"]
    assert summary["verdict"] == "fair"
    assert summary["euler_uncertainty"] < 1.1 * own["euler_uncertainty"]
    three = [image, image.copy(), image.copy()]
    anisotropic = compare_with_references(mixed, three, tortuosity=False)["summary"]
    assert anisotropic["euler_uncertainty"] > 1.3 * summary["euler_uncertainty"]


def test_report_and_trainer_score_agree_on_the_euler_error(truths):
    """The SOFC volume (62^3) is its own 64^3 corner: both measure the same error and the
    same uncertainty, the volume's own included."""
    volume = truths["sofc"]
    references = _middle_slices(volume)
    report = compare_with_references(volume, references, tortuosity=False)["summary"]
    labels, images, n = _indices(volume, references)
    score = fidelity_score(labels, images, n)
    assert score["euler_error"] == pytest.approx(report["euler_error"], rel=1e-6)
    assert score["euler_uncertainty"] == pytest.approx(report["euler_uncertainty"], rel=1e-3)
