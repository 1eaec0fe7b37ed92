"""Serving a volume's bytes, whatever its format: a TIFF as one file, an OME-Zarr store as
its files (for viewers that stream it) or as one zip (for those who want one download).

Why here, once: the owner's routes (``/v1/volumes/{id}/...``) and the keyless share links
(``/v1/shared/{token}/...``) serve the same things; only who may ask differs.

Why serving a store needs no ``zarr`` (only ``slice.png`` reads one with it): a store is
served as the bytes of its files; the blob store knows which files a tree has. The zip is
written on the fly into the response by ``zipstream-ng``, file by file, so neither memory
nor disk holds it. Its entries are stored, not deflated (the chunks are compressed
already), so its size follows from the files' names and sizes before a byte is sent:
the answer has a Content-Length, and clients show progress. It has no Range (a store's
files do).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from fastapi import Request, Response
from starlette.responses import StreamingResponse
from zipstream import ZipStream

from microforge.api.downloads import (
    etag_matches,
    file_download,
    file_responses,
    quoted_etag,
    volume_download,
)
from microforge.api.problems import ProblemError
from microforge.storage.blobs import LocalBlobStore
from microforge.storage.tables import Volume

ZARR_FORMAT = "ome-zarr"
#: Files of a store that hold JSON metadata (zarr v3, and v2 for stores written by others).
_JSON_NAMES = {"zarr.json", ".zattrs", ".zgroup", ".zarray", ".zmetadata"}
#: Hand the zip to the client in pieces of about this size (not one per file header).
_ZIP_PIECE_BYTES = 1 << 20

#: What a browser viewer (on another origin) needs to read share links: any origin (the
#: link is the credential, no cookies), the headers of ranged reads visible to scripts.
CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Expose-Headers": "Content-Range, Content-Length, ETag, Accept-Ranges",
}
#: The answer to a CORS preflight (a ``Range`` header is not "simple", so one is sent).
CORS_PREFLIGHT_HEADERS = {
    **CORS_HEADERS,
    "Access-Control-Allow-Methods": "GET, HEAD, OPTIONS",
    "Access-Control-Allow-Headers": "Range, If-None-Match, If-Range",
    "Access-Control-Max-Age": "86400",
}


def with_cors(answer: Callable[[], Response]) -> Response:
    """``answer()`` with ``CORS_HEADERS``, whether it is the file or a problem (404, 410,
    416...): a browser hides from the page any answer without them, errors included.
    For share-link routes only: the link is the credential, keyed routes stay same-origin."""
    try:
        response = answer()
    except ProblemError as error:
        error.headers = {**CORS_HEADERS, **(error.headers or {})}
        raise
    response.headers.update(CORS_HEADERS)
    return response


def volume_etag(row: Volume) -> str:
    return row.etag or f"{row.id}-{row.size_bytes}"


def file_missing(row: Volume) -> ProblemError:
    return ProblemError(404, "file_missing", f"the file of volume {row.id} is missing")


def volume_file_response(request: Request, blobs: LocalBlobStore, row: Volume) -> Response:
    """The volume as one download: its TIFF (Range, ETag), or its store as a zip."""
    if not blobs.exists(row.blob_key):
        raise file_missing(row)
    if row.format != ZARR_FORMAT:
        return volume_download(
            request, blobs.path(row.blob_key), volume_id=row.id, etag=volume_etag(row)
        )
    etag = quoted_etag(f"{volume_etag(row)}-zip")
    headers = {
        "ETag": etag,
        "Cache-Control": "private, max-age=0, must-revalidate",
        "Accept-Ranges": "none",
        "Content-Disposition": f'attachment; filename="{row.id}.ome.zarr.zip"',
    }
    if_none_match = request.headers.get("if-none-match")
    if if_none_match and etag_matches(if_none_match, etag):
        return Response(status_code=304, headers=headers)
    archive = store_zip(blobs, row.blob_key, f"{row.id}.ome.zarr")
    headers["Content-Length"] = str(len(archive))
    if request.method == "HEAD":
        return Response(media_type="application/zip", headers=headers)
    return StreamingResponse(
        _pieces(archive, _ZIP_PIECE_BYTES), media_type="application/zip", headers=headers
    )


def store_zip(blobs: LocalBlobStore, key: str, folder: str) -> ZipStream:
    """The tree blob ``key`` as a zip of ``folder/<its files>``, entries stored (unzipping
    gives the store as a folder any zarr reader opens). Nothing is read yet: ``len()`` is
    the zip's size in bytes, iterating it reads the files one after the other."""
    archive = ZipStream(sized=True)  # sized: stored entries only, len() known in advance
    for name, path in blobs.tree_files(key):
        archive.add_path(path, f"{folder}/{name}", recurse=False)
    return archive


