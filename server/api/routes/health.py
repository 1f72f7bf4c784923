"""/health: can the API reach its database and its broker?"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response, status
from sqlalchemy import text

from dynascope.server.api.deps import CeleryDep, SessionDep
from dynascope.server.queue import broker_reachable

router = APIRouter(tags=["health"])


@router.get("/health")
def read_health(session: SessionDep, celery: CeleryDep, response: Response) -> dict[str, Any]:
    try:
        session.execute(text("SELECT 1"))
        database = {"ok": True, "detail": "ok"}
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
    }
