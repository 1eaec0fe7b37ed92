"""Errors as RFC 9457 problem details, each with a stable snake_case ``code``.

Why one exception type and one response model: clients branch on ``code`` (never on the
English ``detail``), and the OpenAPI document can then describe every error response
truthfully with the same schema.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

PROBLEM_MEDIA_TYPE = "application/problem+json"
logger = logging.getLogger(__name__)

_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    409: "Conflict",
    410: "Gone",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    416: "Range Not Satisfiable",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
    507: "Insufficient Storage",
}


class FieldError(BaseModel):
    field: str = Field(description="Where the bad value is, e.g. 'body.config.iterations'.")
    message: str = Field(description="Why it was refused.")
    type: str = Field(description="Machine-readable reason, e.g. 'greater_than_equal'.")


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str = Field(description="URI naming the problem kind; derived from `code`.")
    title: str
    status: int
    detail: str = Field(description="What went wrong and what to do about it.")
    code: str = Field(description="Stable snake_case identifier for programs to branch on.")
    instance: str = Field(description="The request path that produced the problem.")
    errors: list[FieldError] | None = Field(
        default=None, description="For validation errors: each bad field and why."
    )


class ProblemError(Exception):
    """Raise anywhere in a request to answer with a problem+json response."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        *,
        headers: dict[str, str] | None = None,
        errors: list[FieldError] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = headers
        self.errors = errors


def problem_response(
    request: Request,
    status: int,
    code: str,
    detail: str,
    *,
    headers: dict[str, str] | None = None,
    errors: list[FieldError] | None = None,
) -> JSONResponse:
    problem = Problem(
        type=f"urn:microforge:problem:{code}",
        title=_TITLES.get(status, "Error"),
        status=status,
        detail=detail,
        code=code,
        instance=request.url.path,
        errors=errors,
    )
    return JSONResponse(
        problem.model_dump(exclude_none=True),
        status_code=status,
        headers=headers,
        media_type=PROBLEM_MEDIA_TYPE,
    )


def database_busy() -> ProblemError:
    """503 for a request that waited ``db_pool_timeout_seconds`` for a database connection."""
    return ProblemError(
        503,
        "database_busy",
        "every database connection is busy; retry after the time in Retry-After",
        headers={"Retry-After": "2"},
    )


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries declaring problem+json bodies for ``statuses``."""
    return {
        status: {
            "model": Problem,
            "description": _TITLES.get(status, "Error"),
            "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
        for status in statuses
    }


#: Tags of discriminated request bodies; pydantic puts them in error locations, users
#: never wrote them (``body.train.config.iterations`` means ``body.config.iterations``).
_UNION_TAGS = frozenset({"train", "generate"})


def _field_name(location: tuple[Any, ...]) -> str:
    parts = list(location)
    if len(parts) > 2 and parts[0] == "body" and parts[1] in _UNION_TAGS:
        del parts[1]
    return ".".join(str(part) for part in parts)


def install_problem_handlers(app: FastAPI) -> None:
    """Route every error (ours, FastAPI's, Starlette's, unexpected) through problem+json."""

    @app.exception_handler(ProblemError)
    async def _problem(request: Request, exc: ProblemError) -> JSONResponse:
        return problem_response(
            request, exc.status, exc.code, exc.detail, headers=exc.headers, errors=exc.errors
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            FieldError(
                field=_field_name(tuple(error.get("loc", ()))),
                message=str(error.get("msg", "invalid value")),
                type=str(error.get("type", "value_error")),
            )
            for error in exc.errors()
        ]
        listed = "; ".join(f"{error.field}: {error.message}" for error in errors)
        return problem_response(
            request, 422, "validation_error", f"the request is invalid: {listed}", errors=errors
        )

    @app.exception_handler(PoolTimeoutError)
    async def _pool_timeout(request: Request, exc: PoolTimeoutError) -> JSONResponse:
        busy = database_busy()
        return problem_response(request, busy.status, busy.code, busy.detail, headers=busy.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {404: "not_found", 405: "method_not_allowed"}
        code = codes.get(exc.status_code, f"http_{exc.status_code}")
        detail = str(exc.detail)
        if exc.status_code == 404:
            detail = f"no route {request.url.path}; see /docs for the API"
        return problem_response(
            request, exc.status_code, code, detail, headers=getattr(exc, "headers", None)
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem_response(
            request,
            500,
            "internal_error",
            "the server failed unexpectedly; the error is logged. Retry, and report it if it "
            "persists",
        )
