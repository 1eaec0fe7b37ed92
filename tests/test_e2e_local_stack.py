"""``microforge up`` end to end: real broker, worker and API processes on a temp data dir.

Walks the path a user takes: create a key, upload a synthetic two-phase image and train
(tiny network, a few iterations, short segments), poll, generate, download the TIFF and
read it back; cancel a long job; stop with SIGINT and check that no child is left; start
again on the same data dir and find everything still there. And supervision: a worker,
broker or one of the API processes killed with SIGKILL is restarted while the API keeps
answering, and SIGTERM still stops everything.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest
import redis
import tifffile
from click.testing import CliRunner
from PIL import Image
from sqlalchemy import select
from worker_helpers import REPO_ROOT, TINY_CONFIG, two_phase_image, wait_for

from microforge.cli.main import cli
from microforge.client import MicroForgeClient, MicroForgeError
from microforge.storage.db import create_db_engine
from microforge.storage.job_lifecycle import ACTIVE_STATES
from microforge.storage.tables import Job
from microforge.worker.local_stack import free_port

pytestmark = pytest.mark.slow
CLI = [sys.executable, "-c", "from microforge.cli.main import cli; cli()"]


def stack_env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MICROFORGE_")}
    env.update(
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")])),
        MICROFORGE_DATA_DIR=str(data_dir),
        MICROFORGE_DEVICE="cpu",
        MICROFORGE_TRAIN_SEGMENT_SECONDS="0.5",
        MICROFORGE_LEASE_SECONDS="4",
        MICROFORGE_VISIBILITY_TIMEOUT_SECONDS="8",
        OMP_NUM_THREADS="1",
    )
    if os.environ.get("MICROFORGE_TEST_REDIS_URL"):
        env["MICROFORGE_REDIS_URL"] = os.environ["MICROFORGE_TEST_REDIS_URL"]
    return env


class Stack:
    """One ``microforge up`` process and what it printed."""

    def __init__(self, data_dir: Path, log: Path, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        with open(log, "wb") as out:
            self.process = subprocess.Popen(
                [*CLI, "up", "--port", str(self.port), "--data-dir", str(data_dir)],
                env={**stack_env(data_dir), **(env or {})},
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=REPO_ROOT,
            )
        wait_for(self._ready, 120, f"`microforge up` to be ready (log: {log})", interval=0.5)
        self.children = psutil.Process(self.process.pid).children(recursive=True)

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"microforge up exited early:\n{self.log.read_text()}")
        return "Press Ctrl-C to stop." in self.log.read_text()

    def output(self) -> str:
        return self.log.read_text()

    def child(self, module: str) -> psutil.Process:
        """The running child whose command line names ``module``."""
        for process in self.children_running(module):
            return process
        raise AssertionError(f"no {module} child of `microforge up`")

    def children_running(self, module: str) -> list[psutil.Process]:
        """The running children whose command lines name ``module``, oldest first."""
        found = [
            process
            for process in psutil.Process(self.process.pid).children()
            if module in process.cmdline()
        ]
        return sorted(found, key=lambda process: (process.create_time(), process.pid))

    def stop(self, signum: int = signal.SIGINT) -> int:
        if self.process.poll() is None:
            # Restarted children are other processes than the ones seen at start.
            self.children += psutil.Process(self.process.pid).children(recursive=True)
            self.process.send_signal(signum)
            try:
                self.process.wait(90)
            except subprocess.TimeoutExpired:
                self.process.kill()
                raise
        _, alive = psutil.wait_procs(self.children, timeout=10)
        for orphan in alive:
            orphan.kill()
        assert not alive, f"children left running after stop: {alive}"
        return self.process.returncode


def create_key(data_dir: Path, name: str) -> str:
    result = subprocess.run(
        [*CLI, "keys", "create", name],
        env=stack_env(data_dir),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return result.stdout.strip().splitlines()[-1]


def test_up_train_generate_download_cancel_restart(tmp_path: Path):
    data_dir = tmp_path / "data"
    image_path = tmp_path / "micrograph.png"
    Image.fromarray(two_phase_image(64, seed=1)).save(image_path)

    stack = Stack(data_dir, tmp_path / "up1.log")
    try:
        first_key = re.search(r"first API key \(shown only now\): (\S+)", stack.output())
        assert first_key, stack.output()
        key = create_key(data_dir, "e2e")
        assert key != first_key.group(1)
        client = MicroForgeClient(stack.url, key)

        config = {**TINY_CONFIG, "quality_every": 3}
        job = client.train([image_path], config=config, name="synthetic")
        assert job["state"] in ("queued", "running")
        seen: list[float] = []
        job = client.wait(
            job["id"],
            on_update=lambda j: seen.append(j["progress"]["fraction"]),
            poll_seconds=0.3,
            timeout=180,
        )
        assert job["state"] == "succeeded" and job["progress"]["fraction"] == 1.0
        assert seen == sorted(seen), "progress must not go backwards"
        generator_id = job["result"]["generator_id"]
        best_id = job["result"]["best_generator_id"]  # the checks at 3 and 6 picked one
        best = client.get_generator(best_id)
        assert best["config"]["quality"]["iteration"] in (3, 6)
        assert job["links"]["result_best_generator"] == f"/v1/generators/{best_id}"
        assert (best_id == generator_id) == (best["config"]["iteration"] == 6)

        gen_job = client.generate(generator_id, (16, 20, 24), seed=5, chunk=16)
        gen_job = client.wait(gen_job["id"], poll_seconds=0.3, timeout=120)
        volume_id = gen_job["result"]["volume_id"]
        out = tmp_path / "volume.tif"
        client.download_volume(volume_id, out)
        volume = tifffile.imread(out)
        assert volume.shape == (16, 20, 24) and volume.dtype == np.uint8
        assert set(np.unique(volume)) <= {0, 255}

        # The CLI client on the same server.
        runner = CliRunner()
        base = ["remote", "--url", stack.url, "--key", key]
        status = runner.invoke(cli, [*base, "status", gen_job["id"]])
        assert status.exit_code == 0 and volume_id in status.output, status.output
        cli_out = tmp_path / "cli-volume.tif"
        download = runner.invoke(cli, [*base, "download", volume_id, "--out", str(cli_out)])
        assert download.exit_code == 0, download.output
        assert cli_out.read_bytes() == out.read_bytes()
        shared = runner.invoke(cli, [*base, "share", volume_id, "--hours", "1"])
        assert shared.exit_code == 0, shared.output
        link = shared.stdout.strip().splitlines()[-1]
        assert httpx.get(link).content == out.read_bytes()  # no key needed
        report_png = tmp_path / "report.png"
        report = runner.invoke(cli, [*base, "report", volume_id, "--png", str(report_png)])
        assert report.exit_code == 0, report.output
        assert "perpendicular to z" in report.output and "against the isotropic" in report.output
        assert report_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        listed = runner.invoke(cli, [*base, "ls", "volumes"])
        assert listed.exit_code == 0 and volume_id in listed.output and "verdict" in listed.output
        listed = runner.invoke(cli, [*base, "ls", "generators"])
        assert generator_id in listed.output and "tiny iteration 6" in listed.output
        jobs = runner.invoke(cli, [*base, "jobs", "--kind", "generate", "--state", "succeeded"])
        assert gen_job["id"] in jobs.output and job["id"] not in jobs.output
        preview = tmp_path / "preview.png"
        assert (
            runner.invoke(cli, [*base, "preview", job["id"], "--out", str(preview)]).exit_code == 0
        )
        assert preview.read_bytes()[:4] == b"\x89PNG"
        exported = tmp_path / "exported.safetensors"
        client.download_generator(generator_id, exported)
        imported = runner.invoke(cli, [*base, "import", str(exported)])
        assert imported.exit_code == 0, imported.output
        assert client.get_generator(imported.stdout.strip())["config"]["arch"] == "tiny"
        client.delete(imported.stdout.strip())
        usage = runner.invoke(cli, [*base, "usage"])
        assert usage.exit_code == 0, usage.output
        assert [line.split()[:2] for line in usage.output.splitlines()][:3] == [
            ["datasets", "1"],
            ["generators", str(len(client.list_page("generators")["items"]))],
            ["volumes", "1"],
        ]
        missing = runner.invoke(cli, [*base, "report", "vol_missing"])
        assert missing.exit_code == 1 and "volume_not_found" in missing.output
        quick = json.dumps({**TINY_CONFIG, "iterations": 3})
        dataset = job["spec"]["dataset_id"]  # uploaded once, trained on again
        trained = runner.invoke(
            cli, [*base, "train", "--dataset", dataset, "--config", quick, "--wait"]
        )
        assert trained.exit_code == 0, trained.output
        cli_generator = trained.stdout.strip().splitlines()[-1]
        assert cli_generator.startswith("gen_"), trained.output
        cli_volume = tmp_path / "cli-generated.tif"
        generated = runner.invoke(
            cli,
            [*base, "generate", cli_generator, "--shape", "8", "9", "10", "--wait"]
            + ["--out", str(cli_volume)],
        )
        assert generated.exit_code == 0, generated.output
        assert tifffile.imread(cli_volume).shape == (8, 9, 10)
        periodic = runner.invoke(
            cli, [*base, "generate", cli_generator, "--shape", "8", "9", "10", "--periodic", "x"]
        )
        assert periodic.exit_code == 1 and "invalid_periodic_shape" in periodic.output
        cli_volume_id = generated.stdout.strip().splitlines()[-1]
        deleted = runner.invoke(cli, [*base, "delete", cli_volume_id, cli_generator])
        assert deleted.exit_code == 0, deleted.output
        assert f"{cli_volume_id} deleted" in deleted.output and cli_generator in deleted.output
        again = runner.invoke(cli, [*base, "delete", cli_volume_id])
        assert again.exit_code == 1 and "volume_not_found" in again.output
        bogus = runner.invoke(cli, [*base, "delete", "nope_1"])
        assert bogus.exit_code == 2 and "not a dataset, generator, volume or job id" in bogus.output

        # More iterations for the first job: a new job starts from its last checkpoint.
        more = runner.invoke(cli, [*base, "continue", job["id"], "--iterations", "9", "--wait"])
        assert more.exit_code == 0, more.output
        continued = client.list_jobs(limit=1)["items"][0]
        assert continued["spec"]["continued_from"] == job["id"]
        assert continued["state"] == "succeeded" and continued["progress"]["iteration"] == 9
        assert continued["result"]["generator_id"] == more.stdout.strip().splitlines()[-1]
        assert "resuming from checkpoint at iteration 6" in stack.output()
        # Its best check is the parent's (reused, not exported again) or its own last one.
        made = [
            g["id"]
            for g in client.list_page("generators", limit=100)["items"]
            if g["source_job_id"] == continued["id"]
        ]
        assert made == [continued["result"]["generator_id"]]
        assert continued["result"]["best_generator_id"] in {made[0], best_id}
        assert runner.invoke(cli, [*base, "delete", job["id"]]).exit_code == 0
        assert client.get_job(continued["id"])["state"] == "succeeded"

        long_job = client.train([image_path], config={**TINY_CONFIG, "iterations": 100_000})
        wait_for(
            lambda: (client.get_job(long_job["id"])["progress"].get("iteration") or 0) > 0,
            120,
            "the long job to train",
        )
        client.cancel_job(long_job["id"])
        asked = time.monotonic()
        cancelled = client.wait(long_job["id"], poll_seconds=0.3, raise_on_failure=False)
        assert cancelled["state"] == "cancelled" and time.monotonic() - asked < 30

        with pytest.raises(MicroForgeError) as missing:
            client.get_job("job_does_not_exist")
        assert missing.value.status == 404 and missing.value.code

        # A job still training when the stack stops carries on after the restart.
        unfinished = client.train([image_path], config={**TINY_CONFIG, "iterations": 25})
        wait_for(
            lambda: (client.get_job(unfinished["id"])["progress"].get("iteration") or 0) > 0,
            120,
            "the unfinished job to train",
        )
        client.close()
    finally:
        assert stack.stop() == 0, stack.output()

    again = Stack(data_dir, tmp_path / "up2.log")
    try:
        assert "first API key" not in again.output()
        with MicroForgeClient(again.url, key) as client:
            assert client.get_job(continued["id"])["state"] == "succeeded"
            assert client.get_volume(volume_id)["shape"] == [16, 20, 24]
            resumed = client.wait(unfinished["id"], poll_seconds=0.3, timeout=180)
            assert resumed["progress"]["iteration"] == 25
    finally:
        assert again.stop() == 0, again.output()


def test_up_restarts_a_killed_worker_and_broker_and_stops_on_sigterm(tmp_path: Path):
    """SIGKILL the worker mid-training: it is restarted, the API answers meanwhile, and
    the job finishes from its checkpoint. SIGKILL the broker: job creation answers 503
    broker_unavailable until it is back on the same port with its data, then works.
    SIGKILL one of the two API processes: the other answers every request meanwhile.

    Leases of ten minutes: the job can only go on this soon because the restarted worker
    sees that the lease's holder is dead and takes the job back."""
    data_dir = tmp_path / "data"
    image_path = tmp_path / "micrograph.png"
    Image.fromarray(two_phase_image(64, seed=1)).save(image_path)
    long_leases = {
        "MICROFORGE_LEASE_SECONDS": "600",
        "MICROFORGE_VISIBILITY_TIMEOUT_SECONDS": "1200",
        "MICROFORGE_API_PROCESSES": "2",
    }
    stack = Stack(data_dir, tmp_path / "up.log", env=long_leases)
    try:
        key = re.search(r"first API key \(shown only now\): (\S+)", stack.output()).group(1)
        broker_url = re.search(r"Broker: (redis://\S+)", stack.output()).group(1)
        client = MicroForgeClient(stack.url, key)
        job = client.train([image_path], config={**TINY_CONFIG, "iterations": 8})
        worker = stack.child("microforge.worker")
        # Training must not starve the API of CPU: the worker runs at a lower priority.
        api = stack.child("uvicorn")
        assert worker.nice() == api.nice() + 10
        _stop_mid_segment(worker, data_dir / "microforge.sqlite3", job["id"])
        worker.kill()
        worker.wait(10)
        assert client.get_job(job["id"])["state"] == "running"  # the API answers
        wait_for(lambda: "restarted the worker" in stack.output(), 30, "the worker restart")
        assert f"the worker (pid {worker.pid}) was killed by SIGKILL" in stack.output()
        assert stack.child("microforge.worker").nice() == api.nice() + 10
        done = client.wait(job["id"], poll_seconds=0.3, timeout=120)
        assert done["state"] == "succeeded" and done["progress"]["iteration"] == 8
        assert "resuming from checkpoint at iteration" in stack.output()
        assert f"took back the jobs of killed workers: {job['id']}" in stack.output()

        marker = redis.Redis.from_url(broker_url)
        marker.set("e2e-marker", "kept")
        time.sleep(1.5)  # the append-only file is synced every second
        broker = stack.child("microforge.worker.embedded_broker")
        broker.kill()
        broker.wait(10)
        body = {"kind": "train", "dataset_id": done["spec"]["dataset_id"], "config": TINY_CONFIG}
        headers = {"Authorization": f"Bearer {key}"}
        started = time.monotonic()
        refused = httpx.post(f"{stack.url}/v1/jobs", json=body, headers=headers, timeout=30)
        assert time.monotonic() - started < 3
        assert refused.status_code == 503, refused.text
        assert refused.json()["code"] == "broker_unavailable" and refused.headers["Retry-After"]
        assert client.get_job(job["id"])["state"] == "succeeded"
        wait_for(lambda: "restarted the broker" in stack.output(), 30, "the broker restart")
        wait_for(lambda: _pings(marker), 30, "the broker on its old port")
        assert marker.get("e2e-marker") == b"kept"
        marker.close()
        again = client.create_train_job(
            done["spec"]["dataset_id"], {**TINY_CONFIG, "iterations": 2, "preview_every": 1}
        )
        assert client.wait(again["id"], poll_seconds=0.3, timeout=120)["state"] == "succeeded"

        apis = stack.children_running("uvicorn")
        assert len(apis) == 2 and apis[0].nice() == apis[1].nice()
        apis[1].kill()
        apis[1].wait(10)
        # New connections go to the process that is left; none is refused or lost.
        for _ in range(20):
            assert client.get_job(again["id"])["state"] == "succeeded"
        killed = rf"the (api(-2)?) \(pid {apis[1].pid}\) was killed by SIGKILL"
        wait_for(lambda: re.search(killed, stack.output()), 10, "the API's death logged")
        death = re.search(killed, stack.output())
        wait_for(lambda: f"restarted the {death[1]} " in stack.output(), 30, "the API restart")
        assert len(stack.children_running("uvicorn")) == 2
        client.close()
    finally:
        assert stack.stop(signal.SIGTERM) == 0, stack.output()


def _stop_mid_segment(worker: psutil.Process, database: Path, job_id: str) -> None:
    """Suspend ``worker`` at a moment it holds the job's lease and a checkpoint exists.

    Why: segments last half a second, so a kill at a random moment can land between two
    of them, when the lease is free and the restarted worker simply sends the job a new
    message; only a kill mid-segment exercises taking back a dead worker's lease. The row
    is read again after the suspension, when it can no longer change under the test.
    """
    engine = create_db_engine(f"sqlite:///{database}")
    query = select(Job.state, Job.lease_owner, Job.checkpoint_blob).where(Job.id == job_id)

    def held_with_checkpoint() -> bool:
        with engine.connect() as connection:
            state, owner, checkpoint = connection.execute(query).one()
        return state in ACTIVE_STATES and owner is not None and checkpoint is not None

    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            if held_with_checkpoint():
                worker.suspend()
                still = False
                try:
                    still = held_with_checkpoint()
                finally:
                    if not still:  # never leave it stopped on a miss or an error
                        worker.resume()
                if still:
                    return
            time.sleep(0.02)
    finally:
        engine.dispose()
    raise AssertionError("the worker never held the active job's lease after a checkpoint")


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
