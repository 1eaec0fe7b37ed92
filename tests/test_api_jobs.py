"""Jobs: creation enqueues a real message, idempotency, cancel, listing, /v1/train, 503."""

from __future__ import annotations

import json
import time

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from microforge.api.app import create_app
from microforge.storage.tables import Dataset, Job, JobMetric
from tests.test_api_datasets import png_bytes, stored_files, two_phase


def queued_task_names(broker, queue: str) -> list[str]:
    """Celery messages waiting on a Redis list ``queue`` (kombu's Redis transport layout)."""
    return [json.loads(raw)["headers"]["task"] for raw in broker.lrange(queue, 0, -1)]


def test_train_job_is_enqueued_on_the_train_queue(client, auth, dataset_id, broker) -> None:
    response = client.post(
        "/v1/jobs",
        headers=auth,
        json={
            "kind": "train",
            "dataset_id": dataset_id,
            "config": {"arch": "tiny", "iterations": 5},
        },
    )
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["state"] == "queued" and job["kind"] == "train"
    assert response.headers["location"] == f"/v1/jobs/{job['id']}"
    assert job["progress"]["total"] == 5
    assert job["spec"]["config"]["iterations"] == 5
    assert queued_task_names(broker, "train") == ["microforge.train_segment"]
    message = json.loads(broker.lrange("train", 0, -1)[0])
    # The first message carries the fencing token it is meant for: 0, a new job.
    assert message["headers"]["argsrepr"] == repr([job["id"], 0])
    assert broker.llen("generate") == 0
    fetched = client.get(job["links"]["self"], headers=auth).json()
    assert fetched["id"] == job["id"]


def test_bad_train_config_lists_the_field(client, auth, dataset_id, broker) -> None:
    response = client.post(
        "/v1/jobs",
        headers=auth,
        json={"kind": "train", "dataset_id": dataset_id, "config": {"iterations": 0, "bogus": 1}},
    )
    assert response.status_code == 422
    fields = {error["field"] for error in response.json()["errors"]}
    assert "body.config.iterations" in fields
    assert any(field.endswith("config.bogus") for field in fields)
    assert broker.llen("train") == 0


def test_unknown_dataset_is_404(client, auth, broker) -> None:
    response = client.post("/v1/jobs", headers=auth, json={"kind": "train", "dataset_id": "ds_x"})
    assert response.status_code == 404 and response.json()["code"] == "dataset_not_found"


def test_idempotency_key_returns_the_same_job(client, auth, dataset_id, broker) -> None:
    body = {"kind": "train", "dataset_id": dataset_id, "config": {"iterations": 7}}
    headers = auth | {"Idempotency-Key": "retry-1"}
    first = client.post("/v1/jobs", headers=headers, json=body)
    second = client.post("/v1/jobs", headers=headers, json=body)
    assert first.status_code == second.status_code == 202
    assert first.json()["id"] == second.json()["id"]
    assert broker.llen("train") == 1
    other = client.post("/v1/jobs", headers=headers, json=body | {"config": {"iterations": 8}})
    assert other.status_code == 409 and other.json()["code"] == "idempotency_key_reused"


def test_idempotency_keys_are_per_owner(client, auth, other_auth, dataset_id, broker) -> None:
    other_dataset = client.post(
        "/v1/datasets",
        headers=other_auth,
        files={"files": ("a.png", png_bytes(two_phase()), "image/png")},
    ).json()["id"]
    first = client.post(
        "/v1/jobs",
        headers=auth | {"Idempotency-Key": "k"},
        json={"kind": "train", "dataset_id": dataset_id},
    )
    second = client.post(
        "/v1/jobs",
        headers=other_auth | {"Idempotency-Key": "k"},
        json={"kind": "train", "dataset_id": other_dataset},
    )
    assert first.status_code == second.status_code == 202
    assert first.json()["id"] != second.json()["id"]


def test_cancel_queued_job_at_once_and_finished_is_409(client, auth, dataset_id, api_app):
    job = client.post("/v1/jobs", headers=auth, json={"kind": "train", "dataset_id": dataset_id})
    job_id = job.json()["id"]
    cancelled = client.post(f"/v1/jobs/{job_id}/cancel", headers=auth)
    assert cancelled.status_code == 202
    assert cancelled.json()["state"] == "cancelled" and cancelled.json()["finished_at"]
    again = client.post(f"/v1/jobs/{job_id}/cancel", headers=auth)
    assert again.status_code == 409 and again.json()["code"] == "job_finished"


def test_cancel_running_job_only_requests_it(client, auth, dataset_id, api_app) -> None:
    job_id = client.post(
        "/v1/jobs", headers=auth, json={"kind": "train", "dataset_id": dataset_id}
    ).json()["id"]
    with api_app.state.service.session_factory() as session:
        session.get(Job, job_id).state = "running"
        session.commit()
    response = client.post(f"/v1/jobs/{job_id}/cancel", headers=auth)
    assert response.status_code == 202
    assert response.json()["state"] == "running" and response.json()["cancel_requested"]


