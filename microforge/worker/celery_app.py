"""The Celery application, shared by the API (to enqueue by name) and the workers.

Importing this module must stay cheap and torch-free: the API process imports it to send
tasks. The task bodies live in ``microforge.worker.tasks``, imported only by workers.

Celery delivers at least once; the settings below make a lost worker's task come back
(``acks_late`` + ``reject_on_worker_lost``) and keep one task per process at a time
(``prefetch_multiplier=1``). Redis re-delivers a task that is not acknowledged within the
visibility timeout, so it is set in the three places Celery reads it and must exceed one
training segment by a wide margin.
"""

from __future__ import annotations

from celery import Celery

from microforge.jobs import GENERATE, JOB_KINDS, TRAIN
from microforge.settings import Settings, get_settings

# The names the task bodies are registered under (``microforge.jobs`` says which is which).
TRAIN_QUEUE = TRAIN.queue
GENERATE_QUEUE = GENERATE.queue
TRAIN_SEGMENT_TASK = TRAIN.task
GENERATE_VOLUME_TASK = GENERATE.task
#: For the API (``fail_fast``): how long connecting to the broker may take, and how long a
#: command may wait for its reply (a hung broker), before a request answers 503.
FAIL_FAST_CONNECT_SECONDS = 2.0
FAIL_FAST_REPLY_SECONDS = 5.0


def make_celery_app(
    settings: Settings | None = None, broker_url: str | None = None, *, fail_fast: bool = False
) -> Celery:
    """The Celery app on the settings' broker.

    ``fail_fast`` is for a process that must answer a person quickly (the API): with the
    broker down, kombu would otherwise keep retrying the connection for seconds per
    message. Here it tries once more at once (a pooled connection left from before a
    broker restart is replaced) and then raises, within ``FAIL_FAST_*_SECONDS``.
    """
    settings = settings or get_settings()
    url = broker_url or settings.redis_url
    if not url:
        raise RuntimeError(
            "no broker: set MICROFORGE_REDIS_URL, or start the local stack with `microforge up`"
        )
    app = Celery("microforge", broker=url, backend=None)
    transport_options = {
        "visibility_timeout": settings.visibility_timeout_seconds,
        # How soon a killed worker's message comes back: kombu sweeps for messages past the
        # visibility timeout every interval x throttle seconds (default 100 s); sweep about
        # 20 times per timeout instead (a cheap ZRANGE), so recovery follows the setting.
        "unacked_restore_interval": max(1, min(10, settings.visibility_timeout_seconds // 20)),
        "unacked_restore_throttle": 1,
    }
    if fail_fast:
        transport_options.update(
            max_retries=1,
            interval_start=0,
            interval_step=0.2,
            interval_max=0.2,
            socket_connect_timeout=FAIL_FAST_CONNECT_SECONDS,
            socket_timeout=FAIL_FAST_REPLY_SECONDS,
        )
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_track_started=False,
        task_ignore_result=True,
        broker_transport_options=transport_options,
        result_backend_transport_options=transport_options,
        visibility_timeout=settings.visibility_timeout_seconds,
        broker_connection_retry_on_startup=True,
        **({"broker_connection_timeout": FAIL_FAST_CONNECT_SECONDS} if fail_fast else {}),
        task_default_queue=TRAIN_QUEUE,
        task_routes={kind.task: {"queue": kind.queue} for kind in JOB_KINDS.values()},
        worker_hijack_root_logger=False,
    )
    return app
