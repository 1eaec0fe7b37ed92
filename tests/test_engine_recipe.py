"""The training recipe's own pieces: lattice-free generator kernels, the weights' moving average."""

import pytest
import torch
import torch.nn.functional as F

from microforge.models import trainer as trainer_module
from microforge.models.config import PRESETS, TrainConfig
from microforge.models.data import prepare_training_data
from microforge.models.export import load_generator
from microforge.models.networks import (
    Generator,
    LatticeFreeKernel,
    init_weights,
    is_lattice_free,
    make_lattice_free,
    plain_state_dict,
)
from microforge.models.trainer import Trainer

from engine_helpers import blobs


def tiny_config(**changes) -> TrainConfig:
    values = {"arch": "tiny", "iterations": 6, "seed": 3, "critic_batch": 2, "quality_every": 0}
    return TrainConfig(**{**values, **changes})


@pytest.fixture(scope="module")
def isotropic():
    return prepare_training_data([blobs((72, 80)) * 255])


@pytest.mark.parametrize(("kernel", "stride"), [(4, 2), (6, 2), (6, 3)])
def test_a_lattice_free_kernel_turns_a_constant_into_a_constant(kernel, stride):
    torch.manual_seed(0)
    free = torch.randn(3, 2, kernel, kernel, kernel)
    lattice_free = LatticeFreeKernel(stride)(
        free[..., : kernel - stride + 1, : kernel - stride + 1, : kernel - stride + 1]
    )
    assert lattice_free.shape == free.shape
    ones = torch.ones(1, 3, 6, 6, 6)
    inner = slice(kernel, -kernel)
    smooth = F.conv_transpose3d(ones, lattice_free, stride=stride)[..., inner, inner, inner]
    rough = F.conv_transpose3d(ones, free, stride=stride)[..., inner, inner, inner]
    spread = smooth.flatten(2).std(2)
    assert torch.all(spread < 1e-5)
    assert torch.all(rough.flatten(2).std(2) > 0.1)  # a free kernel tiles a lattice


@pytest.mark.parametrize("stride", [2, 3])
def test_a_lattice_free_kernel_is_a_box_convolved_with_the_free_kernel(stride):
    torch.manual_seed(0)
    free = torch.randn(2, 3, 4, 3, 4)
    box = torch.ones(1, 1, stride, stride, stride)
    expected = F.conv_transpose3d(free.reshape(6, 1, 4, 3, 4), box).reshape(
        2, 3, *[n + stride - 1 for n in (4, 3, 4)]
    )
    assert torch.allclose(LatticeFreeKernel(stride)(free), expected, atol=1e-6)


def _noise_free_share(generator: Generator) -> float:
    """Share of the last hidden layer's variance that is the same for every latent."""
    torch.manual_seed(1)
    x = torch.randn(32, generator.network.latent_channels, 4, 4, 4)
    with torch.no_grad():
        for index, conv in enumerate(generator.transposed[:-1]):
            x = generator.hidden(index, conv(x))
    return float(x.mean(0).var() / x.var())


def test_free_kernels_start_with_a_noise_free_lattice_and_lattice_free_ones_do_not():
    torch.manual_seed(0)
    generator = Generator(PRESETS["tiny"], 3, "softmax")
    generator.apply(init_weights)
    generator.train()
    free_share = _noise_free_share(generator)
    make_lattice_free(generator)
    lattice_free_share = _noise_free_share(generator)
    # 1/32 is what the mean of 32 independent samples keeps by chance.
    assert free_share > 0.3
    assert lattice_free_share < 0.1


def test_plain_state_dict_is_the_network_a_generator_file_holds(isotropic, tmp_path):
    trainer = Trainer(isotropic, tiny_config(), "cpu")
    assert is_lattice_free(trainer.generator)
    trainer.run()
    state = plain_state_dict(trainer.sampling_generator())
    assert "transposed.0.weight" in state
    assert not any("parametrizations" in key for key in state)
    loaded = load_generator(trainer.export_generator(tmp_path / "g.safetensors"), "cpu")
    latent = torch.randn(1, 8, 5, 5, 5)
    net = trainer.sampling_generator()
    with torch.no_grad():
        assert torch.allclose(loaded.net(latent), net(latent), atol=1e-6)


def test_free_kernels_are_still_offered(isotropic):
    trainer = Trainer(isotropic, tiny_config(transposed_kernels="free"), "cpu")
    assert not is_lattice_free(trainer.generator)
    trainer.run()
    assert "transposed.0.weight" in trainer.generator.state_dict()


