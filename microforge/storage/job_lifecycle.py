"""The worker's side of a job's life: leases, fencing tokens and conditional writes.

Why: Celery delivers at least once, and with Redis a message that outlives the visibility
timeout comes back, possibly to a second worker while the first still runs. Every write a
worker makes to a job therefore goes through this module and is conditional on the
*fencing token* it got when it claimed the job: a claim bumps the token, so a duplicated
or late task (one whose lease was taken over) finds its writes rejected (``LeaseLost``)
instead of overwriting a newer worker's progress, checkpoint or result.

Clocks: lease expiry uses the worker's UTC clock; run workers with NTP like any cluster.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from microforge.storage.tables import Base, Job, JobMetric

ACTIVE_STATES = ("queued", "running")
TERMINAL_STATES = ("succeeded", "failed", "cancelled")

SessionFactory = Callable[[], Session] | sessionmaker[Session]


class LeaseLost(RuntimeError):
    """This worker no longer holds the job: another claim bumped the token, or it ended.

    The right reaction is to stop quietly and write nothing more; the newer holder owns it.
    """


@dataclass(frozen=True)
class Lease:
    """Proof of ownership of one job, valid while ``token`` is the job's fencing token."""

    job_id: str
    owner: str
    token: int


class ClaimStatus(enum.Enum):
    CLAIMED = "claimed"
    MISSING = "missing"  # no such job
    FINISHED = "finished"  # succeeded, failed or cancelled: nothing to do
    HELD = "held"  # another worker holds a live lease
    STALE = "stale"  # the message was sent for an earlier token: a newer one carries on


@dataclass(frozen=True)
class Claim:
    status: ClaimStatus
    lease: Lease | None = None
    #: The job's fencing token after the attempt.
    token: int = 0
    #: Seconds until the current holder's lease runs out (HELD only).
    lease_remaining_seconds: float = 0.0


def utcnow() -> datetime:
    return datetime.now(UTC)


def _aware(moment: datetime | None) -> datetime | None:
    """SQLite hands datetimes back naive; they were written in UTC."""
    if moment is not None and moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment


def _unheld(now: datetime):  # noqa: ANN202 - a SQLAlchemy clause
    return or_(Job.lease_owner.is_(None), Job.lease_expires_at <= now)


def _unchanged_and_unheld(job_id: str, token: int, now: datetime):  # noqa: ANN202 - a clause
    """The job is still active, at ``token``, and nobody holds it: the condition of every
    write that acts on what an earlier read saw (a race lost leaves zero rows changed)."""
    return and_(
        Job.id == job_id, Job.fencing_token == token, Job.state.in_(ACTIVE_STATES), _unheld(now)
    )


def _holds(lease: Lease):  # noqa: ANN202 - a SQLAlchemy clause
    return and_(
        Job.id == lease.job_id,
        Job.fencing_token == lease.token,
        Job.lease_owner == lease.owner,
        Job.state == "running",
    )


def message_is_current(job: Job, message_token: int, now: datetime) -> bool:
    """Whether a task message sent for ``message_token`` may still claim ``job``.

    Every message carries the job's fencing token at the moment it was sent: 0 from the
    API, the segment's own token at a hand-off (after ``release_lease``), the current
    token from a sweep. So a message is current when the token has not moved since, and
    a duplicate (the API's message delivered twice, a sweep racing a hand-off) finds the
    token moved on and is dropped instead of starting a second chain of segments. The one
    exception is the message a holder claimed with: if that holder died (its lease ran
    out without being released), the broker delivers it again, one token behind, and it
    must be allowed to take the job over.
    """
    token = job.fencing_token
    if message_token == token:
        return True
    expires = _aware(job.lease_expires_at)
    holder_died = job.lease_owner is not None and expires is not None and expires <= now
    return holder_died and message_token == token - 1


