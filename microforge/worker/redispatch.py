"""Re-sending the task message of an active job that nobody works on.

Why: a job moves only when a worker receives its message, and a message can go missing:
the broker restarted without its queue, it was unreachable at a segment hand-off (the
worker logs it and carries on), or a worker died between releasing a lease and sending
the next message. Every worker therefore sweeps on start, and then every little while,
for active jobs that are unheld and whose last message is older than
``redispatch_after_seconds``, and sends one more. That is safe because messages carry the
job's fencing token: if the original was only slow, whichever copy claims first wins and
the other is dropped as stale (``job_lifecycle.message_is_current``).

Each sweep first frees the leases of jobs whose holder is a worker of this machine that
no longer runs (killed, then restarted by ``microforge up`` or a container's restart
policy), so their jobs continue from the last checkpoint now, not once the dead worker's
lease has expired (``lease_seconds``, 15 minutes by default).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable

from celery import Celery

from microforge.settings import Settings
from microforge.storage.db import create_db_engine, make_session_factory
from microforge.storage.job_lifecycle import (
    SessionFactory,
    release_leases_of_dead_owners,
    take_quiet_jobs,
)
from microforge.storage.scratch_owner import tag_is_alive
from microforge.worker.dispatch import send_job_message

log = logging.getLogger(__name__)

#: Longest pause between two periodic sweeps, however long ``redispatch_after`` is.
MAX_SWEEP_INTERVAL_SECONDS = 60.0


def redispatch_quiet_jobs(
    session_factory: SessionFactory, celery: Celery, kinds: Iterable[str], quiet_seconds: float
) -> int:
    """Send one message for each unheld active job of ``kinds`` quiet for ``quiet_seconds``.

    Returns how many were sent. A job whose message could not be sent (broker down) is
    still marked as dispatched; the next sweep after ``quiet_seconds`` tries again.
    """
    sent = 0
    for kind in kinds:
        for job_id, token in take_quiet_jobs(session_factory, kind, quiet_seconds):
            if send_job_message(celery, kind, job_id, token):
                sent += 1
    return sent


def sweep_interval(redispatch_after_seconds: float) -> float:
    """A quarter of the quiet time (so a lost message waits at most 1.25 times it), within
    1 s and ``MAX_SWEEP_INTERVAL_SECONDS``."""
    return min(max(redispatch_after_seconds / 4, 1.0), MAX_SWEEP_INTERVAL_SECONDS)


class RedispatchSweeper:
    """A daemon thread in the worker process that runs ``redispatch_quiet_jobs`` periodically.

    It uses its own database engine, and Celery's producer pool (safe across threads), so
    it never touches the connection of the task running in the main thread.
    """

    def __init__(self, settings: Settings, celery: Celery, kinds: Iterable[str]) -> None:
        self.quiet_seconds = settings.redispatch_after_seconds
        self.interval = sweep_interval(self.quiet_seconds)
        self.kinds = tuple(kinds)
        self.celery = celery
        self.engine = create_db_engine(settings.resolved_database_url)
        self.session_factory = make_session_factory(self.engine)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="microforge-redispatch", daemon=True)

    def sweep_now(self, quiet_seconds: float | None = None) -> int:
        """One sweep (``quiet_seconds`` 0 on start: every unheld active job); never raises,
        because a database or broker hiccup must not take the worker down with it."""
        quiet = self.quiet_seconds if quiet_seconds is None else quiet_seconds
        try:
            released = release_leases_of_dead_owners(self.session_factory, tag_is_alive)
            if released:
                log.warning("took back the jobs of killed workers: %s", ", ".join(released))
                quiet = 0.0  # their messages are with the dead worker: send new ones now
            sent = redispatch_quiet_jobs(self.session_factory, self.celery, self.kinds, quiet)
        except Exception:  # noqa: BLE001 - logged; the next sweep tries again
            log.exception("the sweep for jobs without a message failed; retrying later")
            return 0
        if sent:
            log.warning("re-sent messages for %d active job(s) that no worker held", sent)
        return sent

    def start(self) -> None:
        if self.quiet_seconds > 0:
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self.engine.dispose()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sweep_now()