@pytest.mark.parametrize("saved_form", ["free", "lattice_free"])
def test_a_checkpoint_resumes_with_the_kernels_it_was_trained_with(isotropic, tmp_path, saved_form):
    other = "lattice_free" if saved_form == "free" else "free"
    straight = Trainer(isotropic, tiny_config(transposed_kernels=saved_form), "cpu")
    straight.run()
    first = Trainer(isotropic, tiny_config(transposed_kernels=saved_form), "cpu")
    first.run(until=3)
    checkpoint = first.save_checkpoint(tmp_path / "ckpt.pt")
    # e.g. a run from before lattice-free kernels, resumed with today's defaults
    resumed = Trainer(isotropic, tiny_config(transposed_kernels=other), "cpu")
    resumed.load_checkpoint(checkpoint)
    assert resumed.config.transposed_kernels == saved_form
    resumed.run()
    for a, b in zip(
        plain_state_dict(straight.generator).values(),
        plain_state_dict(resumed.generator).values(),
        strict=True,
    ):
        assert torch.equal(a, b)


def test_without_a_moving_average_the_latest_weights_are_sampled(isotropic, tmp_path):
    trainer = Trainer(isotropic, tiny_config(ema_decay=0), "cpu")
    trainer.run()
    assert trainer.average is None and trainer.sampling_generator() is trainer.generator
    state = torch.load(trainer.save_checkpoint(tmp_path / "c.pt"), weights_only=True)
    assert state["generator_average"] is None


def test_the_moving_average_trails_the_weights_with_its_own_norm_statistics(isotropic):
    trainer = Trainer(isotropic, tiny_config(iterations=30, ema_decay=0.9), "cpu")
    trainer.run()
    average = trainer.sampling_generator()
    assert average is trainer.average and not average.training
    trained = dict(trainer.generator.named_parameters())
    moved = [not torch.equal(value, trained[name]) for name, value in average.named_parameters()]
    assert all(moved)  # an average of past weights, not a copy of the latest
    # Its batch-norm statistics are those of its own first layer on the fixed latents.
    fixed = torch.Generator().manual_seed(trainer_module.NORM_SEED)
    first = []
    with torch.no_grad():
        for _ in range(trainer_module.NORM_BATCHES):
            latent = trainer._noise(trainer.config.resolved_generator_batch, fixed)
            first.append(average.transposed[0](latent))
    expected = torch.cat(first).mean((0, 2, 3, 4))
    assert torch.allclose(average.norms[0].running_mean, expected, atol=1e-5)
    assert not torch.allclose(trainer.generator.norms[0].running_mean, expected, atol=1e-3)


def test_a_checkpoint_without_a_moving_average_starts_one_from_its_weights(isotropic, tmp_path):
    old = Trainer(isotropic, tiny_config(ema_decay=0), "cpu")
    old.run()
    checkpoint = old.save_checkpoint(tmp_path / "old.pt")
    resumed = Trainer(isotropic, tiny_config(iterations=8), "cpu")
    resumed.load_checkpoint(checkpoint)
    for mean, value in zip(resumed.average.parameters(), old.generator.parameters()):
        assert torch.equal(mean, value)
    resumed.run()
    assert resumed.iteration == 8


def test_a_checkpoint_from_tinys_narrower_critic_resumes_with_the_critic_it_trained(
    isotropic, tmp_path
):
    # tiny's critic had 8-16-32 filters before 2026-12-04; a run begun then must go on.
    narrow = PRESETS["tiny"].model_copy(update={"critic_filters": [8, 16, 32]})
    straight = Trainer(isotropic, tiny_config(network=narrow), "cpu")
    straight.run()
    first = Trainer(isotropic, tiny_config(network=narrow), "cpu")
    first.run(until=3)
    state = first.state()
    state["config"]["network"] = None  # what tiny wrote then: the preset, not a network
    torch.save(state, tmp_path / "old.pt")
    resumed = Trainer(isotropic, tiny_config(), "cpu")
    assert resumed.critics[0].convs[0].out_channels == PRESETS["tiny"].critic_filters[0] != 8
    resumed.load_checkpoint(tmp_path / "old.pt")
    assert [conv.out_channels for conv in resumed.critics[0].convs] == [8, 16, 32, 1]
    resumed.run()
    for a, b in zip(straight.critics.parameters(), resumed.critics.parameters(), strict=True):
        assert torch.equal(a, b)
    for a, b in zip(
        plain_state_dict(straight.generator).values(),
        plain_state_dict(resumed.generator).values(),
        strict=True,
    ):
        assert torch.equal(a, b)
    # and its next checkpoint resumes the same way
    again = Trainer(isotropic, tiny_config(iterations=8), "cpu")
    again.load_checkpoint(resumed.save_checkpoint(tmp_path / "next.pt"))
    again.run()
    assert again.iteration == 8
