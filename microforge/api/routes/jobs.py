"""/v1/jobs and /v1/train: start training or generation, follow it, cancel it."""

from __future__ import annotations

import json
import math
import secrets
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import ValidationError
from sqlalchemy import select, update

from microforge.api.admission import receive_upload
from microforge.api.dataset_ingest import FILES_FIELD, delete_dataset_blobs, ingest_dataset
from microforge.api.job_creation import (
    check_idempotency_key,
    create_and_enqueue,
    existing_job_for_key,
    fingerprint,
)
from microforge.api.job_requests import (
    JobRequest,
    TrainJobRequest,
    check_disk_space,
    check_periodic_sizes,
)
from microforge.api.problems import (
    JOB_CREATION_PROBLEMS,
    UPLOAD_PROBLEMS,
    FieldError,
    ProblemError,
    problem_responses,
)
from microforge.api.routes.common import (
    PNG_RESPONSE,
    CursorQuery,
    LimitQuery,
    bad_cursor,
    multipart_body,
    not_found,
)
from microforge.api.schemas import (
    JobKind,
    JobMetricPoint,
    JobMetricsOut,
    JobOut,
    JobState,
    Page,
    job_out,
)
from microforge.api.state import OwnerDep, SessionDep, SessionScopedRoute, StateDep
from microforge.bounds import INT32_MAX, int_range
from microforge.jobs import TrainSpec, stored_spec
from microforge.models.config import TrainConfig
from microforge.storage.queries import (
    ACTIVE_JOB_STATES,
    InvalidCursorError,
    as_utc,
    get_owned,
    list_owned,
    training_lineage,
)
from microforge.storage.tables import Dataset, Generator, Job, JobMetric, utcnow
from microforge.units import LENGTH_UNITS

router = APIRouter(prefix="/v1", tags=["jobs"], route_class=SessionScopedRoute)
IdempotencyHeader = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        description="Retrying with the same key returns the same job instead of a new one.",
    ),
]


ACCEPTED = {202: {"description": "The job was created (or found by Idempotency-Key)."}}


def accepted(job: Job, response: Response) -> JobOut:
    """The 202 answer for a created (or found) job, with its Location."""
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return job_out(job)


@router.post(
    "/jobs",
    status_code=202,
    response_model=JobOut,
    summary="Start a training or generation job",
    responses={**ACCEPTED, **problem_responses(404, *JOB_CREATION_PROBLEMS)},
)
def create_job(
    body: JobRequest,
    response: Response,
    session: SessionDep,
    owner: OwnerDep,
    state: StateDep,
    idempotency_key: IdempotencyHeader = None,
) -> JobOut:
    key = check_idempotency_key(idempotency_key)
    if isinstance(body, TrainJobRequest):
        if get_owned(session, Dataset, owner.id, body.dataset_id) is None:
            raise not_found("dataset", body.dataset_id)
        spec = stored_spec(TrainSpec(config=body.config))
        job = Job(owner_id=owner.id, kind="train", spec=spec, dataset_id=body.dataset_id)
        job.progress = {"fraction": 0.0, "iteration": 0, "total": body.config.iterations}
    else:
        generator = get_owned(session, Generator, owner.id, body.generator_id)
        if generator is None:
            raise not_found("generator", body.generator_id)
        check_periodic_sizes(generator, body.shape, body.periodic)
        voxels = math.prod(body.shape)
        if voxels > state.settings.max_generate_voxels:
            raise ProblemError(
                422,
                "volume_too_large",
                f"shape {list(body.shape)} is {voxels} voxels; the limit is "
                f"{state.settings.max_generate_voxels} (MICROFORGE_MAX_GENERATE_VOXELS)",
            )
        if body.compression is None and body.format == "tiff":  # else unknown in advance
            check_disk_space(state, voxels * (3 if generator.image_type == "colour" else 1))
        seed = body.seed if body.seed is not None else secrets.randbelow(2**31)
        spec = stored_spec(body.spec(seed))
        job = Job(owner_id=owner.id, kind="generate", spec=spec, generator_id=body.generator_id)
        job.progress = {"fraction": 0.0}
    request_fingerprint = fingerprint(body.model_dump(mode="json"))
    existing = existing_job_for_key(session, owner.id, key, request_fingerprint)
    if existing is not None:
        return accepted(existing, response)
    job.idempotency_key = key
    job.idempotency_fingerprint = request_fingerprint
    job, _created = create_and_enqueue(state, session, job)
    return accepted(job, response)


