"""Garbage in the blob store: unreferenced blobs and abandoned scratch files, on a real DB."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from microforge.api.app import create_app
from microforge.cli.storage_commands import storage_group
from microforge.settings import get_settings
from microforge.storage.blob_gc import (
    ABANDONED_TEMPORARY,
    UNREFERENCED,
    NothingReferencedError,
    find_garbage,
    remove_abandoned_temporary_files,
    remove_garbage,
)
from microforge.storage.blobs import LocalBlobStore, get_blob_store
from microforge.storage.tables import ApiKey, Generator, Job, Volume

DAY = 24 * 3600


def age(path, seconds: float) -> None:
    """Make ``path`` look untouched for ``seconds``."""
    then = time.time() - seconds
    os.utime(path, (then, then))


@pytest.fixture
def blobs(settings) -> LocalBlobStore:
    return get_blob_store(settings)


@pytest.fixture
def stored(blobs, session_factory) -> dict[str, str]:
    """A generator, a volume with its report and a job checkpoint that rows name, and
    three blobs nobody names: old, fresh, and a scratch file from a killed writer."""
    keys = {
        name: blobs.new_key(kind, suffix)
        for name, kind, suffix in [
            ("generator", "generators", ".safetensors"),
            ("volume", "volumes", ".tif"),
            ("report", "reports", ".png"),
            ("checkpoint", "checkpoints", ".pt"),
            ("old_orphan", "volumes", ".tif"),
            ("new_orphan", "generators", ".safetensors"),
        ]
    }
    for key in keys.values():
        blobs.put_bytes(key, b"x" * 100)
        age(blobs.path(key), 2 * DAY)
    age(blobs.path(keys["new_orphan"]), 60)
    scratch = blobs.new_temp_file(".tif")
    scratch.write_bytes(b"y" * 1000)
    age(scratch, 2 * DAY)
    keys["scratch"] = str(scratch)
    with session_factory() as session:
        owner = ApiKey(name="gc", key_hash="g" * 64, prefix="mf_gc")
        session.add(owner)
        session.flush()
        common = {"owner_id": owner.id, "image_type": "nphase", "phases": [0, 1]}
        session.add(Generator(blob_key=keys["generator"], **common))
        session.add(
            Volume(
                blob_key=keys["volume"],
                report_blob=keys["report"],
                dtype="uint8",
                etag="e",
                **common,
            )
        )
        session.add(Job(owner_id=owner.id, kind="train", checkpoint_blob=keys["checkpoint"]))
        session.commit()
    return keys


def test_only_old_unreferenced_blobs_and_scratch_files_are_garbage(
    blobs, session_factory, stored
) -> None:
    with session_factory() as session:
        garbage = find_garbage(blobs, session, older_than_seconds=DAY)
    found = {(item.reason, item.key or str(item.path)) for item in garbage}
    assert found == {(UNREFERENCED, stored["old_orphan"]), (ABANDONED_TEMPORARY, stored["scratch"])}
    assert remove_garbage(blobs, garbage) == 1100
    assert not blobs.exists(stored["old_orphan"])
    for name in ("generator", "volume", "report", "checkpoint", "new_orphan"):
        assert blobs.exists(stored[name]), name


def test_an_empty_database_deletes_nothing_unless_forced(blobs, session_factory) -> None:
    key = blobs.new_key("volumes", ".tif")
    blobs.put_bytes(key, b"precious")
    age(blobs.path(key), 2 * DAY)
    with session_factory() as session, pytest.raises(NothingReferencedError, match="--force"):
        find_garbage(blobs, session, older_than_seconds=DAY)
    with session_factory() as session:
        garbage = find_garbage(blobs, session, older_than_seconds=DAY, allow_empty_database=True)
    assert [item.key for item in garbage] == [key]


def test_a_worker_start_removes_only_stale_scratch_files(blobs) -> None:
    stale, live = blobs.new_temp_file(), blobs.new_temp_file()
    stale.write_bytes(b"z" * 10)
    live.write_bytes(b"z" * 10)
    age(stale, 2 * DAY)
    assert remove_abandoned_temporary_files(blobs, DAY) == 10
    assert not stale.exists() and live.exists()


def test_cli_gc_dry_run_then_delete(settings, stored, monkeypatch) -> None:
    monkeypatch.setenv("MICROFORGE_DATABASE_URL", settings.resolved_database_url)
    monkeypatch.setenv("MICROFORGE_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("MICROFORGE_BLOB_DIR", str(settings.resolved_blob_dir))
    get_settings.cache_clear()
    blobs = get_blob_store(settings)
    try:
        runner = CliRunner()
        dry = runner.invoke(storage_group, ["gc", "--dry-run"])
        assert dry.exit_code == 0, dry.output
        assert stored["old_orphan"] in dry.output and "would free 1.1 KB in 2 file(s)" in dry.output
        assert blobs.exists(stored["old_orphan"])
        done = runner.invoke(storage_group, ["gc"])
        assert done.exit_code == 0 and "freed 1.1 KB in 2 file(s)" in done.output
        assert not blobs.exists(stored["old_orphan"]) and blobs.exists(stored["volume"])
        patient = runner.invoke(storage_group, ["gc", "--older-than", "0", "--dry-run"])
        assert stored["new_orphan"] in patient.output
    finally:
        get_settings.cache_clear()


SCRATCH_WRITER = """
import sys
from microforge.storage.blobs import LocalBlobStore
path = LocalBlobStore(sys.argv[1]).new_temp_file(".png")
path.write_bytes(b"partial upload")
print(path, flush=True)
if sys.argv[2] == "stay":
    sys.stdin.read()