def _pieces(data: Iterable[bytes], size: int) -> Iterator[bytes]:
    """``data`` regrouped into pieces of at least ``size`` bytes (the last may be shorter):
    a store has many small chunk files, and each piece costs the server a send."""
    pending: list[bytes] = []
    count = 0
    for block in data:
        pending.append(block)
        count += len(block)
        if count >= size:
            yield b"".join(pending)
            pending, count = [], 0
    if pending:
        yield b"".join(pending)


def _not_in_store(row: Volume, path: str) -> ProblemError:
    return ProblemError(
        404, "zarr_file_not_found", f"volume {row.id} has no file {path!r} in its OME-Zarr store"
    )


def zarr_file_response(request: Request, blobs: LocalBlobStore, row: Volume, path: str) -> Response:
    """One file of the volume's OME-Zarr store (Range, ETag, HEAD). 404 for a TIFF volume,
    a path that is not a file of the store, or one that tries to leave it (``..``,
    absolute, backslashes)."""
    if row.format != ZARR_FORMAT:
        raise ProblemError(
            404,
            "not_a_zarr_volume",
            f"volume {row.id} is a TIFF; only volumes generated with format 'ome-zarr' have "
            "a store (GET its file for the TIFF)",
        )
    if not blobs.exists(row.blob_key):
        raise file_missing(row)
    segments = path.split("/")
    if (
        not path
        or "\\" in path
        or "\x00" in path
        or any(segment in ("", ".", "..") for segment in segments)
    ):
        raise _not_in_store(row, path)
    root = blobs.path(row.blob_key)
    file = root.joinpath(*segments)
    if file.is_symlink() or not file.is_file() or not file.resolve().is_relative_to(root):
        raise _not_in_store(row, path)
    media_type = "application/json" if segments[-1] in _JSON_NAMES else "application/octet-stream"
    # The store never changes once published: the volume's ETag and the path name a file.
    etag = hashlib.sha256(f"{volume_etag(row)}/{path}".encode()).hexdigest()[:40]
    response = file_download(request, file, etag=etag, media_type=media_type, filename=segments[-1])
    # Inline: viewers fetch these, people do not save them.
    del response.headers["content-disposition"]
    return response


def zip_responses(tiff: dict[int | str, dict[str, Any]]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` of a volume's download: ``tiff`` (``file_responses``), plus a
    zip for an OME-Zarr volume."""
    ok = dict(tiff[200])
    ok["description"] = (
        "The whole file: the TIFF, or the OME-Zarr store as a zip (Content-Length, no ranges)."
    )
    ok["content"] = {
        **ok["content"],
        "application/zip": {"schema": {"type": "string", "format": "binary"}},
    }
    ok["headers"] = {
        **ok.get("headers", {}),
        "Content-Length": {
            "description": "Bytes of the file or zip.",
            "schema": {"type": "integer"},
        },
    }
    return {**tiff, 200: ok}


def zarr_responses() -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` of a store file: JSON metadata or binary chunks."""
    responses = file_responses("application/octet-stream")
    ok = dict(responses[200])
    ok["content"] = {**ok["content"], "application/json": {"schema": {}}}
    responses[200] = ok
    return responses


def cors_responses(
    responses: dict[int | str, dict[str, Any]],
) -> dict[int | str, dict[str, Any]]:
    """``responses`` of a file route (``file_responses`` and the like) as a share-link route
    answers them (``with_cors``): ``Access-Control-Allow-Origin`` on each."""
    documented = dict(responses)
    for status in (200, 206, 304):
        if status in documented:
            entry = dict(documented[status])
            entry["headers"] = {
                **entry.get("headers", {}),
                "Access-Control-Allow-Origin": {
                    "description": "`*`.",
                    "schema": {"type": "string"},
                },
            }
            documented[status] = entry
    return documented
