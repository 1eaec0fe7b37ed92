"""Saving and loading the exported generator: weights + config + phases in one file."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from microforge.models.config import NetworkConfig
from microforge.models.data import TrainingData
from microforge.models.devices import resolve_device
from microforge.models.generator_file import (
    METADATA_KEY,
    GeneratorFileError,
    GeneratorFileInfo,
    inspect_generator_file,
    label_dtype,
)
from microforge.models.networks import Generator


def output_dtype_for(data: TrainingData) -> str:
    """Labels keep 8 bits unless a phase value needs more; grey keeps 16 bits if it had them."""
    if data.image_type == "nphase":
        return label_dtype(data.phases)
    if data.image_type == "grayscale" and np.dtype(data.source_dtype).itemsize >= 2:
        return "uint16"
    return "uint8"


def save_generator(
    path: str | Path,
    weights: dict[str, torch.Tensor],
    *,
    data: TrainingData,
    network: NetworkConfig,
    arch: str | None,
    iteration: int,
) -> Path:
    info = GeneratorFileInfo(
        image_type=data.image_type,
        phases=list(data.phases),
        channels=data.channels,
        network=network,
        output_dtype=output_dtype_for(data),
        value_range=data.value_range,
        arch=arch,
        iteration=iteration,
    )
    tensors = {name: t.detach().cpu().contiguous() for name, t in weights.items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        save_file(tensors, str(temporary), metadata={METADATA_KEY: json.dumps(info.metadata())})
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


@dataclass
class LoadedGenerator:
    """A generator ready to run, with what is needed to turn its output into a volume."""

    net: Generator
    info: GeneratorFileInfo
    device: torch.device

    @property
    def image_type(self) -> str:
        return self.info.image_type

    @property
    def phases(self) -> list[int | float]:
        return self.info.phases

    @property
    def channels(self) -> int:
        return self.info.channels

    @property
    def network(self) -> NetworkConfig:
        return self.info.network

    @property
    def output_dtype(self) -> np.dtype:
        return np.dtype(self.info.output_dtype)

    @property
    def display_range(self) -> tuple[float, float] | None:
        """Grey range a viewer should show the volume in: the lowest to the highest phase
        value (labels 0/1/2 in a uint8 file would look black over 0..255), the values a
        grey generator can make, None for colour."""
        if self.image_type == "colour":
            return None
        if self.image_type == "nphase":
            values = [float(v) for v in self.phases]
            return min(values), max(values)
        low, high = self.info.value_range
        return max(float(low), 0.0), min(float(high), float(np.iinfo(self.output_dtype).max))


def load_generator(path: str | Path, device: str | torch.device = "auto") -> LoadedGenerator:
    """Load on CPU or GPU whatever it was trained on; eval mode (running batch-norm stats)."""
    info = inspect_generator_file(path)
    target = resolve_device(device)
    activation = "softmax" if info.image_type == "nphase" else "sigmoid"
    net = Generator(info.network, info.channels, activation)
    try:
        net.load_state_dict(load_file(str(path), device="cpu"))
    except (RuntimeError, ValueError, OSError) as error:
        raise GeneratorFileError(f"the generator's weights cannot be loaded: {error}") from error
    net.to(target).eval()
    return LoadedGenerator(net=net, info=info, device=target)
