"""Training progress as the user sees it: fraction, iteration, an honest ETA, metrics, preview.

Why an ETA of our own: the trainer's estimate covers iterations only, but a job also pays,
per segment, for loading data and the checkpoint and for writing the next one. Leaving that
out would promise a finish time the job cannot keep on short segments.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from microforge.report.training_preview import render_training_preview
from microforge.storage.job_lifecycle import LeaseLost, record_progress, set_preview
from microforge.worker.guard import JobGuard
from microforge.worker.runtime import WorkerRuntime


def training_eta(
    remaining_iterations: int,
    seconds_per_iteration: float,
    segment_seconds: float,
    overhead_seconds: float,
) -> float | None:
    """Seconds left: training time plus the per-segment overhead of the segments still to run."""
    if remaining_iterations <= 0:
        return 0.0
    if seconds_per_iteration <= 0 or not math.isfinite(seconds_per_iteration):
        return None
    training = remaining_iterations * seconds_per_iteration
    segments_left = math.ceil(training / max(segment_seconds, 1e-9))
    return training + max(segments_left - 1, 0) * max(overhead_seconds, 0.0)


def stopped_progress(last: dict[str, Any] | None, iteration: int, total: int) -> dict[str, Any]:
    """The progress of a job that ended before its total: where it stopped, and no ETA.

    Why: the last report may be iterations behind the stop (reports come every
    ``progress_every`` iterations) and its ETA means nothing once the job has ended."""
    progress = dict(last or {})
    progress.update(
        fraction=round(iteration / total, 6) if total else 0.0,
        iteration=iteration,
        total=total,
        eta_seconds=None,
        updated=time.time(),
    )
    return progress


def json_safe(values: dict[str, Any]) -> dict[str, Any]:
    """NaN and infinity are not JSON (PostgreSQL refuses them): store them as null."""
    return {str(name): _json_value(value) for name, value in values.items()}


def _json_value(value: Any) -> Any:
    if isinstance(value, dict):
        return json_safe(value)
    if isinstance(value, list | tuple):
        return [_json_value(item) for item in value]
    if isinstance(value, np.ndarray):
        return [_json_value(item) for item in value.tolist()]
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer | np.bool_):
        return value.item()
    return value


#: A preview older than this is refreshed at the next progress report, whatever
#: ``preview_every`` says: on a slow worker 250 iterations can take many minutes.
PREVIEW_SECONDS = 30.0


class TrainingReporter:
    """The trainer's ``on_progress``: records progress, history and previews under the lease.

    The preview is refreshed every ``preview_every`` iterations or ``PREVIEW_SECONDS``,
    whichever comes first, and once more when a segment ends (``final_preview``), so the
    preview of an ended job shows the weights it ended with."""

    def __init__(
        self,
        runtime: WorkerRuntime,
        guard: JobGuard,
        *,
        preview_every: int,
        overhead_seconds: float,
        preview_seconds: float = PREVIEW_SECONDS,
    ) -> None:
        self._runtime = runtime
        self._guard = guard
        self._lease = guard.lease
        self._preview_every = preview_every
        self._preview_seconds = preview_seconds
        self._overhead_seconds = overhead_seconds
        self._last_preview_bucket: int | None = None
        self._last_preview_time = 0.0
        self._last_preview_iteration: int | None = None
        self.last_progress: dict[str, Any] | None = None

    def __call__(self, update: Any) -> None:
        settings = self._runtime.settings
        eta = training_eta(
            update.total - update.iteration,
            update.seconds_per_iteration,
            settings.train_segment_seconds,
            self._overhead_seconds,
        )
        progress = {
            "fraction": round(update.iteration / update.total, 6) if update.total else 0.0,
            "iteration": update.iteration,
            "total": update.total,
            "eta_seconds": None if eta is None else round(eta, 1),
            "seconds_per_iteration": json_safe({"v": update.seconds_per_iteration})["v"],
            "updated": time.time(),
        }
        metrics = json_safe(update.metrics())
        record_progress(
            self._runtime.session_factory,
            self._lease,
            progress,
            metrics=metrics,
            iteration=update.iteration,
            lease_seconds=settings.lease_seconds,
        )
        self._guard.lease_renewed()
        self.last_progress = progress
        bucket = update.iteration // self._preview_every
        stale = time.monotonic() - self._last_preview_time >= self._preview_seconds
        if self._last_preview_bucket is None or bucket > self._last_preview_bucket or stale:
            self._last_preview_bucket = bucket
            self._store_rendered(update.iteration, update.preview(), update.quality_history)

    def final_preview(self, trainer: Any) -> None:
        """The preview of the weights a segment ended with, unless it shows them already."""
        if trainer.iteration != self._last_preview_iteration:
            self._store_rendered(trainer.iteration, trainer.preview(), trainer.quality_history)

    def _store_rendered(
        self, iteration: int, slices: np.ndarray, history: list[dict[str, Any]]
    ) -> None:
        self.store_preview(render_training_preview(slices, history))
        self._last_preview_time = time.monotonic()
        self._last_preview_iteration = iteration

    def store_preview(self, png: bytes) -> None:
        """Store a rendered preview PNG and point the job at it, under the lease."""
        blobs = self._runtime.blobs
        key = blobs.new_key("previews", ".png")
        blobs.put_bytes(key, png)
        try:
            replaced = set_preview(self._runtime.session_factory, self._lease, key)
        except LeaseLost:
            blobs.delete(key)
            raise
        if replaced:
            blobs.delete(replaced)
