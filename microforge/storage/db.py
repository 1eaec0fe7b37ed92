"""Database engines, sessions and schema migrations.

Why this module exists: the API, the worker and the CLI all open the same database, and
SQLite needs a few connection settings (WAL, foreign keys, a busy timeout) to be safe when
several processes share one file. Putting them in one factory keeps every process equal.
The schema is owned by Alembic, so every process calls ``upgrade_database`` on start; the
call is idempotent and serialised between processes, so concurrent starts are harmless.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
#: How long a SQLite connection waits for another writer before giving up, in milliseconds.
SQLITE_BUSY_TIMEOUT_MS = 30_000
#: Arbitrary constant naming the PostgreSQL advisory lock that serialises migrations.
_MIGRATION_LOCK_ID = 0x6D66_6F72  # "mfor"


def _is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def _sqlite_file(url: str) -> Path | None:
    database = make_url(url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database)


def create_db_engine(
    url: str, *, pool_size: int | None = None, pool_timeout: float | None = None
) -> Engine:
    """An engine configured for safe sharing between the API, workers and the CLI.

    SQLite gets WAL (readers never block the writer), foreign keys (off by default in
    SQLite) and a busy timeout (a second writer waits instead of failing at once); the
    parent directory of the file is created so a fresh data dir just works.
    PostgreSQL gets ``pool_pre_ping`` so a restarted server does not break the pool.

    ``pool_size`` (the API passes its thread count plus a few) makes the pool fixed: that
    many connections, kept open, and no overflow. Overflow connections are closed when
    returned, so a pool smaller than the threads using it opens and configures a new
    connection for most requests under load; and a bounded pool is what keeps N API
    replicas under the server's connection limit. ``pool_timeout`` bounds the wait for a
    connection (``sqlalchemy.exc.TimeoutError``, which the API answers with 503).
    """
    pool: dict = {}
    if pool_size is not None:
        pool.update(pool_size=pool_size, max_overflow=0)
    if pool_timeout is not None:
        pool["pool_timeout"] = pool_timeout
    if not _is_sqlite(url):
        return create_engine(url, pool_pre_ping=True, **pool)
    sqlite_file = _sqlite_file(url)
    if sqlite_file is not None:
        sqlite_file.parent.mkdir(parents=True, exist_ok=True)
    options: dict = {
        "connect_args": {"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
    }
    if sqlite_file is None:
        # An in-memory database exists per connection: share one so every session sees it.
        options["poolclass"] = StaticPool
    else:
        options.update(pool)
    engine = create_engine(url, **options)

    @event.listens_for(engine, "connect")
    def _configure_sqlite(dbapi_connection, _record) -> None:  # noqa: ANN001
        cursor = dbapi_connection.cursor()
        try:
            if sqlite_file is not None:
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        finally:
            cursor.close()

    return engine


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions whose objects stay readable after commit (responses are built after it)."""
    return sessionmaker(bind=engine, expire_on_commit=False)


def alembic_config(url: str) -> Config:
    """An Alembic config pointing at the packaged migrations, no ini file needed."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # ConfigParser interpolation would choke on '%' in passwords.
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


@contextlib.contextmanager
def _sqlite_migration_lock(url: str) -> Iterator[None]:
    """Serialise migrations of one SQLite file across processes with an OS file lock."""
    sqlite_file = _sqlite_file(url)
    if sqlite_file is None:
        yield
        return
    try:
        import fcntl
    except ImportError:  # Windows: no fcntl; concurrent first starts are rare enough there.
        yield
        return
    sqlite_file.parent.mkdir(parents=True, exist_ok=True)
    lock_path = sqlite_file.with_name(sqlite_file.name + ".migrate.lock")
    with open(lock_path, "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def upgrade_database(url: str) -> None:
    """Bring the schema to the newest revision; safe to call on every start.

    Concurrent callers (an API and a worker starting together) are serialised: with a
    PostgreSQL advisory lock held on the migrating connection, or a file lock for SQLite.
    """
    config = alembic_config(url)
    if _is_sqlite(url):
        with _sqlite_migration_lock(url):
            engine = create_db_engine(url)
            try:
                with engine.begin() as connection:
                    config.attributes["connection"] = connection
                    command.upgrade(config, "head")
            finally:
                engine.dispose()
        return
    engine = create_db_engine(url)
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT pg_advisory_lock(:id)"), {"id": _MIGRATION_LOCK_ID})
            connection.commit()
            try:
                config.attributes["connection"] = connection
                command.upgrade(config, "head")
                connection.commit()
            finally:
                connection.execute(
                    text("SELECT pg_advisory_unlock(:id)"), {"id": _MIGRATION_LOCK_ID}
                )
                connection.commit()
    finally:
        engine.dispose()


def database_is_reachable(engine: Engine) -> tuple[bool, str | None]:
    """``(True, None)`` when a trivial query works, else ``(False, reason)`` for health checks."""
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - any failure means "down"; the reason is reported
        return False, f"{type(exc).__name__}: {exc}"
    return True, None


__all__ = [
    "alembic_config",
    "create_db_engine",
    "database_is_reachable",
    "make_session_factory",
    "upgrade_database",
]
