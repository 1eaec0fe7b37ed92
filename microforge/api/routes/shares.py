"""Download links for a volume that work without an API key (see ``storage.share_links``)."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field

from microforge.api.downloads import add_head_route, file_responses, volume_download
from microforge.api.problems import ProblemError, problem_responses
from microforge.api.routes.common import not_found
from microforge.api.state import OwnerDep, SessionDep, SessionScopedRoute, StateDep
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
    summary="A download link for the volume's TIFF that needs no API key",
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
    path = f"/v1/shared/{sign(state.share_secret(), row.id, _etag(row), expires_at)}"
    return ShareLinkOut(
        url=str(request.base_url).rstrip("/") + path,
        path=path,
        expires_at=datetime.fromtimestamp(expires_at, UTC),
    )


@router.get(
    "/shared/{token}",
    response_class=Response,
    summary="Download a shared volume (no API key; HTTP Range supported)",
    responses={**file_responses("image/tiff"), **problem_responses(404, 410, 416)},
)
def shared_volume_file(
    token: str, request: Request, session: SessionDep, state: StateDep
) -> Response:
    """404 for a link that was never valid or whose volume is gone; 410 once expired."""
    gone = ProblemError(404, "link_not_found", "this link is not valid (or its volume was deleted)")
    try:
        volume_id, _ = parse(token)
    except InvalidShareLink as error:
        raise gone from error
    row = session.get(Volume, volume_id)
    if row is None or not state.blobs.exists(row.blob_key):
        raise gone
    try:
        verify(state.share_secret(), token, _etag(row))
    except InvalidShareLink as error:
        raise gone from error
    except ExpiredShareLink as error:
        raise ProblemError(
            410, "link_expired", "this link has expired: ask the volume's owner for a new one"
        ) from error
    return volume_download(
        request,
        state.blobs.path(row.blob_key),
        volume_id=row.id,
        etag=_etag(row),
    )


add_head_route(router, shared_volume_file)


def _etag(row: Volume) -> str:
    return row.etag or f"{row.id}-{row.size_bytes}"
