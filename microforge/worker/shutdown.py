"""Notice that the worker is shutting down, so a running segment can stop early.

Why: a training segment may run for minutes. On a warm shutdown (SIGTERM, Ctrl-C) Celery
waits for the task to finish; checking this flag lets the segment write its checkpoint,
hand the job on to the next segment and return within seconds, so ``microforge up`` and
container restarts stop promptly without losing work. The worker runs the solo pool, so
the task and Celery's signal handler share this process.
"""

from __future__ import annotations

import threading

from celery.signals import worker_shutting_down

_shutting_down = threading.Event()


@worker_shutting_down.connect
def _on_worker_shutting_down(**_: object) -> None:
    _shutting_down.set()


def worker_is_shutting_down() -> bool:
    return _shutting_down.is_set()


def request_shutdown_for_tests() -> None:
    """Set the flag without a real worker; used by tests of the stop path."""
    _shutting_down.set()


def clear_shutdown_flag() -> None:
    _shutting_down.clear()
