"""The Celery tasks, registered on the shared app; imported only by worker processes.

Why thin: the tasks only route a job id to the code that runs it. Everything that decides
what happens to a job lives in ``training`` and ``generation`` and is fenced by the lease,
so a redelivered or duplicated message is harmless. Task bodies import torch lazily, so
CUDA is initialised inside the task, in the one worker process that owns the GPU.
"""

from __future__ import annotations

from microforge.worker.celery_app import (
    GENERATE_QUEUE,
    GENERATE_VOLUME_TASK,
    TRAIN_QUEUE,
    TRAIN_SEGMENT_TASK,
    make_celery_app,
)
from microforge.worker.runtime import get_runtime
from microforge.worker.shutdown import worker_is_shutting_down  # noqa: F401 - connects the signal

app = make_celery_app()


@app.task(name=TRAIN_SEGMENT_TASK, queue=TRAIN_QUEUE, ignore_result=True)
def train_segment(job_id: str, token: int | None = None) -> str:
    from microforge.worker.training import run_train_segment

    return run_train_segment(get_runtime(), job_id, token)


@app.task(name=GENERATE_VOLUME_TASK, queue=GENERATE_QUEUE, ignore_result=True)
def generate_volume(job_id: str, token: int | None = None) -> str:
    from microforge.worker.generation import run_generate_job

    return run_generate_job(get_runtime(), job_id, token)
