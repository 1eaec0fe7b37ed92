"""Statistics against answers known exactly, and against a second implementation."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
from scipy import ndimage

from microforge.models.stats.boundaries import triple_phase_boundary_count
from microforge.models.stats.correlation import characteristic_length, phase_correlations
from microforge.models.stats.phases import volume_fractions
from microforge.models.stats.summary import microstructure_statistics
from microforge.models.stats.surface import specific_surface_areas
from microforge.models.stats.tortuosity import phase_tortuosity


def _blobs(shape, fractions=(0.4, 0.7), sigma=2.0, seed=0) -> np.ndarray:
    field = ndimage.gaussian_filter(np.random.default_rng(seed).standard_normal(shape), sigma)
    return np.digitize(field, np.quantile(field, fractions)).astype(np.uint8)


def _brute_s2(labels, axis, value, lag):
    mask = (np.moveaxis(labels, axis, -1) == value).astype(float)
    n = mask.shape[-1]
    return (mask[..., : n - lag] * mask[..., lag:]).mean()


def test_slab_fraction_surface_and_s2_are_exact():
    slab = np.zeros((20, 30, 40), np.uint8)
    slab[:, :, 10:25] = 255
    stats = microstructure_statistics(slab, tortuosity=False, voxel_size=0.5)
    phase = stats["phases"]["255"]
    assert phase["volume_fraction"] == pytest.approx(15 / 40)
    # Two planes of 20x30 faces in a 20x30x40 volume, voxel edge 0.5.
    assert phase["specific_surface_area"] == pytest.approx(2 * 20 * 30 / slab.size / 0.5)
    assert stats["phases"]["0"]["specific_surface_area"] == pytest.approx(
        phase["specific_surface_area"]
    )
    # Along x: pairs (i, i + r) both inside [10, 25) out of 40 - r starting points.
    expected = [max(15 - r, 0) / (40 - r) for r in range(21)]
    assert phase["tpc"]["x"] == pytest.approx(expected, abs=1e-6)
    assert phase["tpc"]["y"] == pytest.approx([15 / 40] * 16, abs=1e-6)


def test_spheres_surface_matches_4_pi_r_squared():
    size, radius = 64, 10.0
    z, y, x = np.mgrid[:size, :size, :size] - size / 2 + 0.5
    spheres = np.zeros((size, size, 2 * size), np.uint8)
    spheres[:, :, :size] = (x**2 + y**2 + z**2) < radius**2
    spheres[:, :, size:] = spheres[:, :, :size]
    area = specific_surface_areas(spheres, [0, 1])[1] * spheres.size
    assert area == pytest.approx(2 * 4 * np.pi * radius**2, rel=0.03)


def test_circle_perimeter_in_2d():
    y, x = np.mgrid[:80, :80] - 40 + 0.5
    disc = ((x**2 + y**2) < 15**2).astype(np.uint8)
    perimeter = specific_surface_areas(disc, [0, 1])[1] * disc.size
    assert perimeter == pytest.approx(2 * np.pi * 15, rel=0.03)


def test_random_checkerboard_s2_is_f_then_f_squared():
    rng = np.random.default_rng(3)
    labels = (rng.random((48, 48, 48)) < 0.3).astype(np.uint8)
    curves = phase_correlations(labels, [0, 1], max_lag=10)
    fraction = labels.mean()
    for axis in "xyz":
        s2 = curves[axis][1]
        assert s2[0] == pytest.approx(fraction)
        assert np.allclose(s2[1:], fraction**2, atol=0.004)
        assert characteristic_length(s2, fraction) < 1.0


def test_fft_s2_equals_direct_sums_for_every_phase():
    rng = np.random.default_rng(1)
    labels = rng.choice(np.array([3, 7, 250], np.uint8), size=(12, 15, 17))
    curves = phase_correlations(labels, [3, 7, 250], max_lag=6)
    for name, axis in (("x", 2), ("y", 1), ("z", 0)):
        for index, value in enumerate((3, 7, 250)):
            direct = [_brute_s2(labels, axis, value, r) for r in range(7)]
            assert curves[name][index] == pytest.approx(direct, abs=1e-6)


def test_s2_agrees_with_porespy_on_random_volume():
    porespy = pytest.importorskip("porespy")
    labels = _blobs((40, 40, 40), fractions=(0.5,), seed=5)
    mask = labels == 1
    ours = np.mean([c[1] for c in phase_correlations(labels, [0, 1], max_lag=8).values()], 0)
    # porespy's S2 is radially averaged (and periodic); for an isotropic structure it matches
    # the mean of our per-axis curves near the origin.
    result = porespy.metrics.two_point_correlation(mask, bins=60)
    theirs = np.interp(np.arange(1, 6), result.distance, result.probability_scaled)
    assert ours[0] == pytest.approx(mask.mean())
    assert ours[1:6] == pytest.approx(theirs, abs=0.02)


def test_surface_and_tpb_agree_with_taufactor():
    metrics = pytest.importorskip("taufactor.metrics")
    labels = _blobs((30, 34, 38), seed=2)
    ours = specific_surface_areas(labels, [0, 1, 2])
    theirs = metrics.specific_surface_area(labels.astype(np.int64), device="cpu")
    for value in (0, 1, 2):
        assert ours[value] == pytest.approx(theirs[str(value)], rel=0.05)
    with contextlib.redirect_stdout(io.StringIO()):
        density = float(metrics.triple_phase_boundary(labels.astype(np.int64)))
    x, y, z = labels.shape
    edges = z * (x - 1) * (y - 1) + x * (y - 1) * (z - 1) + y * (x - 1) * (z - 1)
    assert triple_phase_boundary_count(labels, [0, 1, 2]) == round(density * edges)


def test_tpb_on_a_constructed_example():
    # Three phases meeting along one straight line parallel to z: 4 edges long in a 4-deep
    # volume, where the quadrants [0,1 | 2,2] meet.
    labels = np.zeros((4, 6, 6), np.uint8)
    labels[:, :3, 3:] = 1
    labels[:, 3:, :] = 2
    assert triple_phase_boundary_count(labels, [0, 1, 2]) == 4
    assert triple_phase_boundary_count(labels[0], [0, 1, 2]) == 1
    stats = microstructure_statistics(labels, tortuosity=False)
    assert stats["triple_phase_boundary_density"] == pytest.approx(4 / labels.size)


def test_straight_channels_have_tortuosity_one_and_blocked_phase_is_reported():
    labels = np.zeros((10, 12, 14), np.uint8)
    labels[:, ::3, :] = 1  # sheets normal to y: open along x and z, closed along y
    result = phase_tortuosity(labels, 1, device="cpu")
    assert result["x"].tortuosity == pytest.approx(1.0, abs=0.01)
    assert result["z"].tortuosity == pytest.approx(1.0, abs=0.01)
    assert result["x"].effective_diffusivity == pytest.approx(labels.mean(), rel=0.01)
    assert result["y"].percolates is False and result["y"].tortuosity is None
    stats = microstructure_statistics(labels, voxel_size=None)
    assert stats["phases"]["1"]["percolates"] == {"x": True, "y": False, "z": True}
    assert stats["phases"]["1"]["stagnant_share"] == {"x": 0.0, "y": 1.0, "z": 0.0}


def test_the_stagnant_share_is_the_dead_ends_of_a_path():
    from microforge.models.stats.tortuosity import stagnant_share

    # A straight channel along x (12 voxels) with a dead-end branch of 5 voxels along y
    # and a speck apart: only the channel carries flow, so 6 of 18 voxels are stagnant.
    labels = np.zeros((5, 9, 12), np.uint8)
    labels[2, 2, :] = 1
    labels[2, 3:8, 6] = 1
    labels[0, 7, 1] = 1
    result = phase_tortuosity(labels, 1, device="cpu")
    assert result["x"].tortuosity == pytest.approx(18 / 12, rel=0.02)  # fraction / D_rel
    assert result["x"].stagnant_share == pytest.approx(6 / 18)
    assert result["y"].percolates is False and result["y"].stagnant_share == 1.0
    # By hand: a linear field carries flow in every voxel of the channel, a flat one none.
    mask = np.ones((4, 3, 3), bool)
    linear = np.broadcast_to(np.arange(4.0)[:, None, None] / 4, mask.shape)
    assert stagnant_share(mask, linear, 1 / 4) == 0.0
    assert stagnant_share(mask, np.zeros(mask.shape), 1 / 4) == 1.0
    # A twentieth of a channel's drop is below the line (a tenth), a fifth above it.
    assert stagnant_share(mask, linear / 20, 1 / 4) == 1.0
    assert stagnant_share(mask, linear / 5, 1 / 4) == 0.0


def test_fractions_keep_original_labels():
    labels = np.array([[0, 255], [255, 255]], np.uint8)
    assert volume_fractions(labels) == {0: 0.25, 255: 0.75}
    signed = np.array([[-1, 2], [2, 2]], np.int8)
    assert volume_fractions(signed) == {-1: 0.25, 2: 0.75}


def test_greyscale_statistics_and_bad_input():
    rng = np.random.default_rng(0)
    grey = (rng.random((40, 50)) * 255).astype(np.uint8)
    stats = microstructure_statistics(grey)
    assert stats["kind"] == "grayscale"
    assert stats["grayscale"]["mean"] == pytest.approx(grey.mean())
    assert stats["grayscale"]["std"] == pytest.approx(grey.std())
    assert sum(stats["grayscale"]["histogram"]["counts"]) == grey.size
    assert stats["grayscale"]["tpc"]["x"][0] == pytest.approx(((grey / 255.0) ** 2).mean())
    with pytest.raises(ValueError, match="colour"):
        microstructure_statistics(np.zeros((4, 5, 6, 3), np.uint8))


def test_euler_density_counts_regions_minus_holes():
    from microforge.models.stats.euler import euler_number

    image = np.zeros((40, 40), bool)
    image[2:8, 2:8] = True  # a square: 1
    ring = np.zeros((40, 40), bool)
    ring[10:20, 10:20] = True
    ring[13:17, 13:17] = False  # a ring: 1 region - 1 hole = 0
    touching = np.zeros((40, 40), bool)
    touching[30, 30] = touching[31, 31] = True  # diagonal neighbours: one 8-connected region
    assert euler_number(image) == 1
    assert euler_number(ring) == 0
    assert euler_number(image | ring | touching) == 2
    # A region cut by the edge still counts once.
    edge = np.zeros((10, 10), bool)
    edge[:, :3] = True
    assert euler_number(edge) == 1


def test_3d_euler_number_counts_regions_minus_tunnels_plus_cavities():
    from microforge.models.stats.euler import euler_number_3d

    cube = np.zeros((12, 12, 12), bool)
    cube[2:6, 2:6, 2:6] = True
    ring = np.zeros((12, 12, 12), bool)  # a square ring, extruded: one tunnel
    ring[1:4, 1:11, 1:11] = True
    ring[1:4, 4:8, 4:8] = False
    shell = np.zeros((12, 12, 12), bool)  # a hollow box: one region around one cavity
    shell[2:10, 2:10, 2:10] = True
    shell[4:8, 4:8, 4:8] = False
    edge_touching = np.zeros((4, 4, 4), bool)  # share an edge, not a face: two regions
    edge_touching[1, 1, 1] = edge_touching[1, 2, 2] = True
    assert euler_number_3d(cube) == 1
    assert euler_number_3d(ring) == 0
    assert euler_number_3d(shell) == 2
    assert euler_number_3d(edge_touching) == 2
    assert euler_number_3d(np.ones((5, 6, 7), bool)) == 1  # cut by the edges, still one


def test_3d_euler_number_agrees_with_scikit_image_on_random_volumes():
    measure = pytest.importorskip("skimage.measure")
    from microforge.models.stats.euler import euler_number_3d

    rng = np.random.default_rng(3)
    for fraction in (0.2, 0.45, 0.7):
        mask = rng.random((18, 19, 20)) < fraction
        assert euler_number_3d(mask) == measure.euler_number(np.pad(mask, 1), connectivity=1)


def test_connectivity_density_is_free_of_edges_and_tells_particles_from_networks():
    from microforge.models.stats.euler import connectivity_densities

    # Separate cubes on a lattice: one region each, wherever the volume cuts them.
    particles = np.zeros((41, 41, 41), np.int8)  # 40 windows a side: five cells
    for z, y, x in np.ndindex(5, 5, 5):
        particles[8 * z + 2 : 8 * z + 6, 8 * y + 2 : 8 * y + 6, 8 * x + 2 : 8 * x + 6] = 1
    density = connectivity_densities(particles, [0, 1])
    assert density[1] == pytest.approx(1 / 8**3)
    # The matrix around them is one region with a cavity where each cube is: +1 a cell.
    assert density[0] == pytest.approx(1 / 8**3)
    # A frame of bars along x, y and z is a network: one node and three bars a cell, -2.
    z, y, x = np.indices((41, 41, 41)) % 8 < 2
    frame = (z.astype(int) + y + x >= 2).astype(np.int8)
    assert connectivity_densities(frame, [1])[1] == pytest.approx(-2 / 8**3)
    # A crop of whole cells keeps the density (no edge term), wherever it cuts the cubes;
    # one phase everywhere has none.
    assert connectivity_densities(particles[3:36, 5:38, 1:34], [1])[1] == pytest.approx(density[1])
    assert connectivity_densities(np.ones((6, 6, 6)), [1])[1] == 0.0
    assert connectivity_densities(particles, [1], voxel_size=2.0)[1] == pytest.approx(
        density[1] / 8
    )
    with pytest.raises(ValueError, match="3D"):
        connectivity_densities(particles[0], [1])


def test_the_main_network_counts_its_tunnels_apart_from_the_specks():
    from microforge.models.stats.network import network_topology

    # A frame of bars (a network with tunnels) plus specks in its holes: the specks are
    # other regions, not tunnels.
    volume = np.zeros((33, 33, 33), np.int8)
    z, y, x = np.indices(volume.shape) % 8 < 2
    volume[(z.astype(int) + y + x) >= 2] = 1
    # As a graph: 5 x 5 x 5 nodes (at 0, 8, ..., 32), 3 x 4 x 25 bars between them; a
    # connected graph has bars - nodes + 1 independent loops.
    frame_tunnels = 3 * 4 * 25 - 5**3 + 1
    specks = [(4, 4, 4), (12, 4, 4), (4, 12, 20), (28, 28, 28)]
    for point in specks:
        volume[point] = 1
    result = network_topology(volume, [0, 1, 2])
    size = volume.size
    assert result[1]["tunnels"] == pytest.approx(frame_tunnels / size)
    assert result[1]["other_regions"] == pytest.approx(len(specks) / size)
    assert result[1]["share"] == pytest.approx(1 - len(specks) / np.count_nonzero(volume == 1))
    # A hollow box: one region, one cavity, no tunnel; an absent phase: zeros.
    shell = np.zeros((12, 12, 12), np.int8)
    shell[2:10, 2:10, 2:10] = 1
    shell[4:8, 4:8, 4:8] = 0
    assert network_topology(shell, [1])[1] == {"tunnels": 0.0, "share": 1.0, "other_regions": 0.0}
    assert result[2] == {"tunnels": 0.0, "share": 0.0, "other_regions": 0.0}
    # A ring: one tunnel, whatever the voxel size says per volume.
    ring = np.zeros((12, 12, 12), np.int8)
    ring[1:4, 1:11, 1:11] = 1
    ring[1:4, 4:8, 4:8] = 0
    assert network_topology(ring, [1], voxel_size=0.5)[1]["tunnels"] == pytest.approx(
        1 / (ring.size * 0.125)
    )
    with pytest.raises(ValueError, match="3D"):
        network_topology(ring[0], [1])


def test_necks_one_voxel_wide_disconnect_a_phase_that_thick_bars_keep_crossing():
    from microforge.models.stats.necks import neck_figures

    # Phase 1: a 3x3 bar along x; phase 2: the same bar narrowed to its centre line for
    # three voxels; phase 3: a one-voxel thread along y. Phase 0 fills the rest.
    volume = np.zeros((16, 16, 16), np.int8)
    volume[2:5, 2:5, :] = 1
    volume[10:13, 2:5, :] = 2
    volume[10:13, 2:5, 6:9] = 0
    volume[11, 3, 6:9] = 2
    volume[8, :, 12] = 3
    result = neck_figures(volume, [0, 1, 2, 3, 4])
    # The opening keeps the plus-shaped core of a 3x3 section (5 of 9 voxels), along the
    # whole bar: it crosses x, and touches no face in y or z.
    assert result[1] == {"kept": 5 / 9, "spanning": {"x": 5 / 9, "y": 0.0, "z": 0.0}}
    # The neck is cut: the cores of 13 sections and the neck's two ends are kept (67 of
    # 13 x 9 + 3 voxels), and neither half crosses.
    assert result[2] == {"kept": 67 / 120, "spanning": {"x": 0.0, "y": 0.0, "z": 0.0}}
    assert result[3] == {"kept": 0.0, "spanning": {"x": 0.0, "y": 0.0, "z": 0.0}}
    assert result[4] == {"kept": 0.0, "spanning": {"x": 0.0, "y": 0.0, "z": 0.0}}
    # The matrix crosses every axis, and the volume's faces do not thin it.
    matrix = result[0]
    assert matrix["kept"] > 0.9
    assert all(share == pytest.approx(matrix["kept"]) for share in matrix["spanning"].values())
    with pytest.raises(ValueError, match="3D"):
        neck_figures(volume[0], [1])


def test_region_size_in_crops_weights_regions_by_area_and_ranks_a_slice():
    from microforge.models.stats.section_clusters import (
        region_size,
        section_spread,
        typical_section,
    )

    image = np.zeros((8, 8), np.int8)
    image[0:2, 0:2] = 1
    image[4:8, 4:8] = 1
    # A random pixel of phase 1 lies in the 4-pixel region with odds 4/20, else in the 16.
    assert region_size(image, [0, 1, 2], crop=8) == {0: 44.0, 1: (16 + 256) / 20, 2: 0.0}
    # Crops cut regions: a 16-pixel bar seen through 8-pixel windows is 8 pixels long.
    bar = np.zeros((16, 16), np.int8)
    bar[0, :] = 1
    assert region_size(bar, [1], crop=8)[1] == 8.0
    assert region_size(bar, [1], crop=16)[1] == 16.0
    # A 4^3 cube: a 4x4 square in each section that holds it, along every axis.
    cube = np.zeros((8, 8, 8), np.int8)
    cube[2:6, 2:6, 2:6] = 1
    assert region_size(cube, [1], crop=8)[1] == 16.0
    # Sections with squares of 1, 4, 9, ... 64 pixels: the one with 36 ranks above five.
    stack = np.zeros((8, 8, 8), np.int8)
    for index in range(8):
        stack[index, : index + 1, : index + 1] = 1
    spread = section_spread(stack, stack[5], "z", [1], crop=8)[1]
    assert spread["image"] == 36.0 and spread["rank"] == 5 / 8
    assert spread["mean"] == pytest.approx(np.mean([(i + 1) ** 2 for i in range(8)]))
    assert spread["p10"] < spread["image"] < spread["p90"]
    # The typical section is not the middle one when the middle's squares are the largest.
    odd = np.zeros((8, 8, 8), np.int8)
    for index, side in enumerate([1, 2, 3, 4, 8, 5, 6, 7]):
        odd[index, :side, :side] = 1
    assert section_spread(odd, odd[4], "z", [1], crop=8)[1]["rank"] == 7 / 8
    assert typical_section(odd, "z", [1], crop=8) == 3  # of equals, the first nearest
    # The worst phase decides: phase 2's largest square in section 3 makes it atypical.
    for index, side in enumerate([3, 2, 1, 4, 0, 2, 1, 1]):
        odd[index, 8 - side :, 8 - side :] = 2
    assert typical_section(odd, "z", [1, 2], crop=8) == 5
    # Several images are pooled: the bar's pixels and the two squares' together.
    assert region_size([bar, image], [1], crop=16)[1] == (16 * 16 + 16 + 256) / 36
    with pytest.raises(ValueError, match="2D images or a 3D volume"):
        region_size(cube[None], [1], crop=8)


def test_euler_density_agrees_with_labelling_and_tells_particles_from_labyrinths():
    # Separate discs: regions minus holes counted with scipy's labelling.
    rng = np.random.default_rng(3)
    discs = np.zeros((8, 96, 96), np.uint8)
    yy, xx = np.mgrid[:96, :96]
    for z in range(8):
        for cy, cx in rng.integers(8, 88, (12, 2)):
            discs[z][(yy - cy) ** 2 + (xx - cx) ** 2 <= 9] = 1

    def regions_minus_holes(plane):
        regions = ndimage.label(plane, structure=np.ones((3, 3), bool))[1]
        background, count = ndimage.label(~plane.astype(bool))  # 4-connected
        border = np.unique(
            np.concatenate([background[0], background[-1], background[:, 0], background[:, -1]])
        )
        return regions - (count - np.count_nonzero(border))

    expected = np.mean([regions_minus_holes(plane) for plane in discs])
    stats = microstructure_statistics(discs, tortuosity=False, voxel_size=2.0)
    density = stats["phases"]["1"]["euler_density"]["z"]
    # Discs away from the edges: the windows inside the slice see every one of them.
    assert density == pytest.approx(expected / (95 * 95 * 4.0))
    # The matrix around separate particles: one region with a hole per particle.
    matrix = stats["phases"]["0"]["euler_density"]["z"]
    assert matrix < -0.5 * density
    # A labyrinth (a smooth random field cut at its median): as many holes as regions in
    # either phase, a density near 0 (about 0 in theory for a Gaussian field at its median).
    labyrinth = microstructure_statistics(
        _blobs((8, 96, 96), fractions=(0.5,), sigma=3.0), tortuosity=False
    )["phases"]
    per_pixel = density * 4.0  # the discs' density per pixel (voxel size 2)
    for phase in ("0", "1"):
        assert all(abs(v) < 0.25 * per_pixel for v in labyrinth[phase]["euler_density"].values())
    image = microstructure_statistics(discs[0], tortuosity=False)["phases"]["1"]
    assert image["euler_density"] == {"image": pytest.approx(regions_minus_holes(discs[0]) / 95**2)}
