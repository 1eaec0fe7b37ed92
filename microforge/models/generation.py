"""Volumes of any size, chunk by chunk, equal to the one-shot result.

The generator is fully convolutional, so each output voxel depends on a bounded window of
the latent. For a chunk of the output we walk the layers backwards to find, per axis, the
exact input range every layer needs, gather that latent window, and replay the layers on
it, cropping after each to the range the next layer needs. Every intermediate value is then
the one the whole-volume computation would produce, so chunked == one-shot. Border effects
are reproduced too: a window is clipped where the global latent ends, just like the
one-shot run, and periodic axes wrap the latent instead.

Transposed convolutions run with padding 0 and are cropped by hand (PyTorch's padding would
cut voxels a chunk needs); the resize-convolution's trilinear upsampling is written out with
the global source coordinates so that a chunk interpolates exactly like the whole volume.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from microforge.models.config import NetworkConfig
from microforge.models.export import LoadedGenerator

Range = tuple[int, int]


class GenerationError(ValueError):
    """A volume that cannot be generated as asked; the message says what to change."""


class GenerationCancelled(RuntimeError):
    """``should_stop`` asked to stop between chunks."""


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
        period = network.period
        if size % period:
            below = max(period, size - size % period)
            raise GenerationError(
                f"a periodic {name} axis must be a multiple of {period} voxels for this "
                f"network; {size} is not: use {below} or {below + period}"
            )
        return AxisPlan(size, True, sizes_for(size // period), 0)
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


class ChunkEvaluator:
    """Replays a generator's layers on latent windows; see the module docstring."""

    def __init__(self, loaded: LoadedGenerator, plans: Sequence[AxisPlan]) -> None:
        self.net = loaded.net
        self.device = loaded.device
        self.plans = plans
        self.ops = layer_ops(loaded.network)

    def evaluate(self, latent: torch.Tensor, ranges: Sequence[Range]) -> torch.Tensor:
        """Generator output (C, z, y, x) for output voxel ranges of the asked volume."""
        # Backwards: output range -> range needed at every layer boundary, per axis.
        needed: list[list[Range]] = []
        for axis, plan in enumerate(self.plans):
            current = (ranges[axis][0] + plan.offset, ranges[axis][1] + plan.offset)
            chain = [current]
            for position in range(len(self.ops) - 1, -1, -1):
                op = self.ops[position]
                current = op.needed(
                    current, plan.sizes[position], plan.sizes[position + 1], plan.periodic
                )
                chain.append(current)
            needed.append(chain[::-1])  # needed[axis][i] = range at boundary i
        x = self._gather_latent(latent, [chain[0] for chain in needed])
        with torch.no_grad():
            for position, op in enumerate(self.ops):
                windows = [chain[position] for chain in needed]
                targets = [chain[position + 1] for chain in needed]
                x = self._apply(op, x, windows, targets, position)
            return self.net.activate(x)[0]

    def _gather_latent(self, latent: torch.Tensor, windows: Sequence[Range]) -> torch.Tensor:
        x = latent
        for axis, (start, stop) in enumerate(windows):
            size = self.plans[axis].latent
            index = torch.arange(start, stop) % size
            x = x.index_select(2 + axis, index)
        return x.to(self.device)

    def _apply(
        self,
        op: Op,
        x: torch.Tensor,
        windows: Sequence[Range],
        targets: Sequence[Range],
        position: int,
    ) -> torch.Tensor:
        if op.kind == "upsample":
            return self._upsample(x, windows, targets, position)
        if op.kind == "transpose":
            weight = self.net.transposed[op.index].weight
            x = F.conv_transpose3d(x, weight, stride=op.stride)
        else:
            assert self.net.resize_conv is not None
            x = F.conv3d(x, self.net.resize_conv.weight)
        for axis, ((start, _), (low, high)) in enumerate(zip(windows, targets)):
            origin = op.origin(start, self.plans[axis].periodic)
            x = x.narrow(2 + axis, low - origin, high - low)
        if op.hidden:
            x = self.net.hidden(op.index, x)
        return x

    def _upsample(
        self, x: torch.Tensor, windows: Sequence[Range], targets: Sequence[Range], position: int
    ) -> torch.Tensor:
        for axis, ((start, _), (low, high)) in enumerate(zip(windows, targets)):
            plan = self.plans[axis]
            sources = upsample_sources(
                np.arange(low, high), plan.sizes[position], plan.sizes[position + 1], plan.periodic
            )
            first, second, weight = (torch.from_numpy(a).to(self.device) for a in sources)
            dim = 2 + axis
            shape = [1] * x.dim()
            shape[dim] = -1
            weight = weight.to(x.dtype).view(shape)
            a = x.index_select(dim, first - start)
            b = x.index_select(dim, second - start)
            x = a + (b - a) * weight
        return x


