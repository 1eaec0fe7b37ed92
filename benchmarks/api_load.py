"""Load on a real ``microforge up``: readers, overload, slow and concurrent uploads.

Why a real stack: the failures this measures (pool exhaustion, a threadpool queue that
never drains, a slow body holding a database connection) happen only in the server that
users run, with its uvicorn flags, its SQLite file and its worker. The script starts
``microforge up`` on a free 127.0.0.1 port with a temporary data directory, seeds jobs,
runs each case for a few seconds with httpx (async) and prints one JSON object per case:
requests per second, p50/p99 latency, answers by status, the largest API process's peak
RSS and the CPU of the API processes together (``--env MICROFORGE_API_PROCESSES=1`` for one).
Everything it starts is stopped at the end, and every case is bounded in time.

    python benchmarks/api_load.py                 # all cases
    python benchmarks/api_load.py --cases read_10,read_200 --seconds 5
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as _dt
import io
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import psutil

_ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-c", "from microforge.cli.main import cli; cli()"]
CASES = (
    "read_10",
    "read_20",
    "read_40",
    "read_80",
    "read_200",
    "read_200_slow_uploads",
    "read_200_training",
    "uploads_50",
    "overload_600",
    "malformed_json_no_key",
)
#: A client gives up on one request after this long (the figure the issue was measured with).
CLIENT_TIMEOUT = 30.0


def small_png() -> bytes:
    """A ~1 KB two-phase PNG (64x64 random blocks), a valid training image."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    blocks = rng.integers(0, 2, (8, 8), dtype=np.uint8) * 255
    image = np.kron(blocks, np.ones((8, 8), dtype=np.uint8))
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


class Stack:
    """``microforge up`` on a temp data dir; keys and rows are made through the storage layer."""

    def __init__(self, data_dir: Path, env_overrides: dict[str, str]) -> None:
        from microforge.worker.local_stack import free_port

        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("MICROFORGE_")}
        env.update(
            MICROFORGE_DATA_DIR=str(data_dir),
            MICROFORGE_DEVICE="cpu",
            MICROFORGE_TRAIN_SEGMENT_SECONDS="5",
            OMP_NUM_THREADS="1",
            **env_overrides,
        )
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [env.get("PYTHONPATH"), str(_ROOT)]))
        self.log = data_dir.parent / "up.log"
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen(
                [*CLI, "up", "--port", str(self.port), "--data-dir", str(data_dir)],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 120
        while "Press Ctrl-C to stop." not in self.log.read_text():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"microforge up did not start:\n{self.log.read_text()}")
            time.sleep(0.3)
        match = re.search(r"first API key \(shown only now\): (\S+)", self.log.read_text())
        assert match, self.log.read_text()
        self.key = match.group(1)
        children = psutil.Process(self.process.pid).children(recursive=True)
        # `up` runs one or more API processes (MICROFORGE_API_PROCESSES) on one socket.
        self.apis = [p for p in children if "uvicorn" in " ".join(p.cmdline())]

    def database(self):  # noqa: ANN201
        from microforge.storage.db import create_db_engine, make_session_factory

        url = f"sqlite:///{(self.data_dir / 'microforge.sqlite3').resolve()}"
        return make_session_factory(create_db_engine(url))

    def new_keys(self, count: int) -> list[tuple[str, str]]:
        """``count`` new keys as (owner id, plaintext)."""
        from microforge.storage.api_keys import create_api_key

        with self.database()() as session:
            return [
                (row.id, plain)
                for row, plain in (create_api_key(session, f"load-{i}") for i in range(count))
            ]

    def seed_jobs(self, owner_id: str, count: int) -> list[str]:
        """Finished jobs to read back (a realistic list page), without running anything."""
        from microforge.storage.tables import Job

        with self.database()() as session:
            jobs = [
                Job(
                    owner_id=owner_id,
                    kind="generate",
                    state="succeeded",
                    spec={"generator_id": "gen_x", "shape": [64, 64, 64], "seed": i},
                    progress={"fraction": 1.0, "chunks_done": 8, "chunks_total": 8},
                )
                for i in range(count)
            ]
            session.add_all(jobs)
            session.commit()
            return [job.id for job in jobs]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)


