"""Serving under load, on real uvicorn servers: admission, slow bodies, per-key limits.

Each server is a uvicorn process on a temp SQLite database, with limits made small so that
the cases show in seconds: a database pool of one connection (a request waiting on the
network must not hold it), uploads that time out after ~1 s of silence, two uploads per
key, and for the overload case one request slot and one queue place.
Also here, in process: 401 comes before body validation, and the per-key job limit.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from worker_helpers import REPO_ROOT, wait_for

from microforge.storage.api_keys import authenticate, create_api_key
from microforge.storage.db import create_db_engine, make_session_factory, upgrade_database
from microforge.storage.tables import Job
from microforge.worker.local_stack import free_port

BOUNDARY = "testboundary"
FILE_HEAD = (
    f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="files"; filename="a.png"\r\n'
    "Content-Type: image/png\r\n\r\n"
).encode()
MULTIPART = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}


class Server:
    """One uvicorn process serving the app factory with ``MICROFORGE_*`` overrides."""

    def __init__(self, data_dir: Path, **settings: object) -> None:
        self.data_dir = data_dir
        url = f"sqlite:///{data_dir / 'microforge.sqlite3'}"
        upgrade_database(url)
        self.sessions = make_session_factory(create_db_engine(url))
        env = {k: v for k, v in os.environ.items() if not k.startswith("MICROFORGE_")}
        env.update({f"MICROFORGE_{k.upper()}": str(v) for k, v in settings.items()})
        env.update(
            MICROFORGE_DATA_DIR=str(data_dir),
            MICROFORGE_DATABASE_URL=url,
            MICROFORGE_REDIS_URL="redis://127.0.0.1:1/0",  # nothing here enqueues
            PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")])),
        )
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "microforge.api.app:create_app", "--factory"]
            + ["--port", str(port), "--log-level", "warning", "--limit-concurrency", "1000"],
            env=env,
            cwd=REPO_ROOT,
        )
        wait_for(self._up, 60, "uvicorn to answer", interval=0.2)

    def _up(self) -> bool:
        assert self.process.poll() is None, "uvicorn exited"
        try:
            httpx.get(f"{self.url}/openapi.json", timeout=2)
        except httpx.TransportError:
            return False
        return True

    def key(self, name: str) -> tuple[str, dict[str, str]]:
        """(owner id, headers) of a new key."""
        with self.sessions() as session:
            row, plaintext = create_api_key(session, name)
            return row.id, {"Authorization": f"Bearer {plaintext}"}

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Default admission limits; one database connection; uploads time out quickly."""
    srv = Server(
        tmp_path_factory.mktemp("load"),
        db_pool_size=1,
        db_pool_timeout_seconds=10,
        upload_idle_timeout_seconds=1.0,
        upload_min_bytes_per_second=2000,
        max_uploads_per_key=2,
    )
    try:
        yield srv
    finally:
        srv.stop()


