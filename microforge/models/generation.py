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

Speed (see docs/benchmarks.md): the device never waits for the host. Everything per chunk
(latent window, upsampling indices, decoding to labels) is computed on the device, so
nothing forces a synchronisation; only bytes cross to the host, through pinned staging
buffers with non-blocking copies on CUDA, collected one chunk later. A finished slab is
written on a background thread while the next one is generated, so the TIFF write
(disk, compression) overlaps the computation; host memory stays bounded at two slabs.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from microforge.models.chunk_output import Decoder, HostCopier, SlabSink
from microforge.models.chunk_plan import (
    AxisPlan,
    GenerationError,
    Op,
    Range,
    layer_ops,
    make_latent,
    plan_axis,
    plan_volume,
    upsample_sources_on,
)
from microforge.models.config import NetworkConfig
from microforge.models.export import LoadedGenerator

GenerationPrecision = Literal["fp32", "tf32", "bf16", "fp16"]
PRECISIONS: tuple[str, ...] = ("fp32", "tf32", "bf16", "fp16")
#: A latent up to this size is moved to the device once instead of per chunk.
_LATENT_ON_DEVICE_BYTES = 1 << 30


class GenerationCancelled(RuntimeError):
    """``should_stop`` asked to stop between chunks."""


class ChunkEvaluator:
    """Replays a generator's layers on latent windows; see the module docstring.

    ``precision`` fp32 (the default) is the exact arithmetic chunked == one-shot is promised
    for: on CUDA it turns cuDNN's TF32 off while generating. tf32, bf16 and fp16 trade
    that exactness for speed (bf16/fp16 run the convolutions under autocast).
    """

    def __init__(
        self,
        loaded: LoadedGenerator,
        plans: Sequence[AxisPlan],
        precision: GenerationPrecision = "fp32",
    ) -> None:
        if precision not in PRECISIONS:
            raise GenerationError(
                f"precision {precision!r} is not offered: use one of {', '.join(PRECISIONS)}"
            )
        self.net = loaded.net
        self.device = loaded.device
        self.plans = plans
        self.ops = layer_ops(loaded.network)
        self.precision = precision
        # oneDNN's 3D (transposed) convolutions are 1.4-2x faster on channels-last input
        # on the CPU, with bit-identical results; CUDA keeps cuDNN's default layout.
        self.channels_last = self.device.type == "cpu"

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
        with self._numerics():
            x = self._gather_latent(latent, [chain[0] for chain in needed])
            for position, op in enumerate(self.ops):
                windows = [chain[position] for chain in needed]
                targets = [chain[position + 1] for chain in needed]
                x = self._apply(op, x, windows, targets, position)
            return self.net.activate(x.float())[0]

    @contextlib.contextmanager
    def _numerics(self) -> Iterator[None]:
        """inference_mode (no autograd bookkeeping), TF32 off for fp32, autocast if asked."""
        with contextlib.ExitStack() as stack:
            stack.enter_context(torch.inference_mode())
            if self.device.type == "cuda":
                stack.enter_context(_cudnn_tf32(self.precision != "fp32"))
            if self.precision in ("bf16", "fp16"):
                dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
                stack.enter_context(torch.autocast(self.device.type, dtype=dtype))
            yield

    def _gather_latent(self, latent: torch.Tensor, windows: Sequence[Range]) -> torch.Tensor:
        x = latent
        for axis, (start, stop) in enumerate(windows):
            size = self.plans[axis].latent
            if start >= 0 and stop <= size:
                x = x.narrow(2 + axis, start, stop - start)
            else:  # a periodic window reaching past the latent wraps around
                index = torch.arange(start, stop, device=x.device) % size
                x = x.index_select(2 + axis, index)
        return x.to(self.device).contiguous()

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
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        if op.kind == "transpose":
            weight = self.net.transposed[op.index].weight
            x = F.conv_transpose3d(x, weight, stride=op.stride)
        else:
            assert self.net.resize_conv is not None
            x = F.conv3d(x, self.net.resize_conv.weight, self.net.resize_conv.bias)
        for axis, ((start, _), (low, high)) in enumerate(zip(windows, targets)):
            origin = op.origin(start, self.plans[axis].periodic)
            x = x.narrow(2 + axis, low - origin, high - low)
        if op.hidden:
            # The network's batch norm + ReLU, the ReLU in place: one full-size tensor less.
            x = torch.relu_(self.net.norms[op.index](x))
        return x

    def _upsample(
        self, x: torch.Tensor, windows: Sequence[Range], targets: Sequence[Range], position: int
    ) -> torch.Tensor:
        # Gathering along the innermost dimension copies one float at a time; with the
        # channels innermost (N, z, y, x, C) every gather copies rows of C floats instead.
        # The arithmetic per voxel is the same, so the result is too, bit for bit.
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last_3d).permute(0, 2, 3, 4, 1)
        first_axis_dim = 1 if self.channels_last else 2
        for axis, ((start, _), (low, high)) in enumerate(zip(windows, targets)):
            plan = self.plans[axis]
            first, second, weight = upsample_sources_on(
                x.device, low, high, plan.sizes[position], plan.sizes[position + 1], plan.periodic
            )
            dim = first_axis_dim + axis
            shape = [1] * x.dim()
            shape[dim] = -1
            weight = weight.to(x.dtype).view(shape)
            a = x.index_select(dim, first - start)
            b = x.index_select(dim, second - start)
            del x
            # a + (b - a) * weight, in place in b: two full-size temporaries fewer.
            x = b.sub_(a).mul_(weight).add_(a)
            del a
        if self.channels_last:
            x = x.permute(0, 4, 1, 2, 3)  # (N, C, z, y, x), channels-last in memory
        return x


