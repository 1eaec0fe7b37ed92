"""Leases and fencing tokens on a real database (SQLite; PostgreSQL when configured)."""

from __future__ import annotations

import os
import time

import pytest
from sqlalchemy import func, select

from microforge.storage.job_lifecycle import (
    ClaimStatus,
    LeaseLost,
    claim_job,
    finish_job,
    is_cancel_requested,
    load_job,
    record_checkpoint,
    record_progress,
    release_lease,
    renew_lease,
    set_preview,
    take_quiet_jobs,
)
from microforge.storage.tables import ApiKey, Job, JobMetric


def _new_job(session_factory) -> str:  # noqa: ANN001
    with session_factory() as session:
        key = ApiKey(name="t", key_hash=os.urandom(32).hex(), prefix="mf_x")
        session.add(key)
        session.flush()
        job = Job(owner_id=key.id, kind="train", spec={"config": {}})
        session.add(job)
        session.commit()
        return job.id


@pytest.fixture()
def job_id(session_factory) -> str:
    return _new_job(session_factory)


def test_second_claim_gets_nothing_while_the_lease_is_live(session_factory, job_id):
    first = claim_job(session_factory, job_id, "worker-a", lease_seconds=60)
    second = claim_job(session_factory, job_id, "worker-b", lease_seconds=60)

    assert first.status is ClaimStatus.CLAIMED
    assert first.lease is not None and first.lease.token == 1
    assert second.status is ClaimStatus.HELD and second.lease is None
    assert 0 < second.lease_remaining_seconds <= 60
    job = load_job(session_factory, job_id)
    assert (job.state, job.attempts, job.lease_owner) == ("running", 1, "worker-a")
    assert job.started_at is not None


def test_expired_lease_is_taken_over_and_the_old_token_is_fenced_off(session_factory, job_id):
    old = claim_job(session_factory, job_id, "worker-a", lease_seconds=0.2).lease
    record_checkpoint(session_factory, old, 10, "checkpoints/a10.pt")
    time.sleep(0.3)
    new = claim_job(session_factory, job_id, "worker-b", lease_seconds=60).lease

    assert new is not None and new.token == old.token + 1
    with pytest.raises(LeaseLost):
        record_progress(session_factory, old, {"iteration": 99, "total": 100})
    with pytest.raises(LeaseLost):
        record_checkpoint(session_factory, old, 20, "checkpoints/a20.pt")
    with pytest.raises(LeaseLost):
        renew_lease(session_factory, old, 60)
    with pytest.raises(LeaseLost):
        finish_job(session_factory, old, "succeeded", result_generator_id="gen_x")
    with pytest.raises(LeaseLost):
        release_lease(session_factory, old)
    job = load_job(session_factory, job_id)
    assert job.state == "running" and job.lease_owner == "worker-b"
    assert (job.checkpoint_iteration, job.checkpoint_blob) == (10, "checkpoints/a10.pt")
    assert job.attempts == 2 and job.result_generator_id is None


def test_released_lease_is_claimed_at_once_by_the_next_segment(session_factory, job_id):
    first = claim_job(session_factory, job_id, "worker-a", lease_seconds=60).lease
    release_lease(session_factory, first)
    nxt = claim_job(session_factory, job_id, "worker-a", lease_seconds=60)
    assert nxt.status is ClaimStatus.CLAIMED and nxt.lease.token == first.token + 1
    assert take_quiet_jobs(session_factory, "train", quiet_seconds=0) == []
    assert release_lease(session_factory, nxt.lease) == nxt.lease.token
    assert take_quiet_jobs(session_factory, "train", quiet_seconds=0) == [(job_id, nxt.lease.token)]


