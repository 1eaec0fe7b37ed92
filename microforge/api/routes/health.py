"""/v1/health: is the service able to take and run jobs? No key needed.

Why three parts: the database and the broker are needed to accept a job (503 without
them), while missing workers only mean jobs wait, which a user should see but which does
not make the API itself unhealthy.
"""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.concurrency import run_in_threadpool

from microforge.api.schemas import HealthComponent, HealthOut, WorkerDevice
from microforge.api.state import SessionScopedRoute, StateDep
from microforge.storage import worker_devices
from microforge.storage.db import database_is_reachable

router = APIRouter(prefix="/v1", tags=["health"], route_class=SessionScopedRoute)


def _check_broker(url: str | None, timeout: float) -> tuple[HealthComponent, list[WorkerDevice]]:
    """Ping the broker, and read the workers' device announcements from it."""
    if not url:
        return HealthComponent(ok=False, detail="no broker configured (MICROFORGE_REDIS_URL)"), []
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        client.ping()
        devices = [
            WorkerDevice.model_validate(item)
            for item in worker_devices.read_all(client)
            if item.get("kind") in ("cuda", "cpu", "unknown")
        ]
    except Exception as exc:  # noqa: BLE001 - any failure is "down", reported with its reason
        return HealthComponent(ok=False, detail=f"{type(exc).__name__}: {exc}"), []
    finally:
        client.close()
    return HealthComponent(ok=True), devices


def _check_workers(state, timeout: float) -> tuple[HealthComponent, list[str]]:
    try:
        replies = state.celery().control.inspect(timeout=timeout).ping() or {}
    except Exception as exc:  # noqa: BLE001
        return HealthComponent(ok=False, detail=f"{type(exc).__name__}: {exc}"), []
    names = sorted(replies)
    if not names:
        return HealthComponent(ok=False, detail="no worker answered; jobs will wait"), []
    return HealthComponent(ok=True, detail=f"{len(names)} worker(s)"), names


@router.get(
    "/health",
    response_model=HealthOut,
    summary="Service health (database, broker, workers)",
    responses={503: {"model": HealthOut, "description": "Database or broker is down."}},
)
async def health(state: StateDep, response: Response) -> HealthOut:
    timeout = state.settings.health_timeout_seconds
    db_ok, db_detail = await run_in_threadpool(database_is_reachable, state.engine)
    database = HealthComponent(ok=db_ok, detail=db_detail)
    broker, devices = await run_in_threadpool(_check_broker, state.settings.redis_url, timeout)
    if broker.ok:
        workers, names = await run_in_threadpool(_check_workers, state, timeout)
    else:
        workers, names = HealthComponent(ok=False, detail="broker is down"), []
    if not (database.ok and broker.ok):
        response.status_code = 503
        status = "unavailable"
    else:
        status = "ok" if workers.ok else "degraded"
    return HealthOut(
        status=status,
        database=database,
        broker=broker,
        workers=workers,
        worker_names=names,
        worker_devices=devices,
    )
