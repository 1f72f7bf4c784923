"""Workers: the worker processes that stamped their presence within the heartbeat timeout."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from dynascope.server.db.models import Worker, utcnow


def live_workers(session: Session, *, timeout_s: float) -> list[dict[str, Any]]:
    """The workers seen within the last ``timeout_s`` seconds, oldest first: name (host:pid),
    device, when they started and when they were last seen (ISO 8601, UTC)."""
    since = utcnow() - timedelta(seconds=timeout_s)
    rows = session.scalars(
        select(Worker).where(Worker.last_seen >= since).order_by(Worker.started_at, Worker.name)
    )
    return [
        {
            "name": row.name,
            "device": row.device,
            "started_at": row.started_at.isoformat(),
            "last_seen": row.last_seen.isoformat(),
        }
        for row in rows
    ]


def forget_stale_workers(session: Session, *, older_than_s: float) -> int:
    """Delete the rows of workers not seen for ``older_than_s`` seconds (processes killed
    outright, which could not remove their own); returns how many."""
    since = utcnow() - timedelta(seconds=older_than_s)
    return session.execute(delete(Worker).where(Worker.last_seen < since)).rowcount
