"""When ``microforge up`` restarts a child that died, and how it says so.

Why a policy of its own: a child that dies once (OOM-killed, a crash, ``kill -9``) should
be back within a second, but one that dies again as soon as it starts (a broken install,
its port taken by another program) must not be restarted in a hot loop that burns a core
and floods the terminal. So, like Kubernetes' CrashLoopBackOff, the delay starts at one
second and doubles with every death in a row up to a cap, and a child that ran for a
while before dying counts as healthy again (the count starts over). ``up`` never gives
up on a child (as Kubernetes does not); past a few deaths in a row its message says that
the child is crash-looping and where to look. Pure code, so it is tested without waiting.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass

#: From this many deaths in a row on, the message calls it a crash loop.
CRASH_LOOP_DEATHS = 4


@dataclass
class RestartBackoff:
    """Exponential back-off between restarts of one child, reset after a stable run."""

    initial_seconds: float = 1.0
    max_seconds: float = 30.0
    #: A child that ran at least this long before dying was healthy: the delay starts over.
    stable_seconds: float = 60.0
    #: Deaths in a row, each within ``stable_seconds`` of its start (the last one included).
    deaths_in_a_row: int = 0

    def next_delay(self, ran_seconds: float) -> float:
        """Record a death after ``ran_seconds`` of running; return the wait before restarting."""
        if ran_seconds >= self.stable_seconds:
            self.deaths_in_a_row = 0
        delay = min(self.max_seconds, self.initial_seconds * 2.0**self.deaths_in_a_row)
        self.deaths_in_a_row += 1
        return delay

    @property
    def crash_looping(self) -> bool:
        return self.deaths_in_a_row >= CRASH_LOOP_DEATHS


def describe_exit(returncode: int) -> str:
    """``exited with code 3`` or ``was killed by SIGKILL`` (Popen gives -N for signal N)."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"was killed by {name}"
    return f"exited with code {returncode}"


def death_message(
    name: str, pid: int, returncode: int, ran_seconds: float, delay: float, backoff: RestartBackoff
) -> str:
    """One line for the terminal: which child, how it ended, and when it comes back."""
    line = (
        f"the {name} (pid {pid}) {describe_exit(returncode)} after {ran_seconds:.0f} s; "
        f"restarting it in {delay:g} s"
    )
    if backoff.crash_looping:
        line += (
            f" (crash loop: {backoff.deaths_in_a_row} deaths in a row, each within "
            f"{backoff.stable_seconds:g} s of starting; its messages above say why)"
        )
    return line
