"""Acting on an ended training job: continue it for more iterations, or delete it.

Why continue: a user who trained 5,000 iterations, looked at the fidelity curve and the
report, and wants 5,000 more should not pay for the first 5,000 again. A training job
keeps its last checkpoint when it ends, so a continuation is a new job that starts from a
duplicate of it (the parent stays as it was: its record, metrics and generators are
history). Why delete: that checkpoint holds the networks and optimiser states, hundreds of
MB for the large presets, and only its owner knows when it is no longer wanted.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from pydantic import BaseModel, Field

from microforge.api.job_creation import (
    check_idempotency_key,
    create_and_enqueue,
    existing_job_for_key,
    fingerprint,
)
from microforge.api.problems import JOB_CREATION_PROBLEMS, ProblemError, problem_responses
from microforge.api.routes.common import not_found
from microforge.api.routes.jobs import ACCEPTED, IdempotencyHeader, accepted
from microforge.api.schemas import JobOut
from microforge.api.state import OwnerDep, ServiceState, SessionDep, SessionScopedRoute, StateDep
from microforge.bounds import int_range
from microforge.jobs import TrainSpec, read_spec, stored_spec
from microforge.models.config import MAX_ITERATIONS
from microforge.storage.queries import ACTIVE_JOB_STATES, get_owned
from microforge.storage.tables import Dataset, Job

router = APIRouter(prefix="/v1", tags=["jobs"], route_class=SessionScopedRoute)


class ContinueRequest(BaseModel):
    iterations: int_range(1, MAX_ITERATIONS) = Field(
        description="The new total number of iterations; more than the job's checkpoint.",
    )


@router.post(
    "/jobs/{job_id}/continue",
    status_code=202,
    response_model=JobOut,
    summary="Continue an ended training job for more iterations",
    responses={**ACCEPTED, **problem_responses(404, *JOB_CREATION_PROBLEMS)},
)
def continue_job(
    job_id: str,
    body: ContinueRequest,
    response: Response,
    session: SessionDep,
    owner: OwnerDep,
    state: StateDep,
    idempotency_key: IdempotencyHeader = None,
) -> JobOut:
    """A new training job that starts from this one's last checkpoint, with the same data,
    network and settings, and runs to ``iterations`` in all. The job may have succeeded,
    been cancelled or have failed, as long as it kept a checkpoint."""
    key = check_idempotency_key(idempotency_key)
    parent = _owned_job(session, owner.id, job_id)
    request_fingerprint = fingerprint({"continue": parent.id, "iterations": body.iterations})
    existing = existing_job_for_key(session, owner.id, key, request_fingerprint)
    if existing is not None:
        return accepted(existing, response)
    _check_continuable(session, state, parent, body.iterations)
    checkpoint = state.blobs.new_key("checkpoints", ".pt")
    state.blobs.duplicate(parent.checkpoint_blob, checkpoint)
    job = _continuation(parent, body.iterations, checkpoint)
    job.idempotency_key = key
    job.idempotency_fingerprint = request_fingerprint
    try:
        job, created = create_and_enqueue(state, session, job)
    except BaseException:
        state.blobs.delete(checkpoint)
        raise
    if not created:  # a concurrent retry with the same key won: its copy is the one in use
        state.blobs.delete(checkpoint)
    return accepted(job, response)


def _owned_job(session: Any, owner_id: str, job_id: str) -> Job:
    job = get_owned(session, Job, owner_id, job_id)
    if job is None:
        raise not_found("job", job_id)
    return job


def _check_continuable(session: Any, state: ServiceState, parent: Job, iterations: int) -> None:
    """Refuse, with what to do instead, everything a continuation could only fail on."""
    if parent.kind != "train":
        raise ProblemError(
            422,
            "not_a_training_job",
            f"job {parent.id} generates a volume; only training jobs can be continued",
        )
    if parent.state in ACTIVE_JOB_STATES:
        raise ProblemError(
            409,
            "job_not_finished",
            f"job {parent.id} is still {parent.state}: wait for it to end, or cancel it, "
            "then continue it",
        )
    if not parent.checkpoint_blob or not state.blobs.exists(parent.checkpoint_blob):
        raise ProblemError(
            409,
            "no_checkpoint",
            f"job {parent.id} kept no checkpoint (it ended before its first one): start a "
            "new training job instead",
        )
    if iterations <= parent.checkpoint_iteration:
        raise ProblemError(
            422,
            "iterations_too_few",
            f"job {parent.id} stopped at iteration {parent.checkpoint_iteration}: ask for "
            "more iterations in all than that",
        )
    dataset_id = parent.dataset_id
    if dataset_id is None or get_owned(session, Dataset, parent.owner_id, dataset_id) is None:
        raise ProblemError(
            409,
            "dataset_missing",
            f"the dataset job {parent.id} trained on was deleted, so it cannot be continued: "
            "upload the images again and start a new training job",
        )


def _continuation(parent: Job, iterations: int, checkpoint: str) -> Job:
    parent_spec = read_spec(parent)
    reached = parent.checkpoint_iteration
    spec = TrainSpec(
        config=parent_spec.config.model_copy(update={"iterations": iterations}),
        continued_from=parent.id,
        continued_at=reached,
    )
    return Job(
        owner_id=parent.owner_id,
        kind="train",
        spec=stored_spec(spec),
        dataset_id=parent.dataset_id,
        checkpoint_blob=checkpoint,
        checkpoint_iteration=reached,
        progress={"fraction": reached / iterations, "iteration": reached, "total": iterations},
    )


@router.delete(
    "/jobs/{job_id}",
    status_code=204,
    summary="Delete an ended job: its record, history, preview and checkpoint",
    responses=problem_responses(401, 404, 409),
)
def delete_job(job_id: str, session: SessionDep, owner: OwnerDep, state: StateDep) -> Response:
    """The generators and volumes the job made stay (delete them on their own). Refused
    (409) while the job is queued or running: cancel it first."""
    job = _owned_job(session, owner.id, job_id)
    if job.state in ACTIVE_JOB_STATES:
        raise ProblemError(
            409,
            "job_not_finished",
            f"job {job.id} is still {job.state}: cancel it first, then delete it",
        )
    blobs = [job.checkpoint_blob, job.preview_blob]
    session.delete(job)
    session.commit()
    for key in blobs:
        if key:
            state.blobs.delete(key)
    return Response(status_code=204)
