"""File downloads: Starlette's ``FileResponse`` for GET, HEAD and byte ranges, with the
row's own ETag, ``If-None-Match`` and problem+json errors in front of it.

Why not ``FileResponse`` alone: the ETag must be the one stored with the row (it does
not know it), it has no ``If-None-Match`` (304), and it answers a range outside the file
with a plain-text 416 and a range unit it does not know with 400, where RFC 9110 says to
ignore it. So the ``Range`` header is read here first: an unsatisfiable one is our 416
problem, one to ignore is taken out of the request, and a satisfiable one is handed on,
reduced to its satisfiable ranges, for ``FileResponse`` to serve (one range: 206 with
``Content-Range``; several: 206 ``multipart/byteranges``; HEAD: the same headers).
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.routing import APIRoute
from starlette.responses import FileResponse
from starlette.types import Receive, Scope, Send

from microforge.api.problems import ProblemError
from microforge.storage.tiff import is_ome_tiff

_RANGE_SPEC = re.compile(r"^(\d*)-(\d*)$")
#: More ranges than this in one request are not served as ranges (a cheap denial of service).
MAX_RANGES = 16


def quoted_etag(value: str) -> str:
    value = value.strip()
    if value.startswith(("W/", '"')):
        return value
    return f'"{value}"'


def etag_matches(header: str, etag: str) -> bool:
    if header.strip() == "*":
        return True
    candidates = [item.strip().removeprefix("W/") for item in header.split(",")]
    return etag.removeprefix("W/") in candidates


def parse_ranges(header: str, size: int) -> list[tuple[int, int]] | None:
    """The satisfiable ranges of a ``Range`` header as (start, end inclusive); None = ignore
    the header and send the whole file (another unit, bad syntax, too many ranges).

    Raises 416 when the header is well-formed but no range in it overlaps the file.
    """
    unit, _, specs = header.strip().partition("=")
    if unit.strip().lower() != "bytes" or not specs.strip():
        return None
    parts = [part.strip() for part in specs.split(",")]
    if len(parts) > MAX_RANGES:
        return None
    ranges = []
    for part in parts:
        match = _RANGE_SPEC.match(part)
        if match is None or match.groups() == ("", ""):
            return None
        first, last = match.groups()
        if not first:  # a suffix: the last N bytes
            if int(last) > 0 and size > 0:
                ranges.append((max(0, size - int(last)), size - 1))
            continue
        if last and int(last) < int(first):
            return None  # invalid (RFC 9110 14.1.1): the whole header is ignored
        if int(first) < size:
            ranges.append((int(first), min(int(last), size - 1) if last else size - 1))
    if not ranges:
        raise _unsatisfiable(size)
    return ranges


def _unsatisfiable(size: int) -> ProblemError:
    return ProblemError(
        416,
        "range_not_satisfiable",
        f"the requested range is outside the file, which has {size} bytes",
        headers={"Content-Range": f"bytes */{size}"},
    )


class _FileDownload(FileResponse):
    """``FileResponse`` that sees the ``Range`` header decided on by ``file_download``."""

    def __init__(self, *args: Any, range_header: str | None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._range_header = range_header

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(name, value) for name, value in scope["headers"] if name != b"range"]
        if self._range_header is not None:
            headers.append((b"range", self._range_header.encode("latin-1")))
        await super().__call__({**scope, "headers": headers}, receive, send)


def file_download(
    request: Request, path: Path, *, etag: str, media_type: str, filename: str
) -> Response:
    """200 with the whole file, 206 with its ranges, 304 when the ETag matches; HEAD too."""
    etag = quoted_etag(etag)
    stat = path.stat()
    headers = {"ETag": etag, "Cache-Control": "private, max-age=0, must-revalidate"}
    if_none_match = request.headers.get("if-none-match")
    if if_none_match and etag_matches(if_none_match, etag):
        return Response(status_code=304, headers=headers | {"Accept-Ranges": "bytes"})
    range_header = None
    requested = request.headers.get("range")
    if_range = request.headers.get("if-range")
    if requested and (if_range is None or if_range.strip() == etag):
        ranges = parse_ranges(requested, stat.st_size)
        if ranges is not None:
            range_header = "bytes=" + ",".join(f"{a}-{b}" for a, b in ranges)
    return _FileDownload(
        path,
        headers=headers,
        media_type=media_type,
        filename=filename,
        stat_result=stat,
        range_header=range_header,
    )


def volume_download(request: Request, path: Path, *, volume_id: str, etag: str) -> Response:
    """A volume's TIFF, named ``<id>.ome.tif`` when it is an OME-TIFF: Fiji's Bio-Formats
    and other readers look at that suffix to read the OME-XML (and so the voxel size)."""
    suffix = ".ome.tif" if is_ome_tiff(path) else ".tif"
    return file_download(
        request, path, etag=etag, media_type="image/tiff", filename=f"{volume_id}{suffix}"
    )


def add_head_route(router: APIRouter, endpoint: Callable[..., Response]) -> None:
    """Answer HEAD on the GET route of ``endpoint`` (a ``file_download``): the same headers,
    no body. A route of its own rather than ``methods=["GET", "HEAD"]``, which would give
    both operations one OpenAPI operationId."""
    get = next(
        route
        for route in router.routes
        if isinstance(route, APIRoute) and inspect.unwrap(route.endpoint) is endpoint
    )
    router.add_api_route(
        get.path.removeprefix(router.prefix),
        endpoint,
        methods=["HEAD"],
        response_class=get.response_class,
        summary=f"Headers of: {get.summary}",
        responses=get.responses,
        operation_id=f"{endpoint.__name__}_head",
    )


def file_responses(media_type: str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` of a ``file_download`` route serving ``media_type`` files."""
    binary = {media_type: {"schema": {"type": "string", "format": "binary"}}}
    header = {"schema": {"type": "string"}}
    common = {
        "ETag": {"description": "The file's strong validator.", **header},
        "Accept-Ranges": {"description": "`bytes`.", **header},
    }
    return {
        200: {"description": "The whole file.", "content": binary, "headers": common},
        206: {
            "description": "The requested byte range (Range: bytes=a-b), or several as "
            "multipart/byteranges.",
            "content": {**binary, "multipart/byteranges": {}},
            "headers": {
                **common,
                "Content-Range": {"description": "`bytes a-b/size`.", **header},
            },
        },
        304: {"description": "Not modified (If-None-Match matched the ETag).", "headers": common},
    }
