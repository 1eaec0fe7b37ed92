"""The kinds of job: for each, the spec it stores, and the queue and task that run it.

Why one place: the API validates a request, stores the job's spec and sends its first
message; the worker reads the spec back, listens on the queues and re-sends messages.
Each side used to carry its own copy of the kind -> task/queue map and the worker read
the spec by string keys; now both go through the models here, so a new field of a spec
(an output format, say) is one line, checked the same way on both sides of the database.

Torch-free: the API imports it.

The rows a job uses (its dataset, its generator) are named by the job's columns, never in
its spec. Rows written before that have them in the spec too; the specs ignore unknown
keys, and ``job_dataset_id`` / ``job_generator_id`` read either (write clean, read
tolerant).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from microforge.bounds import INT32_MAX, SEED_MAX, int_range
from microforge.models.config import TrainConfig
from microforge.units import LengthUnit

#: The file formats a generation job can write.
VolumeFormat = Literal["tiff", "ome-zarr"]

#: Voxels along one axis: TIFF pages and torch sizes are 32-bit.
Edge = int_range(1, INT32_MAX)


def _unless_none(value: Any) -> bool:
    return value is None


class TrainSpec(BaseModel):
    """What a training job stores: its configuration and, for a continuation, where from."""

    model_config = ConfigDict(extra="ignore")

    config: TrainConfig = Field(default_factory=TrainConfig)
    continued_from: str | None = Field(default=None, exclude_if=_unless_none)
    continued_at: int | None = Field(default=None, exclude_if=_unless_none)


class GenerateSpec(BaseModel):
    """What a generation job stores (and, with its kind and generator, what a client asks)."""

    model_config = ConfigDict(allow_inf_nan=False, extra="ignore")

    shape: tuple[Edge, Edge, Edge] = Field(description="Voxels along [z, y, x]; any size.")
    seed: int_range(0, SEED_MAX) | None = Field(
        default=None, description="Omit for a random (recorded) seed."
    )
    periodic: tuple[bool, bool, bool] = Field(
        default=(False, False, False),
        description="Periodic boundaries along [z, y, x] (one boolean: all three).",
    )
    chunk: Edge | tuple[Edge, Edge, Edge] | None = Field(
        default=None, description="Chunk edge in voxels (or [z, y, x]); omit for auto."
    )
    voxel_size: float | None = Field(
        default=None,
        gt=0,
        description="Edge of a voxel in `unit` (a training pixel, after any scale factor): "
        "stored in the TIFF (ImageJ or OME-TIFF metadata) for Fiji/napari, and the report's "
        "lengths and surface densities are then physical. Omit for voxel units.",
    )
    unit: LengthUnit = Field(default="um", description="Unit of voxel_size.")
    compression: Literal["zlib", "lzw"] | None = Field(
        default=None,
        description="Lossless TIFF compression (format `tiff` only): label volumes shrink "
        "many-fold on disk and in transfer; readers decompress page by page. The file is "
        "then OME-TIFF (Fiji opens it with Bio-Formats). Omit for an uncompressed ImageJ TIFF.",
    )
    format: VolumeFormat = Field(
        default="tiff",
        description="`tiff`: one TIFF stack. `ome-zarr`: a chunked, multiscale OME-Zarr "
        "store (zarr v3, NGFF 0.5; chunks compressed), which viewers stream file by file "
        "from /v1/volumes/{id}/zarr/ or a share link, or download as one zip.",
    )

    @model_validator(mode="after")
    def _compression_is_for_tiff(self) -> GenerateSpec:
        if self.format != "tiff" and self.compression is not None:
            raise ValueError(
                f"compression {self.compression!r} applies to TIFF only; an {self.format} "
                "store compresses its chunks itself: omit compression"
            )
        return self

    @field_validator("periodic", mode="before")
    @classmethod
    def _one_flag_for_all_axes(cls, value: Any) -> Any:
        return (value, value, value) if isinstance(value, bool) else value


@dataclass(frozen=True)
class JobKindInfo:
    """One kind of job: the spec model its rows store, its Celery task and queue."""

    name: str
    spec: type[TrainSpec] | type[GenerateSpec]
    task: str
    queue: str


TRAIN = JobKindInfo("train", TrainSpec, "microforge.train_segment", "train")
GENERATE = JobKindInfo("generate", GenerateSpec, "microforge.generate_volume", "generate")
JOB_KINDS: dict[str, JobKindInfo] = {kind.name: kind for kind in (TRAIN, GENERATE)}
KIND_OF_QUEUE: dict[str, str] = {kind.queue: kind.name for kind in JOB_KINDS.values()}


def stored_spec(spec: TrainSpec | GenerateSpec) -> dict[str, Any]:
    """The JSON a job row stores for ``spec``."""
    return spec.model_dump(mode="json")


def read_spec(job: Any) -> TrainSpec | GenerateSpec:
    """A job row's spec, typed; raises pydantic's ValidationError for a spec that is not
    valid (the worker reports it as ``invalid_config``)."""
    return JOB_KINDS[job.kind].spec.model_validate(job.spec or {})


def job_dataset_id(job: Any) -> str | None:
    """The dataset a training job uses: its column, else (an old row, or one whose dataset
    was deleted, which the foreign key had to let go of) the id its spec recorded."""
    return job.dataset_id or (job.spec or {}).get("dataset_id")


def job_generator_id(job: Any) -> str | None:
    """The generator a generation job uses: its column, else (an old row) its spec's."""
    return job.generator_id or (job.spec or {}).get("generator_id")
