"""Which process wrote a scratch file of the blob store (or holds a job's lease), and
whether it still runs.

Why: a process killed mid-write (the API during an upload, a worker writing a volume)
leaves its scratch file behind. By age alone an abandoned file cannot be told from a slow
write under way, so the age rule has to be long (a day). Naming every scratch file after
its writer lets a starting API remove at once what dead processes left, while the files
of live ones (other API replicas or workers on the same blob store) stay untouched.

A name starts with ``<pid space>-<pid>-<start>-``: the pid space is a hash of the host
name, the boot id and the PID namespace (a pid means something only within one: another
host or container sharing the store has its own), and the start time, in clock ticks
since boot from ``/proc``, tells a reused pid from the writer. A file whose owner cannot
be checked from here (another pid space, a name from before this scheme) is ``None``:
the age rule alone decides for it.

A worker's lease on a job carries the same tag (``process_tag``), so that a worker starting
where another one was killed can hand that job on at once instead of waiting for the dead
one's lease to run out (``job_lifecycle.release_leases_of_dead_owners``).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import re
import socket
import sys
from pathlib import Path

_OWNED = re.compile(r"^(?P<space>[0-9a-f]{8})-(?P<pid>[0-9]{1,10})-(?P<start>[0-9]{1,20})-")
_PROC = Path("/proc")


@functools.cache
def pid_space() -> str:
    """Eight hex digits naming the set of processes whose pids this process can check."""
    parts = [socket.gethostname()]
    with contextlib.suppress(OSError):
        parts.append((_PROC / "sys/kernel/random/boot_id").read_text().strip())
    with contextlib.suppress(OSError):
        parts.append(str(os.stat(_PROC / "self/ns/pid").st_ino))
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:8]


def _start_ticks(pid: int) -> int | None:
    """When ``pid`` started, in clock ticks since boot (Linux); None when there is no such
    process or no ``/proc``. Exact and immune to changes of the wall clock."""
    try:
        stat = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # Fields after the command name, which is in parentheses and may hold spaces.
    return int(stat[stat.rindex(")") + 2 :].split()[19])


@functools.cache
def _own_start(pid: int) -> int:
    return _start_ticks(pid) or 0


def owner_prefix() -> str:
    """The start of a scratch file name that says this process wrote it."""
    pid = os.getpid()  # read each time: a forked child owns its own files
    return f"{pid_space()}-{pid}-{_own_start(pid)}-"


def owner_is_alive(name: str) -> bool | None:
    """Whether the process named by a scratch file name still runs; None when that cannot
    be known here."""
    match = _OWNED.match(name)
    if match is None or match["space"] != pid_space():
        return None
    pid, start = int(match["pid"]), int(match["start"])
    if start and _PROC.is_dir():
        return _start_ticks(pid) == start
    if sys.platform == "win32":
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # it exists, owned by another user
        return True
    return True


def process_tag() -> str:
    """``<pid space>-<pid>-<start>``: this process, checkable by ``tag_is_alive``."""
    return owner_prefix()[:-1]


def tag_is_alive(text: str) -> bool | None:
    """Whether the process whose ``process_tag`` ends ``text`` (after a last ':') still runs;
    None when that cannot be known here (another pid space, no tag)."""
    return owner_is_alive(text.rsplit(":", 1)[-1] + "-")
