"""Streaming multipart uploads into the blob store's scratch space, with a size cap.

Why not FastAPI's ``UploadFile``: Starlette spools the whole body to a temporary file
before the endpoint runs, so a size cap could only be checked after the bytes are on
disk. Here the body is parsed as it arrives; past ``max_upload_bytes`` the request fails
with 413 at once and every partial file is removed. A body that stalls (no bytes for
``idle_timeout``) or trickles (slower on average than ``min_bytes_per_second`` once the
first ``idle_timeout`` is over) fails with 408 the same way, so a slow client cannot hold
an upload slot, a scratch file and a request slot for ever. File names from the client
are kept only as display names: what is written uses server-made paths.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import anyio
from fastapi import Request
from python_multipart.multipart import MultipartParser, parse_options_header

from microforge.api.problems import ProblemError
from microforge.storage.disk_full import find_disk_full

#: Largest accepted non-file form field (a JSON config fits easily).
MAX_FIELD_BYTES = 256 * 1024
#: Room for multipart boundaries and part headers on top of the file bytes.
MULTIPART_OVERHEAD_BYTES = 64 * 1024
MAX_PARTS = 16


@dataclass
class UploadedFile:
    field: str
    filename: str
    content_type: str | None
    path: Path
    size: int = 0
    sha256: str = ""


@dataclass
class ParsedForm:
    files: list[UploadedFile] = field(default_factory=list)
    fields: dict[str, str] = field(default_factory=dict)

    def cleanup(self) -> None:
        """Remove every temporary file that was not handed to the blob store."""
        for upload in self.files:
            upload.path.unlink(missing_ok=True)


def _too_large(limit: int) -> ProblemError:
    return ProblemError(
        413,
        "upload_too_large",
        f"the upload is larger than the limit of {limit} bytes "
        "(MICROFORGE_MAX_UPLOAD_BYTES); crop or compress the images",
    )


def _too_slow(detail: str) -> ProblemError:
    # The rest of the body is never read: the connection must not be reused.
    return ProblemError(408, "upload_too_slow", detail, headers={"Connection": "close"})


async def paced_chunks(
    request: Request, idle_timeout: float | None, min_bytes_per_second: float
) -> AsyncIterator[bytes]:
    """The body's chunks; 408 when one is slower to come than the pace allows."""
    chunks = request.stream().__aiter__()
    if idle_timeout is None:
        async for chunk in chunks:
            yield chunk
        return
    started = time.monotonic()
    received = 0
    while True:
        wait = idle_timeout
        if min_bytes_per_second > 0:
            # The moment the average rate since the start would drop below the minimum.
            due = started + idle_timeout + received / min_bytes_per_second
            wait = min(wait, max(0.0, due - time.monotonic()))
        try:
            with anyio.fail_after(wait):
                chunk = await chunks.__anext__()
        except StopAsyncIteration:
            return
        except TimeoutError:
            elapsed = time.monotonic() - started
            raise _too_slow(
                f"the upload stalled or was too slow ({received} bytes in {elapsed:.0f} s; "
                f"the minimum is {min_bytes_per_second:g} bytes/s after the first "
                f"{idle_timeout:g} s, MICROFORGE_UPLOAD_MIN_BYTES_PER_SECOND); retry on a "
                "faster connection"
            ) from None
        received += len(chunk)
        yield chunk


