"""File downloads with a single HTTP Range, ETag and If-None-Match.

Why hand-written: volumes are large and immutable, so clients resume broken downloads
with ``Range`` and skip unchanged ones with ``If-None-Match``; the ETag must be the one
stored with the row, which Starlette's ``FileResponse`` does not know.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from fastapi import Request, Response
from fastapi.responses import StreamingResponse

from microforge.api.problems import ProblemError

CHUNK_BYTES = 1024 * 1024
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def quoted_etag(value: str) -> str:
    value = value.strip()
    if value.startswith(("W/", '"')):
        return value
    return f'"{value}"'


def _etag_matches(header: str, etag: str) -> bool:
    if header.strip() == "*":
        return True
    candidates = [item.strip().removeprefix("W/") for item in header.split(",")]
    return etag.removeprefix("W/") in candidates


def _iter_file(path: Path, start: int, length: int) -> Iterator[bytes]:
    with open(path, "rb") as handle:
        handle.seek(start)
        remaining = length
        while remaining > 0:
            chunk = handle.read(min(CHUNK_BYTES, remaining))
            if not chunk:
                return
            remaining -= len(chunk)
            yield chunk


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """(start, end inclusive) of a single satisfiable range; None = ignore (send all).

    Raises 416 when the range is well-formed but outside the file.
    """
    match = _RANGE.match(header.strip())
    if match is None:
        return None  # multiple ranges or another unit: RFC 9110 lets us send the whole file
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:
        suffix = int(last)
        if suffix == 0:
            raise _unsatisfiable(size)
        return max(0, size - suffix), size - 1
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size or (last and int(last) < start):
        raise _unsatisfiable(size)
    return start, end


def _unsatisfiable(size: int) -> ProblemError:
    return ProblemError(
        416,
        "range_not_satisfiable",
        f"the requested range is outside the file, which has {size} bytes",
        headers={"Content-Range": f"bytes */{size}"},
    )


def file_download(
    request: Request, path: Path, *, etag: str, media_type: str, filename: str
) -> Response:
    """200 with the whole file, 206 with one range, 304 when the ETag matches."""
    etag = quoted_etag(etag)
    size = path.stat().st_size
    headers = {
        "ETag": etag,
        "Accept-Ranges": "bytes",
        "Content-Disposition": f'attachment; filename="{filename}"',
        "Cache-Control": "private, max-age=0, must-revalidate",
    }
    if_none_match = request.headers.get("if-none-match")
    if if_none_match and _etag_matches(if_none_match, etag):
        return Response(status_code=304, headers=headers)
    byte_range = None
    range_header = request.headers.get("range")
    if_range = request.headers.get("if-range")
    if range_header and (if_range is None or if_range.strip() == etag):
        byte_range = parse_range(range_header, size)
    if byte_range is None:
        headers["Content-Length"] = str(size)
        return StreamingResponse(_iter_file(path, 0, size), media_type=media_type, headers=headers)
    start, end = byte_range
    length = end - start + 1
    headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    headers["Content-Length"] = str(length)
    return StreamingResponse(
        _iter_file(path, start, length), status_code=206, media_type=media_type, headers=headers
    )


FILE_RESPONSES = {
    200: {"description": "The whole file.", "content": {"application/octet-stream": {}}},
    206: {
        "description": "One byte range (Range: bytes=a-b).",
        "content": {"application/octet-stream": {}},
    },
    304: {"description": "Not modified (If-None-Match matched the ETag)."},
}
