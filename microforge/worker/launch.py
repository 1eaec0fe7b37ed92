"""Starting a worker process: check the settings, recover stranded jobs, run Celery.

Why a sweep on start, and periodically after it (``worker.redispatch``): the local stack's
embedded broker, or a crash between releasing a lease and sending the next message, can
leave an active job without a message. Sending one more message per unheld active job is
harmless (messages carry the fencing token, so a copy that comes second is dropped).
"""

from __future__ import annotations

import logging
import os
import socket

from microforge.jobs import KIND_OF_QUEUE
from microforge.settings import Settings
from microforge.storage.blob_gc import remove_abandoned_temporary_files
from microforge.storage.blobs import get_blob_store
from microforge.storage.db import upgrade_database
from microforge.worker.device_announce import DeviceAnnouncer, describe_device
from microforge.worker.redispatch import RedispatchSweeper

log = logging.getLogger(__name__)


class WorkerSettingsError(ValueError):
    """Settings under which leases and redelivery would fight each other."""


def check_worker_settings(settings: Settings) -> None:
    """A dead worker's message must come back only after its lease has run out.

    Otherwise the redelivered message finds the lease still live, is taken for a
    duplicate and dropped, and the job waits for the next worker restart.
    """
    if not settings.redis_url:
        raise WorkerSettingsError(
            "no broker: set MICROFORGE_REDIS_URL (e.g. redis://localhost:6379/0), "
            "or run `microforge up`, which starts one"
        )
    needed = settings.lease_seconds + settings.train_segment_seconds
    if settings.visibility_timeout_seconds <= needed:
        raise WorkerSettingsError(
            f"MICROFORGE_VISIBILITY_TIMEOUT_SECONDS ({settings.visibility_timeout_seconds}) must "
            f"exceed MICROFORGE_LEASE_SECONDS + MICROFORGE_TRAIN_SEGMENT_SECONDS ({needed:g}); "
            "raise the timeout or shorten the lease or the segment"
        )


def default_worker_name() -> str:
    return f"microforge-{os.getpid()}@{socket.gethostname()}"


def run_worker(
    settings: Settings,
    queues: list[str],
    *,
    name: str | None = None,
    loglevel: str = "INFO",
    migrate: bool = True,
    quiet: bool = False,
) -> None:
    """Run one Celery worker (solo pool: one job at a time, in this very process) until stopped.

    Solo pool because a worker owns one GPU: the task runs in the process that received
    it, CUDA is initialised there on the first task and never in a forked parent, and a
    shutdown signal reaches the running segment so it checkpoints and hands the job on.
    """
    check_worker_settings(settings)
    logging.basicConfig(
        level=loglevel.upper(), format="[%(asctime)s %(levelname)s %(name)s] %(message)s"
    )
    unknown = [q for q in queues if q not in KIND_OF_QUEUE]
    if unknown:
        raise WorkerSettingsError(
            f"unknown queue(s) {', '.join(unknown)}: use {' and/or '.join(KIND_OF_QUEUE)}"
        )
    if migrate:
        upgrade_database(settings.resolved_database_url)
    freed = remove_abandoned_temporary_files(get_blob_store(settings))
    if freed:
        log.warning("removed %d bytes of scratch files left by killed processes", freed)
    from microforge.worker.tasks import app

    sweeper = RedispatchSweeper(settings, app, [KIND_OF_QUEUE[q] for q in queues])
    sweeper.sweep_now(quiet_seconds=0)
    sweeper.start()
    worker_name = name or default_worker_name()
    announcer = DeviceAnnouncer(settings.redis_url, worker_name, describe_device(settings.device))
    announcer.start()
    try:
        app.worker_main(
            argv=[
                *(["--quiet"] if quiet else []),
                "worker",
                "--pool=solo",
                "--concurrency=1",
                f"--queues={','.join(queues)}",
                f"--hostname={worker_name}",
                f"--loglevel={loglevel}",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                "-O",
                "fair",
            ]
        )
    finally:
        announcer.stop()
        sweeper.stop()