def test_list_filters_and_pagination(client, auth, dataset_id, api_app) -> None:
    ids = [
        client.post(
            "/v1/jobs", headers=auth, json={"kind": "train", "dataset_id": dataset_id}
        ).json()["id"]
        for _ in range(3)
    ]
    client.post(f"/v1/jobs/{ids[0]}/cancel", headers=auth)
    page = client.get("/v1/jobs", headers=auth, params={"limit": 2}).json()
    assert [item["id"] for item in page["items"]] == [ids[2], ids[1]]
    rest = client.get("/v1/jobs", headers=auth, params={"limit": 2, "cursor": page["next_cursor"]})
    assert [item["id"] for item in rest.json()["items"]] == [ids[0]]
    assert rest.json()["next_cursor"] is None
    cancelled = client.get("/v1/jobs", headers=auth, params={"state": "cancelled"}).json()
    assert [item["id"] for item in cancelled["items"]] == [ids[0]]
    assert client.get("/v1/jobs", headers=auth, params={"kind": "generate"}).json()["items"] == []
    assert client.get("/v1/jobs", headers=auth, params={"state": "bogus"}).status_code == 422


def test_metrics_and_preview(client, auth, dataset_id, api_app) -> None:
    job_id = client.post(
        "/v1/jobs", headers=auth, json={"kind": "train", "dataset_id": dataset_id}
    ).json()["id"]
    missing = client.get(f"/v1/jobs/{job_id}/preview.png", headers=auth)
    assert missing.status_code == 404 and missing.json()["code"] == "preview_not_ready"
    state = api_app.state.service
    key = state.blobs.new_key("previews", ".png")
    state.blobs.put_bytes(key, png_bytes(two_phase()))
    with state.session_factory() as session:
        session.get(Job, job_id).preview_blob = key
        for iteration in (10, 20):
            session.add(JobMetric(job_id=job_id, iteration=iteration, data={"wasserstein": 0.5}))
        session.commit()
    assert client.get(f"/v1/jobs/{job_id}/preview.png", headers=auth).content.startswith(b"\x89PNG")
    metrics = client.get(f"/v1/jobs/{job_id}/metrics", headers=auth).json()
    assert [point["iteration"] for point in metrics["points"]] == [10, 20]
    later = client.get(f"/v1/jobs/{job_id}/metrics", headers=auth, params={"after": 10}).json()
    assert [point["iteration"] for point in later["points"]] == [20]


def test_upload_and_train_in_one_request(client, auth, broker, api_app) -> None:
    files = {"files": ("a.png", png_bytes(two_phase()), "image/png")}
    data = {"config": json.dumps({"arch": "tiny", "iterations": 3})}
    headers = auth | {"Idempotency-Key": "one-shot"}
    first = client.post("/v1/train", headers=headers, files=files, data=data)
    assert first.status_code == 202, first.text
    assert first.json()["spec"]["config"]["iterations"] == 3
    second = client.post("/v1/train", headers=headers, files=files, data=data)
    assert second.json()["id"] == first.json()["id"]
    assert broker.llen("train") == 1
    with api_app.state.service.session_factory() as session:
        assert session.scalar(select(func.count()).select_from(Dataset)) == 1
    bad = client.post("/v1/train", headers=auth, files=files, data={"config": "{not json"})
    assert bad.status_code == 422 and bad.json()["code"] == "invalid_config"
    bad = client.post("/v1/train", headers=auth, files=files, data={"config": '{"lr": 1}'})
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "config.lr"


def test_broker_down_gives_503_and_creates_nothing(api_settings, auth) -> None:
    down = api_settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})
    app = create_app(down)
    with TestClient(app) as client:
        files = {"files": ("a.png", png_bytes(two_phase()), "image/png")}
        response = client.post("/v1/train", headers=auth, files=files)
        assert response.status_code == 503, response.text
        assert response.json()["code"] == "broker_unavailable"
        assert response.headers["Retry-After"] == "10"
        dataset = client.post("/v1/datasets", headers=auth, files=files).json()["id"]
        for _ in range(2):  # fast every time, not only on a fresh connection pool
            started = time.monotonic()
            response = client.post(
                "/v1/jobs", headers=auth, json={"kind": "train", "dataset_id": dataset}
            )
            assert response.status_code == 503 and time.monotonic() - started < 3
        assert client.get("/v1/jobs", headers=auth).json()["items"] == []
        assert len(client.get("/v1/datasets", headers=auth).json()["items"]) == 1
        health = client.get("/v1/health")
        assert health.status_code == 503 and health.json()["broker"]["ok"] is False
    assert len(stored_files(app)) == 2  # only the dataset uploaded on its own (image + preview)


def test_health_when_up(client) -> None:
    response = client.get("/v1/health")
    assert response.status_code == 200
    body = response.json()
    assert body["database"]["ok"] and body["broker"]["ok"]
    assert body["status"] in {"ok", "degraded"}
