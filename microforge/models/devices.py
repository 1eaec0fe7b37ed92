"""Choosing the device and its numeric settings in one place."""

from __future__ import annotations

import torch


class DeviceError(ValueError):
    """The asked-for device is not there; the message says what to use instead."""


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """``auto`` means the first GPU when there is one; a missing GPU is a clear error."""
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise DeviceError(f"unknown device {name!r}: use auto, cpu, cuda or cuda:N") from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(
            f"device {name!r} asked for, but no CUDA GPU is available: use --device cpu"
        )
    return device


def configure_precision(device: torch.device, precision: str) -> None:
    """TF32 is what the reference figures use on Hopper; fp32 turns it off for exactness."""
    if device.type != "cuda":
        return
    allow = precision in ("tf32", "bf16")
    torch.backends.cuda.matmul.allow_tf32 = allow
    torch.backends.cudnn.allow_tf32 = allow
    torch.backends.cudnn.benchmark = True
