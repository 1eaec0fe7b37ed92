"""From network output on the device to voxels in a host slab, without stalling the device.

Why its own module: decoding (argmax to the original phase values, the grey range, RGB)
runs on the device so that only bytes cross to the host; the copy goes through pinned
staging buffers, collected one chunk later; finished slabs are written on a background
thread while the next is generated. Keeping this apart from the chunk arithmetic leaves
each side small enough to read in one go.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from types import TracebackType

import numpy as np
import torch

from microforge.models.export import LoadedGenerator


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


class HostCopier:
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


class SlabSink:
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

    def __enter__(self) -> SlabSink:
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
