"""Generators trained by the public SliceGAN code (and MicroLib's) as MicroForge files. Torch-free.

The public code (github.com/stke9/SliceGAN) leaves two files per run:

- ``NAME_params.data``: ``pickle.dump([dk, ds, df, dp, gk, gs, gf, gp])``, the critic's and
  the generator's kernels, strides, filters and paddings. ``gf`` is ``[latent channels,
  hidden widths..., image channels]``. Its generator builds one layer per entry of
  ``zip(gk, gs, gp)`` (so the shortest of the three sets the layer count, and ``gf`` has one
  entry more); the critic likewise from ``zip(dk, ds, dp)``.
- ``NAME_Gen.pt``: ``torch.save(netG.state_dict())`` of one of its two generators, each
  with ``convs.N`` = ``ConvTranspose3d(gf[N], gf[N+1], gk[N], gs[N], gp[N], bias=False)``
  and ``bns.N`` = ``BatchNorm3d(gf[N+1])`` for every layer N:

  - all-transposed (``slicegan_nets``): ReLU(bn(conv)) for every layer but the last, whose
    batch norm is never used; the last convolution is followed by a softmax over channels
    (n-phase) or ``0.5 * (tanh(x) + 1)`` (grey, colour);
  - resize-convolution (``slicegan_rc_nets``): the same hidden layers, then the last
    layer's convolution and batch norm are unused: trilinear upsampling
    (``align_corners=False``) of the last hidden output to 2(n-1) voxels per axis, and
    ``rcconv`` = ``Conv3d(gf[-2], gf[-1], 3, 1, 0)`` *with* a bias, no padding, then the same
    output activation (as issue 11 describes it; some versions of the public rc code may
    apply the softmax whatever the type, which only n-phase runs can have trained with, so
    n-phase files read the same either way). Assumption: the public code computes the
    target size from the hidden output's own sizes; it draws cubic latents, for which "per
    axis" and "all axes from one axis" agree, and per axis is the only rule that chunks
    exactly.

  Both generate in eval mode (``util.test_img`` calls ``netG.eval()`` after loading), so
  batch norm uses the saved running statistics, as ``export.load_generator`` does.

What the files cannot say, the caller says: the image type (1 channel = grayscale by
default; 3 channels is colour or three phases, so it must be given), the phase label
values (default 0..n-1), and optionally the pixel size.

Mapping onto ``networks.Generator``: the same layers, the unused last batch norm (and, for
the rc kind, the unused last convolution) dropped; ``NetworkConfig.resize_conv_bias`` keeps
``rcconv``'s bias. MicroForge's grey/colour activation is a sigmoid, and
``0.5 * (tanh(x) + 1) == sigmoid(2x)``: the last layer's weights (and bias) are doubled,
which is exact in floating point, so the outputs agree to float32 rounding of the two
activation formulas (n-phase: the same softmax). The critic is not in the files; the
params' critic is recorded when it fits MicroForge's network rules, since only the
generator is used.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import ValidationError
from safetensors.numpy import save_file

from microforge.models.config import MAX_FILTERS, MAX_KERNEL, MAX_LAYERS, NetworkConfig
from microforge.models.generator_file import (
    METADATA_KEY,
    GeneratorFileError,
    GeneratorFileInfo,
    expected_tensor_shapes,
    inspect_generator_file,
    label_dtype,
)
from microforge.models.safe_pickle import UnsafePickleError, load_int_lists, load_state_dict

ImageType = Literal["nphase", "grayscale", "colour"]
IMAGE_TYPES: tuple[str, ...] = ("nphase", "grayscale", "colour")
#: The public code trains on a 4^3 latent (``lz = 4`` in its model.py).
TRAINING_LATENT = 4
MAX_PHASE_VALUE = 65535
PARAM_NAMES = ("dk", "ds", "df", "dp", "gk", "gs", "gf", "gp")


class SliceGANImportError(GeneratorFileError):
    """Files that cannot be imported; ``code`` says which file, the message what is wrong."""

    def __init__(self, message: str, code: str = "invalid_slicegan_files") -> None:
        super().__init__(message)
        self.code = code


def _params_error(message: str) -> SliceGANImportError:
    return SliceGANImportError(f"params file: {message}", "invalid_slicegan_params")


def _weights_error(message: str) -> SliceGANImportError:
    return SliceGANImportError(f"weights file: {message}", "invalid_slicegan_weights")


@dataclass(frozen=True)
class SliceGANParams:
    """The eight layer lists of a params file, checked for sizes MicroForge can run."""

    dk: tuple[int, ...]
    ds: tuple[int, ...]
    df: tuple[int, ...]
    dp: tuple[int, ...]
    gk: tuple[int, ...]
    gs: tuple[int, ...]
    gf: tuple[int, ...]
    gp: tuple[int, ...]

    @property
    def layers(self) -> int:
        return min(len(self.gk), len(self.gs), len(self.gp))

    @property
    def critic_layers(self) -> int:
        return min(len(self.dk), len(self.ds), len(self.dp))


def read_params(data: bytes) -> SliceGANParams:
    """Parse a params file's bytes; :class:`SliceGANImportError` when it is not one."""
    try:
        value = load_int_lists(data, "the params file")
    except UnsafePickleError as error:
        raise _params_error(str(error).replace("the params file ", "", 1)) from error
    if not isinstance(value, list | tuple) or len(value) != len(PARAM_NAMES):
        count = len(value) if isinstance(value, list | tuple) else "no"
        raise _params_error(
            f"holds {count} lists; SliceGAN writes 8: [dk, ds, df, dp, gk, gs, gf, gp]"
        )
    lists: dict[str, tuple[int, ...]] = {}
    for name, item in zip(PARAM_NAMES, value):
        if not isinstance(item, list | tuple) or not all(type(v) is int for v in item):
            raise _params_error(f"{name} is not a list of integers")
        if not 1 <= len(item) <= MAX_LAYERS + 1:
            raise _params_error(
                f"{name} has {len(item)} entries; 1 to {MAX_LAYERS + 1} are accepted"
            )
        low, high, meaning = {
            "k": (1, MAX_KERNEL, "kernel"),
            "s": (1, MAX_KERNEL, "stride"),
            "p": (0, MAX_KERNEL, "padding"),
            "f": (1, MAX_FILTERS, "filter count"),
        }[name[1]]
        bad = [v for v in item if not low <= v <= high]
        if bad:
            raise _params_error(f"{name} holds {bad[0]}, not a {meaning} between {low} and {high}")
        lists[name] = tuple(item)
    params = SliceGANParams(**lists)
    if len(params.gf) != params.layers + 1:
        raise _params_error(
            f"gf has {len(params.gf)} entries but gk, gs, gp make {params.layers} layers: "
            f"gf must list {params.layers + 1} (latent channels, widths, image channels)"
        )
    if len(params.df) < params.critic_layers + 1:
        raise _params_error(
            f"df has {len(params.df)} entries but dk, ds, dp make {params.critic_layers} layers"
        )
    return params


