"""Bare run rows for the store's tests: no spec to validate, nothing queued."""

from __future__ import annotations

from sqlalchemy import delete

from dynascope.server.db.models import Run
from dynascope.server.db.session import session_scope


def new_run_id() -> int:
    """The id of a new, empty run row."""
    with session_scope() as session:
        run = Run(name="r", spec={}, steps=10, summary={}, timings={})
        session.add(run)
        session.flush()
        return run.id


def delete_run(run_id: int) -> None:
    """Delete a run row (and, by the foreign keys, everything recorded for it)."""
    with session_scope() as session:
        session.execute(delete(Run).where(Run.id == run_id))
