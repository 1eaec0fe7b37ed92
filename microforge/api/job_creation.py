"""Creating a job row and enqueueing its first task, with Idempotency-Key semantics.

Why the row is committed before the message is sent: a worker that receives the
message must find the job. Why the row is deleted again when sending fails: a job that
no worker will ever see would sit in ``queued`` forever; the client gets a 503 and can
retry (with the same Idempotency-Key) once the broker is back. Keeping the row for a
worker's sweep (``worker.redispatch``) to send later was the alternative: it would answer
202 for a job that waits up to ``redispatch_after_seconds`` after the broker is back, so
the 503 is the truthful answer, and it comes within seconds (``fail_fast`` Celery app).
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from microforge.api.admission import check_active_jobs
from microforge.api.problems import ProblemError
from microforge.api.state import ServiceState
from microforge.jobs import JOB_KINDS
from microforge.storage.queries import find_job_by_idempotency_key
from microforge.storage.tables import Job

logger = logging.getLogger(__name__)
MAX_IDEMPOTENCY_KEY_LENGTH = 200


def fingerprint(payload: Any) -> str:
    """A stable hash of a request, to tell a retry from a different request."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def check_idempotency_key(key: str | None) -> str | None:
    if key is None:
        return None
    key = key.strip()
    if not key or len(key) > MAX_IDEMPOTENCY_KEY_LENGTH or not key.isprintable():
        raise ProblemError(
            422,
            "invalid_idempotency_key",
            f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_LENGTH} printable characters, "
            "e.g. a UUID made by the client",
        )
    return key


def existing_job_for_key(
    session: Session, owner_id: str, key: str | None, request_fingerprint: str
) -> Job | None:
    """The job an earlier request with this key made, or None; 409 if the body differs."""
    if key is None:
        return None
    job = find_job_by_idempotency_key(session, owner_id, key)
    if job is not None and job.idempotency_fingerprint != request_fingerprint:
        raise ProblemError(
            409,
            "idempotency_key_reused",
            f"Idempotency-Key {key!r} was already used for a different request (job "
            f"{job.id}); use a new key for a new request",
        )
    return job


def enqueue(state: ServiceState, job: Job) -> None:
    """Send the job's first message, with the fencing token it is meant for (0, a new job),
    so that a copy of it delivered after the job moved on is dropped as stale."""
    kind = JOB_KINDS[job.kind]
    app = state.celery()
    app.send_task(kind.task, args=[job.id, job.fencing_token or 0], queue=kind.queue, retry=False)


def create_and_enqueue(
    state: ServiceState,
    session: Session,
    job: Job,
    *,
    cleanup_on_failure: list[Any] | None = None,
) -> tuple[Job, bool]:
    """Commit ``job`` (with extra rows already added to ``session``) and enqueue it.

    Returns ``(job, created)``; ``created`` is False when a concurrent request with the
    same Idempotency-Key won the race and its job is returned instead. 429 when the key
    already has its limit of queued and running jobs.
    """
    check_active_jobs(state, session, job.owner_id)
    session.add(job)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        if job.idempotency_key is None:
            raise
        existing = existing_job_for_key(
            session, job.owner_id, job.idempotency_key, job.idempotency_fingerprint or ""
        )
        if existing is None:
            raise
        return existing, False
    try:
        enqueue(state, job)
    except Exception as exc:  # noqa: BLE001 - any broker failure means the job cannot run
        logger.warning("could not enqueue job %s: %s", job.id, exc)
        session.delete(job)
        session.flush()  # the job points at the dataset: it must go first
        for row in cleanup_on_failure or []:
            session.delete(row)
        session.commit()
        raise ProblemError(
            503,
            "broker_unavailable",
            "the job queue (Redis) cannot be reached, so the job was not created; retry in "
            f"a moment, and check MICROFORGE_REDIS_URL and GET /v1/health ({type(exc).__name__})",
            headers={"Retry-After": "10"},
        ) from exc
    return job, True
