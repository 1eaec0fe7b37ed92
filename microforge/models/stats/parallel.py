"""Running independent blocks of a statistic on a few threads.

NumPy and the FFT release the GIL inside their loops, so threads give real parallelism on
the block-wise measures without copying the volume into other processes. Threads are
started per call: the statistics run a handful of times per volume, so a pool kept alive
between calls would buy nothing and leak threads into the API process.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


def default_workers() -> int:
    """CPUs this process may run on (a container's CPU set, not the host's count)."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def map_blocks(
    function: Callable[[Item], Result], items: Iterable[Item], workers: int | None = None
) -> list[Result]:
    """``[function(item) for item in items]``, on up to ``workers`` threads, in order."""
    items = list(items)
    threads = max(1, min(workers or default_workers(), len(items)))
    if threads == 1:
        return [function(item) for item in items]
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(function, items))