@contextlib.contextmanager
def _cudnn_tf32(allow: bool) -> Iterator[None]:
    """cuDNN convolutions in TF32 or full fp32 for the duration; restores the setting."""
    previous = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = allow
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32 = previous


def chunk_edges(chunk: int | Sequence[int], size: Sequence[int]) -> list[int]:
    """One edge for every axis, or one per axis; 0 means the whole axis (one shot)."""
    per_axis = [chunk] * 3 if isinstance(chunk, int) else [int(c) for c in chunk]
    if len(per_axis) != 3 or any(c < 0 for c in per_axis):
        raise GenerationError(
            "chunk must be 0 (one shot), a positive edge in voxels, or three such edges (z, y, x)"
        )
    return [n if c == 0 else min(c, n) for c, n in zip(per_axis, size)]


def auto_chunk(loaded: LoadedGenerator) -> int:
    """Chunk edge whose working memory stays well inside the device's budget."""
    if loaded.device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(loaded.device)
        budget = min(free * 0.4, 12 * 2**30)
    else:
        # The estimate misses allocator slack and the slabs; measured peaks run ~1.6x it.
        budget = 512 * 2**20
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
    chunk_edge: int | tuple[int, int, int]
    seconds: float


def generate_volume(
    loaded: LoadedGenerator,
    shape: Sequence[int],
    *,
    seed: int,
    chunk: int | Sequence[int] | None = None,
    periodic: Sequence[bool] = (False, False, False),
    write_slab: Callable[[np.ndarray], None],
    on_chunk: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    precision: GenerationPrecision = "fp32",
    background_writes: bool = True,
) -> GenerationResult:
    """Generate a (z, y, x) volume and hand it to ``write_slab`` as consecutive z-slabs.

    ``chunk`` is the chunk edge in output voxels (None = sized to the device's memory,
    0 = one shot), or three edges (z, y, x) where 0 means the whole axis. ``write_slab``
    is called in order, from a background thread unless ``background_writes`` is False,
    never twice at once; host memory holds at most two slabs (the one being written and
    the one being generated). ``precision`` other than fp32 is faster on a GPU but no
    longer equals the fp32 one-shot volume exactly.
    """
    started = time.perf_counter()
    plans = plan_volume(loaded.network, shape, periodic)
    size = tuple(int(n) for n in shape)
    if chunk is None:
        chunk = auto_chunk(loaded)
    edges = chunk_edges(chunk, size)
    latent = make_latent(loaded.network, plans, seed)
    if latent.numel() * latent.element_size() <= _LATENT_ON_DEVICE_BYTES:
        latent = latent.to(loaded.device)  # once, not a window per chunk
    evaluator = ChunkEvaluator(loaded, plans, precision)
    decoder = Decoder(loaded)
    copier = HostCopier(loaded.device, decoder.dtype)
    spans = [_spans(n, e) for n, e in zip(size, edges)]
    total = len(spans[0]) * len(spans[1]) * len(spans[2])
    done = 0
    with SlabSink(write_slab, background_writes) as sink:
        for z0, z1 in spans[0]:
            slab_shape = (z1 - z0, size[1], size[2]) + ((3,) if decoder.rgb else ())
            slab = np.empty(slab_shape, dtype=loaded.output_dtype)
            for y0, y1 in spans[1]:
                for x0, x1 in spans[2]:
                    if should_stop is not None and should_stop():
                        raise GenerationCancelled("generation cancelled")
                    output = evaluator.evaluate(latent, [(z0, z1), (y0, y1), (x0, x1)])
                    copier.put(decoder.decode(output), slab[:, y0:y1, x0:x1])
                    del output
                    done += 1
                    if on_chunk is not None:
                        on_chunk(done, total)
            copier.flush()
            sink.submit(slab)
            del slab
    return GenerationResult(
        shape=size,
        dtype=np.dtype(loaded.output_dtype),
        chunks=total,
        chunk_edge=chunk,
        seconds=time.perf_counter() - started,
    )


def _spans(size: int, edge: int) -> list[Range]:
    return [(start, min(start + edge, size)) for start in range(0, size, edge)]


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
    precision: GenerationPrecision = "fp32",
) -> torch.Tensor:
    """The raw network output (C, z, y, x) assembled from chunks, on the CPU."""
    plans = plan_volume(loaded.network, shape, periodic)
    latent = make_latent(loaded.network, plans, seed)
    evaluator = ChunkEvaluator(loaded, plans, precision)
    size = [int(n) for n in shape]
    edges = chunk_edges(chunk, size)
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
