"""The ``should_stop`` a job's inner loop calls: cancel requests, lease renewal, shutdown.

Why throttled: the trainer asks after every iteration (milliseconds on a GPU); reading the
database that often would hammer it, so the cancel flag is read at most every
``check_seconds`` (cancel still takes effect within about a second) and the lease is
renewed every quarter of its length, which also keeps a slow iteration from losing it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from sqlalchemy.orm import Session, sessionmaker

from microforge.storage.job_lifecycle import Lease, LeaseLost, is_cancel_requested, renew_lease
from microforge.worker.shutdown import worker_is_shutting_down


class JobGuard:
    """Answers "stop now?" and remembers why, so the caller can act on the reason."""

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        lease: Lease,
        lease_seconds: float,
        *,
        check_seconds: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._session_factory = session_factory
        self.lease = lease
        self._lease_seconds = lease_seconds
        self._check_seconds = check_seconds
        self._clock = clock
        self._last_check = -float("inf")
        self._last_renewal = clock()
        self.cancel_requested = False
        self.lease_lost = False
        self.shutting_down = False

    @property
    def stopped(self) -> bool:
        return self.cancel_requested or self.lease_lost or self.shutting_down

    def lease_renewed(self) -> None:
        """Tell the guard that another write (progress) already renewed the lease."""
        self._last_renewal = self._clock()

    def should_stop(self) -> bool:
        if self.stopped:
            return True
        if worker_is_shutting_down():
            self.shutting_down = True
            return True
        now = self._clock()
        if now - self._last_check < self._check_seconds:
            return False
        self._last_check = now
        if is_cancel_requested(self._session_factory, self.lease.job_id):
            self.cancel_requested = True
            return True
        if now - self._last_renewal >= self._lease_seconds / 4:
            try:
                renew_lease(self._session_factory, self.lease, self._lease_seconds)
            except LeaseLost:
                self.lease_lost = True
                return True
            self._last_renewal = now
        return False
