"""The exported generator file: safetensors weights plus JSON metadata. Torch-free.

A safetensors file is a JSON header followed by raw tensors, so the API can check an
uploaded generator (its format, config and every tensor's shape) without importing torch
and without unpickling anything a stranger sent.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from microforge.models.config import NetworkConfig

FORMAT = "microforge-generator"
VERSION = 1
METADATA_KEY = "microforge"
MAX_HEADER_BYTES = 10 * 1024 * 1024


class GeneratorFileError(ValueError):
    """Not a usable generator file; the message says why and what to do."""


@dataclass(frozen=True)
class GeneratorFileInfo:
    image_type: str
    phases: list[int | float]
    channels: int
    network: NetworkConfig
    output_dtype: str
    value_range: tuple[float, float]
    arch: str | None = None
    iteration: int | None = None
    parameters: int = 0
    #: Edge of one voxel and its unit, when the file records it (imported generators).
    voxel_size: float | None = None
    voxel_unit: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """What a Generator row records of its file, whether trained here or imported
        (``voxel_size`` and ``unit`` only when the file records them, as the service's
        generate jobs read them there)."""
        summary = {
            "arch": self.arch,
            "network": self.network.model_dump(mode="json"),
            "channels": self.channels,
            "output_dtype": self.output_dtype,
            "iteration": self.iteration,
            "parameters": self.parameters,
        }
        if self.voxel_size is not None:
            summary |= {"voxel_size": self.voxel_size, "unit": self.voxel_unit or "um"}
        return summary

    def metadata(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "image_type": self.image_type,
            "phases": self.phases,
            "channels": self.channels,
            "network": self.network.model_dump(),
            "output_dtype": self.output_dtype,
            "value_range": list(self.value_range),
            "arch": self.arch,
            "iteration": self.iteration,
            "voxel_size": self.voxel_size,
            "voxel_unit": self.voxel_unit,
            **self.extra,
        }


def expected_tensor_shapes(network: NetworkConfig, channels: int) -> dict[str, list[int]]:
    """The state-dict shapes a ``networks.Generator`` of this config has (names included)."""
    widths = [network.latent_channels, *network.generator_filters, channels]
    layers = len(network.generator_kernels)
    transposed = layers - 1 if network.last_layer == "resize_conv" else layers
    shapes: dict[str, list[int]] = {}
    for index in range(transposed):
        k = network.generator_kernels[index]
        shapes[f"transposed.{index}.weight"] = [widths[index], widths[index + 1], k, k, k]
    for index in range(layers - 1):
        width = widths[index + 1]
        for name in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"norms.{index}.{name}"] = [width]
        shapes[f"norms.{index}.num_batches_tracked"] = []
    if network.last_layer == "resize_conv":
        shapes["resize_conv.weight"] = [channels, widths[-2], 3, 3, 3]
        if network.resize_conv_bias:
            shapes["resize_conv.bias"] = [channels]
    return shapes


def read_header(path: Path) -> dict[str, Any]:
    """The safetensors JSON header, read with the standard library only."""
    try:
        with open(path, "rb") as handle:
            prefix = handle.read(8)
            if len(prefix) < 8:
                raise GeneratorFileError("the file is empty or truncated: export it again")
            (length,) = struct.unpack("<Q", prefix)
            if length <= 1 or length > MAX_HEADER_BYTES:
                raise GeneratorFileError(
                    "this is not a MicroForge generator file (no safetensors header): upload "
                    "the file written by `microforge train` or GET /v1/generators/{id}/file"
                )
            raw = handle.read(length)
            data_bytes = path.stat().st_size - 8 - length
    except OSError as error:
        raise GeneratorFileError(f"cannot read the generator file: {error}") from error
    if len(raw) < length:
        raise GeneratorFileError("the generator file is truncated: export it again")
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise GeneratorFileError("the generator file's header is corrupt") from error
    if not isinstance(header, dict):
        raise GeneratorFileError("the generator file's header is corrupt")
    header["__data_bytes__"] = data_bytes
    return header


def inspect_generator_file(path: str | Path) -> GeneratorFileInfo:
    """Validate format, metadata, config and every tensor's shape; never loads weights."""
    header = read_header(Path(path))
    data_bytes = header.pop("__data_bytes__")
    metadata = header.pop("__metadata__", None) or {}
    try:
        meta = json.loads(metadata[METADATA_KEY])
    except (KeyError, TypeError, json.JSONDecodeError) as error:
        raise GeneratorFileError(
            "the file has no MicroForge metadata: it is a safetensors file, but not a "
            "generator exported by MicroForge"
        ) from error
    if meta.get("format") != FORMAT:
        raise GeneratorFileError(f"unknown format {meta.get('format')!r}: expected {FORMAT}")
    if meta.get("version") != VERSION:
        raise GeneratorFileError(
            f"generator file version {meta.get('version')} is not supported (this MicroForge "
            f"reads version {VERSION}): upgrade MicroForge or export the generator again"
        )
    try:
        network = NetworkConfig(**meta["network"])
        info = GeneratorFileInfo(
            image_type=str(meta["image_type"]),
            phases=list(meta.get("phases") or []),
            channels=int(meta["channels"]),
            network=network,
            output_dtype=str(meta.get("output_dtype", "uint8")),
            value_range=tuple(meta.get("value_range", (0.0, 1.0))),  # type: ignore[arg-type]
            arch=meta.get("arch"),
            iteration=meta.get("iteration"),
            voxel_size=_positive_or_none(meta.get("voxel_size")),
            voxel_unit=str(meta["voxel_unit"]) if meta.get("voxel_unit") else None,
        )
    except (KeyError, TypeError, ValueError, ValidationError) as error:
        raise GeneratorFileError(f"the generator's metadata is invalid: {error}") from error
    _check_consistency(info)
    _check_tensors(header, info, data_bytes)
    learnable = [
        shape
        for name, shape in expected_tensor_shapes(info.network, info.channels).items()
        if not name.endswith(("running_mean", "running_var", "num_batches_tracked"))
    ]
    return replace(info, parameters=sum(math.prod(shape) for shape in learnable))


