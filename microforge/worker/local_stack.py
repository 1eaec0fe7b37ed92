"""``microforge up``: the whole service on one machine, as child processes of one command.

Why child processes: the API must never import torch and a worker must own its device, so
they are separate programs even locally; ``up`` starts them with the same settings (passed
as ``MICROFORGE_*`` environment variables), watches them, and on Ctrl-C or SIGTERM stops
them in order: the API first (no new jobs), then the worker (its segment checkpoints and
hands the job on), then the broker. Children run in their own process groups, so the
terminal's Ctrl-C reaches only ``up``, and on Linux they are told to exit if ``up`` dies.

Once the stack is up, a child that dies on its own is restarted with the same command
line (the broker on the same port and data dir, so the API and the worker find it and
its queues again), after a back-off that grows while it keeps dying
(``restart_policy``); whatever it left running in its process group is killed first.
Failures during start-up stop ``up`` instead: those are settings to fix, not crashes.

The API runs as ``api_processes`` uvicorn processes (``api``, ``api-2``, ...) that accept
connections on one listening socket, which ``up`` opens and hands to each (``--fd``).
Why: one Python process serves requests on one core at most (the GIL), and on a 2-core
machine 200 readers kept it at 100 % of one core while the other was idle
(docs/benchmarks.md). Why ``up`` owns the socket rather than uvicorn's ``--workers``: each
process is then a child that ``up`` supervises like the others, and while one is restarted
the rest keep answering on the same port (the kernel queues new connections on the
socket, never refuses them).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from microforge.settings import Settings
from microforge.storage.db import upgrade_database
from microforge.worker.restart_policy import RestartBackoff, death_message

#: How long the worker gets to checkpoint and hand its job on before it is forced.
WORKER_STOP_SECONDS = 60.0
API_STOP_SECONDS = 15.0
BROKER_STOP_SECONDS = 15.0
STARTUP_SECONDS = 120.0
#: Connections the kernel queues on the API's socket until a process accepts them.
LISTEN_BACKLOG = 2048
#: How often ``up`` looks at its children (a death is noticed within this time).
WATCH_SECONDS = 0.25


class StackError(RuntimeError):
    """The local stack could not start; the message says which part and why."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


#: How much lower the worker's CPU priority is than the API's and the broker's. Why: on a
#: machine without a GPU, training takes every core it is given; at equal priority the API
#: then answers slowly while a job runs. A niced worker gets the CPU the API leaves idle,
#: which is nearly all of it; on a GPU the worker hardly needs the CPU at all.
CHILD_NICENESS = {"worker": 10}


def _exit_with_parent() -> None:
    """In the child before exec: get SIGTERM when ``up`` dies, even by SIGKILL (Linux)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            pr_set_pdeathsig = 1
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _child_setup(niceness: int) -> Callable[[], None]:
    """What a child runs before exec: its priority, and exit with ``up``."""

    def setup() -> None:
        if niceness:
            with contextlib.suppress(OSError, AttributeError):
                os.nice(niceness)
        _exit_with_parent()

    return setup


def _is_api(name: str) -> bool:
    return name == "api" or name.startswith("api-")


def _log_to_stderr(line: str) -> None:
    print(
        f"[{time.strftime('%Y-%m-%d %H:%M:%S')}] microforge up: {line}", file=sys.stderr, flush=True
    )


@dataclass
class Child:
    name: str
    argv: list[str]
    process: subprocess.Popen
    started_at: float = field(default_factory=time.monotonic)
    backoff: RestartBackoff = field(default_factory=RestartBackoff)
    #: When a dead child is due to be started again (monotonic), None while it runs.
    restart_at: float | None = None
    #: Signalled by ``stop`` while it ran (its process group is killed once it is gone).
    stopping: bool = False

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill_leftovers(self) -> None:
        """Kill what the dead child left in its process group (the embedded broker's
        valkey-server outlives a SIGKILLed wrapper and would keep the port)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)

    def stop(self, timeout: float, first: int = signal.SIGTERM) -> int | None:
        """Signal, wait, and kill if it does not go; returns the exit code."""
        self.signal(first)
        return self.finish(timeout)

    def signal(self, signum: int) -> None:
        if self.alive():
            self.stopping = True
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signum)

    def finish(self, timeout: float) -> int | None:
        """Wait for a signalled child, kill it if it does not go, then what it left behind;
        returns the exit code."""
        if self.stopping:
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    self.process.kill()
                self.process.wait(10)
            self.kill_leftovers()
        return self.process.returncode


