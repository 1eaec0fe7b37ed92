"""SQLAlchemy tables: the job model and what it points at.

Every user-owned row carries ``owner_id``; queries go through owner-scoped helpers so that
another key's rows are invisible (a 404, never a 403 that would leak their existence).
Large things (images, checkpoints, generators, volumes, previews) live in the blob store;
rows hold only blob keys.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id(prefix: str) -> str:
    """Readable, unguessable ids: the prefix tells a user what kind of thing an id names."""
    return f"{prefix}_{uuid.uuid4().hex}"


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("key"))
    name: Mapped[str] = mapped_column(String(200))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class Dataset(Base):
    __tablename__ = "datasets"
    __table_args__ = (Index("ix_datasets_owner_created", "owner_id", "created_at", "id"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("ds"))
    owner_id: Mapped[str] = mapped_column(ForeignKey("api_keys.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    image_type: Mapped[str] = mapped_column(String(16))  # nphase | grayscale | colour
    layout: Mapped[str] = mapped_column(String(16))  # isotropic | anisotropic | volume
    phases: Mapped[list[Any]] = mapped_column(JSON, default=list)  # original label values
    fractions: Mapped[list[Any]] = mapped_column(JSON, default=list)
    shapes: Mapped[list[Any]] = mapped_column(JSON, default=list)
    blob_keys: Mapped[list[Any]] = mapped_column(JSON, default=list)
    preview_blob: Mapped[str | None] = mapped_column(String(300), nullable=True)
    stats: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Job(Base):
    """One unit of user work. Only a worker moves ``state`` forward; only cancel ends it early.

    ``lease_owner``/``lease_expires_at``/``fencing_token`` make redelivered Celery messages
    harmless: a segment may write only while it holds the lease with the current token.
    """

    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("owner_id", "idempotency_key", name="uq_jobs_owner_idempotency"),
        Index("ix_jobs_owner_created", "owner_id", "created_at", "id"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("job"))
    owner_id: Mapped[str] = mapped_column(ForeignKey("api_keys.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # train | generate
    state: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    dataset_id: Mapped[str | None] = mapped_column(ForeignKey("datasets.id"), nullable=True)
    generator_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    progress: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    metrics: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    error_code: Mapped[str | None] = mapped_column(String(64), nullable=True)
    error_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    lease_owner: Mapped[str | None] = mapped_column(String(200), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True
    )
    fencing_token: Mapped[int] = mapped_column(Integer, default=0)
    # When a task message for the current token was last sent; the worker's sweep re-sends
    # one for a job nobody holds once this is old, so a lost message never strands a job.
    dispatched_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True, default=utcnow
    )
    checkpoint_iteration: Mapped[int] = mapped_column(Integer, default=0)
    checkpoint_blob: Mapped[str | None] = mapped_column(String(300), nullable=True)
    preview_blob: Mapped[str | None] = mapped_column(String(300), nullable=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(200), nullable=True)
    # SHA-256 of the creating request, so a reused Idempotency-Key with another body is caught.
    idempotency_fingerprint: Mapped[str | None] = mapped_column(String(64), nullable=True)
    result_generator_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    # The generator of the best fidelity check (None with checks off); may equal the above.
    result_best_generator_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    result_volume_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )


class JobMetric(Base):
    """The training history: one row per recorded point (losses, timing, fidelity)."""

    __tablename__ = "job_metrics"
    __table_args__ = (UniqueConstraint("job_id", "iteration", name="uq_job_metrics_iteration"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    iteration: Mapped[int] = mapped_column(Integer)
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Generator(Base):
    __tablename__ = "generators"
    __table_args__ = (Index("ix_generators_owner_created", "owner_id", "created_at", "id"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("gen"))
    owner_id: Mapped[str] = mapped_column(ForeignKey("api_keys.id"), index=True)
    source_job_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    blob_key: Mapped[str] = mapped_column(String(300))
    image_type: Mapped[str] = mapped_column(String(16))
    phases: Mapped[list[Any]] = mapped_column(JSON, default=list)
    config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Volume(Base):
    __tablename__ = "volumes"
    __table_args__ = (Index("ix_volumes_owner_created", "owner_id", "created_at", "id"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("vol"))
    owner_id: Mapped[str] = mapped_column(ForeignKey("api_keys.id"), index=True)
    job_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    generator_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    blob_key: Mapped[str] = mapped_column(String(300))
    #: "tiff" (blob_key is one file) or "ome-zarr" (blob_key is a directory store).
    format: Mapped[str] = mapped_column(String(16), default="tiff", server_default="tiff")
    shape: Mapped[list[Any]] = mapped_column(JSON, default=list)
    dtype: Mapped[str] = mapped_column(String(16))
    image_type: Mapped[str] = mapped_column(String(16))
    phases: Mapped[list[Any]] = mapped_column(JSON, default=list)
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    etag: Mapped[str] = mapped_column(String(80))
    seed: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    report: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    report_blob: Mapped[str | None] = mapped_column(String(300), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