class Decoder:
    """Network output -> stored voxels, on the device, so only bytes cross to the host.

    n-phase: argmax mapped to the original phase values; grey: the original value range;
    colour: (z, y, x, 3) uint8.
    """

    def __init__(self, loaded: LoadedGenerator) -> None:
        self.image_type = loaded.image_type
        self.dtype = loaded.output_dtype
        self.device = loaded.device
        self.low, self.high = loaded.info.value_range
        if self.image_type == "nphase":
            values = np.asarray(loaded.phases, dtype=np.int64)
            self.lookup = torch.from_numpy(values.astype(np.int32)).to(self.device)

    @property
    def rgb(self) -> bool:
        return self.image_type == "colour"

    def _narrow(self, values: torch.Tensor) -> torch.Tensor:
        if self.dtype == np.uint8:
            return values.to(torch.uint8)
        return values.to(torch.int16)  # the same 16 bits as uint16; viewed as such on the host

    def decode(self, output: torch.Tensor) -> torch.Tensor:
        if self.image_type == "nphase":
            return self._narrow(self.lookup[output.argmax(0)])
        top = float(np.iinfo(self.dtype).max)
        low = max(self.low, 0.0)
        high = min(self.high, top)
        values = (output.clamp(0, 1) * (high - low) + low).round().to(torch.int32)
        if self.rgb:
            return self._narrow(values).permute(1, 2, 3, 0)
        return self._narrow(values[0])

    def to_host(self, decoded: torch.Tensor) -> np.ndarray:
        return decoded.cpu().numpy().view(self.dtype)


def auto_chunk(loaded: LoadedGenerator) -> int:
    """Chunk edge whose working memory stays well inside the device's budget."""
    if loaded.device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(loaded.device)
        budget = min(free * 0.4, 12 * 2**30)
    else:
        budget = 768 * 2**20
    best = 32
    for edge in (32, 64, 96, 128, 192, 256, 384, 512, 768):
        if estimate_chunk_bytes(loaded.network, loaded.channels, edge) <= budget:
            best = edge
    return best


def estimate_chunk_bytes(network: NetworkConfig, channels: int, edge: int) -> int:
    """Peak bytes of one chunk: the largest (input + uncropped output) pair of any layer."""
    ops = layer_ops(network)
    widths = [network.latent_channels, *network.generator_filters, channels]
    plan = plan_axis(network, edge * 4, False, "z")
    needed = [(plan.offset + edge, plan.offset + 2 * edge)]
    for position in range(len(ops) - 1, -1, -1):
        needed.append(
            ops[position].needed(needed[-1], plan.sizes[position], plan.sizes[position + 1], False)
        )
    needed = needed[::-1]
    peak = 0
    channel_index = 0
    for position, op in enumerate(ops):
        c_in = widths[channel_index]
        c_out = c_in if op.kind == "upsample" else widths[channel_index + 1]
        if op.kind != "upsample":
            channel_index += 1
        n_in = needed[position][1] - needed[position][0]
        n_out = (
            (n_in - 1) * op.stride + op.kernel
            if op.kind == "transpose"
            else needed[position + 1][1] - needed[position + 1][0] + 2
        )
        peak = max(peak, 4 * (c_in * n_in**3 + 2 * c_out * n_out**3))
    return peak


@dataclass
class GenerationResult:
    shape: tuple[int, int, int]
    dtype: np.dtype
    chunks: int
    chunk_edge: int
    seconds: float


