"""Pieces shared by the resource routers: pagination parameters, 404s, multipart docs."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Query

from microforge.api.problems import ProblemError
from microforge.bounds import int_range
from microforge.storage.queries import InvalidCursorError

LimitQuery = Annotated[int_range(1, 100), Query(description="Items per page (1..100).")]
CursorQuery = Annotated[
    str | None, Query(description="`next_cursor` of the previous page; omit for the newest.")
]


def not_found(kind: str, row_id: str) -> ProblemError:
    return ProblemError(
        404, f"{kind}_not_found", f"no {kind} {row_id!r} for this API key; check the id"
    )


def in_use(kind: str, row_id: str, active_jobs: int) -> ProblemError:
    """409 for deleting what queued or running jobs still need, saying how to get there."""
    return ProblemError(
        409,
        f"{kind}_in_use",
        f"{active_jobs} queued or running job(s) use {kind} {row_id}; cancel them or wait "
        "for them to finish, then delete it",
    )


def bad_cursor(exc: InvalidCursorError) -> ProblemError:
    return ProblemError(422, "invalid_cursor", str(exc))


def multipart_body(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    """OpenAPI ``requestBody`` for routes that parse multipart themselves (streaming)."""
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {"type": "object", "properties": properties, "required": required}
                }
            },
        }
    }


PNG_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {"description": "A PNG image.", "content": {"image/png": {}}}
}