"""


def _write_scratch_in_child(blobs: LocalBlobStore, stay: bool) -> tuple[subprocess.Popen, Path]:
    """A real process that writes a scratch file, then exits or stays until stdin closes."""
    child = subprocess.Popen(
        [sys.executable, "-c", SCRATCH_WRITER, str(blobs.root), "stay" if stay else "exit"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    return child, Path(child.stdout.readline().strip())


def test_api_start_removes_scratch_files_of_dead_processes_only(settings) -> None:
    """An upload cut short by a killed API goes when an API starts; files that live
    processes (another replica, a worker) are writing stay."""
    blobs = get_blob_store(settings)
    dead, dead_file = _write_scratch_in_child(blobs, stay=False)
    assert dead.wait(30) == 0
    live, live_file = _write_scratch_in_child(blobs, stay=True)
    try:
        own = blobs.new_temp_file()
        own.write_bytes(b"being written")
        age(own, 2 * 3600)  # a slow write, but its writer is alive: kept
        foreign = blobs.root / ".tmp" / f"0badf00d-1-1-{'0' * 32}.tif"  # another host's
        foreign.write_bytes(b"x")
        legacy_old = blobs.root / ".tmp" / f"{'1' * 32}.tif"  # named before owners were
        legacy_old.write_bytes(b"x")
        age(legacy_old, 2 * DAY)
        assert dead_file.exists() and live_file.parent == own.parent

        create_app(settings)

        assert not dead_file.exists() and not legacy_old.exists()
        assert live_file.exists() and own.exists() and foreign.exists()
    finally:
        live.communicate(timeout=30)
    assert live.returncode == 0
    assert remove_abandoned_temporary_files(blobs) == len(b"partial upload")  # now dead
    assert not live_file.exists() and own.exists()


def test_trees_unreferenced_or_left_by_dead_writers_are_garbage(blobs, session_factory) -> None:
    kept, orphan = blobs.new_key("volumes", ".ome.zarr"), blobs.new_key("volumes", ".ome.zarr")
    for key in (kept, orphan):
        with blobs.writing_tree(key) as temp:
            (temp / "0" / "c").mkdir(parents=True)
            (temp / "0" / "c" / "0").write_bytes(b"c" * 40)
        age(blobs.path(key), 2 * DAY)
    # What a killed worker leaves: the writer's partial copy, named after the scratch path.
    dead = blobs.new_temp_file(".ome.zarr").with_name(".00000000-1-1-dead.ome.zarr.ab.partial")
    (dead / "0").mkdir(parents=True)
    (dead / "0" / "x").write_bytes(b"d" * 5)
    with session_factory() as session:
        owner = ApiKey(name="gc", key_hash="t" * 64, prefix="mf_tr")
        session.add(owner)
        session.flush()
        session.add(
            Volume(
                owner_id=owner.id,
                blob_key=kept,
                format="ome-zarr",
                dtype="uint8",
                etag="e",
                image_type="nphase",
                phases=[0, 1],
            )
        )
        session.commit()
        age(dead, 2 * DAY)
        garbage = find_garbage(blobs, session, older_than_seconds=DAY)
    assert {(item.reason, item.key, item.size) for item in garbage} == {
        (UNREFERENCED, orphan, 40),
        (ABANDONED_TEMPORARY, None, 5),
    }
    assert remove_garbage(blobs, garbage) == 45
    assert blobs.exists(kept) and not blobs.exists(orphan) and not dead.exists()
