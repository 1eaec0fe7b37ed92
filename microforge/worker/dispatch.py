"""Sending job messages by name, the same way the API does (no task imports needed)."""

from __future__ import annotations

import logging

from celery import Celery

from microforge.worker.celery_app import (
    GENERATE_QUEUE,
    GENERATE_VOLUME_TASK,
    TRAIN_QUEUE,
    TRAIN_SEGMENT_TASK,
)

log = logging.getLogger(__name__)

TASK_FOR_KIND = {
    "train": (TRAIN_SEGMENT_TASK, TRAIN_QUEUE),
    "generate": (GENERATE_VOLUME_TASK, GENERATE_QUEUE),
}


def job_message(kind: str, job_id: str, token: int) -> tuple[str, list[object], str]:
    """Task name, arguments and queue of a job's message: the job id and the fencing token
    it was sent for, so that a copy which arrives after the job moved on is recognised
    as stale (``job_lifecycle.message_is_current``)."""
    name, queue = TASK_FOR_KIND[kind]
    return name, [job_id, token], queue


def send_job_message(celery: Celery, kind: str, job_id: str, token: int) -> bool:
    """Enqueue the job's next task; False (logged) when the broker is unreachable.

    A lost message is recovered by the sweep every worker runs on start and then
    periodically (``worker.redispatch``), so a broker hiccup must not fail the job itself.
    """
    name, args, queue = job_message(kind, job_id, token)
    try:
        celery.send_task(name, args=args, queue=queue)
    except Exception:  # noqa: BLE001 - any broker failure: log it, the sweep recovers the job
        log.exception("could not enqueue %s for job %s; a worker's sweep re-sends it", name, job_id)
        return False
    return True
