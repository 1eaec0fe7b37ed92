"""/v1/volumes: generated volumes, their files (a TIFF, or an OME-Zarr store's files and
its zip) and PNG slices."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool

from microforge.api.downloads import add_head_route, file_responses
from microforge.api.problems import FieldError, ProblemError, problem_responses
from microforge.api.rendering import AXES, encode_png, read_volume_slice, to_uint8
from microforge.api.routes.common import (
    PNG_RESPONSE,
    CursorQuery,
    LimitQuery,
    bad_cursor,
    not_found,
)
from microforge.api.schemas import (
    Page,
    VolumeOut,
    VolumeReportOut,
    volume_out,
    volume_report_out,
)
from microforge.api.state import OwnerDep, SessionDep, SessionScopedRoute, StateDep
from microforge.api.volume_files import (
    volume_file_response,
    zarr_file_response,
    zarr_responses,
    zip_responses,
)
from microforge.bounds import INT32_MAX, int_range
from microforge.storage.queries import InvalidCursorError, get_owned, list_owned
from microforge.storage.tables import Volume

router = APIRouter(prefix="/v1/volumes", tags=["volumes"], route_class=SessionScopedRoute)


@router.get(
    "",
    response_model=Page[VolumeOut],
    summary="List volumes",
    responses=problem_responses(401, 422),
)
def list_volumes(
    session: SessionDep, owner: OwnerDep, limit: LimitQuery = 20, cursor: CursorQuery = None
) -> Page[VolumeOut]:
    try:
        rows, next_cursor = list_owned(session, Volume, owner.id, limit=limit, cursor=cursor)
    except InvalidCursorError as exc:
        raise bad_cursor(exc) from exc
    return Page[VolumeOut](items=[volume_out(row) for row in rows], next_cursor=next_cursor)


def _owned(session, owner_id: str, volume_id: str) -> Volume:
    row = get_owned(session, Volume, owner_id, volume_id)
    if row is None:
        raise not_found("volume", volume_id)
    return row


@router.get(
    "/{volume_id}",
    response_model=VolumeOut,
    summary="Get a volume",
    responses=problem_responses(401, 404),
)
def get_volume(volume_id: str, session: SessionDep, owner: OwnerDep) -> VolumeOut:
    return volume_out(_owned(session, owner.id, volume_id))


@router.delete(
    "/{volume_id}",
    status_code=204,
    summary="Delete a volume, its TIFF and its report",
    responses=problem_responses(401, 404),
)
def delete_volume(
    volume_id: str, session: SessionDep, owner: OwnerDep, state: StateDep
) -> Response:
    """Frees the disk a large volume takes. The generate job that made it keeps its id in
    ``result``; a download already under way finishes (the open file outlives its name)."""
    row = _owned(session, owner.id, volume_id)
    session.delete(row)
    session.commit()
    for key in (row.blob_key, row.report_blob):
        if key:
            state.blobs.delete(key)
    return Response(status_code=204)


@router.get(
    "/{volume_id}/file",
    response_class=Response,
    summary="Download the volume: its TIFF stack (Range, ETag), or its OME-Zarr store as a zip",
    responses={
        **zip_responses(file_responses("image/tiff")),
        **problem_responses(401, 404, 416),
    },
)
def volume_file(
    volume_id: str, request: Request, session: SessionDep, owner: OwnerDep, state: StateDep
) -> Response:
    """A TIFF volume: the file, with Range and ETag. An `ome-zarr` volume: its store as one
    zip (`<id>.ome.zarr.zip`, entries stored uncompressed under `<id>.ome.zarr/`), streamed
    as it is made, with its Content-Length (known in advance) and ETag but no Range; its
    files one by one (with Range) are at `zarr/{path}`."""
    return volume_file_response(request, state.blobs, _owned(session, owner.id, volume_id))


add_head_route(router, volume_file)


@router.get(
    "/{volume_id}/zarr/{path:path}",
    response_class=Response,
    summary="One file of the volume's OME-Zarr store (Range, ETag)",
    responses={**zarr_responses(), **problem_responses(401, 404, 416)},
)
def volume_zarr_file(
    volume_id: str,
    path: str,
    request: Request,
    session: SessionDep,
    owner: OwnerDep,
    state: StateDep,
) -> Response:
    """For viewers and `zarr` readers given `.../zarr/` as the store's URL: `zarr.json`
    (the multiscales metadata) and `0/zarr.json`, `0/c/0/0/0`, ... (levels, chunks).
    404 `zarr_file_not_found` for a path that is not a file of the store,
    `not_a_zarr_volume` for a TIFF volume."""
    return zarr_file_response(request, state.blobs, _owned(session, owner.id, volume_id), path)


add_head_route(router, volume_zarr_file)


@router.get(
    "/{volume_id}/slice.png",
    response_class=Response,
    summary="One slice of the volume as PNG (TIFF or OME-Zarr)",
    responses={**PNG_RESPONSE, **problem_responses(401, 404, 422)},
)
async def volume_slice(
    volume_id: str,
    session: SessionDep,
    owner: OwnerDep,
    state: StateDep,
    axis: Annotated[Literal["z", "y", "x"], Query(description="Axis normal to the slice.")] = "z",
    index: Annotated[
        int_range(0, INT32_MAX), Query(description="Slice index along the axis (0-based).")
    ] = 0,
    colour: Annotated[
        Literal["grey", "phases"],
        Query(
            description="How an n-phase volume's labels are drawn: `grey` (evenly spread "
            "greys, the default) or `phases` (phase i of the training data in the i-th colour "
            "of matplotlib's default cycle, as in the report PNG's plots). Grey-level and "
            "colour volumes are drawn as they are either way."
        ),
    ] = "grey",
) -> Response:
    """Reads only what the slice needs: from a TIFF, its pages (memory-mapped when
    uncompressed); from an `ome-zarr` store, the chunks of its full-resolution level that
    the slice crosses. The same volume gives the same PNG in either format."""
    row = _owned(session, owner.id, volume_id)
    size = int(row.shape[AXES.index(axis)])
    if not 0 <= index < size:
        raise ProblemError(
            422,
            "slice_out_of_range",
            f"index {index} is outside axis {axis}, which has slices 0..{size - 1}",
            errors=[
                FieldError(
                    field="query.index",
                    message=f"must be between 0 and {size - 1} for axis {axis}",
                    type="out_of_range",
                )
            ],
        )
    if not state.blobs.exists(row.blob_key):
        raise ProblemError(404, "file_missing", f"the file of volume {row.id} is missing")
    path = state.blobs.path(row.blob_key)
    image = await run_in_threadpool(read_volume_slice, path, axis, index)
    png = await run_in_threadpool(
        lambda: encode_png(
            to_uint8(
                image, row.image_type, list(row.phases or []), phase_colours=colour == "phases"
            )
        )
    )
    return Response(png, media_type="image/png")


def _report_not_ready(row: Volume) -> ProblemError:
    return ProblemError(
        404,
        "report_not_ready",
        f"the quality report of volume {row.id} is not built yet; it follows the volume "
        "within seconds to a minute of the generation job, so retry shortly",
    )


@router.get(
    "/{volume_id}/report",
    response_model=VolumeReportOut,
    summary="The volume's quality report (statistics, comparison, verdict)",
    responses=problem_responses(401, 404),
)
def volume_report(volume_id: str, session: SessionDep, owner: OwnerDep) -> VolumeReportOut:
    """404 `report_not_ready` while the report is being built. A report that could not be
    built answers 200 with `error` set (the volume itself is fine)."""
    row = _owned(session, owner.id, volume_id)
    if row.report is None:
        raise _report_not_ready(row)
    return volume_report_out(row, row.report)


@router.get(
    "/{volume_id}/report.png",
    response_class=Response,
    summary="The volume's quality report as a PNG",
    responses={**PNG_RESPONSE, **problem_responses(401, 404)},
)
def volume_report_png(
    volume_id: str, session: SessionDep, owner: OwnerDep, state: StateDep
) -> Response:
    """404 `report_not_ready` while the report is being built, `report_unavailable` when
    it could not be drawn (see the `error` of the JSON report)."""
    row = _owned(session, owner.id, volume_id)
    if row.report is None:
        raise _report_not_ready(row)
    if not row.report_blob or not state.blobs.exists(row.report_blob):
        raise ProblemError(
            404,
            "report_unavailable",
            f"volume {row.id} has no report image; GET /v1/volumes/{row.id}/report says why",
        )
    with state.blobs.open(row.report_blob) as handle:
        return Response(handle.read(), media_type="image/png")
