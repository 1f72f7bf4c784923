"""/health: can the API reach its database and its broker, and which workers are alive?"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response, status
from sqlalchemy import text

from dynascope.server.api.deps import CeleryDep, SessionDep, SettingsDep
from dynascope.server.queue import broker_reachable
from dynascope.server.services.workers import live_workers

router = APIRouter(tags=["health"])


@router.get("/health")
def read_health(
    session: SessionDep, celery: CeleryDep, settings: SettingsDep, response: Response
) -> dict[str, Any]:
    """The API's health: 503 when the database or the broker cannot be reached. ``workers``
    lists the worker processes seen within the heartbeat timeout; none alive leaves the API
    healthy (runs are accepted and wait in the queue) but says so: ``workers.alive`` is 0."""
    workers: list[dict[str, Any]] = []
    try:
        session.execute(text("SELECT 1"))
        database = {"ok": True, "detail": "ok"}
        workers = live_workers(session, timeout_s=settings.heartbeat_timeout_s)
    except Exception as error:
        database = {"ok": False, "detail": str(error)}
    broker_ok, broker_detail = broker_reachable(celery)
    healthy = database["ok"] and broker_ok
    if not healthy:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    return {
        "status": "ok" if healthy else "degraded",
        "database": database,
        "broker": {"ok": broker_ok, "detail": broker_detail},
        "workers": {"alive": len(workers), "list": workers},
    }