def claim_job(
    session_factory: SessionFactory,
    job_id: str,
    owner: str,
    lease_seconds: float,
    message_token: int | None = None,
) -> Claim:
    """Take the job's lease if it is free or expired, the job is still active and the
    message that asks is current (see ``message_is_current``; None skips that check, for
    messages sent before tokens travelled with them).

    A message that finds the lease live is a duplicate: the live holder sends the next
    message itself when its segment ends, and if it dies its own unacknowledged message
    comes back after the visibility timeout, by which time its lease has expired (the
    worker checks that ``lease_seconds + train_segment_seconds`` < visibility timeout).
    So duplicates collapse to one chain of segments and none is lost.
    """
    now = utcnow()
    with session_factory() as session:
        job = session.get(Job, job_id)
        if job is None:
            return Claim(ClaimStatus.MISSING)
        token = job.fencing_token
        if job.state in TERMINAL_STATES:
            return Claim(ClaimStatus.FINISHED, token=token)
        expires = _aware(job.lease_expires_at)
        if job.lease_owner is not None and expires is not None and expires > now:
            remaining = (expires - now).total_seconds()
            return Claim(ClaimStatus.HELD, token=token, lease_remaining_seconds=remaining)
        if message_token is not None and not message_is_current(job, message_token, now):
            return Claim(ClaimStatus.STALE, token=token)
        result = session.execute(
            update(Job)
            .where(_unchanged_and_unheld(job_id, token, now))
            .values(
                fencing_token=token + 1,
                lease_owner=owner,
                lease_expires_at=now + timedelta(seconds=lease_seconds),
                state="running",
                started_at=job.started_at or now,
                attempts=Job.attempts + 1,
                updated_at=now,
            )
            .execution_options(synchronize_session=False)
        )
        session.commit()
        if result.rowcount != 1:
            # Someone else won the race between our read and our write.
            return Claim(ClaimStatus.HELD, token=token + 1, lease_remaining_seconds=lease_seconds)
        return Claim(ClaimStatus.CLAIMED, Lease(job_id, owner, token + 1), token=token + 1)


def _conditional_update(
    session_factory: SessionFactory,
    lease: Lease,
    values: dict[str, Any],
    add_rows: Sequence[Base] = (),
) -> None:
    """Apply ``values`` (and insert ``add_rows``) in one transaction, only under the lease."""
    with session_factory() as session:
        result = session.execute(
            update(Job)
            .where(_holds(lease))
            .values(**values, updated_at=utcnow())
            .execution_options(synchronize_session=False)
        )
        if result.rowcount == 1:
            session.add_all(list(add_rows))
            session.commit()
        else:
            session.rollback()
    if result.rowcount != 1:
        raise LeaseLost(f"job {lease.job_id}: lease with token {lease.token} is no longer held")


def renew_lease(session_factory: SessionFactory, lease: Lease, lease_seconds: float) -> None:
    """Push the lease's expiry forward; raises ``LeaseLost`` if it was taken over."""
    _conditional_update(
        session_factory, lease, {"lease_expires_at": utcnow() + timedelta(seconds=lease_seconds)}
    )


