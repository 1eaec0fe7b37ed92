"""How ``microforge up`` restarts a dead child: the back-off policy with a fake clock, and
the supervision step on real (tiny) processes, with no waiting for real back-off."""

from __future__ import annotations

import signal
import sys
import time

import pytest

from microforge.settings import Settings
from microforge.worker.local_stack import LocalStack
from microforge.worker.restart_policy import RestartBackoff, death_message, describe_exit


def test_backoff_doubles_to_the_cap_and_starts_over_after_a_stable_run() -> None:
    backoff = RestartBackoff(initial_seconds=1, max_seconds=30, stable_seconds=60)
    quick = [backoff.next_delay(ran_seconds=2) for _ in range(8)]
    assert quick == [1, 2, 4, 8, 16, 30, 30, 30]  # never a hot loop, never past the cap
    assert backoff.crash_looping and backoff.deaths_in_a_row == 8
    assert backoff.next_delay(ran_seconds=60) == 1  # it had been healthy: start over
    assert not backoff.crash_looping
    assert backoff.next_delay(ran_seconds=0.1) == 2


def test_death_messages_name_the_child_the_signal_and_the_restart() -> None:
    assert describe_exit(-signal.SIGKILL) == "was killed by SIGKILL"
    assert describe_exit(3) == "exited with code 3"
    backoff = RestartBackoff()
    delay = backoff.next_delay(12.4)
    line = death_message("worker", 42, -9, 12.4, delay, backoff)
    assert line == "the worker (pid 42) was killed by SIGKILL after 12 s; restarting it in 1 s"
    for _ in range(4):
        delay = backoff.next_delay(0.5)
    assert "crash loop: 5 deaths in a row" in death_message("api", 7, 1, 0.5, delay, backoff)


@pytest.fixture
def stack(tmp_path):
    lines: list[str] = []
    stack = LocalStack(Settings(data_dir=tmp_path), log=lines.append)
    stack.lines = lines
    yield stack
    stack.stop()


def test_a_dead_child_is_restarted_after_its_backoff_and_stop_ends_it(stack) -> None:
    sleeper = [sys.executable, "-c", "import time; time.sleep(600)"]
    child = stack._spawn("worker", sleeper)
    first_pid = child.process.pid
    child.process.send_signal(signal.SIGKILL)
    child.process.wait(10)

    now = time.monotonic()
    stack.supervise_once(now)  # noticed: one line, a restart due in 1 s
    assert len(stack.lines) == 1 and "the worker (pid" in stack.lines[0]
    assert "killed by SIGKILL" in stack.lines[0] and "restarting it in 1 s" in stack.lines[0]
    stack.supervise_once(now + 0.5)  # not yet
    assert not child.alive() and len(stack.lines) == 1
    stack.supervise_once(now + 1.0)
    assert child.alive() and child.process.pid != first_pid
    assert stack.lines[1] == f"restarted the worker (pid {child.process.pid})"

    crasher = stack._spawn("api", [sys.executable, "-c", "raise SystemExit(3)"])
    crasher.process.wait(30)
    delays = []
    for _ in range(3):  # it dies at once every time: 1, 2, 4 s, never sooner
        stack.supervise_once(now)
        delays.append(crasher.restart_at - now)
        now = crasher.restart_at
        stack.supervise_once(now)
        crasher.started_at = now  # as if it had started on time
        crasher.process.wait(30)
    assert delays == [1, 2, 4]
    assert "the api (pid" in stack.lines[-2] and "exited with code 3" in stack.lines[-2]

    restarted = child.process
    stack.stop()
    assert restarted.poll() is not None and crasher.process.poll() is not None


def test_no_restart_once_the_stack_is_stopping(stack) -> None:
    child = stack._spawn("broker", [sys.executable, "-c", "pass"])
    child.process.wait(30)
    now = time.monotonic()
    stack.supervise_once(now)
    stack.request_stop()
    stack.supervise_once(now + 60)
    assert child.restart_at is not None and child.process.returncode == 0
