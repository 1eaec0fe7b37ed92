"""A re-implementation of the public SliceGAN code's generators, written from the format
description in issue 11 (the public code itself is not a dependency), and the files its
training script leaves: ``NAME_Gen.pt`` (``torch.save(netG.state_dict())``) and
``NAME_params.data`` (``pickle.dump([dk, ds, df, dp, gk, gs, gf, gp])``).

Both kinds: all transposed convolutions (``slicegan_nets``) and resize-convolution
(``slicegan_rc_nets``): every layer is built (``convs.N``, ``bns.N``), the last layer's
batch norm is never used, and in the rc kind neither is its convolution; ``rcconv`` is a
3x3x3 convolution with a bias, no padding, after trilinear upsampling to 2(n-1) per axis.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

# A small network with the public code's shape of layers (kernels 4, strides 2, paddings
# 2..3): a 4^3 latent makes 32^3 voxels, and the critic reduces 32-pixel crops to 1x1.
GK, GS, GP = [4, 4, 4, 4], [2, 2, 2, 2], [2, 2, 2, 3]
DK, DS, DP = [4, 4, 4, 4], [2, 2, 2, 2], [1, 1, 1, 0]


def params_for(channels: int, latent_channels: int = 4) -> list[list[int]]:
    gf = [latent_channels, 8, 6, 4, channels]
    df = [channels, 4, 8, 16, 1]
    return [DK, DS, df, DP, GK, GS, gf, GP]


class SliceGANGenerator(nn.Module):
    def __init__(self, params: list[list[int]], imtype: str, rc: bool) -> None:
        super().__init__()
        _, _, _, _, gk, gs, gf, gp = params
        self.imtype = imtype
        self.rc = rc
        self.convs = nn.ModuleList()
        self.bns = nn.ModuleList()
        for lay, (k, s, p) in enumerate(zip(gk, gs, gp)):
            self.convs.append(nn.ConvTranspose3d(gf[lay], gf[lay + 1], k, s, p, bias=False))
            self.bns.append(nn.BatchNorm3d(gf[lay + 1]))
        if rc:
            self.rcconv = nn.Conv3d(gf[-2], gf[-1], 3, 1, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv, bn in zip(self.convs[:-1], self.bns[:-1]):
            x = F.relu_(bn(conv(x)))
        if self.rc:
            size = tuple(2 * (n - 1) for n in x.shape[2:])
            x = self.rcconv(F.interpolate(x, size=size, mode="trilinear", align_corners=False))
        else:
            x = self.convs[-1](x)
        if self.imtype in ("grayscale", "colour"):
            return 0.5 * (torch.tanh(x) + 1)
        return torch.softmax(x, 1)


def make_files(
    folder: Path, *, channels: int, imtype: str, rc: bool, seed: int = 0, name: str = "run"
) -> tuple[Path, Path, SliceGANGenerator]:
    """A 'trained' generator (random weights, random batch-norm statistics) and its files."""
    torch.manual_seed(seed)
    params = params_for(channels)
    net = SliceGANGenerator(params, imtype, rc)
    with torch.no_grad():
        for bn in net.bns:
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.2, 0.2)
            bn.running_mean.uniform_(-0.3, 0.3)
            bn.running_var.uniform_(0.5, 2.0)
            bn.num_batches_tracked.fill_(1234)
        for conv in net.convs:
            conv.weight.mul_(4.0)  # livelier outputs than PyTorch's default init
    net.eval()
    weights = folder / f"{name}_Gen.pt"
    params_path = folder / f"{name}_params.data"
    torch.save(net.state_dict(), weights)
    with open(params_path, "wb") as handle:
        pickle.dump(params, handle)
    return weights, params_path, net
