"""One settings object for every process, read from ``MICROFORGE_*`` environment variables.

Why one object: the API, the worker and the CLI must agree on where the database, the
broker and the blobs live; reading them in one place keeps them from drifting apart.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Runtime configuration. Every field can be set as ``MICROFORGE_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="MICROFORGE_", extra="ignore")

    data_dir: Path = Field(
        default=Path("./microforge-data"),
        description="Root for the SQLite file and the local blob store.",
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL; default is a SQLite file in data_dir.",
    )
    redis_url: str | None = Field(
        default=None,
        description="Celery broker/result URL; unset = an embedded Valkey server (local mode).",
    )
    blob_dir: Path | None = Field(
        default=None, description="Local blob store directory; default data_dir/blobs."
    )
    max_upload_bytes: int = Field(
        default=512 * 1024 * 1024, description="Largest accepted upload, in bytes (413 past it)."
    )
    max_image_pixels: int = Field(
        default=2_000_000_000,
        description="Largest accepted image, in pixels/voxels, checked from the header.",
    )
    max_decoded_bytes: int = Field(
        default=384 * 1024 * 1024,
        gt=0,
        description="Largest accepted upload once decoded, in bytes (width x height x channels "
        "x bytes per sample x pages, summed over the files of one upload), checked from the "
        "headers before decoding; 422 image_too_large past it. The API's peak memory while "
        "it ingests an upload is at most about 3x this plus its idle ~130 MB (see "
        "docs/benchmarks.md).",
    )
    max_generate_voxels: int = Field(
        default=20_000_000_000, description="Largest volume a generate job may ask for."
    )
    train_segment_seconds: float = Field(
        default=300.0, description="Wall time of one training segment before it re-enqueues."
    )
    lease_seconds: float = Field(
        default=900.0, description="How long a worker's lease on a job lasts without renewal."
    )
    visibility_timeout_seconds: int = Field(
        default=3600, description="Redis visibility timeout (must exceed a segment's length)."
    )
    redispatch_after_seconds: float = Field(
        default=600.0,
        ge=0,
        description=(
            "A worker re-sends the task message of an active job that nobody holds once its "
            "last message is this old (a lost message never strands a job); 0 = only when a "
            "worker starts."
        ),
    )
    share_secret: str | None = Field(
        default=None,
        description="Secret that signs download links (POST /v1/volumes/{id}/share); unset = "
        "one made on first use and kept in the blob directory. Changing it revokes every link.",
    )
    device: str = Field(default="auto", description="Worker device: auto, cpu or cuda[:N].")
    report_tortuosity: Literal["auto", "always", "never"] = Field(
        default="auto",
        description="Whether a generated volume's quality report solves the tortuosity of "
        "each phase: auto = on a CUDA worker (seconds), not on a CPU one (minutes per phase; "
        "`microforge stats` computes it on demand).",
    )
    health_timeout_seconds: float = Field(
        default=1.0, description="How long GET /v1/health waits for the broker and workers."
    )

    api_threads: int = Field(
        default=16,
        ge=1,
        description="Threads the API runs blocking work in (sync endpoints, database "
        "calls); the database pool is sized from it.",
    )
    db_pool_size: int | None = Field(
        default=None,
        ge=1,
        description="Database connections one API process keeps (no overflow); default "
        "api_threads + 4. With PostgreSQL, replicas x this must stay under max_connections.",
    )
    db_pool_timeout_seconds: float = Field(
        default=5.0,
        gt=0,
        description="How long a request waits for a database connection before 503 database_busy.",
    )
    api_processes: int | None = Field(
        default=None,
        ge=1,
        le=64,
        description="API processes `microforge up` runs on its one port (each with its own "
        "threads, pool and request limits). Default: 2 on a machine with 2 or more cores, "
        "else 1. One process serves on one core at most.",
    )
    max_concurrent_requests: int = Field(
        default=64,
        ge=1,
        description="Requests one API process works on at once (until their response starts); "
        "more wait in a queue.",
    )
    max_queued_requests: int = Field(
        default=256,
        ge=0,
        description="Requests that may wait for a slot; past it, 503 overloaded at once.",
    )
    queue_timeout_seconds: float = Field(
        default=5.0,
        gt=0,
        description="Longest wait in that queue before 503 overloaded (with Retry-After).",
    )
    max_connections: int = Field(
        default=1000,
        ge=1,
        description="Open connections uvicorn accepts (--limit-concurrency); past it, "
        "uvicorn answers a plain 503. Keep it under the process's open-file limit.",
    )
    auth_cache_seconds: float = Field(
        default=2.0,
        ge=0,
        description="How long an API process trusts a key lookup; a revoked key stops "
        "working within this time. 0 = look up on every request.",
    )
    upload_idle_timeout_seconds: float = Field(
        default=30.0,
        gt=0,
        description="An upload that sends no bytes for this long fails with 408; also the "
        "grace period before upload_min_bytes_per_second applies.",
    )
    upload_min_bytes_per_second: float = Field(
        default=1024.0,
        ge=0,
        description="Slowest average upload rate accepted once the grace period is over "
        "(408 below it); 0 = no minimum.",
    )
    max_uploads_per_key: int = Field(
        default=4,
        ge=0,
        description="Uploads one key may stream at once, over all API processes sharing the "
        "blob store (429 past it); 0 = no limit.",
    )
    max_active_jobs_per_key: int = Field(
        default=20,
        ge=0,
        description="Queued plus running jobs one key may have (429 too_many_active_jobs past "
        "it); 0 = no limit.",
    )

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'microforge.sqlite3').resolve()}"

    @property
    def resolved_db_pool_size(self) -> int:
        return self.db_pool_size or self.api_threads + 4

    @property
    def resolved_api_processes(self) -> int:
        return self.api_processes or min(2, os.cpu_count() or 1)

    @property
    def resolved_blob_dir(self) -> Path:
        return (self.blob_dir or self.data_dir / "blobs").resolve()


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings; tests clear the cache after changing the environment."""
    return Settings()
