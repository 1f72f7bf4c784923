"""Parameter snapshots: a run's flattened parameters at a step, float32, zlib-compressed."""

from __future__ import annotations

import zlib

import numpy as np
from sqlalchemy import Connection, insert, select
from sqlalchemy.orm import Session

from dynascope.server.db.models import Snapshot
from dynascope.server.errors import NotFoundError


def write_snapshot(connection: Connection, run_id: int, step: int, flat: np.ndarray) -> int:
    """Store ``flat`` (1-D, stored as float32) for ``run_id`` at ``step``; returns the
    compressed size in bytes."""
    payload = zlib.compress(np.ascontiguousarray(flat, dtype="<f4").tobytes(), level=1)
    connection.execute(
        insert(Snapshot).values(run_id=run_id, step=step, n_params=flat.size, payload=payload)
    )
    return len(payload)


def read_snapshot(session: Session, run_id: int, step: int) -> np.ndarray:
    """The flattened float32 parameters of ``run_id`` at ``step``."""
    row = session.execute(
        select(Snapshot.n_params, Snapshot.payload).where(
            Snapshot.run_id == run_id, Snapshot.step == step
        )
    ).first()
    if row is None:
        steps = snapshot_steps(session, run_id)
        shown = ", ".join(map(str, steps[:20])) + (
            f", … ({len(steps)} in all)" if len(steps) > 20 else ""
        )
        raise NotFoundError(
            f"run {run_id} has no parameter snapshot at step {step}; it has snapshots at "
            f"steps {shown}"
            if steps
            else f"run {run_id} has no parameter snapshots"
        )
    flat = np.frombuffer(zlib.decompress(row.payload), dtype="<f4")
    assert flat.size == row.n_params
    return flat


def snapshot_steps(session: Session, run_id: int) -> list[int]:
    """Steps at which ``run_id`` has a snapshot, in order."""
    query = select(Snapshot.step).where(Snapshot.run_id == run_id).order_by(Snapshot.step)
    return list(session.scalars(query))
