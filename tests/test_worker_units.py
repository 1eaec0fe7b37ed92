"""The worker's small decisions, fast: ETA, JSON safety, failure codes, the stop guard."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
from pydantic import ValidationError

from microforge.jobs import GenerateSpec
from microforge.models.config import TrainConfig
from microforge.models.phases import DataError
from microforge.models.trainer import TrainingError
from microforge.settings import Settings
from microforge.storage.blobs import LocalBlobStore
from microforge.storage.job_lifecycle import claim_job, load_job
from microforge.storage.tables import ApiKey, Generator, Job
from microforge.worker.failures import describe_failure
from microforge.worker.generation import (
    DISK_RESERVE_BYTES,
    NotEnoughDiskError,
    check_disk_space,
    effective_voxel_size,
    images_as_trained,
)
from microforge.worker.guard import JobGuard
from microforge.worker.launch import WorkerSettingsError, check_worker_settings
from microforge.worker.progress import json_safe, training_eta


def test_eta_adds_the_overhead_of_the_segments_still_to_run():
    # 1000 iterations at 0.5 s = 500 s of training = 5 segments of 100 s: 4 more startups.
    assert training_eta(1000, 0.5, 100, 10) == pytest.approx(500 + 4 * 10)
    assert training_eta(10, 0.5, 100, 10) == pytest.approx(5)
    assert training_eta(0, 0.5, 100, 10) == 0.0
    assert training_eta(10, 0.0, 100, 10) is None
    assert training_eta(10, math.nan, 100, 10) is None


def test_json_safe_turns_nan_and_numpy_into_plain_json():
    values = {"a": math.nan, "b": np.float32(1.5), "c": [np.int64(2), math.inf], "d": {"e": True}}
    assert json_safe(values) == {"a": None, "b": 1.5, "c": [2, None], "d": {"e": True}}
    assert json_safe({"x": np.array([1.0, np.nan])}) == {"x": [1.0, None]}


def test_failures_keep_engine_codes_and_name_the_setting():
    oom = TrainingError("cuda_out_of_memory", "lower critic_batch")
    assert (describe_failure(oom).code, describe_failure(oom).message) == (
        "cuda_out_of_memory",
        "lower critic_batch",
    )
    assert describe_failure(DataError("too many phases")).code == "invalid_data"
    with pytest.raises(ValidationError) as invalid:
        TrainConfig(critic_batch=0)
    failure = describe_failure(invalid.value)
    assert failure.code == "invalid_config" and "critic_batch" in failure.message
    assert describe_failure(FileNotFoundError(2, "gone", "x.png")).code == "missing_file"
    unknown = describe_failure(KeyError("boom"))
    assert unknown.code == "internal_error" and "KeyError" in unknown.message


def test_worker_refuses_settings_where_redelivery_beats_the_lease():
    with pytest.raises(WorkerSettingsError, match="MICROFORGE_REDIS_URL"):
        check_worker_settings(Settings(redis_url=None))
    with pytest.raises(WorkerSettingsError, match="VISIBILITY_TIMEOUT"):
        check_worker_settings(
            Settings(redis_url="redis://x", lease_seconds=900, visibility_timeout_seconds=1000)
        )
    check_worker_settings(Settings(redis_url="redis://x"))


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _train_job(session_factory) -> str:  # noqa: ANN001
    with session_factory() as session:
        key = ApiKey(name="g", key_hash=os.urandom(32).hex(), prefix="mf_g")
        session.add(key)
        session.flush()
        job = Job(owner_id=key.id, kind="train")
        session.add(job)
        session.commit()
        return job.id


def test_guard_reads_cancel_at_most_once_per_interval_and_renews_the_lease(session_factory):
    job_id = _train_job(session_factory)
    lease = claim_job(session_factory, job_id, "w", lease_seconds=8).lease
    clock = Clock()
    guard = JobGuard(session_factory, lease, lease_seconds=8, check_seconds=1.0, clock=clock)
    assert guard.should_stop() is False
    expiry = load_job(session_factory, job_id).lease_expires_at
    with session_factory() as session:
        session.get(Job, job_id).cancel_requested = True
        session.commit()
    clock.now = 0.5
    assert guard.should_stop() is False, "the flag is read at most once a second"
    clock.now = 1.2
    assert guard.should_stop() is True and guard.cancel_requested

    with session_factory() as session:
        session.get(Job, job_id).cancel_requested = False
        session.commit()
    renewing = JobGuard(session_factory, lease, lease_seconds=8, clock=clock)
    clock.now = 4.0  # past a quarter of the lease
    assert renewing.should_stop() is False
    assert load_job(session_factory, job_id).lease_expires_at > expiry

    taken = claim_job(session_factory, job_id, "other", lease_seconds=8)
    assert taken.lease is None  # still held by "w": simulate a takeover by expiring it
    with session_factory() as session:
        session.get(Job, job_id).fencing_token += 1
        session.commit()
    clock.now = 10.0
    assert renewing.should_stop() is True and renewing.lease_lost


def test_a_volume_that_cannot_fit_on_disk_is_refused_before_generating(tmp_path):
    blobs = LocalBlobStore(tmp_path / "blobs")
    check_disk_space(blobs, (4, 4, 4), 1, 1)  # 64 bytes: fits
    free = blobs.free_bytes()
    slices = free // 10**6 + 1  # one byte per voxel: just over the free space
    with pytest.raises(NotEnoughDiskError, match="GET /v1/usage") as refused:
        check_disk_space(blobs, (slices, 1000, 1000), 1, 1)
    assert describe_failure(refused.value).code == "disk_full"
    with pytest.raises(NotEnoughDiskError):  # the reserve counts too
        check_disk_space(blobs, (1, 1, max(free - DISK_RESERVE_BYTES // 2, 1)), 1, 1)
    with pytest.raises(NotEnoughDiskError):  # three samples per voxel for colour
        check_disk_space(blobs, (slices // 3 + 1, 1000, 1000), 1, 3)
    full = describe_failure(OSError(28, "No space left on device"))
    assert full.code == "disk_full" and "/v1/usage" in full.message


def test_reports_compare_with_the_images_at_the_scale_they_were_trained_at():
    labels = np.zeros((64, 48), dtype=np.uint8)
    labels[:, 24:] = 255
    assert images_as_trained([labels], "nphase", 1.0)[0] is labels
    (half,) = images_as_trained([labels], "nphase", 0.5)
    assert half.shape == (32, 24) and set(np.unique(half)) == {0, 255}


def test_a_jobs_voxel_size_wins_over_the_generators_and_none_means_voxels():
    trained = Generator(config={"voxel_size": 0.1, "unit": "nm"})
    spec = GenerateSpec(shape=(4, 4, 4))
    sized = spec.model_copy(update={"voxel_size": 2.0, "unit": "mm"})
    assert effective_voxel_size(sized, trained) == (2.0, "mm")
    assert effective_voxel_size(spec, trained) == (0.1, "nm")
    assert effective_voxel_size(spec, Generator(config={})) == (None, "um")


def test_previews_refresh_by_time_and_when_a_segment_ends(session_factory, tmp_path):
    from types import SimpleNamespace

    from microforge.models.trainer import Progress
    from microforge.worker.progress import TrainingReporter, stopped_progress
    from microforge.worker.runtime import WorkerRuntime

    job_id = _train_job(session_factory)
    lease = claim_job(session_factory, job_id, "w", lease_seconds=60).lease
    runtime = WorkerRuntime(
        settings=Settings(data_dir=tmp_path),
        engine=None,
        session_factory=session_factory,
        blobs=LocalBlobStore(tmp_path / "blobs"),
        celery=None,
        owner="w",
    )
    guard = JobGuard(session_factory, lease, lease_seconds=60)

    def update(iteration: int) -> Progress:
        return Progress(iteration, 100, 0.0, None, 0.0, 0.0, 0.1, 1.0, preview=slices)

    def slices() -> np.ndarray:
        return np.zeros((8, 24), np.uint8)

    def preview_of_job() -> str | None:
        return load_job(session_factory, job_id).preview_blob

    # preview_every is far away: only time refreshes it (0 s here = at every report).
    reporter = TrainingReporter(
        runtime, guard, preview_every=1000, overhead_seconds=0.0, preview_seconds=0.0
    )
    reporter(update(1))
    first = preview_of_job()
    reporter(update(2))
    assert preview_of_job() not in (None, first)
    # An hour between refreshes: the second report keeps the first preview...
    slow = TrainingReporter(
        runtime, guard, preview_every=1000, overhead_seconds=0.0, preview_seconds=3600.0
    )
    slow(update(3))
    kept = preview_of_job()
    slow(update(4))
    assert preview_of_job() == kept
    # ...but the end of a segment shows the weights it ended with, once.
    trainer = SimpleNamespace(iteration=5, preview=slices, quality_history=[])
    slow.final_preview(trainer)
    ended = preview_of_job()
    assert ended != kept
    slow.final_preview(trainer)
    assert preview_of_job() == ended
    assert not runtime.blobs.exists(kept), "replaced previews are deleted"

    stopped = stopped_progress(slow.last_progress, 5, 100)
    assert stopped["iteration"] == 5 and stopped["fraction"] == 0.05
    assert stopped["eta_seconds"] is None and stopped["total"] == 100


def test_reports_solve_tortuosity_where_it_is_cheap() -> None:
    import torch

    from microforge.worker.generation import report_tortuosity

    gpu, cpu = torch.device("cuda", 0), torch.device("cpu")
    assert report_tortuosity("auto", gpu) and not report_tortuosity("auto", cpu)
    assert report_tortuosity("always", cpu) and not report_tortuosity("never", gpu)
    assert Settings(report_tortuosity="always").report_tortuosity == "always"
    with pytest.raises(ValidationError):
        Settings(report_tortuosity="sometimes")
