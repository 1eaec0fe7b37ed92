"""Continuing an ended training job, and deleting jobs, against a real broker and database."""

from __future__ import annotations

import json

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from microforge.api.app import create_app
from microforge.storage.tables import Dataset, Job, JobMetric
from tests.test_api_datasets import png_bytes, stored_files, two_phase


def ended_training_job(client, auth, api_app, dataset_id: str, *, checkpoint_at: int) -> str:
    """A training job as a worker leaves it: succeeded, with a checkpoint and a metric row."""
    job_id = client.post(
        "/v1/jobs",
        headers=auth,
        json={"kind": "train", "dataset_id": dataset_id, "config": {"iterations": checkpoint_at}},
    ).json()["id"]
    state = api_app.state.service
    key = state.blobs.new_key("checkpoints", ".pt")
    state.blobs.put_bytes(key, b"checkpoint bytes")
    with state.session_factory() as session:
        job = session.get(Job, job_id)
        job.state = "succeeded"
        job.checkpoint_blob = key
        job.checkpoint_iteration = checkpoint_at
        session.add(JobMetric(job_id=job_id, iteration=checkpoint_at, data={"w": 1.0}))
        session.commit()
    return job_id


def test_continue_starts_a_new_job_from_a_copy_of_the_checkpoint(
    client, auth, dataset_id, api_app, broker
) -> None:
    parent_id = ended_training_job(client, auth, api_app, dataset_id, checkpoint_at=6)
    broker.delete("train")
    headers = auth | {"Idempotency-Key": "more-please"}
    response = client.post(
        f"/v1/jobs/{parent_id}/continue", headers=headers, json={"iterations": 9}
    )
    assert response.status_code == 202, response.text
    job = response.json()
    assert response.headers["location"] == f"/v1/jobs/{job['id']}"
    assert job["id"] != parent_id and job["state"] == "queued" and job["kind"] == "train"
    assert job["spec"]["continued_from"] == parent_id
    assert job["spec"]["config"]["iterations"] == 9
    assert job["progress"] == {**job["progress"], "iteration": 6, "total": 9}
    assert job["links"]["continued_from"] == f"/v1/jobs/{parent_id}"
    assert "continue" not in job["links"]  # queued: nothing to continue yet
    message = json.loads(broker.lrange("train", 0, -1)[0])
    assert message["headers"]["argsrepr"] == repr([job["id"], 0])
    with api_app.state.service.session_factory() as session:
        parent, child = session.get(Job, parent_id), session.get(Job, job["id"])
        assert child.checkpoint_iteration == 6 and child.dataset_id == dataset_id
        assert child.checkpoint_blob != parent.checkpoint_blob
        blobs = api_app.state.service.blobs
        assert blobs.path(child.checkpoint_blob).read_bytes() == b"checkpoint bytes"
    again = client.post(f"/v1/jobs/{parent_id}/continue", headers=headers, json={"iterations": 9})
    assert again.status_code == 202 and again.json()["id"] == job["id"]
    assert broker.llen("train") == 1
    parent_out = client.get(f"/v1/jobs/{parent_id}", headers=auth).json()
    assert parent_out["links"]["continue"] == f"/v1/jobs/{parent_id}/continue"


def test_continue_says_what_to_do_when_it_cannot(client, auth, dataset_id, api_app) -> None:
    def attempt(job_id: str, iterations: int = 20) -> tuple[int, str]:
        response = client.post(
            f"/v1/jobs/{job_id}/continue", headers=auth, json={"iterations": iterations}
        )
        return response.status_code, response.json().get("code", "")

    ended = ended_training_job(client, auth, api_app, dataset_id, checkpoint_at=6)
    assert attempt(ended, iterations=6) == (422, "iterations_too_few")
    assert attempt(ended, iterations=0)[0] == 422
    assert attempt("job_missing") == (404, "job_not_found")
    queued = client.post(
        "/v1/jobs", headers=auth, json={"kind": "train", "dataset_id": dataset_id}
    ).json()["id"]
    assert attempt(queued) == (409, "job_not_finished")
    client.post(f"/v1/jobs/{queued}/cancel", headers=auth)
    assert attempt(queued) == (409, "no_checkpoint")  # cancelled before any training
    assert "continue" not in client.get(f"/v1/jobs/{queued}", headers=auth).json()["links"]
    with api_app.state.service.session_factory() as session:
        generate = Job(owner_id=session.get(Job, ended).owner_id, kind="generate", state="failed")
        session.add(generate)
        session.commit()
        generate_id = generate.id
    assert attempt(generate_id) == (422, "not_a_training_job")
    assert client.delete(f"/v1/datasets/{dataset_id}", headers=auth).status_code == 204
    assert attempt(ended) == (409, "dataset_missing")


def test_continue_is_scoped_to_the_owner(client, auth, other_auth, dataset_id, api_app) -> None:
    ended = ended_training_job(client, auth, api_app, dataset_id, checkpoint_at=6)
    response = client.post(f"/v1/jobs/{ended}/continue", headers=other_auth, json={"iterations": 9})
    assert response.status_code == 404