TRAIN_FORM = {
    "files": {
        "type": "array",
        "items": {"type": "string", "format": "binary"},
        "description": "One 2D image, three 2D images (x, y, z), or one 3D TIFF.",
    },
    "config": {"type": "string", "description": "TrainConfig as JSON; omit for defaults."},
    "image_type": {"type": "string", "enum": ["nphase", "grayscale", "colour"]},
    "name": {"type": "string"},
    "pixel_size": {
        "type": "number",
        "description": "Edge of one pixel in `unit` (optional): statistics and generated "
        "volumes are then in physical units.",
    },
    "unit": {"type": "string", "enum": list(LENGTH_UNITS), "default": "um"},
}


def _parse_config(raw: str | None) -> TrainConfig:
    try:
        data = json.loads(raw) if raw and raw.strip() else {}
    except json.JSONDecodeError as exc:
        raise ProblemError(
            422, "invalid_config", f"form field 'config' is not valid JSON: {exc}"
        ) from exc
    if not isinstance(data, dict):
        raise ProblemError(422, "invalid_config", "form field 'config' must be a JSON object")
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as exc:
        errors = [
            FieldError(
                field=".".join(["config", *(str(part) for part in error["loc"])]),
                message=error["msg"],
                type=error["type"],
            )
            for error in exc.errors()
        ]
        listed = "; ".join(f"{error.field}: {error.message}" for error in errors)
        raise ProblemError(
            422, "validation_error", f"the config is invalid: {listed}", errors=errors
        ) from exc


@router.post(
    "/train",
    status_code=202,
    response_model=JobOut,
    summary="Upload images and start training in one request",
    openapi_extra=multipart_body(TRAIN_FORM, ["files"]),
    responses={**ACCEPTED, **problem_responses(*UPLOAD_PROBLEMS, *JOB_CREATION_PROBLEMS)},
)
async def upload_and_train(
    request: Request,
    response: Response,
    owner: OwnerDep,
    state: StateDep,
    idempotency_key: IdempotencyHeader = None,
) -> JobOut:
    key = check_idempotency_key(idempotency_key)
    form = await receive_upload(request, state, owner.id, {FILES_FIELD})
    try:
        job = await run_in_threadpool(_train_from_form, state, owner.id, form, key)
    finally:
        form.cleanup()
    return accepted(job, response)


def _train_from_form(state, owner_id: str, form, key: str | None) -> Job:
    config = _parse_config(form.fields.get("config"))
    request_fingerprint = fingerprint(
        {
            "config": config.model_dump(mode="json"),
            "files": [upload.sha256 for upload in form.files],
            "image_type": form.fields.get("image_type"),
            "name": form.fields.get("name"),
            "pixel_size": form.fields.get("pixel_size"),
            "unit": form.fields.get("unit"),
        }
    )
    with state.session_factory() as session:
        existing = existing_job_for_key(session, owner_id, key, request_fingerprint)
        if existing is not None:
            return existing
        dataset = ingest_dataset(state, session, owner_id, form)
        job = Job(
            owner_id=owner_id,
            kind="train",
            spec=stored_spec(TrainSpec(config=config)),
            dataset_id=dataset.id,
            progress={"fraction": 0.0, "iteration": 0, "total": config.iterations},
            idempotency_key=key,
            idempotency_fingerprint=request_fingerprint,
        )
        try:
            job, created = create_and_enqueue(state, session, job, cleanup_on_failure=[dataset])
        except BaseException:
            delete_dataset_blobs(state, dataset)
            raise
        if not created:
            # A concurrent retry won; its dataset is the one in use, this copy goes.
            delete_dataset_blobs(state, dataset)
        return job


