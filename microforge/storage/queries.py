"""Owner-scoped queries: the only way the API reads user rows.

Why every helper takes ``owner_id``: a forgotten filter would show one user another's
data. Rows of another owner are simply not found, which the API turns into a 404 (a 403
would confirm that the id exists).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from microforge.storage.tables import Dataset, Generator, Job, Volume

OwnedRow = TypeVar("OwnedRow", Dataset, Job, Generator, Volume)
ACTIVE_JOB_STATES = ("queued", "running")
FINISHED_JOB_STATES = ("succeeded", "failed", "cancelled")


class InvalidCursorError(ValueError):
    """A pagination cursor that this server did not make (or made for another list)."""


def as_utc(moment: datetime) -> datetime:
    """SQLite returns naive datetimes; every stored time is UTC, so say so."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def encode_cursor(row: Any) -> str:
    """An opaque cursor naming the last row of a page by (created_at, id)."""
    payload = json.dumps([as_utc(row.created_at).isoformat(), row.id]).encode()
    return base64.urlsafe_b64encode(payload).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        created, row_id = json.loads(base64.urlsafe_b64decode(padded.encode()))
        return as_utc(datetime.fromisoformat(created)), str(row_id)
    except (ValueError, TypeError, binascii.Error) as exc:
        raise InvalidCursorError(
            "the cursor is not one this server made: pass next_cursor from the previous page "
            "unchanged, or leave it out to start from the newest"
        ) from exc


def get_owned(
    session: Session, model: type[OwnedRow], owner_id: str, row_id: str
) -> OwnedRow | None:
    """The row with ``row_id`` if ``owner_id`` owns it, else None."""
    return session.scalar(select(model).where(model.id == row_id, model.owner_id == owner_id))


def list_owned(
    session: Session,
    model: type[OwnedRow],
    owner_id: str,
    *,
    limit: int,
    cursor: str | None = None,
    filters: Sequence[Any] = (),
) -> tuple[list[OwnedRow], str | None]:
    """One page, newest first, and the cursor of the next page (None on the last page).

    Keyset pagination over (created_at, id): stable while rows are added, and cheap at any
    depth thanks to the (owner_id, created_at, id) indexes.
    """
    query = select(model).where(model.owner_id == owner_id, *filters)
    if cursor:
        created, row_id = decode_cursor(cursor)
        query = query.where(
            or_(model.created_at < created, and_(model.created_at == created, model.id < row_id))
        )
    query = query.order_by(model.created_at.desc(), model.id.desc()).limit(limit + 1)
    rows = list(session.scalars(query))
    if len(rows) <= limit:
        return rows, None
    rows = rows[:limit]
    return rows, encode_cursor(rows[-1])


def find_job_by_idempotency_key(session: Session, owner_id: str, key: str) -> Job | None:
    return session.scalar(select(Job).where(Job.owner_id == owner_id, Job.idempotency_key == key))


def count_active_jobs_using_dataset(session: Session, owner_id: str, dataset_id: str) -> int:
    return _count_active_jobs(session, owner_id, Job.dataset_id == dataset_id)


def count_active_jobs_using_generator(session: Session, owner_id: str, generator_id: str) -> int:
    """Queued or running generate jobs that will load this generator's file."""
    return _count_active_jobs(session, owner_id, Job.generator_id == generator_id)


def _count_active_jobs(session: Session, owner_id: str, uses: Any) -> int:
    return session.scalar(
        select(func.count())
        .select_from(Job)
        .where(Job.owner_id == owner_id, uses, Job.state.in_(ACTIVE_JOB_STATES))
    )


def detach_finished_jobs_from_dataset(session: Session, owner_id: str, dataset_id: str) -> None:
    """The foreign key must let go of a deleted dataset; the finished jobs that used it
    keep its id in their spec instead, so a job still says what it was trained on
    (``microforge.jobs.job_dataset_id`` reads either place)."""
    jobs = session.scalars(
        select(Job).where(Job.owner_id == owner_id, Job.dataset_id == dataset_id)
    ).all()
    for job in jobs:
        job.spec = {"dataset_id": dataset_id, **(job.spec or {})}
        job.dataset_id = None
    session.flush()


def training_lineage(
    session: Session, owner_id: str, job: Job, max_depth: int = 1000
) -> list[tuple[str, int | None]]:
    """The jobs whose history makes up ``job``'s training, oldest first, each with the last
    iteration of its part (None: all of it, for ``job`` itself).

    A continued job names its parent and the iteration it started from in its spec; the
    parent's points after that (recorded past its last checkpoint) are not part of this
    run. A deleted ancestor ends the walk: the history then starts after it.
    """
    parts: list[tuple[str, int | None]] = [(job.id, None)]
    seen = {job.id}
    current = job
    while len(parts) <= max_depth:
        spec = current.spec or {}
        parent_id, started_at = spec.get("continued_from"), spec.get("continued_at")
        if not parent_id or parent_id in seen or started_at is None:
            break
        parent = get_owned(session, Job, owner_id, parent_id)
        if parent is None:
            break
        parts.append((parent.id, int(started_at)))
        seen.add(parent.id)
        current = parent
    return parts[::-1]


def stored_sizes(session: Session, owner_id: str) -> dict[str, tuple[int, int]]:
    """(count, bytes) of the owner's datasets, generators and volumes, from their rows."""
    result = {}
    for name, model in (("datasets", Dataset), ("generators", Generator), ("volumes", Volume)):
        count, size = session.execute(
            select(func.count(), func.coalesce(func.sum(model.size_bytes), 0)).where(
                model.owner_id == owner_id
            )
        ).one()
        result[name] = (int(count), int(size))
    return result


def checkpoint_keys(session: Session, owner_id: str) -> list[str]:
    """Blob keys of the checkpoints the owner's jobs keep (for a continuation, or running)."""
    return list(
        session.scalars(
            select(Job.checkpoint_blob).where(
                Job.owner_id == owner_id, Job.checkpoint_blob.is_not(None)
            )
        )
    )