def record_progress(
    session_factory: SessionFactory,
    lease: Lease,
    progress: dict[str, Any],
    *,
    metrics: dict[str, Any] | None = None,
    iteration: int | None = None,
    lease_seconds: float | None = None,
) -> None:
    """Store progress (and the latest metrics, plus a history row) and renew the lease.

    Progress never moves backwards: after a takeover the new holder resumes from the last
    checkpoint, which may be behind what the dead holder reported; until it catches up the
    job keeps showing the furthest point reached. History rows are idempotent per
    iteration (the first writer wins; a resumed run recomputes the same values anyway).
    """
    now = utcnow()
    with session_factory() as session:
        job = session.execute(select(Job).where(_holds(lease))).scalar_one_or_none()
        if job is None:
            raise LeaseLost(f"job {lease.job_id}: lease with token {lease.token} is no longer held")
        values: dict[str, Any] = {"updated_at": now}
        previous = job.progress or {}
        new_position = progress.get("iteration", progress.get("chunks_done", 0)) or 0
        old_position = previous.get("iteration", previous.get("chunks_done", 0)) or 0
        if new_position >= old_position:
            values["progress"] = progress
        if metrics is not None:
            values["metrics"] = metrics
        if lease_seconds is not None:
            values["lease_expires_at"] = now + timedelta(seconds=lease_seconds)
        result = session.execute(
            update(Job)
            .where(_holds(lease))
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        if result.rowcount != 1:
            session.rollback()
            raise LeaseLost(f"job {lease.job_id}: lease with token {lease.token} is no longer held")
        if metrics is not None and iteration is not None:
            exists = session.execute(
                select(JobMetric.id).where(
                    JobMetric.job_id == lease.job_id, JobMetric.iteration == iteration
                )
            ).first()
            if exists is None:
                session.add(JobMetric(job_id=lease.job_id, iteration=iteration, data=metrics))
        try:
            session.commit()
        except IntegrityError:
            # A concurrent writer added the same iteration's row; the progress is retried.
            session.rollback()
            session.execute(
                update(Job)
                .where(_holds(lease))
                .values(**values)
                .execution_options(synchronize_session=False)
            )
            session.commit()


def set_preview(session_factory: SessionFactory, lease: Lease, blob_key: str) -> str | None:
    """Point the job at a new preview image; returns the previous key for the caller to delete."""
    with session_factory() as session:
        previous = session.execute(select(Job.preview_blob).where(_holds(lease))).scalar()
    _conditional_update(session_factory, lease, {"preview_blob": blob_key})
    return previous if previous != blob_key else None


def record_checkpoint(
    session_factory: SessionFactory, lease: Lease, iteration: int, blob_key: str
) -> str | None:
    """Point the job at a newer checkpoint; returns the replaced key (to delete) or None.

    Only moves forward: a checkpoint at or behind the recorded iteration is refused with
    ``ValueError`` so the caller deletes its own blob instead of the newer one.
    """
    with session_factory() as session:
        row = session.execute(
            select(Job.checkpoint_iteration, Job.checkpoint_blob).where(_holds(lease))
        ).first()
        if row is None:
            raise LeaseLost(f"job {lease.job_id}: lease with token {lease.token} is no longer held")
        old_iteration, old_blob = row
        if iteration <= (old_iteration or 0) and old_blob is not None:
            raise ValueError(
                f"checkpoint at iteration {iteration} is not newer than {old_iteration}"
            )
        result = session.execute(
            update(Job)
            .where(_holds(lease), Job.checkpoint_iteration == old_iteration)
            .values(checkpoint_iteration=iteration, checkpoint_blob=blob_key, updated_at=utcnow())
            .execution_options(synchronize_session=False)
        )
        session.commit()
    if result.rowcount != 1:
        raise LeaseLost(f"job {lease.job_id}: lease with token {lease.token} is no longer held")
    return old_blob if old_blob != blob_key else None


def finish_job(
    session_factory: SessionFactory,
    lease: Lease,
    state: str,
    *,
    error_code: str | None = None,
    error_message: str | None = None,
    result_generator_id: str | None = None,
    result_best_generator_id: str | None = None,
    result_volume_id: str | None = None,
    progress: dict[str, Any] | None = None,
    add_rows: Sequence[Base] = (),
) -> bool:
    """Move the job to a terminal state and drop the lease; True if this call did it.

    ``add_rows`` (the Generator or Volume row the job made) are inserted in the same
    transaction, so a fenced-off worker leaves no orphan rows behind. Idempotent:
    finishing again with the same token and state returns False instead of failing.
    """
    if state not in TERMINAL_STATES:
        raise ValueError(f"{state!r} is not a terminal state: use one of {TERMINAL_STATES}")
    now = utcnow()
    values: dict[str, Any] = {
        "state": state,
        "finished_at": now,
        "lease_owner": None,
        "lease_expires_at": None,
        "error_code": error_code,
        "error_message": error_message,
    }
    if result_generator_id is not None:
        values["result_generator_id"] = result_generator_id
    if result_best_generator_id is not None:
        values["result_best_generator_id"] = result_best_generator_id
    if result_volume_id is not None:
        values["result_volume_id"] = result_volume_id
    if progress is not None:
        values["progress"] = progress
    try:
        _conditional_update(session_factory, lease, values, add_rows)
        return True
    except LeaseLost:
        with session_factory() as session:
            row = session.execute(
                select(Job.state, Job.fencing_token).where(Job.id == lease.job_id)
            ).first()
        if row is not None and row[0] == state and row[1] == lease.token:
            return False
        raise


def release_lease(session_factory: SessionFactory, lease: Lease) -> int:
    """Give the lease back (the job stays running) so the next segment can claim it at once.

    Returns the token the next segment's message must carry. The release also stamps
    ``dispatched_at``, because the caller sends that message right away.
    """
    _conditional_update(
        session_factory,
        lease,
        {"lease_owner": None, "lease_expires_at": None, "dispatched_at": utcnow()},
    )
    return lease.token


def is_cancel_requested(session_factory: SessionFactory, job_id: str) -> bool:
    with session_factory() as session:
        flag = session.execute(select(Job.cancel_requested).where(Job.id == job_id)).scalar()
    return bool(flag)


def load_job(session_factory: SessionFactory, job_id: str) -> Job | None:
    """A detached snapshot of the job row (sessions are made with expire_on_commit=False)."""
    with session_factory() as session:
        job = session.get(Job, job_id)
        if job is not None:
            session.expunge(job)
        return job


def take_quiet_jobs(
    session_factory: SessionFactory, kind: str, quiet_seconds: float
) -> list[tuple[str, int]]:
    """Active, unheld jobs of ``kind`` whose last message is older than ``quiet_seconds``.

    Each one returned has had ``dispatched_at`` moved to now by a conditional write, so
    when several workers sweep at once only one of them re-sends a given job's message,
    and the next re-send waits another ``quiet_seconds``. A job still waiting its turn in
    a long queue gets an extra message now and then; that copy is dropped as stale once
    either of them has claimed the job.
    """
    now = utcnow()
    cutoff = now - timedelta(seconds=quiet_seconds)
    last_sent = func.coalesce(Job.dispatched_at, Job.updated_at)
    taken: list[tuple[str, int]] = []
    with session_factory() as session:
        rows = session.execute(
            select(Job.id, Job.fencing_token).where(
                Job.kind == kind, Job.state.in_(ACTIVE_STATES), _unheld(now), last_sent <= cutoff
            )
        ).all()
        for job_id, token in rows:
            result = session.execute(
                update(Job)
                .where(_unchanged_and_unheld(job_id, token, now), last_sent <= cutoff)
                .values(dispatched_at=now)
                .execution_options(synchronize_session=False)
            )
            if result.rowcount == 1:
                taken.append((job_id, token))
        session.commit()
    return taken


def release_leases_of_dead_owners(
    session_factory: SessionFactory, owner_is_alive: Callable[[str], bool | None]
) -> list[str]:
    """Free the leases of active jobs whose holder is known to be dead; returns their ids.

    Why: a worker killed mid-segment holds its job's lease until it expires (minutes:
    ``lease_seconds``), so the worker restarted in its place would sit idle that long.
    ``owner_is_alive`` says False only for a holder it can check and knows to be gone (see
    ``scratch_owner.tag_is_alive``); None (another machine) leaves the lease to expire.
    Each release is conditional on the same holder and token, so a lease taken over
    meanwhile is untouched; the fencing token still guards every later write.
    """
    now = utcnow()
    released: list[str] = []
    with session_factory() as session:
        rows = session.execute(
            select(Job.id, Job.lease_owner, Job.fencing_token).where(
                Job.state.in_(ACTIVE_STATES),
                Job.lease_owner.is_not(None),
                Job.lease_expires_at > now,
            )
        ).all()
        for job_id, owner, token in rows:
            if owner_is_alive(owner) is not False:
                continue
            result = session.execute(
                update(Job)
                .where(Job.id == job_id, Job.lease_owner == owner, Job.fencing_token == token)
                .values(lease_owner=None, lease_expires_at=None)
                .execution_options(synchronize_session=False)
            )
            if result.rowcount == 1:
                released.append(job_id)
        session.commit()
    return released
