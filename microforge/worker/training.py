"""One training segment: claim, resume from the latest checkpoint, train, hand on or finish.

Why segments: Celery delivers at least once and a message unacknowledged past the
visibility timeout is delivered again, so no task may run for hours. A segment trains for
``train_segment_seconds``, writes a checkpoint as a NEW blob keyed by iteration and token
(never overwriting the one the job row points at), moves the row to it only while holding
the lease, deletes the old blob, releases the lease and enqueues the next segment. A
killed worker therefore costs at most one segment, and a duplicate can overwrite nothing.
The last segment writes its checkpoint too, so an ended job (succeeded or cancelled) can
be continued for more iterations from exactly where it stopped.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from microforge.jobs import job_dataset_id, read_spec
from microforge.storage.job_lifecycle import (
    Lease,
    LeaseLost,
    finish_job,
    load_job,
    record_checkpoint,
    release_lease,
)
from microforge.storage.tables import Dataset, Generator, Job, new_id
from microforge.worker.claimed import run_claimed
from microforge.worker.dispatch import send_job_message
from microforge.worker.guard import JobGuard
from microforge.worker.progress import TrainingReporter, json_safe, stopped_progress
from microforge.worker.runtime import WorkerRuntime

log = logging.getLogger(__name__)


def run_train_segment(runtime: WorkerRuntime, job_id: str, token: int | None = None) -> str:
    """Run one segment of a training job; returns what happened (for logs and tests).

    ``token`` is the fencing token the message was sent for (None for old messages)."""
    return run_claimed(runtime, job_id, "training", _train_under_lease, token)


def _train_under_lease(runtime: WorkerRuntime, lease: Lease) -> str:
    from microforge.models.data import prepare_training_data
    from microforge.models.trainer import Trainer
    from microforge.storage.images import read_image

    started = time.monotonic()
    settings = runtime.settings
    job = load_job(runtime.session_factory, lease.job_id)
    assert job is not None
    if job.cancel_requested:
        progress = job.progress or {}
        stopped = stopped_progress(
            progress, int(progress.get("iteration") or 0), int(progress.get("total") or 0)
        )
        finish_job(runtime.session_factory, lease, "cancelled", progress=stopped)
        return "cancelled"
    dataset = _load_dataset(runtime, job)
    config = read_spec(job).config
    images = [
        read_image(runtime.blobs.path(key), max_pixels=settings.max_image_pixels)
        for key in dataset.blob_keys
    ]
    data = prepare_training_data(
        images,
        image_type=config.image_type or dataset.image_type,
        scale_factor=config.scale_factor,
    )
    del images
    trainer = Trainer(data, config, device=settings.device)
    if job.checkpoint_blob:
        trainer.load_checkpoint(runtime.blobs.path(job.checkpoint_blob))
        log.info("job %s: resuming from checkpoint at iteration %d", job.id, trainer.iteration)
    resumed_at = trainer.iteration
    guard = JobGuard(runtime.session_factory, lease, settings.lease_seconds)
    reporter = TrainingReporter(
        runtime,
        guard,
        preview_every=config.preview_every,
        overhead_seconds=time.monotonic() - started,
    )
    deadline = time.monotonic() + settings.train_segment_seconds
    reached = trainer.run(deadline=deadline, should_stop=guard.should_stop, on_progress=reporter)
    if guard.lease_lost:
        return "lease_lost"
    if reached > resumed_at or not job.checkpoint_blob:
        # Also when the job ends here: its last checkpoint is what a continuation
        # (POST /v1/jobs/{id}/continue) starts from.
        _write_checkpoint(runtime, lease, job, trainer)
        reporter.final_preview(trainer)
    if guard.cancel_requested:
        stopped = stopped_progress(reporter.last_progress, reached, config.iterations)
        finish_job(runtime.session_factory, lease, "cancelled", progress=stopped)
        log.info("job %s cancelled at iteration %d", lease.job_id, reached)
        return "cancelled"
    stopped_early = guard.shutting_down or time.monotonic() > deadline
    if reached >= config.iterations or not stopped_early:
        # Done, or the trainer stopped on its own (early stopping on fidelity).
        scale = _voxel_scale(dataset, config)
        return _finish_training(runtime, lease, job, trainer, config, reporter.last_progress, scale)
    token = release_lease(runtime.session_factory, lease)
    send_job_message(runtime.celery, "train", lease.job_id, token, handoff=True)
    log.info(
        "job %s: segment ended at iteration %d of %d", lease.job_id, reached, config.iterations
    )
    return "continued"


def _load_dataset(runtime: WorkerRuntime, job: Job) -> Dataset:
    with runtime.session_factory() as session:
        dataset_id = job_dataset_id(job)
        dataset = session.get(Dataset, dataset_id) if dataset_id else None
        if dataset is None:
            raise FileNotFoundError(
                f"the dataset {dataset_id!r} of this job no longer exists; upload it again"
            )
        session.expunge(dataset)
        return dataset


def checkpoint_key(job_id: str, iteration: int, token: int) -> str:
    """Keyed by iteration and fencing token, so two writers can never share a file."""
    return f"checkpoints/{job_id}-it{iteration:09d}-t{token}.pt"


def _write_checkpoint(runtime: WorkerRuntime, lease: Lease, job: Job, trainer: Any) -> None:
    key = checkpoint_key(job.id, trainer.iteration, lease.token)
    with runtime.blobs.writing(key) as temporary:
        trainer.save_checkpoint(temporary)
    try:
        replaced = record_checkpoint(runtime.session_factory, lease, trainer.iteration, key)
    except (LeaseLost, ValueError):
        runtime.blobs.delete(key)
        raise
    if replaced:
        runtime.blobs.delete(replaced)


def _finish_training(
    runtime: WorkerRuntime,
    lease: Lease,
    job: Job,
    trainer: Any,
    config: Any,
    last_progress: dict[str, Any] | None,
    voxel_scale: dict[str, Any],
) -> str:
    """Export the result generator, and the best one by fidelity as a second generator
    when it is other weights, then finish the job with both rows in one transaction.

    The result is the latest weights, or the best ones when early stopping was asked for
    (training stopped because the best was not beaten, so those are the ones meant).
    """
    primary = "best" if config.early_stop_checks else "latest"
    rows = [_export_generator_row(runtime, job, trainer, config, primary, voxel_scale)]
    best_iteration = trainer.best["iteration"] if trainer.best is not None else None
    best_id = rows[0].id if best_iteration == rows[0].config.get("iteration") else None
    if best_iteration is not None and best_id is None:
        best_id = _inherited_best(runtime, job, best_iteration)
    if best_iteration is not None and best_id is None:
        rows.append(_export_generator_row(runtime, job, trainer, config, "best", voxel_scale))
        best_id = rows[-1].id
    progress = dict(last_progress or {})
    progress.update(
        fraction=1.0,
        iteration=trainer.iteration,
        total=config.iterations,
        eta_seconds=0.0,
        updated=time.time(),
    )
    try:
        finish_job(
            runtime.session_factory,
            lease,
            "succeeded",
            result_generator_id=rows[0].id,
            result_best_generator_id=best_id,
            progress=progress,
            add_rows=rows,
        )
    except LeaseLost:
        for row in rows:
            runtime.blobs.delete(row.blob_key)
        raise
    log.info("job %s succeeded: generator(s) %s", job.id, ", ".join(row.id for row in rows))
    return "succeeded"


def _inherited_best(runtime: WorkerRuntime, job: Job, best_iteration: int) -> str | None:
    """The generator an earlier job of this run already exported for the best check.

    A continuation restores the best weights from its checkpoint; when they are from
    before it started, the job it continues (or one before that) exported them already,
    and a second copy of the same weights would only take disk and confuse.
    """
    spec = job.spec or {}
    seen: set[str] = set()
    with runtime.session_factory() as session:
        while (parent_id := spec.get("continued_from")) and parent_id not in seen:
            seen.add(parent_id)
            parent = session.get(Job, parent_id)
            if parent is None:
                return None
            best = parent.result_best_generator_id
            candidate = session.get(Generator, best) if best else None
            if candidate and (candidate.config or {}).get("iteration") == best_iteration:
                return candidate.id
            spec = parent.spec or {}
    return None


def _voxel_scale(dataset: Dataset, config: Any) -> dict[str, Any]:
    """The edge of a generated voxel, when the upload said its pixel size: a voxel is a
    training pixel, i.e. an uploaded pixel after the scale factor (0.5 halves the image,
    so a voxel spans two pixels)."""
    stats = dataset.stats or {}
    pixel_size = stats.get("pixel_size")
    if not pixel_size:
        return {}
    return {"voxel_size": pixel_size / config.scale_factor, "unit": stats.get("unit") or "um"}


def _export_generator_row(
    runtime: WorkerRuntime,
    job: Job,
    trainer: Any,
    config: Any,
    which: str,
    voxel_scale: dict[str, Any],
) -> Generator:
    """Write ``which`` weights (latest or best) to a new blob; the row is not saved yet."""
    blobs = runtime.blobs
    key = blobs.new_key("generators", ".safetensors")
    with blobs.writing(key) as temporary:
        trainer.export_generator(temporary, which=which)
    data = trainer.data
    return Generator(
        id=new_id("gen"),
        owner_id=job.owner_id,
        source_job_id=job.id,
        blob_key=key,
        image_type=data.image_type,
        phases=[_plain(p) for p in data.phases],
        config=_generator_config(
            blobs.path(key), config, data.layout, which, trainer.export_quality(which)
        )
        | voxel_scale,
        size_bytes=blobs.size(key),
    )


def _generator_config(
    path: Path, config: Any, layout: str, which: str, quality: dict[str, Any] | None
) -> dict[str, Any]:
    """What the exported file says about itself (as for imported generators), plus the
    training configuration and layout it came from, which weights these are (``latest``
    or ``best``) and their last fidelity check (None when checks were off), so that a
    collapsed generator is visible before anyone generates."""
    from microforge.models.generator_file import inspect_generator_file

    info = inspect_generator_file(path)
    return json_safe(
        {
            **info.summary(),
            "layout": layout,
            "train": config.model_dump(mode="json"),
            "weights": which,
            "quality": quality,
        }
    )


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value
