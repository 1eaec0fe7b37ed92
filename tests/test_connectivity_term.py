"""The trainer's connectivity term (models/topology.py): the benchmark's exact figure on
one-hot volumes, a gradient that changes the topology, and clear errors for bad targets."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from microforge.models.config import TrainConfig
from microforge.models.data import prepare_training_data
from microforge.models.stats.euler import connectivity_densities
from microforge.models.topology import connectivity_loss, soft_connectivity
from microforge.models.trainer import Trainer, TrainingError

from engine_helpers import blobs


def one_hot(labels: np.ndarray, phases: int) -> torch.Tensor:
    return F.one_hot(torch.from_numpy(labels).long(), phases).movedim(-1, 1).double()


def hard_counts(labels: np.ndarray, phases: int) -> np.ndarray:
    """The benchmark's figure per 1000 voxels, averaged over the volumes of a batch."""
    per_volume = [connectivity_densities(volume, range(phases)) for volume in labels]
    return np.array([[d[p] * 1000 for p in range(phases)] for d in per_volume]).mean(0)


def test_on_one_hot_volumes_it_is_the_benchmarks_exact_figure():
    labels = np.random.default_rng(0).integers(0, 3, (2, 11, 12, 13))
    measured = soft_connectivity(one_hot(labels, 3)).numpy()
    np.testing.assert_allclose(measured, hard_counts(labels, 3), rtol=1e-12)


def test_the_loss_measures_the_most_likely_phases_not_the_blurred_ones():
    labels = np.random.default_rng(1).integers(0, 2, (1, 10, 10, 10))
    blurred = 0.4 * one_hot(labels, 2) + 0.3  # every voxel 0.7 / 0.3: soft counts differ
    target = torch.tensor([5.0, -3.0], dtype=torch.float64)
    known = torch.tensor([True, False])
    expected = (hard_counts(labels, 2)[0] - 5.0) ** 2
    assert connectivity_loss(blurred, target, known).item() == pytest.approx(expected)
    assert soft_connectivity(blurred)[0].item() != pytest.approx(hard_counts(labels, 2)[0])


@pytest.mark.parametrize("direction", [+1, -1])
def test_its_gradient_moves_the_exact_count_towards_the_target(direction):
    """Descending the loss on free logits changes which voxels hold the phase so that the
    exact Euler characteristic (of the argmax volume) moves towards the target."""
    rng = np.random.default_rng(2)
    start = blobs((1, 16, 16, 16), fraction=0.45, seed=3, smooth=1.2)
    logits = 2.0 * one_hot(start, 2) + 0.1 * torch.from_numpy(rng.normal(size=(1, 2, 16, 16, 16)))
    logits.requires_grad_(True)
    before = hard_counts(start, 2)[1]
    target = torch.tensor([0.0, before + direction * 30.0], dtype=torch.float64)
    known = torch.tensor([False, True])
    optimiser = torch.optim.Adam([logits], lr=0.05)
    for _ in range(60):
        optimiser.zero_grad()
        connectivity_loss(torch.softmax(logits, 1), target, known).backward()
        optimiser.step()
    after = hard_counts(logits.detach().argmax(1).numpy(), 2)[1]
    assert direction * (after - before) > 10.0, (before, after)


@pytest.fixture(scope="module")
def three_phase():
    rng = np.random.default_rng(4)
    labels = np.digitize(rng.random((72, 80)), [0.35, 0.7]).astype(np.uint8)
    return prepare_training_data([labels])


def config(**changes) -> TrainConfig:
    values = {"arch": "tiny", "iterations": 6, "seed": 3, "critic_batch": 2, "quality_every": 0}
    return TrainConfig(**{**values, **changes})


def test_training_with_targets_runs_and_pulls_only_the_known_phases(three_phase):
    free = Trainer(three_phase, config(), "cpu")
    pulled = Trainer(three_phase, config(connectivity=[-5.0, None, 2.0]), "cpu")
    for trainer in (free, pulled):
        trainer.run()
        assert np.isfinite(trainer._last["generator_loss"].item())
    targets, known = pulled._connectivity
    assert known.tolist() == [True, False, True] and targets.tolist() == [-5.0, 0.0, 2.0]
    # The term changes the generator's updates: the two runs start alike and part.
    assert not torch.equal(
        free.generator.transposed[0].weight, pulled.generator.transposed[0].weight
    )
    assert free._connectivity is None
    assert (
        Trainer(
            three_phase, config(connectivity=[1.0, 1, 1], connectivity_weight=0), "cpu"
        )._connectivity
        is None
    )


def test_a_target_per_phase_is_required(three_phase):
    with pytest.raises(TrainingError) as caught:
        Trainer(three_phase, config(connectivity=[-5.0, 2.0]), "cpu")
    assert caught.value.code == "connectivity_phase_count"
    assert "one value or null per phase" in caught.value.message


def test_grey_images_have_no_phases_to_connect():
    grey = prepare_training_data([np.random.default_rng(5).random((72, 80))], "grayscale")
    with pytest.raises(TrainingError) as caught:
        Trainer(grey, config(connectivity=[1.0]), "cpu")
    assert caught.value.code == "connectivity_needs_phases"
