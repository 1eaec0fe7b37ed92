"""A worker killed with SIGKILL mid-training costs at most one segment: the job resumes.

Real processes on a real broker and database: worker 1 trains until a checkpoint is
recorded, is killed with SIGKILL (no chance to clean up), and worker 2 picks the job up
once the dead worker's lease runs out and its unacknowledged message comes back.
"""

from __future__ import annotations

import signal

import pytest
from sqlalchemy import func, select
from worker_helpers import (
    TINY_CONFIG,
    create_dataset,
    create_job,
    create_owner,
    finished_job,
    running_worker,
    two_phase_image,
    wait_for,
    worker_env,
)

from microforge.storage.job_lifecycle import load_job
from microforge.storage.tables import Generator, JobMetric
from microforge.worker.celery_app import TRAIN_SEGMENT_TASK, make_celery_app

pytestmark = pytest.mark.slow


# SQLite only: the fenced writes are covered on PostgreSQL by test_job_lifecycle and
# test_worker_tasks; this test is about processes, and is the slowest of the suite.
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_killed_worker_job_resumes_from_its_checkpoint(
    settings, session_factory, broker, broker_url, tmp_path
):
    owner = create_owner(session_factory)
    dataset_id = create_dataset(settings, session_factory, owner, two_phase_image())
    config = {**TINY_CONFIG, "iterations": 30}
    job_id = create_job(
        session_factory, owner, "train", dataset_id=dataset_id, spec={"config": config}
    )
    env = worker_env(settings, broker_url, train_segment_seconds=0.5)
    celery = make_celery_app(settings, broker_url)
    celery.send_task(TRAIN_SEGMENT_TASK, args=[job_id, 0], queue="train")

    with running_worker(env, tmp_path / "worker1.log") as first:
        wait_for(
            lambda: load_job(session_factory, job_id).checkpoint_iteration >= 2,
            120,
            "a checkpoint from the first worker",
        )
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    killed_at = load_job(session_factory, job_id)
    assert killed_at.state == "running" and killed_at.checkpoint_iteration < config["iterations"]

    log2 = tmp_path / "worker2.log"
    with running_worker(env, log2):
        job = wait_for(lambda: finished_job(session_factory, job_id), 150, "the resumed job")
    celery.close()

    assert job.state == "succeeded", (job.error_code, job.error_message)
    assert job.progress["iteration"] == config["iterations"]
    assert job.attempts > killed_at.attempts >= 1  # worker 2 took the job over
    resumed = f"resuming from checkpoint at iteration {killed_at.checkpoint_iteration}"
    assert resumed in log2.read_text(), "worker 2 must continue from worker 1's checkpoint"
    with session_factory() as session:
        assert session.scalar(select(func.count()).select_from(Generator)) == 1
        iterations = session.scalars(
            select(JobMetric.iteration).where(JobMetric.job_id == job_id)
        ).all()
    assert sorted(iterations) == list(range(1, config["iterations"] + 1))