@dataclass(frozen=True)
class ImportedGenerator:
    """A converted generator: the file's description and its tensors, ready to write."""

    info: GeneratorFileInfo
    tensors: dict[str, np.ndarray]
    kind: Literal["transpose", "resize_conv"]


def convert(
    state: dict[str, np.ndarray],
    params: SliceGANParams,
    *,
    image_type: str | None = None,
    phases: list[int] | None = None,
    voxel_size: float | None = None,
    voxel_unit: str | None = None,
    source: str | None = None,
) -> ImportedGenerator:
    """Map a public-SliceGAN state dict + params onto a MicroForge generator."""
    state = _strip_data_parallel(state)
    kind: Literal["transpose", "resize_conv"] = (
        "resize_conv" if "rcconv.weight" in state else "transpose"
    )
    channels = params.gf[-1]
    image_type = _image_type(image_type, channels)
    phases = _phases(image_type, phases, channels)
    network = _network(params, kind)
    tensors = _map_tensors(state, params, kind, image_type)
    expected = expected_tensor_shapes(network, channels)
    for name, shape in expected.items():
        if name not in tensors:
            raise _weights_error(f"{_original_name(name, params, kind)} is missing")
        if list(tensors[name].shape) != shape:
            raise _weights_error(
                f"{_original_name(name, params, kind)} has shape {list(tensors[name].shape)}, "
                f"but the params file needs {shape}: are the two files from the same run?"
            )
    info = GeneratorFileInfo(
        image_type=image_type,
        phases=list(phases),
        channels=channels,
        network=network,
        output_dtype=label_dtype(phases) if image_type == "nphase" else "uint8",
        value_range=(0.0, 255.0) if image_type != "nphase" else (0.0, 1.0),
        arch=None,
        voxel_size=voxel_size,
        voxel_unit=voxel_unit if voxel_size is not None else None,
        extra={"imported": {"from": "slicegan", "kind": kind, "source": source}},
    )
    return ImportedGenerator(info=info, tensors=tensors, kind=kind)


