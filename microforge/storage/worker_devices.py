"""Which device each worker trains on, kept in the broker (Redis) under expiring keys.

Written by the workers (``worker.device_announce``), read by ``/v1/health``: the API never
imports torch, so only a worker can say whether it has a GPU. A key expires
``TTL_SECONDS`` after its worker last refreshed it, so a dead worker drops out on its own.
"""

from __future__ import annotations

import json
from typing import Any

KEY_PREFIX = "microforge:worker-device:"
TTL_SECONDS = 60


def publish(client: Any, worker: str, info: dict[str, Any]) -> None:
    """Set (or refresh) ``worker``'s announcement; ``client`` is a ``redis.Redis``."""
    client.set(KEY_PREFIX + worker, json.dumps({"worker": worker, **info}), ex=TTL_SECONDS)


def withdraw(client: Any, worker: str) -> None:
    client.delete(KEY_PREFIX + worker)


def read_all(client: Any) -> list[dict[str, Any]]:
    """Every live announcement, sorted by worker name."""
    devices = []
    for key in client.scan_iter(match=KEY_PREFIX + "*", count=100):
        raw = client.get(key)
        if not raw:
            continue  # expired between the scan and the read
        try:
            devices.append(json.loads(raw))
        except ValueError:
            continue
    return sorted(devices, key=lambda d: str(d.get("worker", "")))
