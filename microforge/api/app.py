"""The FastAPI application factory.

Why a factory: tests and ``microforge up`` build apps with their own settings. The
module-level ``app`` (for ``uvicorn microforge.api.app:app``) is built lazily on first
access, so importing this module has no side effects; ``uvicorn --factory
microforge.api.app:create_app`` works too. Nothing here may import torch.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from microforge import __version__
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
from microforge.api.state import ServiceState
from microforge.settings import Settings, get_settings
from microforge.storage.blobs import get_blob_store
from microforge.storage.db import create_db_engine, make_session_factory, upgrade_database
from microforge.web import mount_web

DESCRIPTION = """Train SliceGAN on 2D micrographs and generate 3D microstructures.

Authenticate with `Authorization: Bearer <key>` (create keys with `microforge keys create`).
Errors are RFC 9457 `application/problem+json` with a stable `code`.
Long work returns `202` with a job; poll `GET /v1/jobs/{id}`."""


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app: migrate the database, open the blob store, mount the /v1 routes."""
    settings = settings or get_settings()
    url = settings.resolved_database_url
    upgrade_database(url)
    engine = create_db_engine(url)
    state = ServiceState(
        settings=settings,
        engine=engine,
        session_factory=make_session_factory(engine),
        blobs=get_blob_store(settings),
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
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
    for module in (health, datasets, jobs, job_actions, generators, volumes, shares, usage):
        app.include_router(module.router)
    mount_web(app)  # the browser front end at /, Swagger UI served locally at /docs
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
