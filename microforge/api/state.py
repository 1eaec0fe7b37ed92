"""Per-app service state and the request dependencies built on it (sessions, auth).

Why state lives on ``app.state`` and not in globals: tests build several apps with
different settings in one process, and each must use its own database and blob store.
Why the dependencies are ``async``: a sync dependency costs a hop to the threadpool and
back per request. None of these does I/O on entry (a session connects on its first
query, inside the endpoint's thread); only closing a session that used a connection
goes to a thread.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

import anyio.to_thread
from anyio import CapacityLimiter
from fastapi import Depends, Request, Response
from fastapi.datastructures import DefaultPlaceholder
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from microforge.api.auth import KeyCache, require_key
from microforge.api.decode_budget import WAIT_SECONDS, DecodeBudget
from microforge.settings import Settings
from microforge.storage.blobs import LocalBlobStore
from microforge.storage.share_links import load_or_create_secret
from microforge.storage.tables import ApiKey


@dataclass
class ServiceState:
    settings: Settings
    engine: Engine
    session_factory: sessionmaker[Session]
    blobs: LocalBlobStore
    key_cache: KeyCache = field(init=False)
    decode_budget: DecodeBudget = field(init=False)
    _celery: Any = None
    _share_secret: bytes | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.key_cache = KeyCache(self.settings.auth_cache_seconds)
        self.decode_budget = DecodeBudget(self.settings.max_decoded_bytes, WAIT_SECONDS)

    def share_secret(self) -> bytes:
        """The key that signs download links: from the settings, else the blob store's."""
        with self._lock:
            if self._share_secret is None:
                configured = self.settings.share_secret
                self._share_secret = (
                    hashlib.sha256(configured.encode()).digest()
                    if configured
                    else load_or_create_secret(self.blobs.root)
                )
            return self._share_secret

    def celery(self) -> Any:
        """The Celery app used to enqueue by name; made once, on first use. Fail-fast: with
        the broker down, a request answers 503 within seconds instead of hanging."""
        with self._lock:
            if self._celery is None:
                from microforge.worker.celery_app import make_celery_app

                self._celery = make_celery_app(self.settings, fail_fast=True)
            return self._celery


async def get_state(request: Request) -> ServiceState:
    return request.app.state.service


async def get_session(state: Annotated[ServiceState, Depends(get_state)]) -> AsyncIterator[Session]:
    session = state.session_factory()
    try:
        yield session
    finally:
        if session.in_transaction():
            # Rolls back and returns the connection: I/O, so in a thread, with a limiter of
            # its own so that it never queues behind requests waiting for a connection.
            await anyio.to_thread.run_sync(session.close, limiter=CapacityLimiter(1))
        else:
            session.close()


def _closing_sessions(endpoint: Callable[..., Any]) -> Callable[..., Any]:
    """``endpoint``, closing the sessions it was given as soon as it returns.

    The sync wrapper also serialises the endpoint's answer in the endpoint's own thread
    when ``SessionScopedRoute`` says that is safe (``wrapper.serialise``): see there.
    """

    def close(kwargs: dict[str, Any]) -> None:
        for value in kwargs.values():
            if isinstance(value, Session):
                value.close()

    if inspect.iscoroutinefunction(endpoint):

        @functools.wraps(endpoint)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return await endpoint(*args, **kwargs)
            finally:
                close(kwargs)

        return async_wrapper

    @functools.wraps(endpoint)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            result = endpoint(*args, **kwargs)
        finally:
            close(kwargs)
        if wrapper.serialise is not None and type(result) is wrapper.serialise.model:
            return wrapper.serialise.response(result)
        return result

    wrapper.serialise = None
    return wrapper


@dataclass(frozen=True)
class _Serialise:
    """How a route's own answer becomes JSON bytes: its model and its status code."""

    model: type[BaseModel]
    status_code: int

    def response(self, result: BaseModel) -> Response:
        return Response(
            result.model_dump_json(by_alias=True),
            status_code=self.status_code,
            media_type="application/json",
        )


def _sets_headers(dependant: Dependant) -> bool:
    """Whether the endpoint or one of its dependencies takes FastAPI's ``Response``."""
    return dependant.response_param_name is not None or any(
        _sets_headers(sub) for sub in dependant.dependencies
    )


class SessionScopedRoute(APIRoute):
    """A route whose ``SessionDep`` gives its connection back when the endpoint returns.

    Why: FastAPI ends a dependency only after the response is serialised (for a sync
    endpoint, in another trip to the threadpool) and, for request-scoped dependencies,
    sent. A session that outlived its endpoint would hold a connection while it waits for
    a thread or for a slow client; with every thread waiting for a connection and every
    connection waiting for a thread, the API stalls until the pool times out. Responses
    are built inside endpoints from loaded rows, so nothing needs the session afterwards.

    A sync endpoint that returns exactly its response model also has that model turned
    into JSON in its own thread. Why: FastAPI would validate the returned model again in
    a second trip to the threadpool and back (two thread hand-offs and a validation per
    request, a few per cent of the API's CPU under load; docs/benchmarks.md). The bytes are
    the same: a model instance passes FastAPI's validation unchanged and is dumped with
    the same pydantic serialiser. Not done where FastAPI would change the answer: a custom
    response class, ``response_model_*`` options, or an endpoint that sets headers through
    a ``Response`` parameter (FastAPI adds those only to responses it builds itself).
    """

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        wrapped = _closing_sessions(endpoint)
        super().__init__(path, wrapped, **kwargs)
        if hasattr(wrapped, "serialise") and self._serialises_plainly():
            wrapped.serialise = _Serialise(self.response_model, self.status_code or 200)

    def _serialises_plainly(self) -> bool:
        """Whether FastAPI would answer a returned model with just its JSON (see above)."""
        model = self.response_model
        return (
            isinstance(model, type)
            and issubclass(model, BaseModel)
            and isinstance(self.response_class, DefaultPlaceholder)
            and not _sets_headers(self.dependant)
            and self.response_model_include is None
            and self.response_model_exclude is None
            and self.response_model_by_alias
            and not self.response_model_exclude_unset
            and not self.response_model_exclude_defaults
            and not self.response_model_exclude_none
        )


bearer_scheme = HTTPBearer(
    auto_error=False,
    description="An API key made with `microforge keys create NAME`, sent as "
    "`Authorization: Bearer mf_...`.",
)


async def current_key(
    request: Request,
    _credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> ApiKey:
    """The caller's active API key; 401 with ``WWW-Authenticate`` otherwise.

    ``AuthenticateFirst`` has normally resolved it already (before the body was read);
    ``bearer_scheme`` is here so that OpenAPI documents the security scheme.
    """
    return await require_key(request.app.state.service, request.scope)


StateDep = Annotated[ServiceState, Depends(get_state)]
SessionDep = Annotated[Session, Depends(get_session)]
OwnerDep = Annotated[ApiKey, Depends(current_key)]
