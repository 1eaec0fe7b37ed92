"""Small synthetic data and networks shared by the engine tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from microforge.models.config import PRESETS, NetworkConfig
from microforge.models.export import LoadedGenerator
from microforge.models.generator_file import GeneratorFileInfo
from microforge.models.networks import Generator, init_weights

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def blobs(shape: tuple[int, ...], fraction: float = 0.5, seed: int = 0, smooth: float = 2.0):
    """A two-phase 0/1 image with blobs of a few pixels: a stand-in for a micrograph."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    field = gaussian_filter(rng.random(shape), smooth)
    return (field > np.quantile(field, 1 - fraction)).astype(np.uint8)


def narrow(arch: str) -> NetworkConfig:
    """The preset's geometry with few channels: same index bookkeeping, fast on a CPU."""
    network = PRESETS[arch]
    if arch == "tiny":
        return network
    return network.model_copy(update={"generator_filters": [12, 10, 8, 6], "latent_channels": 4})


def random_generator(
    arch: str = "tiny",
    phases: list[int] | None = None,
    image_type: str = "nphase",
    output_dtype: str = "uint8",
    seed: int = 0,
) -> LoadedGenerator:
    """An untrained generator with random weights and batch-norm statistics."""
    network = narrow(arch)
    phases = phases if phases is not None else [0, 128, 255]
    channels = {"nphase": len(phases), "grayscale": 1, "colour": 3}[image_type]
    activation = "softmax" if image_type == "nphase" else "sigmoid"
    torch.manual_seed(seed)
    net = Generator(network, channels, activation)
    net.apply(init_weights)
    for norm in net.norms:
        norm.running_mean.uniform_(-0.5, 0.5)
        norm.running_var.uniform_(0.5, 2.0)
    info = GeneratorFileInfo(
        image_type=image_type,
        phases=phases if image_type == "nphase" else [],
        channels=channels,
        network=network,
        output_dtype=output_dtype,
        value_range=(0.0, 255.0 if output_dtype == "uint8" else 65535.0),
        arch=arch,
    )
    return LoadedGenerator(net=net.eval(), info=info, device=torch.device("cpu"))


def assert_chunked_equals_one_shot(loaded: LoadedGenerator, shape, chunk: int, seed: int) -> None:
    """Chunked probabilities within float32 rounding of one shot, and identical labels."""
    from microforge.models.generation import generate_array, generate_probabilities

    one_shot = generate_probabilities(loaded, shape, seed=seed, chunk=0)
    chunked = generate_probabilities(loaded, shape, seed=seed, chunk=chunk)
    torch.testing.assert_close(chunked, one_shot, rtol=0, atol=1e-6)
    labels = generate_array(loaded, shape, seed=seed, chunk=chunk)
    assert np.array_equal(labels, generate_array(loaded, shape, seed=seed, chunk=0))


def untrained_generator_file(path, image: np.ndarray, seed: int = 0):  # noqa: ANN001, ANN201
    """A tiny generator file with initial weights for the phases of ``image`` (a 2D label
    image), as ``save_generator`` writes it; returns its path."""
    from microforge.models.config import PRESETS
    from microforge.models.data import prepare_training_data
    from microforge.models.export import save_generator

    data = prepare_training_data([image])
    torch.manual_seed(seed)
    network = Generator(PRESETS["tiny"], data.channels, "softmax")
    network.apply(init_weights)
    return save_generator(
        path, network.state_dict(), data=data, network=PRESETS["tiny"], arch="tiny", iteration=0
    )