def generate_volume(
    loaded: LoadedGenerator,
    shape: Sequence[int],
    *,
    seed: int,
    chunk: int | None = None,
    periodic: Sequence[bool] = (False, False, False),
    write_slab: Callable[[np.ndarray], None],
    on_chunk: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> GenerationResult:
    """Generate a (z, y, x) volume and hand it to ``write_slab`` as consecutive z-slabs.

    ``chunk`` is the chunk edge in output voxels (None = sized to the device's memory,
    0 = one shot). Host memory holds one slab at a time.
    """
    import time

    started = time.perf_counter()
    plans = plan_volume(loaded.network, shape, periodic)
    size = tuple(int(n) for n in shape)
    if chunk is None:
        chunk = auto_chunk(loaded)
    if chunk < 0:
        raise GenerationError("chunk must be 0 (one shot) or a positive edge in voxels")
    edges = [n if chunk == 0 else min(chunk, n) for n in size]
    latent = make_latent(loaded.network, plans, seed)
    evaluator = ChunkEvaluator(loaded, plans)
    decoder = Decoder(loaded)
    counts = [math.ceil(n / e) for n, e in zip(size, edges)]
    total = counts[0] * counts[1] * counts[2]
    done = 0
    for z0 in range(0, size[0], edges[0]):
        z1 = min(z0 + edges[0], size[0])
        slab_shape = (z1 - z0, size[1], size[2]) + ((3,) if decoder.rgb else ())
        slab = np.empty(slab_shape, dtype=loaded.output_dtype)
        for y0 in range(0, size[1], edges[1]):
            y1 = min(y0 + edges[1], size[1])
            for x0 in range(0, size[2], edges[2]):
                if should_stop is not None and should_stop():
                    raise GenerationCancelled("generation cancelled")
                x1 = min(x0 + edges[2], size[2])
                output = evaluator.evaluate(latent, [(z0, z1), (y0, y1), (x0, x1)])
                slab[:, y0:y1, x0:x1] = decoder.to_host(decoder.decode(output))
                del output
                done += 1
                if on_chunk is not None:
                    on_chunk(done, total)
        write_slab(slab)
        del slab
    return GenerationResult(
        shape=size,
        dtype=np.dtype(loaded.output_dtype),
        chunks=total,
        chunk_edge=chunk,
        seconds=time.perf_counter() - started,
    )


def generate_array(
    loaded: LoadedGenerator,
    shape: Sequence[int],
    *,
    seed: int,
    chunk: int | None = 0,
    periodic: Sequence[bool] = (False, False, False),
) -> np.ndarray:
    """The decoded volume in memory: for small volumes, tests and the stats report."""
    slabs: list[np.ndarray] = []
    generate_volume(
        loaded, shape, seed=seed, chunk=chunk, periodic=periodic, write_slab=slabs.append
    )
    return np.concatenate(slabs, axis=0)


def generate_probabilities(
    loaded: LoadedGenerator,
    shape: Sequence[int],
    *,
    seed: int,
    chunk: int = 0,
    periodic: Sequence[bool] = (False, False, False),
) -> torch.Tensor:
    """The raw network output (C, z, y, x) assembled from chunks, on the CPU."""
    plans = plan_volume(loaded.network, shape, periodic)
    latent = make_latent(loaded.network, plans, seed)
    evaluator = ChunkEvaluator(loaded, plans)
    size = [int(n) for n in shape]
    edges = [n if chunk == 0 else min(chunk, n) for n in size]
    result = torch.empty((loaded.channels, *size))
    for z0 in range(0, size[0], edges[0]):
        for y0 in range(0, size[1], edges[1]):
            for x0 in range(0, size[2], edges[2]):
                ranges = [
                    (start, min(start + edge, n))
                    for start, edge, n in zip((z0, y0, x0), edges, size)
                ]
                block = evaluator.evaluate(latent, ranges).cpu()
                result[
                    :,
                    ranges[0][0] : ranges[0][1],
                    ranges[1][0] : ranges[1][1],
                    ranges[2][0] : ranges[2][1],
                ] = block
    return result
