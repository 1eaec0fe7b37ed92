"""Errors as RFC 9457 problem details, each with a stable snake_case ``code``.

Why one exception type and one response model: clients branch on ``code`` (never on the
English ``detail``), and the OpenAPI document can then describe every error response
truthfully with the same schema. ``problem_responses`` is the one way routes declare the
problems they answer; ``openapi_doc`` adds what every route shares (503 overload).
"""

from __future__ import annotations

import logging
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

from microforge.storage.disk_full import disk_full_message, find_disk_full, storage_places

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


#: What each problem status means in this API, for the OpenAPI document.
_MEANINGS = {
    400: "Malformed request (e.g. a body that is not JSON, a broken multipart body).",
    401: "No API key, or an unknown or revoked one.",
    404: "No such resource for this API key.",
    408: "The request body stalled before it was complete.",
    409: "The resource's state does not allow this now (see `code`).",
    410: "The link has expired.",
    413: "The body is larger than the server accepts.",
    415: "The body's media type is not one this operation reads.",
    416: "The Range is outside the file.",
    422: "A parameter or the body is invalid; `errors` lists each bad field.",
    429: "Too many requests for this API key; retry after `Retry-After` seconds.",
    503: "The server is overloaded or a service it needs (the job queue) is down; retry "
    "after `Retry-After` seconds.",
    507: "The server's disk is full; delete what you no longer need (GET /v1/usage).",
}
#: Headers that come with a problem status.
_HEADERS = {
    401: {"WWW-Authenticate": "How to authenticate: `Bearer`."},
    405: {"Allow": "The methods the resource supports."},
    416: {"Content-Range": "`bytes */<size>`: the file's size."},
    429: {"Retry-After": "Seconds to wait before retrying."},
    503: {"Retry-After": "Seconds to wait before retrying."},
}

#: Problems of an upload (a streamed multipart body): stalled (408), too large (413),
#: over the per-key limits (429), disk full (507).
UPLOAD_PROBLEMS = (400, 401, 408, 413, 415, 422, 429, 507)
#: Problems of a request that creates a job: per-key limits (429), the queue down (503).
JOB_CREATION_PROBLEMS = (400, 401, 409, 422, 429, 503, 507)


def database_busy() -> ProblemError:
    """503 for a request that waited ``db_pool_timeout_seconds`` for a database connection."""
    return ProblemError(
        503,
        "database_busy",
        "every database connection is busy; retry after the time in Retry-After",
        headers={"Retry-After": "2"},
    )


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries declaring problem+json bodies for ``statuses``.

    Only ``application/problem+json`` (no ``model``: FastAPI would declare it as
    ``application/json`` too, which the server never sends); ``openapi_doc`` puts the
    ``Problem`` schema in the document's components.
    """
    responses: dict[int | str, dict[str, Any]] = {}
    for status in sorted(set(statuses)):
        entry: dict[str, Any] = {
            "description": _MEANINGS.get(status, _TITLES.get(status, "Error")),
            "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
        if status in _HEADERS:
            entry["headers"] = {
                name: {"description": text, "schema": {"type": "string"}}
                for name, text in _HEADERS[status].items()
            }
        responses[status] = entry
    return responses


def allowed_methods(request: Request) -> str:
    """Every method the request's path supports, for the ``Allow`` of a 405.

    Starlette's own 405 names only the first route that matched the path, but FastAPI
    makes one route per operation, so ``GET`` and ``DELETE /v1/volumes/{id}`` are two.
    Read from the OpenAPI document, so ``Allow`` and the document always agree.
    """
    methods: set[str] = set()
    for template, item in request.app.openapi().get("paths", {}).items():
        pattern = re.sub(r"\\{[^/]+?\\}", "[^/]+", re.escape(template))
        if re.fullmatch(pattern, request.url.path):
            methods |= {method.upper() for method in item if method.upper() in _METHODS}
    if "GET" in methods:
        methods.add("HEAD")
    return ", ".join(sorted(methods))


_METHODS = frozenset({"GET", "PUT", "POST", "DELETE", "OPTIONS", "HEAD", "PATCH", "TRACE"})


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
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 404:
            detail = f"no route {request.url.path}; see /docs for the API"
        if exc.status_code == 405:
            headers["Allow"] = allowed_methods(request) or headers.get("Allow", "")
            detail = f"{request.method} is not allowed here; use {headers['Allow']}"
        return problem_response(request, exc.status_code, code, detail, headers=headers or None)

    async def _storage_error(request: Request, exc: Exception) -> JSONResponse:
        """A full disk, wherever a request met it (upload, blob, database), is 507
        ``disk_full`` with where and how much room is left; anything else is a 500."""
        full = find_disk_full(exc)
        if full is None:
            return await _unexpected(request, exc)
        logger.warning("disk full on %s %s: %s", request.method, request.url.path, full)
        service = getattr(request.app.state, "service", None)
        places = storage_places(service.settings) if service is not None else None
        return problem_response(request, 507, "disk_full", disk_full_message(full, places))

    # Registered by class (not only in the catch-all below) so that Starlette answers
    # with them directly instead of re-raising to the server after the 500.
    app.add_exception_handler(OSError, _storage_error)
    app.add_exception_handler(SQLAlchemyError, _storage_error)

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
