"""The FastAPI application factory.

Why a factory: tests and ``microforge up`` build apps with their own settings. The
module-level ``app`` (for ``uvicorn microforge.api.app:app``) is built lazily on first
access, so importing this module has no side effects; ``uvicorn --factory
microforge.api.app:create_app`` works too. Nothing here may import torch.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio.to_thread
from fastapi import FastAPI

from microforge import __version__
from microforge.api.admission import Admission
from microforge.api.auth import AuthenticateFirst, keyed_routes
from microforge.api.openapi_doc import install_openapi
from microforge.api.problems import install_problem_handlers
from microforge.api.routes import (
    datasets,
    generators,
    health,
    job_actions,
    jobs,
    shares,
    usage,
    volumes,
)
from microforge.api.state import ServiceState, current_key
from microforge.settings import Settings, get_settings
from microforge.storage.blob_gc import remove_abandoned_temporary_files
from microforge.storage.blobs import get_blob_store
from microforge.storage.db import create_db_engine, make_session_factory, upgrade_database
from microforge.web import mount_web

logger = logging.getLogger(__name__)
DESCRIPTION = """Train SliceGAN on 2D micrographs and generate 3D microstructures.

Authenticate with `Authorization: Bearer <key>` (create keys with `microforge keys create`).
Errors are RFC 9457 `application/problem+json` with a stable `code`.
Long work returns `202` with a job; poll `GET /v1/jobs/{id}`."""


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app: migrate the database, open the blob store, mount the /v1 routes.

    It also removes the scratch files of processes that died (an upload cut short by a
    killed API), but no live process's: other API replicas and workers may share the
    blob store (``blob_gc.remove_abandoned_temporary_files``).

    The sizes fit together: ``api_threads`` threads run blocking work, the database pool
    has a few connections more than that (no thread waits for one in normal operation),
    and ``Admission`` (outermost) bounds the requests in progress and waiting, answering
    503 past them. ``AuthenticateFirst`` comes next, so that a request without a valid key
    gets 401 before anything reads its body.
    """
    settings = settings or get_settings()
    url = settings.resolved_database_url
    upgrade_database(url)
    engine = create_db_engine(
        url,
        pool_size=settings.resolved_db_pool_size,
        pool_timeout=settings.db_pool_timeout_seconds,
    )
    blobs = get_blob_store(settings)
    freed = remove_abandoned_temporary_files(blobs)
    if freed:
        logger.warning("removed %d bytes of scratch files left by killed processes", freed)
    state = ServiceState(
        settings=settings,
        engine=engine,
        session_factory=make_session_factory(engine),
        blobs=blobs,
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # The threadpool of sync endpoints and dependencies (anyio's default limiter).
        anyio.to_thread.current_default_thread_limiter().total_tokens = settings.api_threads
        yield
        engine.dispose()

    app = FastAPI(
        title="MicroForge",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.service = state
    install_problem_handlers(app)
    install_openapi(app)
    modules = (health, datasets, jobs, job_actions, generators, volumes, shares, usage)
    for module in modules:
        app.include_router(module.router)
    mount_web(app)  # the browser front end at /, Swagger UI served locally at /docs
    keyed = keyed_routes((r for m in modules for r in m.router.routes), current_key)
    app.add_middleware(AuthenticateFirst, state=state, routes=keyed)
    app.add_middleware(
        Admission,
        max_active=settings.max_concurrent_requests,
        max_queued=settings.max_queued_requests,
        queue_timeout=settings.queue_timeout_seconds,
    )
    return app


_app: FastAPI | None = None


def __getattr__(name: str) -> Any:
    """``app`` is made on first access, from the environment's settings."""
    global _app
    if name == "app":
        if _app is None:
            _app = create_app()
        return _app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
