"""Chunked generation must equal the one-shot volume, for every preset and chunk size."""

import numpy as np
import pytest
import torch

from microforge.models.chunk_plan import GenerationError, make_latent, plan_volume
from microforge.models.generation import ChunkEvaluator, generate_array, generate_probabilities

from engine_helpers import assert_chunked_equals_one_shot, random_generator

SHAPE = (37, 45, 29)  # deliberately not multiples of any stride


@pytest.mark.parametrize("arch", ["tiny", "paper", "reference"])
def test_one_shot_equals_the_plain_network(arch):
    loaded = random_generator(arch)
    plans = plan_volume(loaded.network, SHAPE, (False, False, False))
    latent = make_latent(loaded.network, plans, seed=5)
    with torch.no_grad():
        full = loaded.net(latent)[0]
    window = tuple(slice(p.offset, p.offset + p.size) for p in plans)
    one_shot = generate_probabilities(loaded, SHAPE, seed=5, chunk=0)
    assert one_shot.shape == (3, *SHAPE)
    torch.testing.assert_close(one_shot, full[(slice(None), *window)], rtol=0, atol=1e-6)


@pytest.mark.parametrize("arch", ["tiny", "paper", "reference"])
@pytest.mark.parametrize("chunk", [8, 13, 32])
def test_chunked_equals_one_shot(arch, chunk):
    assert_chunked_equals_one_shot(random_generator(arch), SHAPE, chunk, seed=11)


@pytest.mark.parametrize("arch", ["tiny", "reference"])
def test_single_voxel_chunks_equal_one_shot(arch):
    loaded = random_generator(arch)
    shape = (3, 4, 5)
    one_shot = generate_probabilities(loaded, shape, seed=2, chunk=0)
    torch.testing.assert_close(
        generate_probabilities(loaded, shape, seed=2, chunk=1), one_shot, rtol=0, atol=1e-6
    )


def test_labels_carry_the_original_phase_values():
    loaded = random_generator("tiny", phases=[0, 85, 170])
    volume = generate_array(loaded, (20, 24, 28), seed=1, chunk=9)
    assert volume.dtype == np.uint8 and volume.shape == (20, 24, 28)
    assert set(np.unique(volume)) <= {0, 85, 170}
    assert len(np.unique(volume)) > 1


def test_labels_above_255_come_out_as_uint16():
    loaded = random_generator("tiny", phases=[0, 1000, 40000], output_dtype="uint16")
    volume = generate_array(loaded, (16, 16, 16), seed=1, chunk=7)
    assert volume.dtype == np.uint16
    assert set(np.unique(volume)) <= {0, 1000, 40000}


def test_grey_and_colour_outputs():
    grey = generate_array(random_generator("tiny", image_type="grayscale"), (10, 12, 14), seed=2)
    assert grey.dtype == np.uint8 and grey.shape == (10, 12, 14)
    colour = random_generator("tiny", image_type="colour")
    rgb = generate_array(colour, (10, 12, 14), seed=2, chunk=5)
    assert rgb.shape == (10, 12, 14, 3)
    assert np.array_equal(rgb, generate_array(colour, (10, 12, 14), seed=2, chunk=0))


def test_seed_decides_the_volume_whatever_the_chunking():
    loaded = random_generator("tiny")
    shape = (20, 24, 18)
    a = generate_array(loaded, shape, seed=3, chunk=16)
    assert np.array_equal(a, generate_array(loaded, shape, seed=3, chunk=7))
    other = generate_probabilities(loaded, shape, seed=4, chunk=16)
    assert not torch.equal(other, generate_probabilities(loaded, shape, seed=3, chunk=16))


@pytest.mark.parametrize("arch", ["tiny", "reference"])
def test_periodic_axes_tile_seamlessly(arch):
    """A periodic volume repeated twice equals the volume made from the repeated latent."""
    loaded = random_generator(arch)
    period = loaded.network.period
    shape = (period, 10, 2 * period)
    periodic = (True, False, True)
    plans = plan_volume(loaded.network, shape, periodic)
    latent = make_latent(loaded.network, plans, seed=9)
    small = ChunkEvaluator(loaded, plans).evaluate(latent, [(0, n) for n in shape])
    double = (2 * period, 10, 4 * period)
    plans2 = plan_volume(loaded.network, double, periodic)
    big = ChunkEvaluator(loaded, plans2).evaluate(
        latent.repeat(1, 1, 2, 1, 2), [(0, n) for n in double]
    )
    torch.testing.assert_close(big, small.repeat(1, 2, 1, 2), rtol=0, atol=1e-6)
    chunked = generate_probabilities(loaded, shape, seed=9, chunk=7, periodic=periodic)
    torch.testing.assert_close(chunked, small, rtol=0, atol=1e-6)


def test_periodic_size_must_fit_the_stride():
    loaded = random_generator("tiny")
    with pytest.raises(GenerationError, match="multiple of 16 voxels.*use 32 or 48"):
        plan_volume(loaded.network, (40, 40, 40), (True, False, False))


@pytest.mark.parametrize("shape", [(0, 4, 4), (4, 4)])
def test_bad_shapes(shape):
    with pytest.raises(GenerationError, match="three positive sizes"):
        plan_volume(random_generator("tiny").network, shape, (False, False, False))


def test_slabs_arrive_in_order_and_memory_stays_per_slab():
    from microforge.models.generation import generate_volume

    loaded = random_generator("tiny")
    slabs = []
    chunks = []
    generate_volume(
        loaded,
        (25, 30, 30),
        seed=1,
        chunk=10,
        write_slab=slabs.append,
        on_chunk=lambda done, total: chunks.append((done, total)),
    )
    assert [s.shape[0] for s in slabs] == [10, 10, 5]
    assert chunks[-1] == (27, 27)


def test_cancel_between_chunks():
    from microforge.models.generation import GenerationCancelled, generate_volume

    with pytest.raises(GenerationCancelled):
        generate_volume(
            random_generator("tiny"),
            (20, 20, 20),
            seed=1,
            chunk=5,
            write_slab=lambda slab: None,
            should_stop=lambda: True,
        )
