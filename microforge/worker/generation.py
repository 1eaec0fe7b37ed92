"""A generation job: stream a volume of any size from a trained generator into a TIFF blob
or an OME-Zarr store (a directory blob), as the spec's ``format`` says.

Why streamed: a volume may be far larger than memory. The engine produces z-slabs chunk
by chunk, the writer (TIFF: page by page; OME-Zarr: chunk by chunk, with its pyramid)
writes them into a temporary file or tree inside the blob store, and it is published at
its key only when complete, so a crash or a cancel never leaves a half volume behind a
Volume row. The Volume row and the job's success are
committed together and only under the lease.
"""

from __future__ import annotations

import hashlib
import logging
import math
import random
import time
from pathlib import Path
from typing import Any

import numpy as np

from microforge.jobs import GenerateSpec, job_generator_id, read_spec
from microforge.storage.disk_full import find_disk_full
from microforge.storage.job_lifecycle import (
    Lease,
    LeaseLost,
    finish_job,
    load_job,
    record_progress,
    release_lease,
)
from microforge.storage.tables import Dataset, Generator, Job, Volume, new_id
from microforge.worker.claimed import run_claimed
from microforge.worker.dispatch import send_job_message
from microforge.worker.guard import JobGuard
from microforge.worker.runtime import WorkerRuntime

log = logging.getLogger(__name__)
#: Record progress at most this often: chunks can take milliseconds each.
PROGRESS_INTERVAL_SECONDS = 1.0


#: Space a volume must leave free (at most; a small volume leaves as much as its own
#: size), so that the database, checkpoints and other jobs can still write when it is done.
DISK_RESERVE_BYTES = 1 << 30


class NotEnoughDiskError(RuntimeError):
    """Refused before generating: the finished TIFF would not fit on the blob store's disk."""

    code = "disk_full"


def check_disk_space(blobs: Any, shape: tuple[int, ...], itemsize: int, samples: int) -> None:
    """Fail at once, not after hours of generation, when the volume cannot be stored.

    The uncompressed TIFF is the voxels plus a few hundred bytes of tags per page.
    """
    needed = math.prod(shape) * itemsize * samples + 512 * shape[0]
    reserve = min(DISK_RESERVE_BYTES, needed)
    free = blobs.free_bytes()
    if needed + reserve > free:
        raise NotEnoughDiskError(
            f"the volume needs {needed / 1e9:.1f} GB but the server has {free / 1e9:.1f} GB "
            f"free (keeping {reserve / 1e9:.1f} GB in reserve): delete volumes, jobs "
            "or generators you no longer need (GET /v1/usage shows what you keep), or ask for "
            "a smaller volume"
        )


class _Stopped(Exception):
    """Raised inside the writers' context so that both discard their partial files."""


def run_generate_job(runtime: WorkerRuntime, job_id: str, token: int | None = None) -> str:
    """Run a generation job to the end; returns what happened (for logs and tests).

    ``token`` is the fencing token the message was sent for (None for old messages)."""
    return run_claimed(runtime, job_id, "generation", _generate_under_lease, token)


