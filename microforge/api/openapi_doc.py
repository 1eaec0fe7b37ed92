"""The OpenAPI document, finished so that it says what the server really sends.

Why a finishing step on top of FastAPI's generator: three things FastAPI cannot know.
Its automatic 422 is ``application/json`` with its own ``HTTPValidationError`` schema,
while this API answers validation errors as ``application/problem+json`` ``Problem``s;
routes declare their problems without a ``model`` (FastAPI would add ``application/json``
to each), so the ``Problem`` schema must be put into the components here; and any route
may answer 503 when the server sheds load, which no route declares on its own.
Everything a single route can answer is declared on the route with
``problems.problem_responses``; only what is true of every route is added here.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from microforge.api.problems import PROBLEM_MEDIA_TYPE, Problem, problem_responses

#: Statuses any operation may answer, whatever the route (load shedding).
EVERY_OPERATION = (503,)
_HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
_FASTAPI_VALIDATION = "#/components/schemas/HTTPValidationError"


def _problem_schemas() -> dict[str, Any]:
    schema = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    definitions = schema.pop("$defs", {})
    return {"Problem": schema, **definitions}


def _finish_operation(operation: dict[str, Any]) -> None:
    responses = operation.setdefault("responses", {})
    shared = problem_responses(422, *EVERY_OPERATION)
    validation = responses.get("422", {}).get("content", {}).get("application/json", {})
    if validation.get("schema", {}).get("$ref") == _FASTAPI_VALIDATION:
        responses["422"] = shared[422]
    for status in EVERY_OPERATION:
        entry = responses.setdefault(str(status), shared[status])
        # A route's own 503 body (the health report) stays; the overload problem joins it.
        entry.setdefault("content", {}).setdefault(
            PROBLEM_MEDIA_TYPE, shared[status]["content"][PROBLEM_MEDIA_TYPE]
        )
        for name, header in shared[status].get("headers", {}).items():
            entry.setdefault("headers", {}).setdefault(name, header)


def finished_openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document for ``app`` with the finishing described above (cached)."""
    if app.openapi_schema is not None:
        return app.openapi_schema
    document = get_openapi(
        title=app.title,
        version=app.version,
        openapi_version=app.openapi_version,
        description=app.description,
        routes=app.routes,
    )
    for item in document.get("paths", {}).values():
        for method in _HTTP_METHODS:
            if method in item:
                _finish_operation(item[method])
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    schemas.update(_problem_schemas())
    text = json.dumps(document)
    for name in ("HTTPValidationError", "ValidationError"):  # FastAPI's, now unused
        if f'"#/components/schemas/{name}"' not in text:
            schemas.pop(name, None)
    app.openapi_schema = document
    return document


def install_openapi(app: FastAPI) -> None:
    """Serve ``finished_openapi`` at /openapi.json (and so at /docs)."""
    app.openapi = lambda: finished_openapi(app)  # type: ignore[method-assign]