def import_slicegan(
    weights: str | Path,
    params: str | Path,
    out: str | Path,
    *,
    image_type: str | None = None,
    phases: list[int] | None = None,
    voxel_size: float | None = None,
    voxel_unit: str | None = None,
) -> GeneratorFileInfo:
    """Read both files, convert, write ``out`` atomically and check it as any generator file."""
    weights, params, out = Path(weights), Path(params), Path(out)
    try:
        params_bytes = _read_bounded(params)
        state = load_state_dict(weights)
    except UnsafePickleError as error:
        raise _weights_error(str(error).replace("the weights file ", "", 1)) from error
    imported = convert(
        state,
        read_params(params_bytes),
        image_type=image_type,
        phases=phases,
        voxel_size=voxel_size,
        voxel_unit=voxel_unit,
        source=weights.name,
    )
    write_generator_file(imported, out)
    return inspect_generator_file(out)


def write_generator_file(imported: ImportedGenerator, out: Path) -> None:
    """An ordinary MicroForge generator file (safetensors + metadata), written atomically."""
    out.parent.mkdir(parents=True, exist_ok=True)
    temporary = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        save_file(
            imported.tensors,
            str(temporary),
            metadata={METADATA_KEY: json.dumps(imported.info.metadata())},
        )
        os.replace(temporary, out)
    finally:
        temporary.unlink(missing_ok=True)


def _read_bounded(path: Path) -> bytes:
    from microforge.models.safe_pickle import MAX_PARAMS_BYTES

    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_PARAMS_BYTES + 1)
    except OSError as error:
        raise _params_error(f"cannot read {path.name}: {error.strerror}") from error
    if len(data) > MAX_PARAMS_BYTES:
        raise _params_error(
            f"{path.name} is larger than {MAX_PARAMS_BYTES} bytes; a SliceGAN params file is "
            "a few hundred"
        )
    return data