def _generate_under_lease(runtime: WorkerRuntime, lease: Lease) -> str:
    from microforge.models.export import load_generator
    from microforge.models.generation import GenerationCancelled, generate_volume

    settings = runtime.settings
    job = load_job(runtime.session_factory, lease.job_id)
    assert job is not None
    if job.cancel_requested:
        finish_job(runtime.session_factory, lease, "cancelled")
        return "cancelled"
    spec = read_spec(job)
    generator_row = _load_generator_row(runtime, job)
    shape = spec.shape
    seed = spec.seed
    if seed is None:  # the API always records one; an old or hand-made row may not
        seed = random.SystemRandom().getrandbits(31)
    loaded = load_generator(runtime.blobs.path(generator_row.blob_key), device=settings.device)
    rgb = loaded.image_type == "colour"
    voxel_size, unit = effective_voxel_size(spec, generator_row)
    compression = spec.compression
    if compression is None and spec.format == "tiff":  # else the size is not known before
        itemsize = np.dtype(loaded.output_dtype).itemsize
        check_disk_space(runtime.blobs, shape, itemsize, 3 if rgb else 1)
    guard = JobGuard(runtime.session_factory, lease, settings.lease_seconds)
    on_chunk = _ChunkProgress(runtime, guard)
    key = runtime.blobs.new_key("volumes", _SUFFIXES[spec.format])
    writing = runtime.blobs.writing if spec.format == "tiff" else runtime.blobs.writing_tree
    started = time.monotonic()
    try:
        with (
            writing(key) as temporary,
            _volume_writer(spec, temporary, shape, loaded, voxel_size, unit) as writer,
        ):
            try:
                generate_volume(
                    loaded,
                    shape,
                    seed=seed,
                    chunk=spec.chunk,
                    periodic=spec.periodic,
                    write_slab=writer.write,
                    on_chunk=on_chunk,
                    should_stop=guard.should_stop,
                    background_writes=writer.overlap_writes,
                )
            except GenerationCancelled as stop:
                raise _Stopped() from stop
    except _Stopped:
        return _after_stop(runtime, lease, guard)
    seconds = time.monotonic() - started
    size = runtime.blobs.size(key)
    try:
        report, report_key = _volume_report(runtime, generator_row, key, loaded, voxel_size, unit)
    except BaseException:
        runtime.blobs.delete(key)  # the disk filled while reporting: the job fails, volume too
        raise
    volume = Volume(
        id=new_id("vol"),
        owner_id=job.owner_id,
        job_id=job.id,
        generator_id=generator_row.id,
        blob_key=key,
        format=spec.format,
        shape=list(shape),
        dtype=str(loaded.output_dtype),
        image_type=loaded.image_type,
        phases=[p.item() if hasattr(p, "item") else p for p in loaded.phases],
        size_bytes=size,
        etag=blob_etag(runtime.blobs, key),
        seed=seed,
        seconds=round(seconds, 3),
        report=report,
        report_blob=report_key,
    )
    progress = {
        "fraction": 1.0,
        "chunks_done": on_chunk.total,
        "chunks_total": on_chunk.total,
        "eta_seconds": 0.0,
        "updated": time.time(),
    }
    try:
        finish_job(
            runtime.session_factory,
            lease,
            "succeeded",
            result_volume_id=volume.id,
            progress=progress,
            add_rows=[volume],
        )
    except LeaseLost:
        runtime.blobs.delete(key)
        if report_key:
            runtime.blobs.delete(report_key)
        raise
    log.info("job %s succeeded: volume %s (%d bytes, %.1f s)", job.id, volume.id, size, seconds)
    return "succeeded"


#: The blob suffix of each format (a ``.zarr`` name marks a tree blob, see ``blobs``).
_SUFFIXES = {"tiff": ".tif", "ome-zarr": ".ome.zarr"}


def _volume_writer(
    spec: GenerateSpec,
    path: Path,
    shape: tuple[int, int, int],
    loaded: Any,
    voxel_size: float | None,
    unit: str,
) -> Any:
    """The writer of the spec's format, as a context manager with ``write(slab)``."""
    from microforge.storage.volume_writers import open_volume_writer

    return open_volume_writer(
        spec.format,
        path,
        shape,
        loaded,
        voxel_size=voxel_size,
        unit=unit,
        compression=spec.compression,
    )


def _after_stop(runtime: WorkerRuntime, lease: Lease, guard: JobGuard) -> str:
    if guard.lease_lost:
        return "lease_lost"
    if guard.cancel_requested:
        finish_job(runtime.session_factory, lease, "cancelled")
        return "cancelled"
    # The worker is shutting down: give the job back and queue it again from the start.
    token = release_lease(runtime.session_factory, lease)
    send_job_message(runtime.celery, "generate", lease.job_id, token, handoff=True)
    return "interrupted"


def _load_generator_row(runtime: WorkerRuntime, job: Job) -> Generator:
    generator_id = job_generator_id(job)
    with runtime.session_factory() as session:
        row = session.get(Generator, generator_id) if generator_id else None
        if row is None or row.owner_id != job.owner_id:
            raise FileNotFoundError(
                f"the generator {generator_id!r} of this job no longer exists; train or "
                "import it again"
            )
        session.expunge(row)
        return row


def file_etag(path: Path) -> str:
    """A strong validator for HTTP caching and resumable downloads: the file's SHA-256."""
    digest = hashlib.sha256()
    _hash_file(digest, path)
    return digest.hexdigest()


def blob_etag(blobs: Any, key: str) -> str:
    """``file_etag`` of a file blob; of a tree blob, the SHA-256 over its files' relative
    paths, sizes and contents in path order (any change to the store changes it)."""
    if not blobs.is_tree(key):
        return file_etag(blobs.path(key))
    digest = hashlib.sha256()
    for name, path in blobs.tree_files(key):
        digest.update(f"{name}\0{path.stat().st_size}\0".encode())
        _hash_file(digest, path)
    return digest.hexdigest()


def _hash_file(digest: Any, path: Path) -> None:
    with open(path, "rb") as handle:
        while block := handle.read(8 * 1024 * 1024):
            digest.update(block)


