"""How many bytes of decoded images the API process holds at once, over all uploads.

Why: ``max_decoded_bytes`` bounds what one upload may decode (the analysis that follows
takes about three times that; docs/benchmarks.md), which keeps one upload under ~1.5 GB.
Four uploads at the limit at the same moment would still add up to four times that. So
decoding takes a share of one budget, the size of one upload's limit: small uploads decode
side by side, a large one waits until the bytes are free, and one that waits too long is
told to come back (503 ``decoding_busy`` with ``Retry-After``) instead of the process
running out of memory. An upload alone always proceeds, whatever its size under the limit.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from microforge.api.problems import ProblemError

#: How long an upload waits for its share of the budget before it is answered 503.
WAIT_SECONDS = 30.0
#: Seconds a waiting upload is told to wait before retrying.
RETRY_AFTER_SECONDS = 10


class DecodeBudget:
    """A byte budget shared by the threads that decode uploads (one per API process)."""

    def __init__(self, capacity: int, wait_seconds: float) -> None:
        self.capacity = capacity
        self.wait_seconds = wait_seconds
        self.in_use = 0
        self._changed = threading.Condition()

    @contextmanager
    def reserve(self, size: int) -> Iterator[None]:
        """Hold ``size`` bytes of the budget while the block runs; 503 after waiting too long."""
        deadline = time.monotonic() + self.wait_seconds
        with self._changed:
            while self.in_use and self.in_use + size > self.capacity:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ProblemError(
                        503,
                        "decoding_busy",
                        "other uploads are being decoded and the server holds no more images "
                        f"at once (MICROFORGE_MAX_DECODED_BYTES); upload again in "
                        f"{RETRY_AFTER_SECONDS} s",
                        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
                    )
                self._changed.wait(left)
            self.in_use += size
        try:
            yield
        finally:
            with self._changed:
                self.in_use -= size
                self._changed.notify_all()