@router.get(
    "/jobs",
    response_model=Page[JobOut],
    summary="List jobs, newest first",
    responses=problem_responses(401, 422),
)
def list_jobs(
    session: SessionDep,
    owner: OwnerDep,
    kind: JobKind | None = None,
    state: JobState | None = None,
    limit: LimitQuery = 20,
    cursor: CursorQuery = None,
) -> Page[JobOut]:
    filters = []
    if kind:
        filters.append(Job.kind == kind)
    if state:
        filters.append(Job.state == state)
    try:
        rows, next_cursor = list_owned(
            session, Job, owner.id, limit=limit, cursor=cursor, filters=filters
        )
    except InvalidCursorError as exc:
        raise bad_cursor(exc) from exc
    return Page[JobOut](items=[job_out(row) for row in rows], next_cursor=next_cursor)


def _owned_job(session, owner_id: str, job_id: str) -> Job:
    job = get_owned(session, Job, owner_id, job_id)
    if job is None:
        raise not_found("job", job_id)
    return job


@router.get(
    "/jobs/{job_id}",
    response_model=JobOut,
    summary="Get a job",
    responses=problem_responses(401, 404),
)
def get_job(job_id: str, session: SessionDep, owner: OwnerDep) -> JobOut:
    return job_out(_owned_job(session, owner.id, job_id))


@router.post(
    "/jobs/{job_id}/cancel",
    status_code=202,
    response_model=JobOut,
    summary="Cancel a job",
    responses={
        202: {"description": "Cancelled (queued job) or cancellation requested (running job)."},
        **problem_responses(401, 404, 409),
    },
)
def cancel_job(job_id: str, session: SessionDep, owner: OwnerDep) -> JobOut:
    """A queued job is cancelled at once; a running one stops at its next check (cooperative)."""
    job = _owned_job(session, owner.id, job_id)
    now = utcnow()
    # Conditional updates: a worker may claim the job between our read and our write.
    cancelled_now = session.execute(
        update(Job)
        .where(Job.id == job.id, Job.state == "queued")
        .values(state="cancelled", cancel_requested=True, finished_at=now, updated_at=now)
    ).rowcount
    if not cancelled_now:
        session.execute(
            update(Job)
            .where(Job.id == job.id, Job.state.in_(ACTIVE_JOB_STATES))
            .values(cancel_requested=True, updated_at=now)
        )
    session.commit()
    session.refresh(job)
    if job.state not in ACTIVE_JOB_STATES and not cancelled_now:
        raise ProblemError(
            409,
            "job_finished",
            f"job {job.id} already finished ({job.state}); there is nothing to cancel",
        )
    return job_out(job)


@router.get(
    "/jobs/{job_id}/metrics",
    response_model=JobMetricsOut,
    summary="Training history of a job (from the first job, when it continues another)",
    responses=problem_responses(401, 404, 422),
)
def job_metrics(
    job_id: str,
    session: SessionDep,
    owner: OwnerDep,
    after: Annotated[
        int_range(0, INT32_MAX) | None, Query(description="Only points after this iteration.")
    ] = None,
) -> JobMetricsOut:
    job = _owned_job(session, owner.id, job_id)
    points: list[JobMetricPoint] = []
    for part_id, upto in training_lineage(session, owner.id, job):
        query = select(JobMetric).where(JobMetric.job_id == part_id)
        if after is not None:
            query = query.where(JobMetric.iteration > after)
        if upto is not None:
            query = query.where(JobMetric.iteration <= upto)
        points += [
            JobMetricPoint(
                iteration=row.iteration,
                data=row.data,
                created_at=as_utc(row.created_at),
                job_id=part_id,
            )
            for row in session.scalars(query.order_by(JobMetric.iteration))
        ]
    return JobMetricsOut(job_id=job.id, points=points)


@router.get(
    "/jobs/{job_id}/preview.png",
    response_class=Response,
    summary="Latest training preview (slices along x, y, z)",
    responses={**PNG_RESPONSE, **problem_responses(401, 404)},
)
def job_preview(job_id: str, session: SessionDep, owner: OwnerDep, state: StateDep) -> Response:
    job = _owned_job(session, owner.id, job_id)
    if not job.preview_blob or not state.blobs.exists(job.preview_blob):
        raise ProblemError(
            404,
            "preview_not_ready",
            f"job {job.id} has no preview yet; previews appear every preview_every iterations "
            "once training runs",
        )
    with state.blobs.open(job.preview_blob) as handle:
        return Response(handle.read(), media_type="image/png")
