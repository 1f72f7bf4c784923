"""Runs: create (then queue), read, list, cancel, delete, and reap runs whose worker died.

Plain keyword-only functions over a session; routes stay thin and call these. The 404 for
an unknown id is raised here, in ``get_run``, and nowhere else.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from dynascope.server.db.models import TERMINAL_STATUSES, Run, utcnow
from dynascope.server.errors import BrokerUnavailableError, ConflictError, NotFoundError
from dynascope.server.schemas.run_spec import RunSpec


def create_run(session: Session, *, spec: RunSpec, enqueue: Callable[[int], None]) -> Run:
    """Store a queued run for ``spec``, commit, then queue its task. If the broker cannot
    take it, the row is removed again: nothing half-written is left behind."""
    run = Run(
        name=spec.name,
        spec=spec.model_dump(mode="json"),
        status="queued",
        steps=spec.steps,
        summary={},
        timings={},
    )
    session.add(run)
    session.commit()
    try:
        enqueue(run.id)
    except BrokerUnavailableError:
        session.delete(run)
        session.commit()
        raise
    return run


def get_run(session: Session, *, run_id: int) -> Run:
    """The run with ``run_id``; ``NotFoundError`` if there is none."""
    run = session.get(Run, run_id)
    if run is None:
        raise NotFoundError(f"run {run_id} does not exist")
    return run


def list_runs(
    session: Session,
    *,
    status: str | None = None,
    name: str | None = None,
    offset: int = 0,
    limit: int = 100,
) -> tuple[list[Run], int]:
    """Runs, newest first, filtered by status and by a substring of the name; and how many
    match in all (for paging)."""
    query = select(Run)
    if status:
        query = query.where(Run.status == status)
    if name:
        query = query.where(Run.name.contains(name, autoescape=True))
    count = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    runs = session.scalars(query.order_by(Run.id.desc()).offset(offset).limit(limit)).all()
    return list(runs), count


def cancel_run(session: Session, *, run_id: int) -> Run:
    """Cancel a run: a queued run is cancelled at once (its task will skip it); a running
    one is flagged and its worker stops it at the next step. Finished runs are a conflict."""
    run = get_run(session, run_id=run_id)
    if run.status in TERMINAL_STATUSES:
        raise ConflictError(f"run {run_id} is already {run.status}; nothing to cancel")
    if run.status == "queued":
        run.status = "cancelled"
        run.finished_at = utcnow()
    run.cancel_requested = True
    session.commit()
    return run


def delete_run(session: Session, *, run_id: int) -> None:
    """Delete a run and everything recorded for it. A running run must be cancelled first."""
    run = get_run(session, run_id=run_id)
    if run.status == "running":
        raise ConflictError(f"run {run_id} is running; cancel it first, then delete it")
    session.execute(delete(Run).where(Run.id == run_id))
    session.commit()


def reap_stale_runs(session: Session, *, timeout_s: float) -> list[int]:
    """Mark ``failed`` every running run whose worker has not sent a heartbeat for
    ``timeout_s`` seconds (the worker died or lost the database). Returns their ids."""
    now = utcnow()
    cutoff = now - timedelta(seconds=timeout_s)
    stale = list(
        session.scalars(select(Run.id).where(Run.status == "running", Run.heartbeat_at < cutoff))
    )
    for run_id in stale:
        session.execute(
            update(Run)
            .where(Run.id == run_id, Run.status == "running", Run.heartbeat_at < cutoff)
            .values(
                status="failed",
                finished_at=now,
                error=f"worker lost: no heartbeat for over {timeout_s:g} s; the run's data up "
                "to its last flush is kept. Resubmit it to train again.",
            )
        )
    session.commit()
    return stale