def effective_voxel_size(spec: GenerateSpec, generator_row: Generator) -> tuple[float | None, str]:
    """The job's voxel size, else the generator's (its training pixel, when the upload
    gave a pixel size), else none (voxel units)."""
    if spec.voxel_size:
        return spec.voxel_size, spec.unit
    config = generator_row.config or {}
    if config.get("voxel_size"):
        return float(config["voxel_size"]), config.get("unit") or "um"
    return None, "um"


def _volume_report(
    runtime: WorkerRuntime,
    generator_row: Generator,
    key: str,
    loaded: Any,
    voxel_size: float | None,
    unit: str,
) -> tuple[dict[str, Any] | None, str | None]:
    """The quality report (statistics of a central sample, comparison with the training
    images, verdict) as JSON, and its PNG stored as a blob; returns (report, PNG key).

    A bonus, not the product: a failure is logged and recorded as error JSON in the report,
    and the volume is delivered anyway; except a full disk, which ends the job with
    ``disk_full`` like any other write it makes (the report would only hide it).
    Tortuosity is solved only where it is cheap (``report_tortuosity``: on a GPU); on a
    CPU a solver run per phase would dominate the job's time.
    """
    from microforge.report.volume_report import build_volume_report, report_error

    if loaded.image_type == "colour":
        return {"skipped": "colour volumes have no statistics; segment them first"}, None
    try:
        references = _training_images(runtime, generator_row)
        kind = "nphase" if loaded.image_type == "nphase" else "grayscale"
        report, png = build_volume_report(
            runtime.blobs.path(key),
            references,
            kind=kind,
            voxel_size=voxel_size,
            unit=unit,
            tortuosity=report_tortuosity(runtime.settings.report_tortuosity, loaded.device),
        )
        png_key = runtime.blobs.new_key("reports", ".png")
        runtime.blobs.put_bytes(png_key, png)
        return report, png_key
    except Exception as error:  # noqa: BLE001 - the volume itself is done; the report is optional
        if find_disk_full(error) is not None:
            raise
        log.exception("volume report failed for %s", key)
        return report_error(error), None


def report_tortuosity(setting: str, device: Any) -> bool:
    """Whether the report solves tortuosity: ``always``, ``never``, or (``auto``) when the
    worker generates on a GPU, where taufactor takes seconds instead of minutes."""
    if setting == "auto":
        return getattr(device, "type", str(device)) == "cuda"
    return setting == "always"


def _training_images(runtime: WorkerRuntime, generator_row: Generator) -> list[Any]:
    """The images the generator was trained on (generator -> train job -> dataset), at the
    scale it was trained at, or [] when that chain is broken (an imported generator, a
    deleted dataset or file)."""
    from microforge.storage.images import read_image

    if not generator_row.source_job_id:
        return []
    with runtime.session_factory() as session:
        train_job = session.get(Job, generator_row.source_job_id)
        dataset_id = train_job.dataset_id if train_job is not None else None
        dataset = session.get(Dataset, dataset_id) if dataset_id else None
        if dataset is None or dataset.owner_id != generator_row.owner_id:
            return []
        keys = list(dataset.blob_keys or [])
        config = dict((train_job.spec or {}).get("config") or {})
        image_type = config.get("image_type") or dataset.image_type
    if not keys or not all(runtime.blobs.exists(k) for k in keys):
        return []
    images = [read_image(runtime.blobs.path(k)) for k in keys]
    return images_as_trained(images, image_type, float(config.get("scale_factor") or 1.0))


def images_as_trained(images: list[Any], image_type: str, scale_factor: float) -> list[Any]:
    """Uploaded images as the generator saw them: a voxel it makes is a training pixel
    after the scale factor, so a report compares the volume with these."""
    if scale_factor == 1.0:
        return images
    from microforge.models.data import prepare_training_data

    return prepare_training_data(images, image_type, scale_factor).as_images()


class _ChunkProgress:
    """``on_chunk``: records chunks done and an ETA from the pace so far, at most once a second."""

    def __init__(self, runtime: WorkerRuntime, guard: JobGuard) -> None:
        self._runtime = runtime
        self._guard = guard
        self._started = time.monotonic()
        self._last = -float("inf")
        self.total = 0

    def __call__(self, done: int, total: int) -> None:
        self.total = total
        now = time.monotonic()
        if done < total and now - self._last < PROGRESS_INTERVAL_SECONDS:
            return
        self._last = now
        elapsed = now - self._started
        eta = elapsed / done * (total - done) if done else None
        progress = {
            "fraction": round(done / total, 6) if total else 0.0,
            "chunks_done": done,
            "chunks_total": total,
            "eta_seconds": None if eta is None else round(eta, 1),
            "updated": time.time(),
        }
        record_progress(
            self._runtime.session_factory,
            self._guard.lease,
            progress,
            lease_seconds=self._runtime.settings.lease_seconds,
        )
        self._guard.lease_renewed()
