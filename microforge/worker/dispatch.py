"""Sending job messages by name, the same way the API does (no task imports needed)."""

from __future__ import annotations

import logging

from celery import Celery

from microforge.jobs import JOB_KINDS

log = logging.getLogger(__name__)

#: A hand-off keeps trying for about 20 s: long enough to outlast a broker that a
#: supervisor (``microforge up``, Docker's restart policy) brings back within seconds,
#: instead of leaving the job to the periodic sweep (``redispatch_after_seconds``).
HANDOFF_RETRY_POLICY = {
    "max_retries": 10,
    "interval_start": 0.5,
    "interval_step": 0.5,
    "interval_max": 2.0,
}


def job_message(kind: str, job_id: str, token: int) -> tuple[str, list[object], str]:
    """Task name, arguments and queue of a job's message: the job id and the fencing token
    it was sent for, so that a copy which arrives after the job moved on is recognised
    as stale (``job_lifecycle.message_is_current``)."""
    info = JOB_KINDS[kind]
    return info.task, [job_id, token], info.queue


def send_job_message(
    celery: Celery, kind: str, job_id: str, token: int, *, handoff: bool = False
) -> bool:
    """Enqueue the job's next task; False (logged) when the broker is unreachable.

    A lost message is recovered by the sweep every worker runs on start and then
    periodically (``worker.redispatch``), so a broker hiccup must not fail the job itself.
    ``handoff`` (a task passing its job on) waits out a short broker restart
    (``HANDOFF_RETRY_POLICY``); the sweep itself does not, so one sweep over many jobs
    stays short while the broker is down.
    """
    name, args, queue = job_message(kind, job_id, token)
    policy = {"retry_policy": HANDOFF_RETRY_POLICY} if handoff else {}
    try:
        celery.send_task(name, args=args, queue=queue, **policy)
    except Exception:  # noqa: BLE001 - any broker failure: log it, the sweep recovers the job
        log.exception("could not enqueue %s for job %s; a worker's sweep re-sends it", name, job_id)
        return False
    return True
