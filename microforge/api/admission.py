"""What the API takes on: a bounded queue in front of the app, and per-key limits.

Why: without a bound, requests pile up in the threadpool's queue and in the database
pool's queue, every one of them slower than the last, until clients time out and the
server is still working on answers nobody waits for. Here:

- ``Admission`` lets ``max_concurrent_requests`` requests work at once per process and
  ``max_queued_requests`` wait (at most ``queue_timeout_seconds``) for a slot; past that the
  answer is an immediate 503 ``overloaded`` with ``Retry-After``. A request gives its slot
  back when its response starts, so a long download does not hold one while the client
  reads it. ``/v1/health`` is exempt: an orchestrator must see a busy API as alive.
- ``UploadSlots`` bounds the uploads one key streams at once (429 past it). The count is
  kept as marker files in the blob store, which every API replica shares, so the limit
  holds over all of them; a marker is refreshed while its upload sends bytes and counts
  no more once stale (a killed process leaves no permanent slot behind).
- ``check_active_jobs`` bounds one key's queued plus running jobs (429), counted in the
  database. Two requests racing on different replicas may both pass the count, so a key
  can exceed the limit by the number of its concurrent creations; never by more.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from pathlib import Path

import anyio
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from microforge.api.problems import ProblemError, problem_response
from microforge.api.state import ServiceState
from microforge.api.uploads import ParsedForm, receive_multipart
from microforge.storage.queries import ACTIVE_JOB_STATES
from microforge.storage.tables import Job

#: Seconds a client is told to wait after a 503 ``overloaded``.
OVERLOAD_RETRY_AFTER = 2
#: Paths outside admission (cheap, and must answer while the API is saturated).
EXEMPT_PATHS = frozenset({"/v1/health"})


class Admission:
    """A bounded concurrency limit with a bounded, timed queue, in front of the app."""

    def __init__(
        self, app: ASGIApp, *, max_active: int, max_queued: int, queue_timeout: float
    ) -> None:
        self.app = app
        self.max_queued = max_queued
        self.queue_timeout = queue_timeout
        self.slots = anyio.Semaphore(max_active)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in EXEMPT_PATHS:
            await self.app(scope, receive, send)
            return
        if self.slots.value == 0 and self.slots.statistics().tasks_waiting >= self.max_queued:
            await self._overloaded(scope, receive, send, "the request queue is full")
            return
        try:
            with anyio.fail_after(self.queue_timeout):
                await self.slots.acquire()
        except TimeoutError:
            await self._overloaded(
                scope, receive, send, f"no slot freed up within {self.queue_timeout:g} s"
            )
            return
        held = True

        def release() -> None:
            nonlocal held
            if held:
                held = False
                self.slots.release()

        async def send_releasing(message: Message) -> None:
            if message["type"] == "http.response.start":
                release()
            await send(message)

        try:
            await self.app(scope, receive, send_releasing)
        finally:
            release()

    @staticmethod
    async def _overloaded(scope: Scope, receive: Receive, send: Send, why: str) -> None:
        response = problem_response(
            Request(scope),
            503,
            "overloaded",
            f"the server is at capacity ({why}); retry after the time in Retry-After",
            headers={"Retry-After": str(OVERLOAD_RETRY_AFTER)},
        )
        await response(scope, receive, send)


class UploadSlots:
    """Uploads in flight per key, as marker files under ``<blob root>/.uploads/<owner>/``."""

    def __init__(self, root: Path, limit: int, stale_after: float) -> None:
        self.root = root / ".uploads"
        self.limit = limit
        self.stale_after = stale_after

    def _live(self, folder: Path) -> int:
        live = 0
        now = time.time()
        for marker in folder.iterdir():
            try:
                fresh = now - marker.stat().st_mtime < self.stale_after
            except FileNotFoundError:
                continue
            if fresh:
                live += 1
            else:
                marker.unlink(missing_ok=True)
        return live

    @contextlib.contextmanager
    def hold(self, owner_id: str):  # noqa: ANN201 - yields a touch() callable
        """Claim a slot for ``owner_id`` (429 when none is free); yields ``touch()``.

        The marker is written before counting, so two racing uploads may both be refused,
        never both admitted past the limit.
        """
        if self.limit <= 0:
            yield lambda: None
            return
        folder = self.root / owner_id
        folder.mkdir(parents=True, exist_ok=True)
        marker = folder / uuid.uuid4().hex
        marker.touch()
        try:
            if self._live(folder) > self.limit:
                raise ProblemError(
                    429,
                    "too_many_uploads",
                    f"this key already has {self.limit} uploads in progress "
                    "(MICROFORGE_MAX_UPLOADS_PER_KEY); wait for one to finish",
                    headers={"Retry-After": "5"},
                )
            last = time.monotonic()

            def touch() -> None:
                nonlocal last
                if time.monotonic() - last > self.stale_after / 4:
                    last = time.monotonic()
                    with contextlib.suppress(FileNotFoundError):
                        os.utime(marker)

            yield touch
        finally:
            marker.unlink(missing_ok=True)


def upload_slots(state: ServiceState) -> UploadSlots:
    settings = state.settings
    return UploadSlots(
        state.blobs.root,
        settings.max_uploads_per_key,
        # Never stale while the upload is allowed to live: it sends a byte at least this often.
        stale_after=2 * settings.upload_idle_timeout_seconds + 10,
    )


async def receive_upload(
    request: Request, state: ServiceState, owner_id: str, file_fields: set[str]
) -> ParsedForm:
    """Stream a multipart upload within the key's upload slots and the pace limits."""
    settings = state.settings
    with upload_slots(state).hold(owner_id) as touch:
        return await receive_multipart(
            request,
            new_temp_path=state.blobs.new_temp_file,
            max_bytes=settings.max_upload_bytes,
            file_fields=file_fields,
            idle_timeout=settings.upload_idle_timeout_seconds,
            min_bytes_per_second=settings.upload_min_bytes_per_second,
            on_progress=touch,
        )


def check_active_jobs(state: ServiceState, session: Session, owner_id: str) -> None:
    """429 ``too_many_active_jobs`` when the key already has its limit of active jobs."""
    limit = state.settings.max_active_jobs_per_key
    if limit <= 0:
        return
    active = session.scalar(
        select(func.count())
        .select_from(Job)
        .where(Job.owner_id == owner_id, Job.state.in_(ACTIVE_JOB_STATES))
    )
    if active is not None and active >= limit:
        raise ProblemError(
            429,
            "too_many_active_jobs",
            f"this key has {active} queued or running jobs, the limit "
            "(MICROFORGE_MAX_ACTIVE_JOBS_PER_KEY); wait for one to finish or cancel one",
            headers={"Retry-After": "30"},
        )


__all__ = [
    "Admission",
    "UploadSlots",
    "check_active_jobs",
    "receive_upload",
]
