"""Download links for a volume that work without an API key (see ``storage.share_links``).

An OME-Zarr volume's link also serves the store's files below ``<link>/zarr/``, for a
viewer to stream. Every share-link route carries CORS headers (any origin, and the
preflight a ranged read needs), so that a browser page on another site can read the TIFF,
the zip or the store's files, its errors included. Only these: the link is the
credential, while the keyed routes stay same-origin.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field

from microforge.api.downloads import add_head_route, file_responses
from microforge.api.problems import ProblemError, problem_responses
from microforge.api.routes.common import not_found
from microforge.api.state import OwnerDep, SessionDep, SessionScopedRoute, StateDep
from microforge.api.volume_files import (
    CORS_PREFLIGHT_HEADERS,
    cors_responses,
    volume_etag,
    volume_file_response,
    with_cors,
    zarr_file_response,
    zarr_responses,
    zip_responses,
)
from microforge.bounds import int_range
from microforge.storage.queries import get_owned
from microforge.storage.share_links import (
    ExpiredShareLink,
    InvalidShareLink,
    parse,
    sign,
    verify,
)
from microforge.storage.tables import Volume

router = APIRouter(prefix="/v1", tags=["volumes"], route_class=SessionScopedRoute)
DAY = 24 * 3600


class ShareRequest(BaseModel):
    expires_in: int_range(60, 30 * DAY) = Field(
        default=DAY, description="Seconds the link works (1 min to 30 days)."
    )


class ShareLinkOut(BaseModel):
    url: str = Field(description="The link, absolute as this request saw the server.")
    path: str = Field(description="The same link relative to the server (behind proxies).")
    expires_at: datetime


@router.post(
    "/volumes/{volume_id}/share",
    status_code=201,
    response_model=ShareLinkOut,
    summary="A link to the volume's file (and OME-Zarr store) that needs no API key",
    responses=problem_responses(400, 401, 404, 422),
)
def share_volume(
    volume_id: str,
    request: Request,
    session: SessionDep,
    owner: OwnerDep,
    state: StateDep,
    body: ShareRequest | None = None,
) -> ShareLinkOut:
    """Anyone with the link can download the file until it expires, the volume is deleted,
    or the operator changes MICROFORGE_SHARE_SECRET. Nothing else of yours is reachable."""
    row = get_owned(session, Volume, owner.id, volume_id)
    if row is None:
        raise not_found("volume", volume_id)
    expires_at = int(time.time()) + (body or ShareRequest()).expires_in
    path = f"/v1/shared/{sign(state.share_secret(), row.id, volume_etag(row), expires_at)}"
    return ShareLinkOut(
        url=str(request.base_url).rstrip("/") + path,
        path=path,
        expires_at=datetime.fromtimestamp(expires_at, UTC),
    )


@router.get(
    "/shared/{token}",
    response_class=Response,
    summary="Download a shared volume (no API key; CORS): its TIFF (Range) or its OME-Zarr as "
    "a zip",
    responses={
        **cors_responses(zip_responses(file_responses("image/tiff"))),
        **problem_responses(404, 410, 416),
    },
)
def shared_volume_file(
    token: str, request: Request, session: SessionDep, state: StateDep
) -> Response:
    """404 for a link that was never valid or whose volume is gone; 410 once expired.
    Answers carry `Access-Control-Allow-Origin: *`, so a page on any site can fetch it."""
    return with_cors(
        lambda: volume_file_response(request, state.blobs, _shared_volume(token, session, state))
    )


add_head_route(router, shared_volume_file)


@router.get(
    "/shared/{token}/zarr/{path:path}",
    response_class=Response,
    summary="One file of a shared OME-Zarr volume's store (no API key; Range; CORS)",
    responses={**cors_responses(zarr_responses()), **problem_responses(404, 410, 416)},
)
def shared_zarr_file(
    token: str, path: str, request: Request, session: SessionDep, state: StateDep
) -> Response:
    """Give a viewer `<link>/zarr/` as the store's URL. Answers carry
    `Access-Control-Allow-Origin: *`, so browser viewers on any site can read them."""
    return with_cors(
        lambda: zarr_file_response(
            request, state.blobs, _shared_volume(token, session, state), path
        )
    )


add_head_route(router, shared_zarr_file)

_PREFLIGHT_RESPONSES = {204: {"description": "Allowed: GET and HEAD, with Range."}}


@router.options(
    "/shared/{token}",
    status_code=204,
    response_class=Response,
    summary="CORS preflight for a shared volume's download",
    responses=_PREFLIGHT_RESPONSES,
)
def shared_file_preflight(token: str) -> Response:
    """What a browser asks before a cross-origin ranged read; no key, nothing looked up."""
    return Response(status_code=204, headers=CORS_PREFLIGHT_HEADERS)


@router.options(
    "/shared/{token}/zarr/{path:path}",
    status_code=204,
    response_class=Response,
    summary="CORS preflight for a shared store's files",
    responses=_PREFLIGHT_RESPONSES,
)
def shared_zarr_preflight(token: str, path: str) -> Response:
    """What a browser asks before a cross-origin ranged read; no key, nothing looked up."""
    return Response(status_code=204, headers=CORS_PREFLIGHT_HEADERS)


def _shared_volume(token: str, session: SessionDep, state: StateDep) -> Volume:
    """The volume a share link names, if the link is valid: 404 otherwise, 410 expired."""
    gone = ProblemError(404, "link_not_found", "this link is not valid (or its volume was deleted)")
    try:
        volume_id, _ = parse(token)
    except InvalidShareLink as error:
        raise gone from error
    row = session.get(Volume, volume_id)
    if row is None or not state.blobs.exists(row.blob_key):
        raise gone
    try:
        verify(state.share_secret(), token, volume_etag(row))
    except InvalidShareLink as error:
        raise gone from error
    except ExpiredShareLink as error:
        raise ProblemError(
            410, "link_expired", "this link has expired: ask the volume's owner for a new one"
        ) from error
    return row
