"""Running a job's work under its lease, the same way for every kind of job.

Why one place: a task must take the lease before touching a job, step aside when another
worker holds it, and end the job with a code and a message whatever goes wrong, so that
no job is left running with nobody working on it.

Recording the failure is a database write, and the failure may be that very database's
disk filling up (or the connection dropping). So the write is retried for a while, with
pauses that give the space freed meanwhile (the job's own partial files are removed as
the error unwinds) a chance to count. If it still cannot be written, the job is left as
it is: its lease runs out and the worker's sweep (``redispatch``) sends it again, so the
job runs anew once the database can be written, and ends either way with a recorded state.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from microforge.storage.disk_full import storage_places
from microforge.storage.job_lifecycle import (
    ClaimStatus,
    Lease,
    LeaseLost,
    claim_job,
    finish_job,
)
from microforge.worker.failures import Failure, describe_failure
from microforge.worker.runtime import WorkerRuntime

log = logging.getLogger(__name__)

#: Seconds to wait before each further try at recording a failure (about half a minute).
RECORD_RETRY_PAUSES: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0, 15.0)


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
        failure = describe_failure(error, storage_places(runtime.settings))
        log.exception("%s job %s failed: %s", kind, job_id, failure.code)
        return record_failure(runtime, claim.lease, failure)


def record_failure(runtime: WorkerRuntime, lease: Lease, failure: Failure) -> str:
    """End the job as failed with ``failure``, retrying while the database refuses the
    write; returns ``failed``, ``lease_lost``, or ``unrecorded`` when every try failed."""
    pauses = (0.0, *RECORD_RETRY_PAUSES)
    for attempt, pause in enumerate(pauses, 1):
        time.sleep(pause)
        try:
            finish_job(
                runtime.session_factory,
                lease,
                "failed",
                error_code=failure.code,
                error_message=failure.message,
            )
        except LeaseLost:
            return "lease_lost"
        except Exception as error:  # noqa: BLE001 - the database itself failed: try again
            first_line = (str(error).splitlines() or [""])[0]
            log.warning(
                "job %s: could not record its failure, try %d of %d (%s: %s)",
                lease.job_id,
                attempt,
                len(pauses),
                type(error).__name__,
                first_line,
            )
            continue
        return "failed"
    log.error(
        "job %s: its failure (%s) could not be recorded; its lease runs out within %.0f s "
        "and the job is then sent again",
        lease.job_id,
        failure.code,
        runtime.settings.lease_seconds,
    )
    return "unrecorded"