def test_a_duplicated_message_is_stale_once_the_job_moved_on(session_factory, job_id):
    """The API's message delivered twice must not start a second chain of segments."""
    first = claim_job(session_factory, job_id, "worker-a", 60, message_token=0)
    assert first.status is ClaimStatus.CLAIMED
    assert claim_job(session_factory, job_id, "worker-b", 60, message_token=0).status is (
        ClaimStatus.HELD
    )
    handed_on = release_lease(session_factory, first.lease)
    duplicate = claim_job(session_factory, job_id, "worker-b", 60, message_token=0)
    assert duplicate.status is ClaimStatus.STALE and duplicate.lease is None
    nxt = claim_job(session_factory, job_id, "worker-a", 60, message_token=handed_on)
    assert nxt.status is ClaimStatus.CLAIMED and nxt.lease.token == handed_on + 1
    release_lease(session_factory, nxt.lease)
    # The hand-off message of the earlier segment, delivered late, is stale too.
    late = claim_job(session_factory, job_id, "worker-b", 60, message_token=handed_on)
    assert late.status is ClaimStatus.STALE
    assert load_job(session_factory, job_id).attempts == 2


def test_a_dead_holders_redelivered_message_takes_the_job_over(session_factory, job_id):
    dead = claim_job(session_factory, job_id, "worker-a", 0.2, message_token=0).lease
    time.sleep(0.3)  # worker-a died: its lease runs out without being released
    again = claim_job(session_factory, job_id, "worker-b", 60, message_token=0)
    assert again.status is ClaimStatus.CLAIMED and again.lease.token == dead.token + 1
    # A second copy of that message finds the new holder's lease live, then stale.
    assert claim_job(session_factory, job_id, "worker-c", 60, message_token=0).status is (
        ClaimStatus.HELD
    )
    release_lease(session_factory, again.lease)
    assert claim_job(session_factory, job_id, "worker-c", 60, message_token=0).status is (
        ClaimStatus.STALE
    )


def test_a_message_without_a_token_claims_as_before(session_factory, job_id):
    lease = claim_job(session_factory, job_id, "worker-a", 60).lease
    release_lease(session_factory, lease)
    assert claim_job(session_factory, job_id, "worker-a", 60).status is ClaimStatus.CLAIMED


def test_quiet_unheld_jobs_are_taken_for_redispatch_once(session_factory, job_id):
    assert take_quiet_jobs(session_factory, "train", quiet_seconds=60) == []  # just sent
    time.sleep(0.2)
    assert take_quiet_jobs(session_factory, "generate", quiet_seconds=0.1) == []
    assert take_quiet_jobs(session_factory, "train", quiet_seconds=0.1) == [(job_id, 0)]
    # Another worker sweeping right after finds nothing: the first one re-sent it.
    assert take_quiet_jobs(session_factory, "train", quiet_seconds=0.1) == []
    lease = claim_job(session_factory, job_id, "worker-a", 60, message_token=0).lease
    time.sleep(0.2)
    assert take_quiet_jobs(session_factory, "train", quiet_seconds=0.1) == []  # held
    finish_job(session_factory, lease, "succeeded")
    assert take_quiet_jobs(session_factory, "train", quiet_seconds=0) == []  # finished


def test_a_job_whose_holder_died_is_taken_for_redispatch_with_its_token(session_factory, job_id):
    lease = claim_job(session_factory, job_id, "worker-a", 0.2, message_token=0).lease
    time.sleep(0.3)
    assert take_quiet_jobs(session_factory, "train", quiet_seconds=0.1) == [(job_id, lease.token)]
    taken = claim_job(session_factory, job_id, "worker-b", 60, message_token=lease.token)
    assert taken.status is ClaimStatus.CLAIMED


def test_progress_is_monotone_and_metric_history_idempotent(session_factory, job_id):
    lease = claim_job(session_factory, job_id, "w", lease_seconds=60).lease
    record_progress(
        session_factory, lease, {"iteration": 20, "total": 40}, metrics={"g": 1.0}, iteration=20
    )
    record_progress(
        session_factory, lease, {"iteration": 10, "total": 40}, metrics={"g": 2.0}, iteration=10
    )
    record_progress(
        session_factory, lease, {"iteration": 20, "total": 40}, metrics={"g": 3.0}, iteration=20
    )
    job = load_job(session_factory, job_id)
    assert job.progress == {"iteration": 20, "total": 40}
    with session_factory() as session:
        rows = session.execute(
            select(JobMetric.iteration, JobMetric.data)
            .where(JobMetric.job_id == job_id)
            .order_by(JobMetric.iteration)
        ).all()
    assert [(r[0], r[1]) for r in rows] == [(10, {"g": 2.0}), (20, {"g": 1.0})]