def test_continue_with_the_broker_down_leaves_no_copy_behind(api_settings, auth) -> None:
    down = api_settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})
    app = create_app(down)
    with TestClient(app) as client:
        files = {"files": ("a.png", png_bytes(two_phase()), "image/png")}
        dataset = client.post("/v1/datasets", headers=auth, files=files).json()["id"]
        state = app.state.service
        key = state.blobs.new_key("checkpoints", ".pt")
        state.blobs.put_bytes(key, b"checkpoint bytes")
        with state.session_factory() as session:
            job = Job(
                owner_id=session.get(Dataset, dataset).owner_id,
                kind="train",
                state="succeeded",
                dataset_id=dataset,
                spec={"dataset_id": dataset, "config": {"iterations": 4}},
                checkpoint_blob=key,
                checkpoint_iteration=4,
            )
            session.add(job)
            session.commit()
            job_id = job.id
        before = set(stored_files(app))
        response = client.post(f"/v1/jobs/{job_id}/continue", headers=auth, json={"iterations": 8})
        assert response.status_code == 503 and response.json()["code"] == "broker_unavailable"
        assert set(stored_files(app)) == before
        with state.session_factory() as session:
            assert session.scalar(select(func.count()).select_from(Job)) == 1


def test_delete_an_ended_job_with_its_history_and_files(client, auth, dataset_id, api_app) -> None:
    ended = ended_training_job(client, auth, api_app, dataset_id, checkpoint_at=6)
    state = api_app.state.service
    with state.session_factory() as session:
        checkpoint = session.get(Job, ended).checkpoint_blob
    running = client.post(
        "/v1/jobs", headers=auth, json={"kind": "train", "dataset_id": dataset_id}
    ).json()["id"]
    refused = client.delete(f"/v1/jobs/{running}", headers=auth)
    assert refused.status_code == 409 and refused.json()["code"] == "job_not_finished"
    assert "cancel it first" in refused.json()["detail"]
    assert client.delete(f"/v1/jobs/{ended}", headers=auth).status_code == 204
    assert not state.blobs.exists(checkpoint)
    assert client.get(f"/v1/jobs/{ended}", headers=auth).status_code == 404
    with state.session_factory() as session:
        rows = session.scalar(
            select(func.count()).select_from(JobMetric).where(JobMetric.job_id == ended)
        )
    assert rows == 0
    assert client.delete(f"/v1/jobs/{ended}", headers=auth).status_code == 404


def test_a_continued_jobs_metrics_start_with_its_ancestors(client, auth, dataset_id, api_app):
    first = ended_training_job(client, auth, api_app, dataset_id, checkpoint_at=6)
    state = api_app.state.service
    with state.session_factory() as session:
        for iteration in (2, 4, 7):  # 7: recorded after the checkpoint the child starts from
            session.add(JobMetric(job_id=first, iteration=iteration, data={"w": 0.1}))
        session.commit()

    def continue_to(job_id: str, iterations: int, records: tuple[int, ...]) -> str:
        child = client.post(
            f"/v1/jobs/{job_id}/continue", headers=auth, json={"iterations": iterations}
        ).json()["id"]
        with state.session_factory() as session:
            job = session.get(Job, child)
            job.state, job.checkpoint_iteration = "succeeded", iterations
            for iteration in records:
                session.add(JobMetric(job_id=child, iteration=iteration, data={"w": 0.2}))
            session.commit()
        return child

    second = continue_to(first, 9, (8, 9))
    third = continue_to(second, 12, (10, 12))
    points = client.get(f"/v1/jobs/{third}/metrics", headers=auth).json()["points"]
    assert [(p["iteration"], p["job_id"]) for p in points] == [
        (2, first),
        (4, first),
        (6, first),
        (8, second),
        (9, second),
        (10, third),
        (12, third),
    ]
    later = client.get(f"/v1/jobs/{third}/metrics", headers=auth, params={"after": 8}).json()
    assert [p["iteration"] for p in later["points"]] == [9, 10, 12]
    assert client.delete(f"/v1/jobs/{first}", headers=auth).status_code == 204
    points = client.get(f"/v1/jobs/{third}/metrics", headers=auth).json()["points"]
    assert [p["iteration"] for p in points] == [8, 9, 10, 12]  # history starts after it


def test_usage_counts_what_the_caller_keeps(client, auth, other_auth, dataset_id, api_app):
    empty = client.get("/v1/usage", headers=auth).json()
    assert empty["checkpoints"] == {"count": 0, "bytes": 0}
    assert empty["datasets"]["count"] == 1 and empty["volumes"] == {"count": 0, "bytes": 0}
    ended_training_job(client, auth, api_app, dataset_id, checkpoint_at=6)
    usage = client.get("/v1/usage", headers=auth).json()
    assert usage["checkpoints"] == {"count": 1, "bytes": len(b"checkpoint bytes")}
    dataset_bytes = client.get(f"/v1/datasets/{dataset_id}", headers=auth).json()["size_bytes"]
    assert usage["datasets"] == {"count": 1, "bytes": dataset_bytes}
    assert usage["total_bytes"] == dataset_bytes + len(b"checkpoint bytes")
    theirs = client.get("/v1/usage", headers=other_auth).json()
    assert theirs["total_bytes"] == 0 and theirs["datasets"]["count"] == 0
    assert client.get("/v1/usage").status_code == 401
