"""Helpers for tests that run real worker processes against a real broker and database."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from microforge.settings import Settings
from microforge.storage.blobs import get_blob_store
from microforge.storage.job_lifecycle import load_job
from microforge.storage.tables import ApiKey, Dataset, Job

REPO_ROOT = Path(__file__).resolve().parents[1]

#: Small and fast on a shared CPU: a few iterations of the tiny network.
TINY_CONFIG: dict[str, Any] = {
    "arch": "tiny",
    "iterations": 6,
    "critic_batch": 2,
    "critic_steps": 2,
    "progress_every": 1,
    "preview_every": 3,
    "quality_every": 0,
    "checkpoint_every": 1,
    "precision": "fp32",
    "seed": 7,
}


def two_phase_image(size: int = 64, seed: int = 0) -> np.ndarray:
    """Blobby two-phase microstructure: thresholded smoothed noise, values 0 and 255."""
    rng = np.random.default_rng(seed)
    noise = rng.random((size, size))
    kernel = np.ones(5) / 5
    for axis in (0, 1):
        noise = np.apply_along_axis(lambda row: np.convolve(row, kernel, mode="same"), axis, noise)
    return np.where(noise > np.median(noise), 255, 0).astype(np.uint8)


def worker_env(settings: Settings, broker_url: str, **overrides: Any) -> dict[str, str]:
    """Environment for a child process that shares the test's database, blobs and broker."""
    env = dict(os.environ)
    env.update(
        MICROFORGE_DATA_DIR=str(settings.data_dir),
        MICROFORGE_DATABASE_URL=settings.resolved_database_url,
        MICROFORGE_BLOB_DIR=str(settings.resolved_blob_dir),
        MICROFORGE_REDIS_URL=broker_url,
        MICROFORGE_DEVICE="cpu",
        MICROFORGE_TRAIN_SEGMENT_SECONDS="2",
        MICROFORGE_LEASE_SECONDS="4",
        MICROFORGE_VISIBILITY_TIMEOUT_SECONDS="8",
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")])),
        OMP_NUM_THREADS="1",
    )
    env.update({f"MICROFORGE_{k.upper()}": str(v) for k, v in overrides.items()})
    return env


@contextlib.contextmanager
def running_worker(env: dict[str, str], log_path: Path) -> Iterator[subprocess.Popen]:
    """A real ``python -m microforge.worker`` process; stopped (or killed) afterwards."""
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "microforge.worker", "--loglevel", "INFO"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO_ROOT,
        )
    try:
        yield process
    finally:
        stop_process(process)


def stop_process(process: subprocess.Popen, timeout: float = 30) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def wait_for(
    condition: Callable[[], Any], timeout: float, message: str, interval: float = 0.2
) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {message}")


def create_owner(session_factory) -> str:  # noqa: ANN001
    with session_factory() as session:
        key = ApiKey(name="worker-test", key_hash=os.urandom(32).hex(), prefix="mf_test")
        session.add(key)
        session.commit()
        return key.id


def create_dataset(  # noqa: ANN001
    settings: Settings,
    session_factory,
    owner_id: str,
    image: np.ndarray,
    pixel_size: float | None = None,
) -> str:
    blobs = get_blob_store(settings)
    key = blobs.new_key("datasets", ".png")
    with blobs.writing(key) as temporary:
        Image.fromarray(image).save(temporary)
    with session_factory() as session:
        dataset = Dataset(
            owner_id=owner_id,
            name="synthetic",
            image_type="nphase",
            layout="isotropic",
            phases=sorted(int(v) for v in np.unique(image)),
            fractions=[],
            shapes=[list(image.shape)],
            blob_keys=[key],
            size_bytes=blobs.size(key),
            stats={"pixel_size": pixel_size, "unit": "um" if pixel_size else None},
        )
        session.add(dataset)
        session.commit()
        return dataset.id


def create_job(session_factory, owner_id: str, kind: str, **fields: Any) -> str:  # noqa: ANN001
    with session_factory() as session:
        job = Job(owner_id=owner_id, kind=kind, **fields)
        session.add(job)
        session.commit()
        return job.id


def finished_job(session_factory, job_id: str) -> Job | None:  # noqa: ANN001
    job = load_job(session_factory, job_id)
    return job if job is not None and job.state in ("succeeded", "failed", "cancelled") else None


def run_generate_job_here(api_app, job_id: str) -> str:  # noqa: ANN001
    """The worker's generate task for ``job_id``, in this process, on the app's database and
    blob store (for API tests that have no worker process)."""
    from microforge.worker.celery_app import make_celery_app
    from microforge.worker.generation import run_generate_job
    from microforge.worker.runtime import WorkerRuntime

    state = api_app.state.service
    runtime = WorkerRuntime(
        settings=state.settings,
        engine=state.session_factory.kw["bind"],
        session_factory=state.session_factory,
        blobs=state.blobs,
        celery=make_celery_app(state.settings, broker_url="memory://"),
        owner="in-process-test",
    )
    return run_generate_job(runtime, job_id)
