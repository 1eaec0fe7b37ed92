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
            self.resize_conv = nn.Conv3d(widths[-2], channels, 3, 1, 0, bias=False)

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