def test_checkpoints_only_move_forward(session_factory, job_id):
    lease = claim_job(session_factory, job_id, "w", lease_seconds=60).lease
    assert record_checkpoint(session_factory, lease, 10, "checkpoints/10.pt") is None
    assert record_checkpoint(session_factory, lease, 20, "checkpoints/20.pt") == "checkpoints/10.pt"
    with pytest.raises(ValueError, match="not newer"):
        record_checkpoint(session_factory, lease, 15, "checkpoints/15.pt")
    assert load_job(session_factory, job_id).checkpoint_blob == "checkpoints/20.pt"


def test_preview_returns_the_replaced_key(session_factory, job_id):
    lease = claim_job(session_factory, job_id, "w", lease_seconds=60).lease
    assert set_preview(session_factory, lease, "previews/1.png") is None
    assert set_preview(session_factory, lease, "previews/2.png") == "previews/1.png"


def test_finish_is_idempotent_and_final(session_factory, job_id):
    lease = claim_job(session_factory, job_id, "w", lease_seconds=60).lease
    assert finish_job(session_factory, lease, "succeeded", result_generator_id="gen_1") is True
    assert finish_job(session_factory, lease, "succeeded", result_generator_id="gen_1") is False
    with pytest.raises(LeaseLost):
        finish_job(session_factory, lease, "failed", error_code="x", error_message="y")
    job = load_job(session_factory, job_id)
    assert (job.state, job.result_generator_id, job.lease_owner) == ("succeeded", "gen_1", None)
    assert job.finished_at is not None
    again = claim_job(session_factory, job_id, "w2", lease_seconds=60)
    assert again.status is ClaimStatus.FINISHED
    with pytest.raises(ValueError, match="terminal"):
        finish_job(session_factory, lease, "running")


def test_cancel_flag_and_missing_job(session_factory, job_id):
    assert is_cancel_requested(session_factory, job_id) is False
    with session_factory() as session:
        session.get(Job, job_id).cancel_requested = True
        session.commit()
    assert is_cancel_requested(session_factory, job_id) is True
    assert claim_job(session_factory, "job_missing", "w", 60).status is ClaimStatus.MISSING
    with session_factory() as session:
        assert session.scalar(select(func.count()).select_from(Job)) == 1


def test_leases_of_dead_holders_on_this_machine_are_released(session_factory) -> None:
    import subprocess
    import sys

    from microforge.storage.job_lifecycle import release_leases_of_dead_owners
    from microforge.storage.scratch_owner import process_tag, tag_is_alive

    dead_tag = subprocess.run(
        [
            sys.executable,
            "-c",
            "from microforge.storage.scratch_owner import process_tag;print(process_tag())",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    owners = {
        "dead": f"host:1:{dead_tag}",
        "alive": f"host:2:{process_tag()}",
        "elsewhere": "host:3:0badf00d-1-1",  # another pid space: cannot be checked here
        "untagged": "host:4",  # a worker from before tags
    }
    jobs = {}
    for name, owner in owners.items():
        job_id = _new_job(session_factory)
        lease = claim_job(session_factory, job_id, owner, lease_seconds=600).lease
        jobs[name] = (job_id, lease)
    assert tag_is_alive(owners["dead"]) is False and tag_is_alive(owners["alive"]) is True
    assert tag_is_alive(owners["elsewhere"]) is None and tag_is_alive(owners["untagged"]) is None

    released = release_leases_of_dead_owners(session_factory, tag_is_alive)
    assert released == [jobs["dead"][0]]
    for name, (job_id, _lease) in jobs.items():
        job = load_job(session_factory, job_id)
        assert (job.lease_owner is None) == (name == "dead")
    # The next worker claims it at once, with a new token that fences the dead one off.
    job_id, old = jobs["dead"]
    new = claim_job(session_factory, job_id, "host:5", lease_seconds=600).lease
    assert new is not None and new.token > old.token
