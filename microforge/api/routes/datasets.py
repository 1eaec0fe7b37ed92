"""/v1/datasets: upload training images, list, inspect, preview and delete them."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool

from microforge.api.admission import receive_upload
from microforge.api.dataset_ingest import FILES_FIELD, delete_dataset_blobs, ingest_dataset
from microforge.api.problems import UPLOAD_PROBLEMS, ProblemError, problem_responses
from microforge.api.routes.common import (
    PNG_RESPONSE,
    CursorQuery,
    LimitQuery,
    bad_cursor,
    in_use,
    multipart_body,
    not_found,
)
from microforge.api.schemas import DatasetOut, Page, dataset_out
from microforge.api.state import OwnerDep, SessionDep, SessionScopedRoute, StateDep
from microforge.storage.queries import (
    InvalidCursorError,
    count_active_jobs_using_dataset,
    detach_finished_jobs_from_dataset,
    get_owned,
    list_owned,
)
from microforge.storage.tables import Dataset
from microforge.units import LENGTH_UNITS

router = APIRouter(prefix="/v1/datasets", tags=["datasets"], route_class=SessionScopedRoute)

DATASET_FORM = {
    "files": {
        "type": "array",
        "items": {"type": "string", "format": "binary"},
        "description": "One 2D image (isotropic), three 2D images for x, y, z "
        "(anisotropic), or one 3D TIFF. PNG, JPEG or TIFF.",
    },
    "image_type": {
        "type": "string",
        "enum": ["nphase", "grayscale", "colour"],
        "description": "Omit to detect it.",
    },
    "name": {"type": "string", "description": "Display name; default: the first file name."},
    "pixel_size": {
        "type": "number",
        "description": "Edge of one pixel in `unit` (optional): statistics and generated "
        "volumes are then in physical units.",
    },
    "unit": {"type": "string", "enum": list(LENGTH_UNITS), "default": "um"},
}


@router.post(
    "",
    status_code=201,
    response_model=DatasetOut,
    summary="Upload training images",
    openapi_extra=multipart_body(DATASET_FORM, ["files"]),
    responses=problem_responses(*UPLOAD_PROBLEMS),
)
async def upload_dataset(request: Request, state: StateDep, owner: OwnerDep) -> DatasetOut:
    """Images are checked from their headers before decoding; stored under server-made keys."""
    form = await receive_upload(request, state, owner.id, {FILES_FIELD})
    try:
        return await run_in_threadpool(_store_dataset, state, owner.id, form)
    finally:
        form.cleanup()


def _store_dataset(state, owner_id, form) -> DatasetOut:
    with state.session_factory() as session:
        dataset = ingest_dataset(state, session, owner_id, form)
        try:
            session.commit()
        except BaseException:
            session.rollback()
            delete_dataset_blobs(state, dataset)
            raise
        return dataset_out(dataset)


@router.get(
    "",
    response_model=Page[DatasetOut],
    summary="List datasets",
    responses=problem_responses(401, 422),
)
def list_datasets(
    session: SessionDep, owner: OwnerDep, limit: LimitQuery = 20, cursor: CursorQuery = None
) -> Page[DatasetOut]:
    try:
        rows, next_cursor = list_owned(session, Dataset, owner.id, limit=limit, cursor=cursor)
    except InvalidCursorError as exc:
        raise bad_cursor(exc) from exc
    return Page[DatasetOut](items=[dataset_out(row) for row in rows], next_cursor=next_cursor)


@router.get(
    "/{dataset_id}",
    response_model=DatasetOut,
    summary="Get a dataset",
    responses=problem_responses(401, 404),
)
def get_dataset(dataset_id: str, session: SessionDep, owner: OwnerDep) -> DatasetOut:
    dataset = get_owned(session, Dataset, owner.id, dataset_id)
    if dataset is None:
        raise not_found("dataset", dataset_id)
    return dataset_out(dataset)


@router.delete(
    "/{dataset_id}",
    status_code=204,
    summary="Delete a dataset and its files",
    responses=problem_responses(401, 404, 409),
)
def delete_dataset(
    dataset_id: str, session: SessionDep, owner: OwnerDep, state: StateDep
) -> Response:
    """Refused (409) while a queued or running job uses the dataset."""
    dataset = get_owned(session, Dataset, owner.id, dataset_id)
    if dataset is None:
        raise not_found("dataset", dataset_id)
    active = count_active_jobs_using_dataset(session, owner.id, dataset_id)
    if active:
        raise in_use("dataset", dataset_id, active)
    detach_finished_jobs_from_dataset(session, owner.id, dataset_id)
    session.delete(dataset)
    session.commit()
    delete_dataset_blobs(state, dataset)
    return Response(status_code=204)


@router.get(
    "/{dataset_id}/preview.png",
    response_class=Response,
    summary="Preview the dataset's images",
    responses={**PNG_RESPONSE, **problem_responses(401, 404)},
)
def dataset_preview(
    dataset_id: str, session: SessionDep, owner: OwnerDep, state: StateDep
) -> Response:
    """Labels are mapped to evenly spread greys; a volume shows its middle z, y, x slices."""
    dataset = get_owned(session, Dataset, owner.id, dataset_id)
    if dataset is None:
        raise not_found("dataset", dataset_id)
    if not dataset.preview_blob or not state.blobs.exists(dataset.preview_blob):
        raise ProblemError(404, "preview_not_found", f"dataset {dataset_id} has no preview")
    with state.blobs.open(dataset.preview_blob) as handle:
        return Response(handle.read(), media_type="image/png")
