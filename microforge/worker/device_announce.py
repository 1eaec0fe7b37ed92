"""Each worker says, through the broker, which device it trains on; ``/v1/health`` reads it.

Why: a user about to start a training job must know whether it will run on a GPU or on a
CPU (a paper-sized network takes seconds per iteration on one and minutes on the other),
and only the worker can tell: the API never imports torch. Why the broker and not a Celery
``inspect`` reply: a solo-pool worker busy with a training segment answers no control
message until the segment ends, but a daemon thread can refresh a key meanwhile. The key
expires a little after the worker stops refreshing it, so a dead worker drops out.
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import threading
from typing import Any

from microforge.storage.worker_devices import publish, withdraw

log = logging.getLogger(__name__)

#: Well inside the keys' TTL (storage.worker_devices.TTL_SECONDS).
REFRESH_SECONDS = 20.0


def describe_device(name: str) -> dict[str, Any]:
    """What ``name`` (auto, cpu, cuda[:N]) resolves to on this machine, in a few fields."""
    try:
        import torch

        from microforge.models.devices import resolve_device

        device = resolve_device(name)
        if device.type == "cuda":
            index = device.index if device.index is not None else torch.cuda.current_device()
            props = torch.cuda.get_device_properties(index)
            return {
                "kind": "cuda",
                "name": props.name,
                "memory_bytes": int(props.total_memory),
            }
        return {
            "kind": "cpu",
            "name": platform.processor() or platform.machine() or "CPU",
            "cores": os.cpu_count(),
        }
    except Exception as error:  # noqa: BLE001 - the worker fails on it later, with its message
        return {"kind": "unknown", "name": str(error)}


class DeviceAnnouncer:
    """A daemon thread that keeps ``microforge:worker-device:<worker>`` fresh in Redis."""

    def __init__(self, redis_url: str, worker: str, info: dict[str, Any]) -> None:
        import redis

        self._client = redis.Redis.from_url(redis_url, socket_timeout=5)
        self.worker = worker
        self.info = info
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="microforge-device", daemon=True)

    def announce(self) -> None:
        """One refresh; never raises (a broker hiccup must not take the worker down)."""
        try:
            publish(self._client, self.worker, self.info)
        except Exception:  # noqa: BLE001 - the next refresh tries again
            log.warning("could not announce the worker's device to the broker", exc_info=True)

    def start(self) -> None:
        self.announce()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        with contextlib.suppress(Exception):  # it expires on its own anyway
            withdraw(self._client, self.worker)
        self._client.close()

    def _run(self) -> None:
        while not self._stop.wait(REFRESH_SECONDS):
            self.announce()