@dataclass
class LocalStack:
    settings: Settings
    host: str = "127.0.0.1"
    port: int = 8000
    children: dict[str, Child] = field(default_factory=dict)
    broker_url: str | None = None
    log: Callable[[str], None] = _log_to_stderr
    _stop: threading.Event = field(default_factory=threading.Event)
    _listener: socket.socket | None = None

    @property
    def url(self) -> str:
        shown = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://{shown}:{self.port}"

    def child_env(self) -> dict[str, str]:
        env = dict(os.environ)
        data_dir = self.settings.data_dir.resolve()
        env.update(
            MICROFORGE_DATA_DIR=str(data_dir),
            MICROFORGE_DATABASE_URL=self.settings.resolved_database_url,
            MICROFORGE_BLOB_DIR=str(self.settings.resolved_blob_dir),
            MICROFORGE_REDIS_URL=self.broker_url or "",
        )
        return env

    def _popen(self, name: str, argv: list[str]) -> subprocess.Popen:
        return subprocess.Popen(  # noqa: S603 - our own interpreter and modules
            argv,
            env=self.child_env(),
            process_group=0,
            # Only the API processes get the listening socket.
            pass_fds=(self._listener.fileno(),) if _is_api(name) and self._listener else (),
            # Only nice() and prctl() run in the child before exec.
            preexec_fn=_child_setup(CHILD_NICENESS.get(name, 0)),  # noqa: PLW1509
        )

    def _spawn(self, name: str, argv: list[str]) -> Child:
        child = Child(name, argv, self._popen(name, argv))
        self.children[name] = child
        return child

    def _listen(self) -> None:
        """Open the API's socket first: a busy port fails before anything starts, with the fix."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
            # Connections waiting to be accepted; the app's own admission limit
            # (MICROFORGE_MAX_CONCURRENT_REQUESTS) and --limit-concurrency sit above it.
            sock.listen(LISTEN_BACKLOG)
        except OSError as error:
            sock.close()
            raise StackError(
                f"cannot listen on {self.host}:{self.port} ({error.strerror}): "
                "another program uses the port; pass --port with a free one"
            ) from error
        sock.set_inheritable(True)
        self._listener = sock

    def api_argv(self) -> list[str]:
        """One API process, serving on ``up``'s socket (module docs)."""
        return [
            sys.executable,
            "-m",
            "uvicorn",
            "microforge.api.app:create_app",
            "--factory",
            "--fd",
            str(self._listener.fileno()),
            "--log-level",
            "warning",
            # A bound on open connections per process; past it uvicorn answers 503.
            "--limit-concurrency",
            str(self.settings.max_connections),
        ]

    def start(self) -> None:
        self._listen()
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        upgrade_database(self.settings.resolved_database_url)
        self.broker_url = self.settings.redis_url or self._start_broker()
        self._spawn("worker", [sys.executable, "-m", "microforge.worker", "--quiet"])
        for index in range(self.settings.resolved_api_processes):
            self._spawn("api" if index == 0 else f"api-{index + 1}", self.api_argv())
        self._wait_for_api()

    def _start_broker(self) -> str:
        port = free_port()
        broker_dir = self.settings.data_dir.resolve() / "broker"
        broker_dir.mkdir(parents=True, exist_ok=True)
        child = self._spawn(
            "broker",
            [
                sys.executable,
                "-m",
                "microforge.worker.embedded_broker",
                "--data-dir",
                str(broker_dir),
                "--port",
                str(port),
            ],
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if not child.alive():
                raise StackError(
                    f"the embedded broker exited (code {child.process.returncode}); "
                    f"see {broker_dir / 'valkey.log'}"
                )
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                return f"redis://127.0.0.1:{port}/0"
            time.sleep(0.1)
        raise StackError(f"the embedded broker did not start within 30 s; see {broker_dir}")

    def _wait_for_api(self) -> None:
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline and not self._stop.is_set():
            self.check_children()
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/v1/health", timeout=2).status_code < 500:
                    return
            time.sleep(0.2)
        if not self._stop.is_set():
            raise StackError(f"the API did not answer on {self.url} within {STARTUP_SECONDS} s")

    def check_children(self) -> None:
        """During start-up: a child that dies is a setting to fix, so ``up`` stops."""
        for child in self.children.values():
            if not child.alive():
                raise StackError(
                    f"the {child.name} process exited with code {child.process.returncode}; "
                    "its messages are above"
                )

    def request_stop(self, *_: object) -> None:
        self._stop.set()

    def wait(self) -> None:
        """Supervise the children until asked to stop (Ctrl-C, SIGTERM, SIGHUP)."""
        while not self._stop.wait(WATCH_SECONDS):
            self.supervise_once(time.monotonic())

    def supervise_once(self, now: float) -> None:
        """Notice children that died (log, schedule a restart) and restart those due."""
        for child in self.children.values():
            if child.restart_at is None and not child.alive():
                child.kill_leftovers()
                ran = now - child.started_at
                delay = child.backoff.next_delay(ran)
                child.restart_at = now + delay
                self.log(
                    death_message(
                        child.name,
                        child.process.pid,
                        child.process.returncode,
                        ran,
                        delay,
                        child.backoff,
                    )
                )
            elif child.restart_at is not None and now >= child.restart_at:
                if self._stop.is_set():
                    return
                child.process = self._popen(child.name, child.argv)
                child.started_at, child.restart_at = time.monotonic(), None
                self.log(f"restarted the {child.name} (pid {child.process.pid})")

    def stop(self) -> None:
        """The API processes first (together), then the worker, then the broker."""
        apis = [child for name, child in self.children.items() if _is_api(name)]
        for child in apis:
            child.signal(signal.SIGTERM)
        for child in apis:
            child.finish(API_STOP_SECONDS)
        for name, seconds in (("worker", WORKER_STOP_SECONDS), ("broker", BROKER_STOP_SECONDS)):
            if name in self.children:
                self.children[name].stop(seconds)
        self.children.clear()
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    def install_signal_handlers(self) -> None:
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, self.request_stop)


def ensure_first_key(settings: Settings) -> str | None:
    """On a brand-new data dir, create a key named 'local' and return it (shown once)."""
    from microforge.storage.api_keys import create_api_key, list_api_keys
    from microforge.storage.db import create_db_engine, make_session_factory

    engine = create_db_engine(settings.resolved_database_url)
    try:
        with make_session_factory(engine)() as session:
            if list_api_keys(session):
                return None
            _row, plaintext = create_api_key(session, "local")
            return plaintext
    finally:
        engine.dispose()


def data_dir_hint(settings: Settings) -> str:
    return f"MICROFORGE_DATA_DIR={Path(settings.data_dir).resolve()}"
