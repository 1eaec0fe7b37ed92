"""Which part of the latent every part of a generated volume depends on.

Why its own module: this is the geometry that makes chunked generation exact. Each layer
is described along one axis (``Op``): which input indices an output range needs and how
sizes change, so that for any chunk of the output the exact latent window, and every
intermediate range, can be found by walking the layers backwards. ``plan_volume`` sizes
the latent for a requested shape (any size; periodic axes wrap), and ``make_latent``
draws it on the CPU so that a seed gives the same volume on every device.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from microforge.models.config import NetworkConfig, periodic_size_problem

Range = tuple[int, int]


class GenerationError(ValueError):
    """A volume that cannot be generated as asked; the message says what to change."""


@dataclass(frozen=True)
class Op:
    """One layer as seen along one axis: what it needs and how it maps indices."""

    kind: str  # transpose | upsample | conv3
    index: int = 0
    kernel: int = 1
    stride: int = 1
    padding: int = 0
    hidden: bool = False

    def out_size(self, n: int, periodic: bool) -> int:
        if self.kind == "transpose":
            return (
                n * self.stride
                if periodic
                else (n - 1) * self.stride - 2 * self.padding + self.kernel
            )
        if self.kind == "upsample":
            return 2 * n if periodic else 2 * (n - 1)
        return n if periodic else n - 2

    def needed(self, out: Range, n_in: int, n_out: int, periodic: bool) -> Range:
        """Input range that outputs [start, stop) depend on (clipped unless periodic)."""
        start, stop = out
        if self.kind == "transpose":
            k, s, p = self.kernel, self.stride, self.padding
            low = -((-(start + p - k + 1)) // s)  # ceil division
            high = (stop - 1 + p) // s + 1
        elif self.kind == "upsample":
            low = upsample_sources(np.array([start]), n_in, n_out, periodic)[0][0]
            high = upsample_sources(np.array([stop - 1]), n_in, n_out, periodic)[1][0] + 1
        else:
            low, high = (start - 1, stop + 1) if periodic else (start, stop + 2)
        if periodic:
            return int(low), int(high)
        return max(0, int(low)), min(n_in, int(high))

    def origin(self, window_start: int, periodic: bool) -> int:
        """Global index of the first voxel of an uncropped result on a window."""
        if self.kind == "transpose":
            return window_start * self.stride - self.padding
        if self.kind == "conv3":
            return window_start + (1 if periodic else 0)
        raise AssertionError("upsample computes exactly the asked range")


def upsample_sources(
    out: np.ndarray, n_in: int, n_out: int, periodic: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Linear-interpolation sources as PyTorch's ``align_corners=False`` computes them.

    Non-periodic axes resize n -> 2(n-1) (the public code's resize-convolution, with each
    axis sized by itself); periodic axes double exactly and wrap.
    """
    scale = 0.5 if periodic else n_in / n_out
    source = (out + 0.5) * scale - 0.5
    if not periodic:
        source = np.maximum(source, 0.0)
    low = np.floor(source).astype(np.int64)
    high = low + 1 if periodic else np.minimum(low + 1, n_in - 1)
    return low, high, (source - low).astype(np.float32)


def upsample_sources_on(
    device: torch.device, low: int, high: int, n_in: int, n_out: int, periodic: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``upsample_sources(np.arange(low, high), ...)`` computed on ``device``.

    Why a second copy: building the indices with NumPy and uploading them costs a
    host-to-device copy from pageable memory per axis and chunk, which stalls the host
    until the GPU is idle. The arithmetic is the same float64 arithmetic as NumPy's
    (IEEE-exact +, *, floor), so the results are bit for bit the same.
    """
    out = torch.arange(low, high, dtype=torch.float64, device=device)
    scale = 0.5 if periodic else n_in / n_out
    source = (out + 0.5) * scale - 0.5
    if not periodic:
        source = source.clamp_min(0.0)
    first = source.floor()
    second = first + 1 if periodic else (first + 1).clamp_max(n_in - 1)
    return first.long(), second.long(), (source - first).float()


def layer_ops(network: NetworkConfig) -> list[Op]:
    layers = len(network.generator_kernels)
    ops: list[Op] = []
    for index in range(layers):
        if index == layers - 1 and network.last_layer == "resize_conv":
            ops += [Op("upsample"), Op("conv3", kernel=3)]
        else:
            ops.append(
                Op(
                    "transpose",
                    index=index,
                    kernel=network.generator_kernels[index],
                    stride=network.generator_strides[index],
                    padding=network.generator_paddings[index],
                    hidden=index < layers - 1,
                )
            )
    return ops


@dataclass(frozen=True)
class AxisPlan:
    """Sizes of every layer along one axis and where the asked volume sits in the output."""

    size: int
    periodic: bool
    sizes: tuple[int, ...]  # sizes[0] = latent, sizes[i + 1] = after op i
    offset: int

    @property
    def latent(self) -> int:
        return self.sizes[0]


def plan_axis(network: NetworkConfig, size: int, periodic: bool, name: str) -> AxisPlan:
    ops = layer_ops(network)

    def sizes_for(latent: int) -> tuple[int, ...]:
        sizes = [latent]
        for op in ops:
            sizes.append(op.out_size(sizes[-1], periodic))
        return tuple(sizes)

    if periodic:
        problem = periodic_size_problem(network, size, name)
        if problem:
            raise GenerationError(problem)
        return AxisPlan(size, True, sizes_for(size // network.period), 0)
    latent = 1
    while sizes_for(latent)[-1] < size or min(sizes_for(latent)) < 1:
        latent += 1
    sizes = sizes_for(latent)
    return AxisPlan(size, False, sizes, (sizes[-1] - size) // 2)


def plan_volume(
    network: NetworkConfig, shape: Sequence[int], periodic: Sequence[bool]
) -> list[AxisPlan]:
    if len(shape) != 3 or any(int(n) < 1 for n in shape):
        raise GenerationError(f"shape must be three positive sizes (z, y, x), got {list(shape)}")
    if len(periodic) != 3:
        raise GenerationError("periodic needs three flags (z, y, x)")
    return [
        plan_axis(network, int(n), bool(p), name)
        for n, p, name in zip(shape, periodic, ("z", "y", "x"))
    ]


def make_latent(network: NetworkConfig, plans: Sequence[AxisPlan], seed: int) -> torch.Tensor:
    """The whole latent, drawn on the CPU: the same seed gives the same volume on any device."""
    generator = torch.Generator().manual_seed(int(seed))
    shape = (1, network.latent_channels, *(plan.latent for plan in plans))
    return torch.randn(shape, generator=generator)