class Recorder:
    """Latencies and statuses of one case; the API processes' RSS is sampled meanwhile."""

    def __init__(self, apis: list[psutil.Process]) -> None:
        self.apis = apis
        self.client = psutil.Process()
        self.cpu_start = (_cpu_seconds(*apis), _cpu_seconds(self.client), time.monotonic())
        self.latencies: list[float] = []
        self.statuses: Counter[str] = Counter()
        self.peak_rss = 0
        self.retry_after: Counter[str] = Counter()

    def add(
        self,
        status: str,
        seconds: float,
        response: httpx.Response | None = None,
        retry_after: str | None = None,
    ) -> None:
        self.latencies.append(seconds)
        self.statuses[status] += 1
        if response is not None:
            retry_after = response.headers.get("retry-after", "missing")
        if status in ("429", "503"):
            self.retry_after[retry_after or "missing"] += 1

    async def sample_rss(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            for api in self.apis:
                with contextlib.suppress(psutil.Error):
                    self.peak_rss = max(self.peak_rss, api.memory_info().rss)
            await asyncio.sleep(0.2)

    def summary(self, case: str, seconds: float, **extra) -> dict:
        ordered = sorted(self.latencies)

        def pct(q: float) -> float | None:
            if not ordered:
                return None
            return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 4)

        ok = sum(n for s, n in self.statuses.items() if s.startswith("2"))
        return {
            "case": case,
            "seconds": round(seconds, 2),
            "requests": len(ordered),
            "ok": ok,
            "errors": len(ordered) - ok,
            "requests_per_second": round(len(ordered) / seconds, 1) if seconds else None,
            "p50_s": pct(0.50),
            "p99_s": pct(0.99),
            "max_s": round(ordered[-1], 4) if ordered else None,
            "statuses": dict(sorted(self.statuses.items())),
            "retry_after": dict(self.retry_after) or None,
            "api_peak_rss_mb": round(self.peak_rss / 2**20, 1),
            **self.cpu_shares(),
            **extra,
        }

    def cpu_shares(self) -> dict:
        """CPU used by the API processes together and by this load client, in % of one core.

        Why: the load generator runs on the server's cores; when the client's share is
        near 100 % the figures measure the client, not the server.
        """
        api0, client0, t0 = self.cpu_start
        elapsed = max(time.monotonic() - t0, 1e-9)
        return {
            "api_processes": len(self.apis),
            "api_cpu_percent": round(100 * (_cpu_seconds(*self.apis) - api0) / elapsed),
            "client_cpu_percent": round(100 * (_cpu_seconds(self.client) - client0) / elapsed),
        }


def _cpu_seconds(*processes: psutil.Process) -> float:
    total = 0.0
    for process in processes:
        with contextlib.suppress(psutil.Error):
            times = process.cpu_times()
            total += times.user + times.system
    return total


async def timed(client: httpx.AsyncClient, rec: Recorder, method: str, url: str, **kw) -> None:
    start = time.perf_counter()
    try:
        response = await client.request(method, url, **kw)
    except httpx.TimeoutException:
        rec.add("timeout", time.perf_counter() - start)
        return
    except httpx.TransportError as exc:
        rec.add(type(exc).__name__, time.perf_counter() - start)
        return
    rec.add(str(response.status_code), time.perf_counter() - start, response)


async def readers(stack: Stack, rec: Recorder, clients: int, seconds: float, job_ids) -> None:
    """``clients`` loops alternating ``GET /v1/jobs`` and ``GET /v1/jobs/{id}``.

    Through aiohttp, not httpx: the load generator shares the server's two cores, and
    httpx's pure-Python client spent about twice the server's CPU per request at 200
    connections (9 ms against 4 ms), so the figures measured the client. aiohttp parses
    HTTP in C; the server's side is the same.
    """
    import aiohttp

    headers = {"Authorization": f"Bearer {stack.key}"}
    connector = aiohttp.TCPConnector(limit=clients, limit_per_host=clients)
    timeout = aiohttp.ClientTimeout(total=CLIENT_TIMEOUT)
    async with aiohttp.ClientSession(
        base_url=stack.url, headers=headers, connector=connector, timeout=timeout
    ) as session:
        deadline = time.monotonic() + seconds

        async def loop(n: int) -> None:
            i = n
            while time.monotonic() < deadline:
                url = "/v1/jobs" if i % 2 == 0 else f"/v1/jobs/{job_ids[i % len(job_ids)]}"
                start = time.perf_counter()
                try:
                    async with session.get(url) as response:
                        await response.read()
                        status = str(response.status)
                        retry_after = response.headers.get("retry-after", "missing")
                except TimeoutError:
                    rec.add("timeout", time.perf_counter() - start)
                except aiohttp.ClientError as exc:
                    rec.add(type(exc).__name__, time.perf_counter() - start)
                else:
                    rec.add(status, time.perf_counter() - start, retry_after=retry_after)
                i += 1

        await asyncio.gather(*(loop(n) for n in range(clients)))