class Answer:
    """Status, headers and JSON body of a raw HTTP response."""

    def __init__(self, raw: bytes) -> None:
        head, _, body = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        self.status_code = int(lines[0].split()[1])
        self.headers = {k.lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
        self.body = body

    def json(self) -> dict:
        return json.loads(self.body)


async def stalled_upload(url: str, headers: dict[str, str], *, trickle: bool) -> Answer:
    """A raw upload that announces 100 kB, sends its first bytes, then nothing (or 10 bytes
    every 0.2 s), and reads what the server answers (it must close the connection)."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    first = FILE_HEAD + b"\x89PNG\r\n\x1a\n"
    request = [
        "POST /v1/datasets HTTP/1.1",
        f"Host: {host}",
        f"Authorization: {headers['Authorization']}",
        f"Content-Type: {MULTIPART['Content-Type']}",
        f"Content-Length: {len(first) + 100_000}",
    ]
    writer.write(("\r\n".join(request) + "\r\n\r\n").encode() + first)

    async def keep_trickling() -> None:
        while trickle:
            await asyncio.sleep(0.2)
            writer.write(b"x" * 10)

    trickler = asyncio.create_task(keep_trickling())
    try:
        raw = await asyncio.wait_for(reader.read(), timeout=20)  # to EOF
    finally:
        trickler.cancel()
        writer.close()
    return Answer(raw)


def scratch_files(data_dir: Path) -> list[Path]:
    """Upload leftovers: scratch files and upload-slot markers."""
    root = data_dir / "blobs"
    found = (p for d in (root / ".tmp", root / ".uploads") if d.exists() for p in d.rglob("*"))
    return [p for p in found if p.is_file()]


def test_200_concurrent_reads_are_all_answered(server: Server) -> None:
    owner_id, headers = server.key("reader")
    with server.sessions() as session:
        job = Job(owner_id=owner_id, kind="generate", state="succeeded", spec={}, progress={})
        session.add(job)
        session.commit()

    async def run() -> tuple[Counter, float]:
        limits = httpx.Limits(max_connections=200)
        async with httpx.AsyncClient(
            base_url=server.url, headers=headers, limits=limits, timeout=30
        ) as client:
            start = time.monotonic()
            responses = await asyncio.gather(
                *(client.get("/v1/jobs" if i % 2 else f"/v1/jobs/{job.id}") for i in range(200))
            )
            return Counter(r.status_code for r in responses), time.monotonic() - start

    statuses, seconds = asyncio.run(run())
    assert statuses == {200: 200}
    assert seconds < 20


def test_stalled_uploads_time_out_hold_no_connection_and_are_limited_per_key(
    server: Server,
) -> None:
    """Two stalled uploads from one key (its limit) do not hold the one database connection:
    another key's reads go on; a third upload from that key is refused at once (429); both
    stalled ones end with 408 within the timeout, and nothing they wrote is left."""
    _, uploader = server.key("slow-uploader")
    _, reader = server.key("reader-2")

    async def run() -> dict:
        stalled = [
            asyncio.create_task(stalled_upload(server.url, uploader, trickle=trickle))
            for trickle in (False, True)
        ]
        await asyncio.sleep(0.5)  # both are streaming now
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            third = await client.post(
                "/v1/datasets", headers=uploader, files={"files": ("a.png", b"x", "image/png")}
            )
            reads = [(await client.get("/v1/jobs", headers=reader)).status_code for _ in range(5)]
        start = time.monotonic()
        ended = await asyncio.gather(*stalled)
        return {"third": third, "reads": reads, "ended": ended, "wait": time.monotonic() - start}

    result = asyncio.run(run())
    assert result["reads"] == [200] * 5
    third = result["third"]
    assert third.status_code == 429 and third.json()["code"] == "too_many_uploads"
    assert int(third.headers["retry-after"]) > 0
    for response in result["ended"]:
        assert response.status_code == 408, response.text
        assert response.json()["code"] == "upload_too_slow"
    assert result["wait"] < 5
    assert scratch_files(server.data_dir) == []


def test_overload_is_a_fast_503_with_retry_after(tmp_path: Path) -> None:
    """One slot (held by a stalled upload) and one queue place: the rest get 503 at once."""
    tight = Server(
        tmp_path,
        max_concurrent_requests=1,
        max_queued_requests=1,
        queue_timeout_seconds=0.5,
        upload_idle_timeout_seconds=2.0,
    )
    try:
        _, uploader = tight.key("uploader")
        _, reader = tight.key("reader")

        async def run() -> tuple[list, Answer, httpx.Response]:
            upload = asyncio.create_task(stalled_upload(tight.url, uploader, trickle=False))
            async with httpx.AsyncClient(base_url=tight.url, headers=reader, timeout=10) as c:
                # Until the upload holds the one slot, a probe gets in (a busy machine can
                # take a while to start it); once it does, a probe waits out the queue: 503.
                deadline = time.monotonic() + 20
                while (await c.get("/v1/jobs")).status_code != 503:
                    assert time.monotonic() < deadline, "the upload never took the slot"
                    await asyncio.sleep(0.1)

                async def timed_get() -> tuple[float, httpx.Response]:
                    start = time.monotonic()
                    response = await c.get("/v1/jobs")
                    return time.monotonic() - start, response

                answers = await asyncio.gather(*(timed_get() for _ in range(30)))
                ended = await upload
                after = await c.get("/v1/jobs")
            return answers, ended, after

        answers, ended, after = asyncio.run(run())
        assert Counter(r.status_code for _, r in answers) == {503: 30}
        for seconds, response in answers:
            assert seconds < 2, seconds
            assert response.headers["content-type"] == "application/problem+json"
            assert response.json()["code"] == "overloaded"
            assert int(response.headers["retry-after"]) > 0
        assert ended.status_code == 408
        assert after.status_code == 200, "the slot is free again once the upload is gone"
    finally:
        tight.stop()


def test_401_comes_before_body_validation_on_every_keyed_post(client) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    keyed_posts = [path for path, ops in paths.items() if ops.get("post", {}).get("security")]
    assert {"/v1/jobs", "/v1/datasets", "/v1/train"} <= set(keyed_posts)
    for path in keyed_posts:
        url = path.replace("{", "").replace("}", "")  # /v1/jobs/job_id/cancel
        for headers in ({}, {"Authorization": "Bearer mf_nope"}):
            response = client.post(
                url, content=b"{not json", headers={**headers, "Content-Type": "application/json"}
            )
            assert response.status_code == 401, (url, headers, response.text)
            assert response.json()["code"] == "unauthorized"


@pytest.fixture
def api_settings(settings, broker_url: str, broker):  # noqa: ANN001, ANN201
    """The conftest app, with a limit of two active jobs per key."""
    return settings.model_copy(update={"redis_url": broker_url, "max_active_jobs_per_key": 2})


def test_active_jobs_per_key_are_limited(client, auth, dataset_id, api_app) -> None:
    body = {"kind": "train", "dataset_id": dataset_id, "config": {"arch": "tiny"}}
    first = [
        client.post("/v1/jobs", headers={**auth, "Idempotency-Key": f"k{i}"}, json=body)
        for i in range(2)
    ]
    assert [r.status_code for r in first] == [202, 202]
    refused = client.post("/v1/jobs", headers=auth, json=body)
    assert refused.status_code == 429, refused.text
    assert refused.json()["code"] == "too_many_active_jobs"
    assert int(refused.headers["retry-after"]) > 0
    # A retry of an accepted request is not a new job: it is still answered.
    retry = client.post("/v1/jobs", headers={**auth, "Idempotency-Key": "k0"}, json=body)
    assert retry.status_code == 202 and retry.json()["id"] == first[0].json()["id"]
    with api_app.state.service.session_factory() as session:
        owner = authenticate(session, auth["Authorization"].split()[1])
        assert session.query(Job).filter_by(owner_id=owner.id).count() == 2
    assert client.post(f"/v1/jobs/{first[0].json()['id']}/cancel", headers=auth).status_code == 202
    assert client.post("/v1/jobs", headers=auth, json=body).status_code == 202
