"""Per-app service state and the request dependencies built on it (sessions, auth).

Why state lives on ``app.state`` and not in globals: tests build several apps with
different settings in one process, and each must use its own database and blob store.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from microforge.api.problems import ProblemError
from microforge.settings import Settings
from microforge.storage.api_keys import authenticate
from microforge.storage.blobs import LocalBlobStore
from microforge.storage.share_links import load_or_create_secret
from microforge.storage.tables import ApiKey


@dataclass
class ServiceState:
    settings: Settings
    engine: Engine
    session_factory: sessionmaker[Session]
    blobs: LocalBlobStore
    _celery: Any = None
    _share_secret: bytes | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

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


def get_state(request: Request) -> ServiceState:
    return request.app.state.service


def get_session(state: Annotated[ServiceState, Depends(get_state)]) -> Iterator[Session]:
    with state.session_factory() as session:
        yield session


bearer_scheme = HTTPBearer(
    auto_error=False,
    description="An API key made with `microforge keys create NAME`, sent as "
    "`Authorization: Bearer mf_...`.",
)


def _unauthorized(detail: str, error: str = "invalid_token") -> ProblemError:
    return ProblemError(
        401,
        "unauthorized",
        detail,
        headers={"WWW-Authenticate": f'Bearer realm="microforge", error="{error}"'},
    )


def current_key(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
    session: Annotated[Session, Depends(get_session)],
) -> ApiKey:
    """The caller's active API key; 401 with ``WWW-Authenticate`` otherwise."""
    if credentials is None:
        raise ProblemError(
            401,
            "unauthorized",
            "no API key: send 'Authorization: Bearer <key>' (create one with "
            "`microforge keys create NAME`)",
            headers={"WWW-Authenticate": 'Bearer realm="microforge"'},
        )
    key = authenticate(session, credentials.credentials)
    if key is None:
        raise _unauthorized("the API key is unknown or revoked; check it or create a new one")
    return key


StateDep = Annotated[ServiceState, Depends(get_state)]
SessionDep = Annotated[Session, Depends(get_session)]
OwnerDep = Annotated[ApiKey, Depends(current_key)]
