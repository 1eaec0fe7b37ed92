import pytest
from pydantic import ValidationError

from microforge.models.config import PRESETS, NetworkConfig, TrainConfig


@pytest.mark.parametrize(
    ("arch", "crop", "period"), [("paper", 64, 32), ("reference", 64, 32), ("tiny", 32, 16)]
)
def test_presets_make_crops_the_critic_reduces_to_one(arch, crop, period):
    network = PRESETS[arch]
    assert network.crop_size == crop
    assert network.critic_output_size(crop) == 1
    assert network.period == period


def test_paper_preset_is_table_one():
    paper = PRESETS["paper"]
    assert paper.latent_channels == 64 and paper.latent_size == 4
    assert paper.generator_filters == [512, 256, 128, 64]
    assert paper.generator_paddings == [2, 2, 2, 2, 3]
    assert paper.generator_output_size(6) == 128


def _with(**changes):
    return {**PRESETS["paper"].model_dump(), **changes}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"generator_paddings": [1, 2, 2, 2, 3]}, "padding 1 must be at least kernel - stride"),
        ({"generator_strides": [4, 2, 2, 2, 2]}, "stride 4 must be smaller than kernel 4"),
        ({"generator_kernels": [5, 4, 4, 4, 4]}, "kernel 5 must be a multiple of stride 2"),
        ({"critic_paddings": [1, 1, 1, 1, 1]}, "instead of 1x1"),
        ({"generator_filters": [512, 256]}, "must list 4 hidden layers"),
    ],
)
def test_bad_networks_are_rejected_with_what_to_change(changes, message):
    with pytest.raises(ValidationError, match=message):
        NetworkConfig(**_with(**changes))


def test_train_config_defaults_and_unknown_fields():
    config = TrainConfig()
    assert config.arch == "paper" and config.critic_steps == 5 and config.gp_lambda == 10
    assert config.resolved_generator_batch == 2 * config.critic_batch
    with pytest.raises(ValidationError, match="extra"):
        TrainConfig(iterationz=5)
    with pytest.raises(ValidationError, match="critic_batch"):
        TrainConfig(critic_batch=0)


def test_learning_rates_default_to_the_presets_and_a_config_overrides_them():
    tiny = TrainConfig(arch="tiny")
    assert (tiny.resolved_lr_generator, tiny.resolved_lr_critic) == (5e-4, 1e-3)
    paper = TrainConfig(arch="paper")
    assert (paper.resolved_lr_generator, paper.resolved_lr_critic) == (1e-4, 1e-4)
    chosen = TrainConfig(arch="tiny", lr_generator=2e-4, lr_critic=3e-4)
    assert (chosen.resolved_lr_generator, chosen.resolved_lr_critic) == (2e-4, 3e-4)


def test_custom_network_overrides_the_preset():
    custom = PRESETS["tiny"].model_copy(update={"generator_filters": [8, 8, 8]})
    assert TrainConfig(arch="paper", network=custom).network_config() == custom
