"""Migrations and engine settings on a fresh SQLite file and on PostgreSQL."""

from __future__ import annotations

import threading

from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text

from microforge.storage.db import (
    alembic_config,
    create_db_engine,
    make_session_factory,
    upgrade_database,
)
from microforge.storage.tables import ApiKey, Base, Dataset


def test_upgrade_creates_every_table_and_is_idempotent(database_url: str) -> None:
    upgrade_database(database_url)
    upgrade_database(database_url)  # a second start must be harmless
    engine = create_db_engine(database_url)
    try:
        names = set(inspect(engine).get_table_names())
        assert set(Base.metadata.tables) <= names
        assert "alembic_version" in names
        with engine.connect() as connection:
            version = connection.execute(text("SELECT version_num FROM alembic_version"))
            head = ScriptDirectory.from_config(alembic_config(database_url)).get_current_head()
            assert version.scalar_one() == head
    finally:
        engine.dispose()


def test_migrated_columns_match_the_models(database_url: str) -> None:
    """The migration and tables.py must not drift apart (the worker writes through the models)."""
    upgrade_database(database_url)
    engine = create_db_engine(database_url)
    try:
        inspector = inspect(engine)
        for table in Base.metadata.sorted_tables:
            migrated = {column["name"] for column in inspector.get_columns(table.name)}
            assert migrated == set(table.columns.keys()), table.name
            indexes = {index["name"] for index in inspector.get_indexes(table.name)}
            assert {index.name for index in table.indexes} <= indexes, table.name
    finally:
        engine.dispose()


def test_upgrade_from_the_first_schema_keeps_existing_jobs(database_url: str) -> None:
    """A deployment made before ``dispatched_at`` existed upgrades in place, rows intact."""
    engine = create_db_engine(database_url)
    try:
        with engine.begin() as connection:
            config = alembic_config(database_url)
            config.attributes["connection"] = connection
            command.upgrade(config, "0001")
            connection.execute(
                text(
                    "INSERT INTO api_keys (id, name, key_hash, prefix, created_at) "
                    "VALUES ('key_1', 'k', :hash, 'mf_1', CURRENT_TIMESTAMP)"
                ),
                {"hash": "h" * 64},
            )
            connection.execute(
                text(
                    "INSERT INTO jobs (id, owner_id, kind, state, spec, progress, "
                    "cancel_requested, attempts, fencing_token, checkpoint_iteration, "
                    "created_at, updated_at) VALUES ('job_1', 'key_1', 'train', 'queued', "
                    "'{}', '{}', false, 0, 0, 0, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
                )
            )
        upgrade_database(database_url)
        with engine.connect() as connection:
            row = connection.execute(
                text("SELECT state, dispatched_at FROM jobs WHERE id = 'job_1'")
            ).one()
        assert tuple(row) == ("queued", None)
    finally:
        engine.dispose()


def test_volumes_made_before_formats_are_tiffs(database_url: str) -> None:
    """Migration 0004 adds ``volumes.format``; rows made before it read 'tiff'."""
    engine = create_db_engine(database_url)
    try:
        with engine.begin() as connection:
            config = alembic_config(database_url)
            config.attributes["connection"] = connection
            command.upgrade(config, "0003")
            connection.execute(
                text(
                    "INSERT INTO api_keys (id, name, key_hash, prefix, created_at) "
                    "VALUES ('key_1', 'k', :hash, 'mf_1', CURRENT_TIMESTAMP)"
                ),
                {"hash": "h" * 64},
            )
            connection.execute(
                text(
                    "INSERT INTO volumes (id, owner_id, blob_key, shape, dtype, image_type, "
                    "phases, size_bytes, etag, created_at) VALUES ('vol_1', 'key_1', "
                    "'volumes/a.tif', '[1, 1, 1]', 'uint8', 'nphase', '[0, 1]', 1, 'e', "
                    "CURRENT_TIMESTAMP)"
                )
            )
        upgrade_database(database_url)
        with engine.connect() as connection:
            fmt = connection.execute(text("SELECT format FROM volumes WHERE id = 'vol_1'"))
            assert fmt.scalar_one() == "tiff"
        with engine.begin() as connection:
            config = alembic_config(database_url)
            config.attributes["connection"] = connection
            command.downgrade(config, "0003")
            command.upgrade(config, "head")
    finally:
        engine.dispose()


def test_concurrent_upgrades_do_not_collide(database_url: str) -> None:
    errors: list[BaseException] = []

    def upgrade() -> None:
        try:
            upgrade_database(database_url)
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=upgrade) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


def test_sqlite_engine_uses_wal_foreign_keys_and_busy_timeout(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'nested' / 'db.sqlite3'}"
    upgrade_database(url)
    engine = create_db_engine(url)
    try:
        with engine.connect() as connection:
            assert connection.execute(text("PRAGMA journal_mode")).scalar_one() == "wal"
            assert connection.execute(text("PRAGMA foreign_keys")).scalar_one() == 1
            assert connection.execute(text("PRAGMA busy_timeout")).scalar_one() >= 1000
    finally:
        engine.dispose()


def test_foreign_keys_are_enforced(session_factory) -> None:
    """A dataset pointing at a key that does not exist is refused on every backend."""
    import pytest
    from sqlalchemy.exc import IntegrityError

    with session_factory() as session:
        session.add(
            Dataset(owner_id="key_missing", name="x", image_type="nphase", layout="isotropic")
        )
        with pytest.raises(IntegrityError):
            session.commit()


def test_sessions_keep_objects_readable_after_commit(engine) -> None:
    factory = make_session_factory(engine)
    with factory() as session:
        key = ApiKey(name="a", key_hash="0" * 64, prefix="mf_abcd")
        session.add(key)
        session.commit()
    assert key.name == "a" and key.id.startswith("key_")