async def slow_uploads(url: str, key: str, count: int, stop: asyncio.Event) -> Counter:
    """``count`` uploads trickling 10 bytes/s from one key, until they end or ``stop``."""
    outcomes: Counter[str] = Counter()
    boundary = "loadtestboundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="a.png"\r\n'
        "Content-Type: image/png\r\n\r\n"
    ).encode()

    async def body():
        yield head
        while not stop.is_set():
            yield b"x" * 10
            await asyncio.sleep(1.0)

    async def one(client: httpx.AsyncClient) -> None:
        try:
            response = await client.post(
                "/v1/datasets",
                content=body(),
                headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
            )
            outcomes[str(response.status_code)] += 1
        except httpx.HTTPError as exc:
            outcomes["stopped" if stop.is_set() else type(exc).__name__] += 1

    async with httpx.AsyncClient(
        base_url=url,
        headers={"Authorization": f"Bearer {key}"},
        timeout=httpx.Timeout(CLIENT_TIMEOUT * 4),
        limits=httpx.Limits(max_connections=count),
    ) as client:
        tasks = [asyncio.create_task(one(client)) for _ in range(count)]
        await stop.wait()
        await asyncio.wait(tasks, timeout=2)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    unfinished = count - sum(outcomes.values())
    if unfinished:
        outcomes["still_streaming_at_end"] = unfinished
    return outcomes


async def run_case(stack: Stack, case: str, seconds: float, job_ids: list[str]) -> dict:
    rec = Recorder(stack.apis)
    stop_sampling = asyncio.Event()
    sampler = asyncio.create_task(rec.sample_rss(stop_sampling))
    extra: dict = {}
    start = time.monotonic()
    try:
        if case.startswith("read_") and case.removeprefix("read_").isdigit():
            await readers(stack, rec, int(case.removeprefix("read_")), seconds, job_ids)
        elif case == "read_200_slow_uploads":
            _, other_key = stack.new_keys(1)[0]
            stop = asyncio.Event()
            uploads = asyncio.create_task(slow_uploads(stack.url, other_key, 16, stop))
            await asyncio.sleep(1.0)  # let them start and hold whatever they hold
            start = time.monotonic()
            await readers(stack, rec, 200, seconds, job_ids)
            stop.set()
            extra["slow_uploads"] = dict(await uploads)
        elif case == "read_200_training":
            _, train_key = stack.new_keys(1)[0]
            try:
                extra["training"] = await start_training(stack.url, train_key)
            except httpx.HTTPError as exc:
                extra["training"] = {"error": f"could not start one: {exc!r}"}
            start = time.monotonic()
            await readers(stack, rec, 200, seconds, job_ids)
        elif case == "uploads_50":
            png = small_png()
            extra["file_bytes"] = len(png)
            one_key = stack.key
            many = [key for _, key in stack.new_keys(50)]
            for label, keys in (("one_key", [one_key] * 50), ("50_keys", many)):
                sub = Recorder(stack.apis)
                t0 = time.monotonic()
                async with httpx.AsyncClient(
                    base_url=stack.url, timeout=CLIENT_TIMEOUT, limits=httpx.Limits()
                ) as client:
                    await asyncio.gather(
                        *(
                            timed(
                                client,
                                sub,
                                "POST",
                                "/v1/datasets",
                                files={"files": ("a.png", png, "image/png")},
                                headers={"Authorization": f"Bearer {key}"},
                            )
                            for key in keys
                        )
                    )
                extra[label] = sub.summary(label, time.monotonic() - t0)
                for status, n in sub.statuses.items():
                    rec.statuses[status] += n
                rec.latencies += sub.latencies
        elif case.startswith("overload_"):
            clients = int(case.removeprefix("overload_"))
            await readers(stack, rec, clients, seconds, job_ids)
        elif case == "malformed_json_no_key":
            async with httpx.AsyncClient(base_url=stack.url, timeout=CLIENT_TIMEOUT) as client:
                for path in ("/v1/jobs", "/v1/volumes/vol_x/share"):
                    await timed(
                        client,
                        rec,
                        "POST",
                        path,
                        content=b"{not json",
                        headers={"Content-Type": "application/json"},
                    )
        else:
            raise SystemExit(f"unknown case {case!r}; cases: {', '.join(CASES)}")
    finally:
        stop_sampling.set()
        await sampler
    return rec.summary(case, time.monotonic() - start, **extra)


