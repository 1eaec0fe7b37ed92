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
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from types import TracebackType
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from microforge.models.config import NetworkConfig, periodic_size_problem
from microforge.models.export import LoadedGenerator

Range = tuple[int, int]
GenerationPrecision = Literal["fp32", "tf32", "bf16", "fp16"]
PRECISIONS: tuple[str, ...] = ("fp32", "tf32", "bf16", "fp16")
#: A latent up to this size is moved to the device once instead of per chunk.
_LATENT_ON_DEVICE_BYTES = 1 << 30


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
            x = F.conv3d(x, self.net.resize_conv.weight)
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
        self.torch_dtype = torch.uint8 if self.dtype == np.uint8 else torch.int16
        # Phase values as the stored integers; 16-bit ones as the int16 with the same bits.
        bits = 8 * self.dtype.itemsize
        self.phase_codes = [
            _same_bits(int(v), bits) for v in (loaded.phases if self.image_type == "nphase" else [])
        ]

    @property
    def rgb(self) -> bool:
        return self.image_type == "colour"

    def _narrow(self, values: torch.Tensor) -> torch.Tensor:
        if self.dtype == np.uint8:
            return values.to(torch.uint8)
        return values.to(torch.int16)  # the same 16 bits as uint16; viewed as such on the host

    def decode(self, output: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            if self.image_type == "nphase":
                return self._labels(output)
            top = float(np.iinfo(self.dtype).max)
            low = max(self.low, 0.0)
            high = min(self.high, top)
            # The same operations as (clamp * (high - low) + low).round(), in place.
            values = output.clamp(0, 1).mul_(high - low).add_(low).round_()
            values = values.to(torch.uint8) if self.dtype == np.uint8 else values.to(torch.int32)
            if self.rgb:
                return self._narrow(values).permute(1, 2, 3, 0).contiguous()
            return self._narrow(values[0])

    def _labels(self, probabilities: torch.Tensor) -> torch.Tensor:
        """Phase value of the most probable channel, exactly as ``argmax(0)`` picks it.

        Why not argmax: it reduces over the outermost dimension (slow on the CPU, more
        than half of a chunk's time) and returns int64, eight bytes a voxel, then a
        lookup. A running maximum with strict ``>`` keeps the first of equal maxima, as
        argmax does, and writes the phase values directly in the output dtype.
        """
        best = probabilities[0]
        labels = torch.full(
            best.shape, self.phase_codes[0], dtype=self.torch_dtype, device=best.device
        )
        for channel in range(1, probabilities.shape[0]):
            candidate = probabilities[channel]
            better = candidate > best
            labels.masked_fill_(better, self.phase_codes[channel])
            if channel + 1 < probabilities.shape[0]:
                best = torch.maximum(best, candidate)
        return labels

    def to_host(self, decoded: torch.Tensor) -> np.ndarray:
        return decoded.cpu().numpy().view(self.dtype)


def _same_bits(value: int, bits: int) -> int:
    """An unsigned ``bits``-bit value as the signed integer with the same bit pattern."""
    if bits == 16 and value >= 1 << 15:
        return value - (1 << 16)
    return value


class _HostCopier:
    """Decoded chunks -> their place in the host slab, without stalling the device.

    CPU: a plain copy. CUDA: each chunk goes to a pinned staging buffer with a
    non-blocking copy and an event; it is moved into the slab only when the next chunk
    has been queued, so the GPU computes chunk k+1 while the host copies chunk k. Two
    staging buffers at most are alive (PyTorch's pinned-memory cache reuses them).
    """

    def __init__(self, device: torch.device, dtype: np.dtype) -> None:
        self.cuda = device.type == "cuda"
        self.dtype = dtype
        self.pending: deque[tuple[torch.cuda.Event, torch.Tensor, np.ndarray]] = deque()

    def put(self, decoded: torch.Tensor, destination: np.ndarray) -> None:
        if not self.cuda:
            destination[...] = decoded.numpy().view(self.dtype)
            return
        staging = torch.empty(decoded.shape, dtype=decoded.dtype, pin_memory=True)
        staging.copy_(decoded, non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        self.pending.append((event, staging, destination))
        while len(self.pending) > 1:
            self._land()

    def flush(self) -> None:
        while self.pending:
            self._land()

    def _land(self) -> None:
        event, staging, destination = self.pending.popleft()
        event.synchronize()
        destination[...] = staging.numpy().view(self.dtype)


class _SlabSink:
    """Hands finished slabs to ``write_slab`` on a background thread, one at a time.

    Why: ``VolumeTiffWriter.write`` returns only once a slab is on disk; writing in the
    background lets the next slab be generated meanwhile. ``submit`` first waits for the
    previous write, so at most two slabs exist (one written, one filled), and a write's
    error surfaces at the next submit or on exit. On exit the pending write is always
    waited for, so the caller's writer is never closed under a running write.
    """

    def __init__(self, write_slab: Callable[[np.ndarray], None], background: bool) -> None:
        self.write_slab = write_slab
        self.executor = ThreadPoolExecutor(1, "slab-writer") if background else None
        self.pending: Future[None] | None = None

    def __enter__(self) -> _SlabSink:
        return self

    def submit(self, slab: np.ndarray) -> None:
        self.wait()
        if self.executor is None:
            self.write_slab(slab)
        else:
            self.pending = self.executor.submit(self.write_slab, slab)

    def wait(self) -> None:
        pending, self.pending = self.pending, None
        if pending is not None:
            pending.result()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            if exc_type is None:
                self.wait()
            elif self.pending is not None:
                # Already failing: wait for the write, but report the first error.
                pending, self.pending = self.pending, None
                pending.exception()
        finally:
            if self.executor is not None:
                self.executor.shutdown(wait=True)


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
    copier = _HostCopier(loaded.device, decoder.dtype)
    spans = [_spans(n, e) for n, e in zip(size, edges)]
    total = len(spans[0]) * len(spans[1]) * len(spans[2])
    done = 0
    with _SlabSink(write_slab, background_writes) as sink:
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
