"""Response models of the REST API and the conversions from table rows.

Why explicit models rather than returning rows: they are the documented contract in
OpenAPI, and they keep internal columns (leases, blob keys, hashes) out of responses.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, Field

from microforge.jobs import VolumeFormat, job_dataset_id, job_generator_id
from microforge.storage.queries import as_utc
from microforge.storage.tables import Dataset, Generator, Job, Volume

JobState = Literal["queued", "running", "succeeded", "failed", "cancelled"]
JobKind = Literal["train", "generate"]


def _utc(moment: datetime | None) -> datetime | None:
    return None if moment is None else as_utc(moment)


class Phase(BaseModel):
    value: int | float = Field(description="The label value as stored in the image.")
    fraction: float = Field(description="Share of pixels with this label, 0..1.")


class DatasetOut(BaseModel):
    id: str
    name: str
    image_type: Literal["nphase", "grayscale", "colour"]
    detected: bool = Field(description="True when the type was detected, not given.")
    layout: Literal["isotropic", "anisotropic", "volume"]
    phases: list[Phase]
    shapes: list[list[int]]
    size_bytes: int
    statistics: list[dict[str, Any]] | None = Field(
        default=None,
        description="Microstructure statistics computed at upload, one entry per image in "
        "upload order (file_name, kind, shape, per phase: volume_fraction, "
        "specific_surface_area, tpc (S2 per axis, lag 0, 1, ...), characteristic_length, "
        "euler_density (regions minus holes per area of the image); "
        "triple_phase_boundary_density for three phases; grayscale: histogram, mean, std, "
        "tpc). Big images are measured on a central crop, described by `sampled` "
        "({shape, of}). No tortuosity. Null for colour images and older datasets.",
    )
    pixel_size: float | None = Field(
        default=None,
        description="Edge of one pixel of the uploaded images in `unit`, when given at upload; "
        "generated volumes then carry it (divided by the training scale factor).",
    )
    unit: str | None = None
    created_at: datetime
    links: dict[str, str]


class JobProgress(BaseModel):
    fraction: float = 0.0
    iteration: int | None = None
    total: int | None = None
    eta_seconds: float | None = None
    chunks_done: int | None = None
    chunks_total: int | None = None


class JobErrorOut(BaseModel):
    code: str
    message: str


class JobResult(BaseModel):
    generator_id: str | None = Field(
        default=None,
        description="Training: the trained generator (the final weights, or the best ones "
        "when early stopping was on).",
    )
    best_generator_id: str | None = Field(
        default=None,
        description="Training: the generator of the best fidelity check (non-collapsed "
        "first, then lowest score); equals generator_id when those are the same weights; "
        "null when fidelity checks were off.",
    )
    volume_id: str | None = None


class JobOut(BaseModel):
    id: str
    kind: JobKind
    state: JobState
    cancel_requested: bool
    spec: dict[str, Any] = Field(description="The validated request that made the job.")
    progress: JobProgress
    metrics: dict[str, Any] | None = Field(description="The latest training metrics.")
    error: JobErrorOut | None
    attempts: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    result: JobResult
    links: dict[str, str]


class JobMetricPoint(BaseModel):
    iteration: int
    data: dict[str, Any]
    created_at: datetime
    job_id: str = Field(
        description="The job that recorded the point: this one, or for a continued job the "
        "earlier job it continues (its history up to where the continuation started)."
    )


class JobMetricsOut(BaseModel):
    job_id: str
    points: list[JobMetricPoint]


class UsageItem(BaseModel):
    count: int
    bytes: int


class UsageOut(BaseModel):
    datasets: UsageItem
    generators: UsageItem
    volumes: UsageItem
    checkpoints: UsageItem = Field(
        description="Kept by training jobs so that they can be continued; deleting an ended "
        "job (DELETE /v1/jobs/{id}) frees its checkpoint."
    )
    total_bytes: int


class GeneratorOut(BaseModel):
    id: str
    image_type: str
    phases: list[int | float]
    config: dict[str, Any]
    size_bytes: int
    source_job_id: str | None
    created_at: datetime
    links: dict[str, str]


class VolumeOut(BaseModel):
    id: str
    shape: list[int] = Field(description="[z, y, x] (plus channels for colour).")
    dtype: str
    image_type: str
    format: VolumeFormat = Field(
        description="`tiff`: links.file is the TIFF. `ome-zarr`: links.zarr is the store "
        "(its files below it), links.file a zip of it."
    )
    phases: list[int | float]
    size_bytes: int
    seed: int | None
    seconds: float | None
    job_id: str | None
    generator_id: str | None
    report: dict[str, Any] | None = Field(
        description="Short form of the quality report: verdict ('good', 'fair', 'poor' or "
        "null without training images), summary errors, sampled region, or error. Null "
        "until the report is built; the full report is at links.report."
    )
    created_at: datetime
    links: dict[str, str]


class VolumeReportOut(BaseModel):
    """The quality report of a generated volume (see docs/api.md, "Quality reports")."""

    volume_id: str
    version: int | None = Field(default=None, description="Layout version of the report.")
    verdict: Literal["good", "fair", "poor"] | None = Field(
        default=None, description="Null when there are no training images to compare with."
    )
    summary: dict[str, Any] | None = Field(
        default=None,
        description="fraction_error, s2_error, euler_error (absent for greyscale and "
        "from reports made before it was measured), their uncertainties, verdict and the "
        "thresholds behind it; "
        "missing_phases (of the training images, not in the volume: compared as empty "
        "phases) and extra_phases (in the volume, not in a training image), with a note "
        "when either is not empty.",
    )
    sampled: dict[str, Any] | None = Field(
        default=None,
        description="{shape, of, region}: the central sample the statistics were computed "
        "on, when the volume was larger than that; null when the whole volume was measured.",
    )
    statistics: dict[str, Any] | None = Field(
        default=None, description="Statistics of the volume (or of its sample)."
    )
    comparison: dict[str, Any] | None = Field(
        default=None,
        description="Side by side with the training images, per phase, axis and direction.",
    )
    note: str | None = None
    error: dict[str, Any] | None = Field(
        default=None,
        description="{code, message} when the report could not be built; the volume is fine.",
    )
    links: dict[str, str]


T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null at the end."
    )


class HealthComponent(BaseModel):
    ok: bool
    detail: str | None = None


class WorkerDevice(BaseModel):
    worker: str
    kind: Literal["cuda", "cpu", "unknown"] = Field(
        description="cuda = a GPU; unknown = the worker could not use the device it was given "
        "(name says why)."
    )
    name: str | None = Field(default=None, description="The GPU's or the CPU's name.")
    memory_bytes: int | None = Field(default=None, description="GPU memory.")
    cores: int | None = Field(default=None, description="CPU cores.")


class HealthOut(BaseModel):
    status: Literal["ok", "degraded", "unavailable"]
    database: HealthComponent
    broker: HealthComponent
    workers: HealthComponent
    worker_names: list[str]
    worker_devices: list[WorkerDevice] = Field(
        default_factory=list,
        description="The device each live worker trains on, as the workers announce it (a "
        "worker refreshes it every 20 s, also while busy; it drops out a minute after the "
        "worker stops).",
    )


def dataset_out(row: Dataset) -> DatasetOut:
    base = f"/v1/datasets/{row.id}"
    fractions = list(row.fractions or [])
    phases = [
        Phase(value=value, fraction=fractions[index] if index < len(fractions) else 0.0)
        for index, value in enumerate(row.phases or [])
    ]
    return DatasetOut(
        id=row.id,
        name=row.name,
        image_type=row.image_type,
        detected=bool((row.stats or {}).get("detected", False)),
        layout=row.layout,
        phases=phases,
        shapes=[list(shape) for shape in row.shapes or []],
        size_bytes=row.size_bytes,
        statistics=(row.stats or {}).get("statistics"),
        pixel_size=(row.stats or {}).get("pixel_size"),
        unit=(row.stats or {}).get("unit"),
        created_at=as_utc(row.created_at),
        links={"self": base, "preview": f"{base}/preview.png"},
    )


def spec_out(row: Job) -> dict[str, Any]:
    """The spec as clients have always seen it: the stored spec with the id of what the job
    uses (its dataset or generator, kept in the row's columns) first."""
    spec = dict(row.spec or {})
    used = {"train": ("dataset_id", job_dataset_id), "generate": ("generator_id", job_generator_id)}
    if row.kind in used:
        name, read = used[row.kind]
        value = read(row)
        if value:
            spec = {name: value, **{k: v for k, v in spec.items() if k != name}}
    return spec


def job_out(row: Job) -> JobOut:
    base = f"/v1/jobs/{row.id}"
    links = {"self": base, "cancel": f"{base}/cancel"}
    if row.kind == "train":
        links.update(metrics=f"{base}/metrics", preview=f"{base}/preview.png")
        if row.state not in ("queued", "running") and row.checkpoint_blob:
            links["continue"] = f"{base}/continue"
        parent = (row.spec or {}).get("continued_from")
        if parent:
            links["continued_from"] = f"/v1/jobs/{parent}"
        dataset_id = job_dataset_id(row)
        if dataset_id:
            links["dataset"] = f"/v1/datasets/{dataset_id}"
    generator_source = job_generator_id(row) if row.kind == "generate" else None
    if generator_source:
        links["generator"] = f"/v1/generators/{generator_source}"
    if row.result_generator_id:
        links["result_generator"] = f"/v1/generators/{row.result_generator_id}"
        links["result_generator_file"] = f"/v1/generators/{row.result_generator_id}/file"
    if row.result_best_generator_id:
        best = row.result_best_generator_id
        links["result_best_generator"] = f"/v1/generators/{best}"
        links["result_best_generator_file"] = f"/v1/generators/{best}/file"
    if row.result_volume_id:
        links["result_volume"] = f"/v1/volumes/{row.result_volume_id}"
        links["result_volume_file"] = f"/v1/volumes/{row.result_volume_id}/file"
    progress = {key: value for key, value in (row.progress or {}).items() if value is not None}
    error = None
    if row.error_code or row.error_message:
        error = JobErrorOut(code=row.error_code or "error", message=row.error_message or "")
    return JobOut(
        id=row.id,
        kind=row.kind,
        state=row.state,
        cancel_requested=row.cancel_requested,
        spec=spec_out(row),
        progress=JobProgress.model_validate(
            {k: v for k, v in progress.items() if k in JobProgress.model_fields}
        ),
        metrics=row.metrics,
        error=error,
        attempts=row.attempts,
        created_at=as_utc(row.created_at),
        started_at=_utc(row.started_at),
        finished_at=_utc(row.finished_at),
        result=JobResult(
            generator_id=row.result_generator_id,
            best_generator_id=row.result_best_generator_id,
            volume_id=row.result_volume_id,
        ),
        links=links,
    )


def generator_out(row: Generator) -> GeneratorOut:
    base = f"/v1/generators/{row.id}"
    links = {"self": base, "file": f"{base}/file"}
    if row.source_job_id:
        links["source_job"] = f"/v1/jobs/{row.source_job_id}"
    return GeneratorOut(
        id=row.id,
        image_type=row.image_type,
        phases=list(row.phases or []),
        config=row.config or {},
        size_bytes=row.size_bytes,
        source_job_id=row.source_job_id,
        created_at=as_utc(row.created_at),
        links=links,
    )


def volume_out(row: Volume) -> VolumeOut:
    base = f"/v1/volumes/{row.id}"
    links = {
        "self": base,
        "file": f"{base}/file",
        "slice": f"{base}/slice.png?axis=z&index=0",
        "report": f"{base}/report",
        "report_png": f"{base}/report.png",
    }
    if row.format == "ome-zarr":
        links["zarr"] = f"{base}/zarr/"
    if row.job_id:
        links["job"] = f"/v1/jobs/{row.job_id}"
    if row.generator_id:
        links["generator"] = f"/v1/generators/{row.generator_id}"
    return VolumeOut(
        id=row.id,
        shape=list(row.shape or []),
        dtype=row.dtype,
        image_type=row.image_type,
        format=row.format or "tiff",
        phases=list(row.phases or []),
        size_bytes=row.size_bytes,
        seed=row.seed,
        seconds=row.seconds,
        job_id=row.job_id,
        generator_id=row.generator_id,
        report=_report_summary(row.report),
        created_at=as_utc(row.created_at),
        links=links,
    )


_SHORT_REPORT_KEYS = ("verdict", "summary", "sampled", "note", "error", "skipped")


def _report_summary(report: dict[str, Any] | None) -> dict[str, Any] | None:
    """The few keys a volume listing needs; the S2 curves stay in the full report."""
    if report is None:
        return None
    return {key: report[key] for key in _SHORT_REPORT_KEYS if key in report}


def volume_report_out(row: Volume, report: dict[str, Any]) -> VolumeReportOut:
    base = f"/v1/volumes/{row.id}"
    links = {"volume": base, "self": f"{base}/report"}
    if row.report_blob:
        links["png"] = f"{base}/report.png"
    error = report.get("error")
    if error is None and "skipped" in report:
        error = {"code": "report_skipped", "message": report["skipped"]}
    return VolumeReportOut(
        volume_id=row.id,
        version=report.get("version"),
        verdict=report.get("verdict"),
        summary=report.get("summary"),
        sampled=report.get("sampled"),
        statistics=report.get("statistics"),
        comparison=report.get("comparison"),
        note=report.get("note"),
        error=error,
        links=links,
    )