async def start_training(url: str, key: str) -> dict:
    """A tiny training job that runs (on the worker's CPU) for the rest of the benchmark."""
    config = {"arch": "tiny", "iterations": 100000, "precision": "fp32", "quality_every": 0}
    async with httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60
    ) as client:
        response = await client.post(
            "/v1/train",
            files={"files": ("a.png", small_png(), "image/png")},
            data={"config": json.dumps(config)},
        )
        if response.status_code != 202:
            return {"error": f"POST /v1/train answered {response.status_code}"}
        job_id = response.json()["id"]
        deadline = time.monotonic() + 60
        state = "queued"
        while time.monotonic() < deadline:
            job = (await client.get(f"/v1/jobs/{job_id}")).json()
            state = job["state"]
            if state == "running" and job["progress"].get("iteration", 0) > 0:
                break
            await asyncio.sleep(0.5)
        return {"job": job_id, "state_when_readers_started": state}


def settle(stack: Stack, limit: float = 120.0) -> None:
    """Wait (bounded) until the API answers a read again, so cases do not overlap."""
    deadline = time.monotonic() + limit
    headers = {"Authorization": f"Bearer {stack.key}"}
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{stack.url}/v1/jobs", headers=headers, timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1.0)


def machine() -> dict:
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info if "model name" in line)
    except (OSError, StopIteration):
        pass
    return {
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "load_average": os.getloadavg(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated cases")
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each case")
    parser.add_argument("--label", default="", help="printed with the machine line")
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        help="MICROFORGE_NAME=value for the stack (repeatable)",
    )
    parser.add_argument(
        "--py-spy",
        default=None,
        help="path of a py-spy binary: profile the API process during each case "
        "(written next to the printed JSON as <case>.pyspy.txt, collapsed stacks)",
    )
    args = parser.parse_args()
    overrides = dict(item.split("=", 1) for item in args.env)
    print(json.dumps({"machine": machine(), "label": args.label, "env": overrides}), flush=True)
    with tempfile.TemporaryDirectory(prefix="mf-load-") as tmp:
        stack = Stack(Path(tmp) / "data", overrides)
        try:
            from microforge.storage.api_keys import authenticate

            with stack.database()() as session:
                owner_id = authenticate(session, stack.key).id
            job_ids = stack.seed_jobs(owner_id, 30)
            for case in args.cases.split(","):
                profiler = None
                if args.py_spy:
                    profiler = subprocess.Popen(
                        [args.py_spy, "record", "--pid", str(stack.apis[0].pid), "--format", "raw"]
                        + ["--rate", "200", "-o", f"{case.strip()}.pyspy.txt", "--nonblocking"],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                settle(stack)
                try:
                    result = asyncio.run(run_case(stack, case.strip(), args.seconds, job_ids))
                except Exception as exc:  # noqa: BLE001 - report it and go on with the next
                    result = {"case": case.strip(), "failed": repr(exc)}
                if profiler is not None:
                    profiler.send_signal(signal.SIGINT)
                    profiler.wait(30)
                print(json.dumps(result), flush=True)
                time.sleep(1.0)
        finally:
            stack.stop()


if __name__ == "__main__":
    main()
