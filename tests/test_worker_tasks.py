"""Celery tasks run by a real worker process on a real broker and database.

Training is the tiny network for a handful of iterations with 2-second segments, so one
job spans several segments (and several claims of the lease) in well under a minute.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import tifffile
import zarr
from sqlalchemy import select
from worker_helpers import (
    TINY_CONFIG,
    create_dataset,
    create_job,
    create_owner,
    finished_job,
    running_worker,
    two_phase_image,
    wait_for,
    worker_env,
)

from microforge.storage.blobs import get_blob_store
from microforge.storage.job_lifecycle import load_job
from microforge.storage.tables import Generator, Job, JobMetric, Volume
from microforge.storage.tiff import read_volume_info
from microforge.worker.celery_app import (
    GENERATE_VOLUME_TASK,
    TRAIN_SEGMENT_TASK,
    make_celery_app,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def celery(settings, broker, broker_url):  # noqa: ANN001 - broker flushes the queues first
    app = make_celery_app(settings, broker_url)
    yield app
    app.close()


@pytest.fixture
def owner(session_factory) -> str:  # noqa: ANN001
    return create_owner(session_factory)


def test_training_in_segments_then_generation_to_tiff(
    settings, session_factory, celery, broker_url, owner, tmp_path
):
    dataset_id = create_dataset(
        settings, session_factory, owner, two_phase_image(), pixel_size=0.25
    )
    config = {**TINY_CONFIG, "quality_every": 3}
    job_id = create_job(
        session_factory, owner, "train", dataset_id=dataset_id, spec={"config": config}
    )
    env = worker_env(settings, broker_url, train_segment_seconds=0.05)
    log_path = tmp_path / "worker.log"
    with running_worker(env, log_path):
        # A duplicated message (as Redis redelivery makes) must not double anything, nor
        # start a second chain of segments: the copy finds the token moved on.
        celery.send_task(TRAIN_SEGMENT_TASK, args=[job_id, 0], queue="train")
        celery.send_task(TRAIN_SEGMENT_TASK, args=[job_id, 0], queue="train")
        job = wait_for(lambda: finished_job(session_factory, job_id), 150, "training to end")
        assert job.state == "succeeded", (job.error_code, job.error_message)
        assert job.progress["iteration"] == job.progress["total"] == TINY_CONFIG["iterations"]
        assert job.progress["fraction"] == 1.0 and job.progress["eta_seconds"] == 0.0
        assert job.attempts >= 2, "50 ms segments cannot hold the whole job"
        assert job.lease_owner is None and job.preview_blob is not None
        # Three messages for token 0 (two sent here, one by the worker's start-up sweep):
        # one claims, the other two are dropped instead of each starting a chain.
        assert log_path.read_text().count(f"training task for {job_id} skipped: stale") == 2
        blobs = get_blob_store(settings)
        assert blobs.exists(job.preview_blob)
        with session_factory() as session:
            generators = session.scalars(select(Generator)).all()
            iterations = session.scalars(
                select(JobMetric.iteration).where(JobMetric.job_id == job_id)
            ).all()
        assert sorted(iterations) == list(range(1, TINY_CONFIG["iterations"] + 1))
        by_id = {g.id: g for g in generators}
        generator = by_id[job.result_generator_id]
        assert generator.phases == [0, 255] and blobs.exists(generator.blob_key)
        assert generator.config["arch"] == "tiny" and generator.config["iteration"] == 6
        assert generator.config["train"]["iterations"] == 6
        assert generator.config["weights"] == "latest"
        assert (generator.config["voxel_size"], generator.config["unit"]) == (0.25, "um")
        quality = generator.config["quality"]  # the checks at 3 and 6 survived the segments
        assert quality["iteration"] == 6 and 0.0 <= quality["diversity"] <= 2.0
        assert isinstance(quality["collapsed"], bool) and quality["score"] >= 0.0
        # The best check's weights are kept too: a second generator unless they are these.
        best = by_id[job.result_best_generator_id]
        assert best.config["quality"]["iteration"] == best.config["iteration"] in (3, 6)
        assert len(generators) == (1 if best.id == generator.id else 2)
        if best.id != generator.id:
            assert best.config["weights"] == "best" and blobs.exists(best.blob_key)
        # Only the latest checkpoint is kept: the final one, for a continuation.
        assert job.checkpoint_iteration == TINY_CONFIG["iterations"]
        checkpoints = list((settings.resolved_blob_dir / "checkpoints").glob("*.pt"))
        assert [p.name for p in checkpoints] == [job.checkpoint_blob.split("/")[1]]

        gen_job_id = create_job(
            session_factory,
            owner,
            "generate",
            generator_id=generator.id,
            spec={
                "shape": [20, 24, 32],
                "seed": 3,
                "chunk": [16, 20, 24],
                "periodic": [0, 0, 1],
                "compression": "zlib",  # no voxel_size: the generator's (the upload's pixel)
            },
        )
        celery.send_task(GENERATE_VOLUME_TASK, args=[gen_job_id, 0], queue="generate")
        gen_job = wait_for(lambda: finished_job(session_factory, gen_job_id), 90, "generation")
        # The same volume as OME-Zarr: a store in the blob store, voxel for voxel the TIFF.
        zarr_job_id = create_job(
            session_factory,
            owner,
            "generate",
            generator_id=generator.id,
            spec={"shape": [20, 24, 32], "seed": 3, "chunk": [16, 20, 24], "periodic": [0, 0, 1]}
            | {"format": "ome-zarr"},
        )
        celery.send_task(GENERATE_VOLUME_TASK, args=[zarr_job_id, 0], queue="generate")
        zarr_job = wait_for(lambda: finished_job(session_factory, zarr_job_id), 90, "zarr")
    assert gen_job.state == "succeeded", (gen_job.error_code, gen_job.error_message)
    assert zarr_job.state == "succeeded", (zarr_job.error_code, zarr_job.error_message)
    with session_factory() as session:
        volume = session.get(Volume, gen_job.result_volume_id)
    assert volume.shape == [20, 24, 32] and volume.seed == 3 and volume.phases == [0, 255]
    array = tifffile.imread(blobs.path(volume.blob_key))
    assert array.shape == (20, 24, 32) and array.dtype == np.uint8
    info = read_volume_info(blobs.path(volume.blob_key))
    assert info["compression"] == "adobe_deflate" and info["format"] == "ome"
    assert info["voxel_size"] == pytest.approx((0.25, 0.25, 0.25)) and info["unit"] == "um"
    # The report, made from the job's voxel size, agrees with what the file says.
    report_units = (
        volume.report["statistics"]["voxel_size"],
        volume.report["statistics"]["length_unit"],
    )
    assert report_units == (info["voxel_size"][2], info["unit"]) == (0.25, "um")
    assert set(np.unique(array)) <= {0, 255}
    assert volume.size_bytes == blobs.size(volume.blob_key) and len(volume.etag) == 64
    assert volume.report["statistics"]["kind"] == "nphase"
    assert volume.report["statistics"]["shape"] == [20, 24, 32] and volume.report_blob
    assert gen_job.progress["fraction"] == 1.0 and gen_job.progress["chunks_done"] > 1
    with session_factory() as session:
        zarr_volume = session.get(Volume, zarr_job.result_volume_id)
    assert zarr_volume.format == "ome-zarr" and blobs.is_tree(zarr_volume.blob_key)
    assert zarr_volume.size_bytes == blobs.size(zarr_volume.blob_key)
    group = zarr.open_group(blobs.path(zarr_volume.blob_key), mode="r")
    assert np.array_equal(group["0"][:], array)
    scale = group.attrs["ome"]["multiscales"][0]["datasets"][0]["coordinateTransformations"]
    assert scale[0]["scale"] == pytest.approx([0.25] * 3)
    assert zarr_volume.report["statistics"] == volume.report["statistics"]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_job_whose_message_was_lost_is_picked_up_by_the_periodic_sweep(
    settings, session_factory, broker_url, owner, tmp_path
):
    dataset_id = create_dataset(settings, session_factory, owner, two_phase_image())
    log_path = tmp_path / "worker.log"
    env = worker_env(settings, broker_url, redispatch_after_seconds=1)
    with running_worker(env, log_path):
        wait_for(lambda: " ready." in log_path.read_text(), 60, "the worker to start")
        # Created after the worker's start-up sweep, and no message is ever sent for it.
        job_id = create_job(
            session_factory, owner, "train", dataset_id=dataset_id, spec={"config": TINY_CONFIG}
        )
        job = wait_for(lambda: finished_job(session_factory, job_id), 90, "the sweep to run it")
    assert job.state == "succeeded", (job.error_code, job.error_message)
    assert "re-sent messages for 1 active job(s)" in log_path.read_text()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_cancel_takes_effect_within_seconds(
    settings, session_factory, celery, broker_url, owner, tmp_path
):
    dataset_id = create_dataset(settings, session_factory, owner, two_phase_image())
    config = {**TINY_CONFIG, "iterations": 100_000}
    job_id = create_job(
        session_factory, owner, "train", dataset_id=dataset_id, spec={"config": config}
    )
    with running_worker(worker_env(settings, broker_url), tmp_path / "worker.log"):
        celery.send_task(TRAIN_SEGMENT_TASK, args=[job_id], queue="train")
        wait_for(
            lambda: (load_job(session_factory, job_id).progress or {}).get("iteration"),
            90,
            "training to report progress",
        )
        with session_factory() as session:
            session.get(Job, job_id).cancel_requested = True
            session.commit()
        asked = time.monotonic()
        job = wait_for(lambda: finished_job(session_factory, job_id), 30, "the cancel")
    assert job.state == "cancelled"
    assert time.monotonic() - asked < 20
    assert job.progress["iteration"] < config["iterations"]
    # Progress says where it stopped, not its last report, and promises no end time.
    assert job.progress["eta_seconds"] is None
    assert job.progress["fraction"] == round(job.progress["iteration"] / config["iterations"], 6)
    # Where it stopped is kept, so it can be continued from there.
    assert job.checkpoint_iteration == job.progress["iteration"] > 0
    assert get_blob_store(settings).exists(job.checkpoint_blob)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_bad_data_fails_with_an_actionable_code(
    settings, session_factory, celery, broker_url, owner, tmp_path
):
    gradient = np.tile(np.arange(64, dtype=np.uint8) * 4, (64, 1))
    dataset_id = create_dataset(settings, session_factory, owner, gradient)
    config = {**TINY_CONFIG, "image_type": "nphase"}
    job_id = create_job(
        session_factory, owner, "train", dataset_id=dataset_id, spec={"config": config}
    )
    bad_config_job = create_job(
        session_factory,
        owner,
        "train",
        dataset_id=dataset_id,
        spec={"config": {**TINY_CONFIG, "critic_batch": 0}},
    )
    with running_worker(worker_env(settings, broker_url), tmp_path / "worker.log"):
        celery.send_task(TRAIN_SEGMENT_TASK, args=[job_id], queue="train")
        celery.send_task(TRAIN_SEGMENT_TASK, args=[bad_config_job], queue="train")
        job = wait_for(lambda: finished_job(session_factory, job_id), 60, "the failure")
        other = wait_for(lambda: finished_job(session_factory, bad_config_job), 60, "failure")
    assert (job.state, job.error_code) == ("failed", "invalid_data")
    assert "phase" in job.error_message.lower()
    assert (other.state, other.error_code) == ("failed", "invalid_config")
    assert "critic_batch" in other.error_message
