"""Running a job's work under its lease, the same way for every kind of job.

Why one place: a task must take the lease before touching a job, step aside when another
worker holds it, and end the job with a code and a message whatever goes wrong, so that
no job is left running with nobody working on it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from microforge.storage.job_lifecycle import (
    ClaimStatus,
    Lease,
    LeaseLost,
    claim_job,
    finish_job,
)
from microforge.worker.failures import describe_failure
from microforge.worker.runtime import WorkerRuntime

log = logging.getLogger(__name__)


def run_claimed(
    runtime: WorkerRuntime,
    job_id: str,
    kind: str,
    work: Callable[[WorkerRuntime, Lease], str],
    message_token: int | None = None,
) -> str:
    """Claim ``job_id``, run ``work`` under the lease; returns what happened (for logs).

    ``message_token`` is the fencing token the task message was sent for; a stale copy
    is skipped (see ``job_lifecycle.message_is_current``)."""
    claim = claim_job(
        runtime.session_factory,
        job_id,
        runtime.owner,
        runtime.settings.lease_seconds,
        message_token,
    )
    if claim.status is not ClaimStatus.CLAIMED:
        log.info("%s task for %s skipped: %s", kind, job_id, claim.status.value)
        return claim.status.value
    assert claim.lease is not None
    try:
        return work(runtime, claim.lease)
    except LeaseLost:
        log.warning("job %s was taken over by another worker; this task stops", job_id)
        return "lease_lost"
    except Exception as error:  # noqa: BLE001 - every failure must end the job with a reason
        failure = describe_failure(error)
        log.exception("%s job %s failed: %s", kind, job_id, failure.code)
        try:
            finish_job(
                runtime.session_factory,
                claim.lease,
                "failed",
                error_code=failure.code,
                error_message=failure.message,
            )
        except LeaseLost:
            return "lease_lost"
        return "failed"
