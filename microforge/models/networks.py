"""The SliceGAN networks: a 3D generator and the 2D critics that judge its slices.

The generator is written as a list of explicit layers (transposed convolution, batch norm
and ReLU, optional resize-convolution) rather than an opaque ``nn.Sequential`` so that
chunked generation (``generation.py``) can replay exactly the same arithmetic on a window
of the latent.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from microforge.models.config import NetworkConfig


class Generator(nn.Module):
    """Latent (N, Cz, L, L, L) -> image (N, C, D, H, W) of per-voxel probabilities/values.

    ``output_activation`` is softmax over channels for segmented (n-phase) data, where the
    channels are phase probabilities, and a sigmoid for grey and colour data in [0, 1].
    """

    def __init__(self, network: NetworkConfig, channels: int, output_activation: str) -> None:
        super().__init__()
        if output_activation not in ("softmax", "sigmoid"):
            raise ValueError(f"unknown output activation {output_activation!r}")
        self.network = network
        self.channels = channels
        self.output_activation = output_activation
        widths = [network.latent_channels, *network.generator_filters, channels]
        layers = len(network.generator_kernels)
        self.transposed = nn.ModuleList()
        self.norms = nn.ModuleList()
        transposed_count = layers - 1 if network.last_layer == "resize_conv" else layers
        for index in range(transposed_count):
            self.transposed.append(
                nn.ConvTranspose3d(
                    widths[index],
                    widths[index + 1],
                    network.generator_kernels[index],
                    network.generator_strides[index],
                    network.generator_paddings[index],
                    bias=False,
                )
            )
            if index < layers - 1:
                self.norms.append(nn.BatchNorm3d(widths[index + 1]))
        self.resize_conv: nn.Conv3d | None = None
        if network.last_layer == "resize_conv":
            self.resize_conv = nn.Conv3d(
                widths[-2], channels, 3, 1, 0, bias=network.resize_conv_bias
            )

    def activate(self, logits: torch.Tensor) -> torch.Tensor:
        if self.output_activation == "softmax":
            return torch.softmax(logits, dim=1)
        return torch.sigmoid(logits)

    def hidden(self, index: int, x: torch.Tensor) -> torch.Tensor:
        """Batch norm and ReLU after hidden layer ``index``."""
        return F.relu(self.norms[index](x))

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        x = latent
        hidden_count = len(self.norms)
        for index, conv in enumerate(self.transposed):
            x = conv(x)
            if index < hidden_count:
                x = self.hidden(index, x)
        if self.resize_conv is not None:
            # Per-axis target size 2(n-1): the public code used the y size for z as well.
            size = tuple(2 * (n - 1) for n in x.shape[2:])
            x = F.interpolate(x, size=size, mode="trilinear", align_corners=False)
            x = self.resize_conv(x)
        return self.activate(x)


class Critic(nn.Module):
    """2D WGAN critic: plain strided convolutions with ReLU, no normalisation (WGAN-GP)."""

    def __init__(self, network: NetworkConfig, channels: int) -> None:
        super().__init__()
        widths = [channels, *network.critic_filters, 1]
        self.convs = nn.ModuleList(
            nn.Conv2d(widths[i], widths[i + 1], k, s, p, bias=False)
            for i, (k, s, p) in enumerate(
                zip(network.critic_kernels, network.critic_strides, network.critic_paddings)
            )
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images
        last = len(self.convs) - 1
        for index, conv in enumerate(self.convs):
            x = conv(x)
            if index < last:
                x = F.relu(x)
        return x.flatten(1).mean(1)


def init_weights(module: nn.Module) -> None:
    """DCGAN initialisation (Radford et al.): N(0, 0.02) convs, N(1, 0.02) norms.

    The public SliceGAN code keeps PyTorch's default initialisation instead; in side-by-side
    runs of the tiny preset (docs/benchmarks.md, "Training dynamics") both train alike.
    """
    if isinstance(module, nn.Conv2d | nn.Conv3d | nn.ConvTranspose3d):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, nn.BatchNorm3d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


class LatticeFreeKernel(nn.Module):
    """A transposed-convolution kernel written as a box of ``stride`` taps per axis convolved
    with a free kernel of ``k - stride + 1`` taps: nearest-neighbour upsampling followed by
    a convolution (Odena et al., "Deconvolution and checkerboard artifacts", 2016).

    Why: a free stride-s kernel sums to different totals at the s^3 sub-voxel positions, so
    the constant part of its input (the mean of a ReLU, which carries no noise) comes out as
    a lattice of period s. Through the generator's layers this is a 16- or 32-voxel pattern
    that is there from initialisation (about half of the last hidden layer's variance)
    and that training amplifies: every volume became the same lattice whatever the seed
    (docs/benchmarks.md, "Why SliceGAN tiles one lattice"). In this form a constant input
    gives a constant output, the lattice has nothing to grow from, and the network is still
    an ordinary transposed convolution (same layers, same files, same chunked generation).
    """

    def __init__(self, stride: int) -> None:
        super().__init__()
        self.stride = stride

    def forward(self, free: torch.Tensor) -> torch.Tensor:
        # The box is separable: along each axis, the sum of ``stride`` shifted copies.
        # (A convolution with a box kernel per channel pair is 100x slower on the CPU.)
        kernel = free
        for dim in range(2, free.dim()):
            taps = kernel.shape[dim]
            shape = list(kernel.shape)
            shape[dim] = taps + self.stride - 1
            summed = kernel.new_zeros(shape)
            for shift in range(self.stride):
                summed.narrow(dim, shift, taps).add_(kernel)
            kernel = summed
        if not free.is_contiguous() and free.is_contiguous(memory_format=torch.channels_last_3d):
            return kernel.contiguous(memory_format=torch.channels_last_3d)  # keep the layout
        return kernel

    def right_inverse(self, kernel: torch.Tensor) -> torch.Tensor:
        """The free kernel to start from: the leading taps of a freshly initialised kernel,
        scaled so that the composed kernel's inner taps keep its spread."""
        keep = [slice(None), slice(None)] + [
            slice(0, n - self.stride + 1) for n in kernel.shape[2:]
        ]
        return kernel[tuple(keep)] / self.stride ** ((kernel.dim() - 2) / 2)


def make_lattice_free(generator: Generator) -> None:
    """Constrain every transposed convolution of ``generator`` to :class:`LatticeFreeKernel`
    (its parameters become the free kernels; ``plain_state_dict`` gives the usual weights)."""
    for conv in generator.transposed:
        if not parametrize.is_parametrized(conv, "weight"):
            parametrize.register_parametrization(conv, "weight", LatticeFreeKernel(conv.stride[0]))


def make_free(generator: Generator) -> None:
    """Undo :func:`make_lattice_free`, keeping the current kernels as free parameters."""
    for conv in generator.transposed:
        if parametrize.is_parametrized(conv, "weight"):
            parametrize.remove_parametrizations(conv, "weight", leave_parametrized=True)


def is_lattice_free(generator: Generator) -> bool:
    return any(parametrize.is_parametrized(conv, "weight") for conv in generator.transposed)


def plain_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    """Detached copies of the weights under their plain names (``transposed.0.weight``),
    parametrized kernels evaluated: what generator files and ``Generator`` expect."""
    with torch.no_grad():
        state = {
            key: value.detach().clone()
            for key, value in module.state_dict().items()
            if ".parametrizations." not in key
        }
        for name, sub in module.named_modules():
            if parametrize.is_parametrized(sub):
                for tensor_name in sub.parametrizations:
                    state[f"{name}.{tensor_name}"] = getattr(sub, tensor_name).detach().clone()
    return state
