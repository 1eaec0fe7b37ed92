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


class TrainingReporter:
    """The trainer's ``on_progress``: records progress, history and previews under the lease."""

    def __init__(
        self,
        runtime: WorkerRuntime,
        guard: JobGuard,
        *,
        preview_every: int,
        overhead_seconds: float,
    ) -> None:
        self._runtime = runtime
        self._guard = guard
        self._lease = guard.lease
        self._preview_every = preview_every
        self._overhead_seconds = overhead_seconds
        self._last_preview_bucket: int | None = None
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
        if self._last_preview_bucket is None or bucket > self._last_preview_bucket:
            self._last_preview_bucket = bucket
            self.store_preview(render_training_preview(update.preview(), update.quality_history))

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
