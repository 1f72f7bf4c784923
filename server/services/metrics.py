"""Scalar metrics: batched writes (one statement per flush) and series reads.

Writes are batch-first: the worker buffers points and hands a whole batch to
``write_metrics`` inside the flush's transaction. Postgres gets ``COPY``; SQLite an
``executemany`` of one prepared statement.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from sqlalchemy import Connection, select
from sqlalchemy.orm import Session

from dynascope.server.db.models import Metric
from dynascope.server.services.downsampling import downsample_extremes

MetricPoint = tuple[int, str, float]  # (step, key, value)


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def write_metrics(connection: Connection, run_id: int, points: Sequence[MetricPoint]) -> int:
    """Insert ``points`` for ``run_id`` in one batch on ``connection`` (inside the caller's
    transaction). Non-finite values are stored as NULL. Returns the number of rows."""
    if not points:
        return 0
    rows = [(run_id, key, step, _finite_or_none(float(value))) for step, key, value in points]
    if connection.dialect.name == "postgresql":
        cursor = connection.connection.driver_connection.cursor()
        with cursor.copy("COPY metrics (run_id, key, step, value) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
    else:
        connection.exec_driver_sql(
            "INSERT INTO metrics (run_id, key, step, value) VALUES (?, ?, ?, ?)", rows
        )
    return len(rows)


@dataclass(frozen=True)
class Series:
    """One key's values over steps (NaN where the recorded value was not finite)."""

    steps: np.ndarray
    values: np.ndarray
    total_points: int


def metric_keys(session: Session, run_id: int) -> list[str]:
    """Every key recorded for ``run_id``, sorted."""
    rows = session.execute(
        select(Metric.key).where(Metric.run_id == run_id).distinct().order_by(Metric.key)
    )
    return list(rows.scalars())


def read_series(
    session: Session, run_id: int, keys: Iterable[str], max_points: int | None = None
) -> dict[str, Series]:
    """The series of each of ``keys`` for ``run_id``, downsampled to at most ``max_points``
    points with extremes kept when given. Unknown keys give empty series."""
    result: dict[str, Series] = {}
    for key in keys:
        rows = session.connection().exec_driver_sql(
            _SERIES_SQL[session.bind.dialect.name == "postgresql"], (run_id, key)
        )
        data = rows.fetchall()
        steps = np.fromiter((row[0] for row in data), dtype=np.int64, count=len(data))
        values = np.array([row[1] for row in data], dtype=np.float64)
        if max_points is not None:
            steps, values = downsample_extremes(steps, values, max_points)
        result[key] = Series(steps=steps, values=values, total_points=len(data))
    return result


_SERIES_SQL = {
    False: "SELECT step, value FROM metrics WHERE run_id = ? AND key = ? ORDER BY step",
    True: "SELECT step, value FROM metrics WHERE run_id = %s AND key = %s ORDER BY step",
}
