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


def send_job_message(celery: Celery, kind: str, job_id: str) -> bool:
    """Enqueue the job's next task; False (logged) when the broker is unreachable.

    A lost message is recovered by the sweep a worker runs on start
    (``recover_undelivered_jobs``), so a broker hiccup must not fail the job itself.
    """
    name, queue = TASK_FOR_KIND[kind]
    try:
        celery.send_task(name, args=[job_id], queue=queue)
    except Exception:  # noqa: BLE001 - any broker failure: log it, the sweep recovers the job
        log.exception(
            "could not enqueue %s for job %s; it resumes on the next worker start", name, job_id
        )
        return False
    return True
