"""A full disk ends a job with ``disk_full`` and a message naming the place, and an upload
with 507: tested on real full disks, not on mocked ``write`` calls.

Two ways to a real ``ENOSPC`` from the kernel: a small tmpfs (needs root to mount; the
tests that use one skip where mounting is not permitted), and, everywhere, ``/dev/full``,
which answers every write with ``ENOSPC``: the blob store at the edge hands out scratch
paths that are symbolic links to it, so tifffile, Pillow and the upload parser meet the
error from the kernel exactly as on a full disk.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import subprocess
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import psycopg
import pytest
from PIL import Image
from sqlalchemy.exc import OperationalError

from microforge.settings import Settings
from microforge.storage.blobs import LocalBlobStore
from microforge.storage.db import create_db_engine, make_session_factory, upgrade_database
from microforge.storage.disk_full import find_disk_full
from microforge.storage.job_lifecycle import claim_job, load_job, take_quiet_jobs
from microforge.storage.tables import Generator
from microforge.worker.failures import Failure, describe_failure

DEV_FULL = Path("/dev/full")


class FullDiskBlobStore(LocalBlobStore):
    """A blob store whose every new file is ``/dev/full``: writes fail with ENOSPC."""

    def _temp_path(self, suffix: str = "") -> Path:
        link = self._temp_root / f"{uuid.uuid4().hex}{suffix}"
        link.symlink_to(DEV_FULL)
        return link


needs_dev_full = pytest.mark.skipif(not DEV_FULL.exists(), reason="no /dev/full here")


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 2 MB tmpfs; skips where mounting is not permitted (not root, no CAP_SYS_ADMIN)."""
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {result.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(disk: Path, leave_bytes: int = 0) -> Path:
    """Take all the free space of ``disk`` but ``leave_bytes`` with a filler file."""
    filler = disk / "filler"
    with open(filler, "wb") as handle:
        try:
            while os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize > leave_bytes:
                handle.write(b"\0" * 4096)
                handle.flush()
        except OSError as error:
            assert error.errno == errno.ENOSPC
    return filler


# -- recognising every form -------------------------------------------------------------


def test_every_form_of_a_full_disk_is_disk_full_and_says_where(tmp_path):
    enospc = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/data/blobs/.tmp/x.tif")
    wrapped = RuntimeError("[enforce fail at inline_container.cc] unexpected pos")
    wrapped.__context__ = enospc
    sqlite_full = sqlite3.OperationalError("database or disk is full")
    database = tmp_path / "microforge.sqlite3"
    places = {"blob store": tmp_path, "database": database}
    cases = {
        "ENOSPC": enospc,
        "EDQUOT": OSError(errno.EDQUOT, os.strerror(errno.EDQUOT)),
        "torch's wrapper": wrapped,
        "safetensors": Exception("Error while serializing: No space left on device (os error 28)"),
        "numpy short write": OSError("65536 requested and 65184 written"),
        "SQLAlchemy e3q8": OperationalError("UPDATE jobs", {}, sqlite_full),
        "PostgreSQL 53100": OperationalError("INSERT", {}, psycopg.errors.DiskFull("full")),
    }
    for name, error in cases.items():
        failure = describe_failure(error, places)
        assert failure.code == "disk_full", name
        assert "free" in failure.message and str(tmp_path) in failure.message, name
    assert "x.tif" in describe_failure(enospc, places).message
    assert str(database) in describe_failure(cases["SQLAlchemy e3q8"], places).message
    assert "53100" in describe_failure(cases["PostgreSQL 53100"], places).message
    # A database error that is not a full disk keeps no SQLAlchemy code ("e3q8").
    other = describe_failure(OperationalError("x", {}, sqlite3.OperationalError("locked")))
    assert other.code == "internal_error"
    assert find_disk_full(ValueError("no")) is None


# -- jobs -------------------------------------------------------------------------------


def _runtime(settings: Settings, blobs: LocalBlobStore | None = None):
    from microforge.worker.celery_app import make_celery_app
    from microforge.worker.runtime import WorkerRuntime

    engine = create_db_engine(settings.resolved_database_url)
    return WorkerRuntime(
        settings=settings,
        engine=engine,
        session_factory=make_session_factory(engine),
        blobs=blobs or LocalBlobStore(settings.resolved_blob_dir),
        celery=make_celery_app(settings, broker_url="memory://"),
        owner="disk-full-test",
    )


def _generate_job(runtime, tmp_path: Path, **spec) -> str:  # noqa: ANN001
    """A generate job for an (untrained) tiny generator, stored outside ``runtime.blobs``."""
    from microforge.models.config import TrainConfig
    from microforge.models.data import prepare_training_data
    from microforge.models.trainer import Trainer
    from tests.worker_helpers import create_job, create_owner, two_phase_image

    data = prepare_training_data([two_phase_image(48)])
    trainer = Trainer(data, TrainConfig(arch="tiny", iterations=1, precision="fp32"), "cpu")
    exported = trainer.export_generator(tmp_path / "g.safetensors")
    owner = create_owner(runtime.session_factory)
    key = "generators/tiny.safetensors"
    LocalBlobStore(runtime.settings.resolved_blob_dir).put_file(key, exported)
    with runtime.session_factory() as session:
        generator = Generator(
            owner_id=owner, blob_key=key, image_type="nphase", phases=[0, 255], size_bytes=1
        )
        session.add(generator)
        session.commit()
        generator_id = generator.id
    spec = {"generator_id": generator_id, "shape": [64, 64, 64], "seed": 1, **spec}
    return create_job(
        runtime.session_factory, owner, "generate", spec=spec, generator_id=generator_id
    )


@needs_dev_full
def test_a_generate_job_whose_volume_meets_enospc_fails_with_disk_full(settings, tmp_path):
    runtime = _runtime(settings)
    job_id = _generate_job(runtime, tmp_path)
    runtime.blobs = FullDiskBlobStore(settings.resolved_blob_dir)
    from microforge.worker.generation import run_generate_job

    assert run_generate_job(runtime, job_id) == "failed"
    job = load_job(runtime.session_factory, job_id)
    assert job.error_code == "disk_full", job.error_message
    assert "No space left on device" in job.error_message
    assert f"blob store {settings.resolved_blob_dir}" in job.error_message
    runtime.engine.dispose()


@needs_dev_full
def test_a_training_job_that_meets_enospc_fails_with_disk_full(settings):
    from microforge.worker.training import run_train_segment
    from tests.worker_helpers import (
        TINY_CONFIG,
        create_dataset,
        create_job,
        create_owner,
        two_phase_image,
    )

    runtime = _runtime(settings)
    owner = create_owner(runtime.session_factory)
    dataset_id = create_dataset(settings, runtime.session_factory, owner, two_phase_image())
    job_id = create_job(
        runtime.session_factory,
        owner,
        "train",
        spec={"dataset_id": dataset_id, "config": TINY_CONFIG},
        dataset_id=dataset_id,
    )
    runtime.blobs = FullDiskBlobStore(settings.resolved_blob_dir)
    assert run_train_segment(runtime, job_id) == "failed"
    job = load_job(runtime.session_factory, job_id)
    assert job.error_code == "disk_full", job.error_message
    runtime.engine.dispose()


def _settings_on(disk: Path, data_dir: Path, *, database_on_disk: bool) -> Settings:
    database = (disk if database_on_disk else data_dir) / "microforge.sqlite3"
    url = f"sqlite:///{database}"
    upgrade_database(url)
    return Settings(data_dir=data_dir, database_url=url, redis_url=None, blob_dir=disk / "blobs")


def test_a_volume_that_fills_a_real_disk_fails_with_disk_full(small_disk, data_dir, tmp_path):
    from microforge.worker.generation import run_generate_job

    settings = _settings_on(small_disk, data_dir, database_on_disk=False)
    runtime = _runtime(settings)
    # Compressed, so the up-front size check cannot refuse it: the disk fills mid-volume.
    job_id = _generate_job(runtime, tmp_path, shape=[128, 128, 128], compression="zlib")
    fill(small_disk, leave_bytes=96 * 1024)
    assert run_generate_job(runtime, job_id) == "failed"
    job = load_job(runtime.session_factory, job_id)
    assert job.error_code == "disk_full", job.error_message
    assert str(small_disk) in job.error_message and "free" in job.error_message
    runtime.engine.dispose()


def test_a_failure_the_full_database_cannot_take_is_retried_then_left_to_the_sweep(
    small_disk, data_dir, monkeypatch
):
    from microforge.worker import claimed
    from tests.worker_helpers import create_job, create_owner

    settings = _settings_on(small_disk, data_dir, database_on_disk=True)
    runtime = _runtime(settings)
    owner = create_owner(runtime.session_factory)
    failure = Failure("disk_full", "the disk is full")

    # The database's disk stays full: every try fails, the job is left running...
    job_id = create_job(runtime.session_factory, owner, "generate", spec={})
    lease = claim_job(runtime.session_factory, job_id, "w", lease_seconds=0.5).lease
    filler = fill(small_disk)
    monkeypatch.setattr(claimed, "RECORD_RETRY_PAUSES", (0.05, 0.05))
    assert claimed.record_failure(runtime, lease, failure) == "unrecorded"
    assert load_job(runtime.session_factory, job_id).state == "running"
    # ...and once there is space again and its lease has run out, the sweep sends it again.
    filler.unlink()
    time.sleep(0.6)
    assert job_id in [job for job, _ in take_quiet_jobs(runtime.session_factory, "generate", 0)]

    # Space comes back while the worker retries: the failure is recorded.
    job_id = create_job(runtime.session_factory, owner, "generate", spec={})
    lease = claim_job(runtime.session_factory, job_id, "w", lease_seconds=30).lease
    filler = fill(small_disk)
    monkeypatch.setattr(claimed, "RECORD_RETRY_PAUSES", (0.5, 1.0, 2.0))
    threading.Timer(0.2, filler.unlink).start()
    assert claimed.record_failure(runtime, lease, failure) == "failed"
    job = load_job(runtime.session_factory, job_id)
    assert (job.state, job.error_code) == ("failed", "disk_full")
    runtime.engine.dispose()


# -- the API ----------------------------------------------------------------------------


def _png() -> bytes:
    import io

    buffer = io.BytesIO()
    Image.fromarray((np.indices((32, 32)).sum(axis=0) % 2 * 255).astype(np.uint8)).save(
        buffer, format="PNG"
    )
    return buffer.getvalue()


@needs_dev_full
def test_an_upload_onto_a_full_disk_is_507_disk_full(client, api_app, auth):
    api_app.state.service.blobs = FullDiskBlobStore(api_app.state.service.blobs.root)
    response = client.post("/v1/datasets", headers=auth, files={"files": ("a.png", _png())})
    assert response.status_code == 507, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["code"] == "disk_full" and "free" in body["detail"]


def test_an_upload_onto_a_real_full_disk_is_507(small_disk, data_dir, broker_url, broker):
    from fastapi.testclient import TestClient

    from microforge.api.app import create_app
    from microforge.storage.api_keys import create_api_key

    settings = _settings_on(small_disk, data_dir, database_on_disk=False)
    app = create_app(settings.model_copy(update={"redis_url": broker_url}))
    with app.state.service.session_factory() as session:
        _row, plaintext = create_api_key(session, "full")
    fill(small_disk, leave_bytes=0)
    with TestClient(app) as client:
        response = client.post(
            "/v1/datasets",
            headers={"Authorization": f"Bearer {plaintext}"},
            files={"files": ("a.png", _png() + b"\0" * 256 * 1024)},
        )
    assert response.status_code == 507, response.text
    assert response.json()["code"] == "disk_full"
    assert str(small_disk) in response.json()["detail"]
