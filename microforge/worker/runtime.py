"""What a worker process shares between tasks: settings, database, blob store, Celery app.

Why one cached object per process: opening an engine or a blob store per task would waste
connections, while a module-level engine created at import time would be inherited across
a fork. The runtime is built lazily, on the first task, inside the process that runs it.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from functools import lru_cache

from celery import Celery
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from microforge.settings import Settings, get_settings
from microforge.storage.blobs import LocalBlobStore, get_blob_store
from microforge.storage.db import create_db_engine, make_session_factory
from microforge.storage.scratch_owner import process_tag


@dataclass
class WorkerRuntime:
    settings: Settings
    engine: Engine
    session_factory: sessionmaker[Session]
    blobs: LocalBlobStore
    celery: Celery
    #: Who holds a lease: host and pid to find the process in logs, and its process tag,
    #: so that a worker can tell that the holder died (``scratch_owner.tag_is_alive``).
    owner: str


def build_runtime(settings: Settings, celery: Celery) -> WorkerRuntime:
    engine = create_db_engine(settings.resolved_database_url)
    return WorkerRuntime(
        settings=settings,
        engine=engine,
        session_factory=make_session_factory(engine),
        blobs=get_blob_store(settings),
        celery=celery,
        owner=f"{socket.gethostname()}:{os.getpid()}:{process_tag()}",
    )


@lru_cache(maxsize=1)
def get_runtime() -> WorkerRuntime:
    """The runtime of this process, bound to the Celery app the tasks are registered on."""
    from microforge.worker.tasks import app

    return build_runtime(get_settings(), app)