def _strip_data_parallel(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Runs on several GPUs save ``nn.DataParallel(netG).state_dict()``: ``module.`` keys."""
    if state and all(key.startswith("module.") for key in state):
        return {key.removeprefix("module."): value for key, value in state.items()}
    return state


def _image_type(image_type: str | None, channels: int) -> str:
    if image_type is None:
        if channels == 1:
            return "grayscale"
        if channels == 3:
            raise SliceGANImportError(
                "the generator makes 3 channels: colour or three phases? say which "
                "(--type colour or --type nphase; image_type in the service)",
                "image_type_required",
            )
        return "nphase"
    if image_type not in IMAGE_TYPES:
        raise SliceGANImportError(
            f"image type {image_type!r} is unknown: use one of {', '.join(IMAGE_TYPES)}",
            "invalid_image_type",
        )
    needed = {"grayscale": 1, "colour": 3}.get(image_type)
    if needed is not None and channels != needed:
        raise SliceGANImportError(
            f"a {image_type} generator makes {needed} channel(s), this one makes {channels}",
            "invalid_image_type",
        )
    if image_type == "nphase" and channels < 2:
        raise SliceGANImportError(
            "an n-phase generator needs 2 or more channels (one per phase); this one makes 1: "
            "it is a grayscale generator",
            "invalid_image_type",
        )
    return image_type


def _phases(image_type: str, phases: list[int] | None, channels: int) -> list[int]:
    if image_type != "nphase":
        if phases:
            raise SliceGANImportError(
                f"phase values are for n-phase generators, not {image_type}", "invalid_phases"
            )
        return []
    if phases is None:
        return list(range(channels))
    if len(phases) != channels:
        raise SliceGANImportError(
            f"{len(phases)} phase value(s) given for a generator of {channels} phases",
            "invalid_phases",
        )
    if any(type(v) is not int or not 0 <= v <= MAX_PHASE_VALUE for v in phases):
        raise SliceGANImportError(
            f"phase values must be integers 0..{MAX_PHASE_VALUE}", "invalid_phases"
        )
    if len(set(phases)) != len(phases):
        raise SliceGANImportError("phase values must differ from each other", "invalid_phases")
    return list(phases)


def _network(params: SliceGANParams, kind: str) -> NetworkConfig:
    """The generator's layers as a ``NetworkConfig``, with a critic that passes its rules.

    The critic is never used for an imported generator, but a ``NetworkConfig`` describes
    both networks and checks that they fit: the params' critic is kept with the first
    latent size (4, the public code's, first) for which its output is 1x1; if there is
    none (the public code averages a larger critic output), one convolution as large as
    the training crop stands in for it.
    """
    layers = params.layers
    generator = {
        "latent_channels": params.gf[0],
        "generator_filters": list(params.gf[1:-1]),
        "generator_kernels": list(params.gk[:layers]),
        "generator_strides": list(params.gs[:layers]),
        "generator_paddings": list(params.gp[:layers]),
        "last_layer": kind,
        "resize_conv_bias": kind == "resize_conv",
    }
    if params.gf[0] > 1024:
        raise _params_error(f"gf[0] = {params.gf[0]} latent channels; at most 1024 are accepted")
    c = params.critic_layers
    critic = {
        "critic_filters": list(params.df[1:c]),
        "critic_kernels": list(params.dk[:c]),
        "critic_strides": list(params.ds[:c]),
        "critic_paddings": list(params.dp[:c]),
    }
    first_error: ValidationError | None = None
    for latent in (TRAINING_LATENT, *range(1, 65)):
        try:
            return NetworkConfig(**generator, **critic, latent_size=latent)
        except ValidationError as error:
            first_error = first_error or error
            if _generator_problem(error):
                raise _params_error(_one_line(error)) from error
    assert first_error is not None
    for latent in (TRAINING_LATENT, *range(1, 65)):
        probe = NetworkConfig.model_construct(**generator, latent_size=latent)
        crop = probe.generator_output_size(latent)
        if 1 <= crop <= MAX_KERNEL:
            placeholder = {
                "critic_filters": [],
                "critic_kernels": [crop],
                "critic_strides": [1],
                "critic_paddings": [0],
            }
            try:
                return NetworkConfig(**generator, **placeholder, latent_size=latent)
            except ValidationError:
                continue
    raise _params_error(_one_line(first_error))


def _generator_problem(error: ValidationError) -> bool:
    """A problem of the generator's layers (not of the critic's fit): no latent can help."""
    text = str(error)
    return "generator layer" in text or "generator_filters" in text or "generator kernels" in text


def _one_line(error: ValidationError) -> str:
    messages = [item["msg"].removeprefix("Value error, ") for item in error.errors()]
    return "MicroForge cannot run these layers: " + "; ".join(messages)


def _map_tensors(
    state: dict[str, np.ndarray], params: SliceGANParams, kind: str, image_type: str
) -> dict[str, np.ndarray]:
    layers = params.layers
    known = {f"convs.{i}.weight" for i in range(layers)}
    known |= {
        f"bns.{i}.{name}"
        for i in range(layers)
        for name in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    }
    if kind == "resize_conv":
        known |= {"rcconv.weight", "rcconv.bias"}
    unknown = sorted(set(state) - known)
    if unknown:
        hint = ""
        if any(value.ndim == 4 for value in state.values()):
            hint = " (2D kernels: this looks like the critic, NAME_Disc.pt; give NAME_Gen.pt)"
        raise _weights_error(
            f"unexpected tensor {unknown[0]} for a {layers}-layer SliceGAN generator{hint}"
        )
    transposed = layers - 1 if kind == "resize_conv" else layers
    tensors: dict[str, np.ndarray] = {}
    for index in range(transposed):
        tensors[f"transposed.{index}.weight"] = _float(state, f"convs.{index}.weight")
    for index in range(layers - 1):
        for name in ("weight", "bias", "running_mean", "running_var"):
            tensors[f"norms.{index}.{name}"] = _float(state, f"bns.{index}.{name}")
        tracked = state.get(f"bns.{index}.num_batches_tracked")
        tensors[f"norms.{index}.num_batches_tracked"] = np.asarray(
            tracked if tracked is not None and tracked.size == 1 else 0, dtype=np.int64
        ).reshape(())
    if kind == "resize_conv":
        tensors["resize_conv.weight"] = _float(state, "rcconv.weight")
        tensors["resize_conv.bias"] = _float(state, "rcconv.bias")
        last = ("resize_conv.weight", "resize_conv.bias")
    else:
        last = (f"transposed.{layers - 1}.weight",)
    if image_type != "nphase":
        # 0.5 * (tanh(x) + 1) == sigmoid(2x); doubling is exact in floating point.
        for name in last:
            tensors[name] = tensors[name] * np.float32(2)
    return tensors


def _float(state: dict[str, np.ndarray], name: str) -> np.ndarray:
    if name not in state:
        raise _weights_error(f"{name} is missing: is this NAME_Gen.pt of a SliceGAN run?")
    value = state[name]
    if value.dtype.kind != "f":
        raise _weights_error(f"{name} holds {value.dtype} values, not floating point")
    value = value.astype(np.float32)
    if not np.isfinite(value).all():
        raise _weights_error(f"{name} holds NaN or infinite values: the run diverged")
    return value


def _original_name(name: str, params: SliceGANParams, kind: str) -> str:
    """The public code's name for one of our tensors, for messages."""
    if name.startswith("transposed."):
        return name.replace("transposed.", "convs.")
    if name.startswith("norms."):
        return name.replace("norms.", "bns.")
    return name.replace("resize_conv.", "rcconv.")