def _positive_or_none(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)
    if not (math.isfinite(number) and number > 0):
        raise ValueError(f"voxel_size {value!r} is not a positive number")
    return number


def label_dtype(phases: list[int | float]) -> str:
    """Labels keep 8 bits unless a phase value needs more."""
    fits = all(float(v).is_integer() and 0 <= v <= 255 for v in phases)
    return "uint8" if fits else "uint16"


def _check_consistency(info: GeneratorFileInfo) -> None:
    if info.image_type not in ("nphase", "grayscale", "colour"):
        raise GeneratorFileError(f"unknown image type {info.image_type!r} in the generator file")
    if info.image_type == "nphase" and len(info.phases) != info.channels:
        raise GeneratorFileError("the generator's phase list does not match its channels")
    if info.output_dtype not in ("uint8", "uint16"):
        raise GeneratorFileError(f"unsupported output dtype {info.output_dtype!r}")


def _check_tensors(header: dict[str, Any], info: GeneratorFileInfo, data_bytes: int) -> None:
    expected = expected_tensor_shapes(info.network, info.channels)
    found = {name: entry.get("shape") for name, entry in header.items()}
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    if missing or unexpected:
        raise GeneratorFileError(
            f"the generator's tensors do not match its config (missing {missing[:3]}, "
            f"unexpected {unexpected[:3]}): the file is damaged or was edited"
        )
    for name, shape in expected.items():
        if found[name] != shape:
            raise GeneratorFileError(
                f"tensor {name} has shape {found[name]}, but the config needs {shape}"
            )
    end = max((entry["data_offsets"][1] for entry in header.values()), default=0)
    if end > data_bytes:
        raise GeneratorFileError("the generator file is truncated: export it again")
