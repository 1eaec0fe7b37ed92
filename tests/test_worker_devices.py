"""Workers announce their device through the broker; /v1/health reports it.

Why it matters: the web front end's train form says "this will run on the CPU" (and
warns about a large network) from this, before anyone waits hours for a job.
"""

from __future__ import annotations

import json

from microforge.storage import worker_devices
from microforge.worker.device_announce import DeviceAnnouncer, describe_device


def test_describe_device_names_the_cpu_and_reports_an_impossible_one():
    cpu = describe_device("cpu")
    assert cpu["kind"] == "cpu" and cpu["cores"] >= 1
    broken = describe_device("tpu:7")
    assert broken["kind"] == "unknown" and "tpu" in broken["name"]


def test_announcer_publishes_with_an_expiry_and_withdraws_on_stop(broker, broker_url):
    announcer = DeviceAnnouncer(broker_url, "w1@host", {"kind": "cpu", "name": "x86", "cores": 2})
    announcer.start()
    try:
        key = worker_devices.KEY_PREFIX + "w1@host"
        assert json.loads(broker.get(key)) == {
            "worker": "w1@host",
            "kind": "cpu",
            "name": "x86",
            "cores": 2,
        }
        assert 0 < broker.ttl(key) <= worker_devices.TTL_SECONDS
    finally:
        announcer.stop()
    assert worker_devices.read_all(broker) == []


def test_health_lists_the_announced_devices(client, broker):
    worker_devices.publish(
        broker, "gpu-1@a", {"kind": "cuda", "name": "NVIDIA H200", "memory_bytes": 150 * 2**30}
    )
    worker_devices.publish(broker, "cpu-1@b", {"kind": "cpu", "name": "x86_64", "cores": 2})
    broker.set(worker_devices.KEY_PREFIX + "junk", "not json")
    body = client.get("/v1/health").json()
    assert [(d["worker"], d["kind"]) for d in body["worker_devices"]] == [
        ("cpu-1@b", "cpu"),
        ("gpu-1@a", "cuda"),
    ]
    assert body["worker_devices"][1]["name"] == "NVIDIA H200"