class _FormCollector:
    """Callbacks for python-multipart that write file parts straight to disk."""

    def __init__(
        self, new_temp_path: Callable[[str], Path], max_bytes: int, file_fields: set[str]
    ) -> None:
        self.form = ParsedForm()
        self._new_temp_path = new_temp_path
        self._max_bytes = max_bytes
        self._file_fields = file_fields
        self._file_bytes = 0
        self._parts = 0
        self._header_name = b""
        self._header_value = b""
        self._headers: dict[bytes, bytes] = {}
        self._field_name: str | None = None
        self._field_data = bytearray()
        self._current: UploadedFile | None = None
        self._handle: BinaryIO | None = None
        self._digest = hashlib.sha256()

    def on_part_begin(self) -> None:
        self._parts += 1
        if self._parts > MAX_PARTS:
            raise ProblemError(422, "too_many_parts", f"more than {MAX_PARTS} form parts")
        self._headers = {}
        self._field_name = None
        self._field_data = bytearray()
        self._current = None

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        self._headers[self._header_name.lower()] = self._header_value
        self._header_name = b""
        self._header_value = b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        name = options.get(b"name")
        if name is None:
            raise ProblemError(
                400, "malformed_multipart", "a form part has no name in Content-Disposition"
            )
        self._field_name = name.decode("utf-8", "replace")
        if b"filename" not in options:
            return
        if self._field_name not in self._file_fields:
            allowed = ", ".join(sorted(self._file_fields)) or "none"
            raise ProblemError(
                422,
                "unexpected_file_field",
                f"a file was sent in form field {self._field_name!r}; files go in: {allowed}",
            )
        filename = options[b"filename"].decode("utf-8", "replace")
        filename = Path(filename.replace("\\", "/")).name[:200] or "upload"
        content_type = self._headers.get(b"content-type")
        # Only the extension survives, reduced to ASCII letters and digits (readers such as
        # tifffile look at it); the rest of the client's name never reaches the disk.
        extension = Path(filename).suffix.lower()[1:]
        extension = "".join(c for c in extension if c.isascii() and c.isalnum())[:16]
        suffix = f".{extension}" if extension else ""
        upload = UploadedFile(
            field=self._field_name,
            filename=filename,
            content_type=content_type.decode("latin-1") if content_type else None,
            path=self._new_temp_path(suffix),
        )
        self.form.files.append(upload)  # registered first, so cleanup always finds it
        self._handle = open(upload.path, "wb")  # noqa: SIM115 - closed in on_part_end/close
        self._digest = hashlib.sha256()
        self._current = upload

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        if self._current is None:
            if len(self._field_data) + len(chunk) > MAX_FIELD_BYTES:
                raise ProblemError(
                    413,
                    "form_field_too_large",
                    f"form field {self._field_name!r} is over {MAX_FIELD_BYTES} bytes",
                )
            self._field_data += chunk
            return
        self._file_bytes += len(chunk)
        if self._file_bytes > self._max_bytes:
            raise _too_large(self._max_bytes)
        assert self._handle is not None
        self._handle.write(chunk)
        self._digest.update(chunk)
        self._current.size += len(chunk)

    def on_part_end(self) -> None:
        if self._current is None:
            if self._field_name is not None:
                self.form.fields[self._field_name] = self._field_data.decode("utf-8", "replace")
            return
        self.close()
        self._current.sha256 = self._digest.hexdigest()
        self._current = None

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


async def receive_multipart(
    request: Request,
    *,
    new_temp_path: Callable[[str], Path],
    max_bytes: int,
    file_fields: set[str],
    idle_timeout: float | None = None,
    min_bytes_per_second: float = 0.0,
    on_progress: Callable[[], None] | None = None,
) -> ParsedForm:
    """Parse a multipart/form-data body as it streams in; files land at server-made paths.

    On any error (too large, malformed, too slow, client gone) the partial files are
    removed before the error propagates, so a failed upload leaves nothing behind.
    ``on_progress`` is called after each chunk (it keeps an upload slot fresh).
    """
    content_type = request.headers.get("content-type", "")
    media_type, params = parse_options_header(content_type)
    if media_type != b"multipart/form-data":
        raise ProblemError(
            415,
            "unsupported_media_type",
            f"send the files as multipart/form-data, not {content_type or 'no content type'}",
        )
    boundary = params.get(b"boundary")
    if not boundary:
        raise ProblemError(400, "malformed_multipart", "the multipart body has no boundary")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes + MULTIPART_OVERHEAD_BYTES:
        raise _too_large(max_bytes)

    collector = _FormCollector(new_temp_path, max_bytes, file_fields)
    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": collector.on_part_begin,
            "on_part_data": collector.on_part_data,
            "on_part_end": collector.on_part_end,
            "on_header_field": collector.on_header_field,
            "on_header_value": collector.on_header_value,
            "on_header_end": collector.on_header_end,
            "on_headers_finished": collector.on_headers_finished,
        },
    )
    try:
        async for chunk in paced_chunks(request, idle_timeout, min_bytes_per_second):
            parser.write(chunk)
            if on_progress is not None:
                on_progress()
        parser.finalize()
        if collector._current is not None:
            raise ProblemError(400, "malformed_multipart", "the multipart body is truncated")
    except ProblemError:
        collector.close()
        collector.form.cleanup()
        raise
    except Exception as exc:
        collector.close()
        collector.form.cleanup()
        if find_disk_full(exc) is not None:
            raise  # not the client's fault: answered 507 disk_full by the app's handler
        raise ProblemError(
            400, "malformed_multipart", f"the multipart body could not be parsed: {exc}"
        ) from exc
    except BaseException:  # cancelled (the server stopping): leave nothing behind either
        collector.close()
        collector.form.cleanup()
        raise
    return collector.form
