"""Scalar metrics: batched writes (one statement per flush) and series reads.

Writes are batch-first: the worker buffers points and hands a whole batch to
``write_metrics`` inside the flush's transaction. Postgres gets ``COPY``; SQLite an
``executemany`` of one prepared statement.
"""

from __future__ import annotations

import gc
import math
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
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
    connection = session.connection()
    fetch = _fetch_postgres if connection.dialect.name == "postgresql" else _fetch_sqlite
    result: dict[str, Series] = {}
    for key in keys:
        steps, values = fetch(connection, run_id, key)
        total = len(steps)
        if max_points is not None:
            steps, values = downsample_extremes(steps, values, max_points)
        result[key] = Series(steps=steps, values=values, total_points=total)
    return result


# Postgres sends each series as two arrays in their binary wire format (array_send), read
# straight into numpy: no Python object per point. A 1-D array: ndim, has-nulls flag, element
# type, length, lower bound (20 bytes), then (length, value) per element. Non-finite values
# (NULL) are sent as NaN, so every element has the same size.
_ARRAY_HEADER = 20
_SERIES_ARRAYS = (
    "SELECT count(*), array_send(coalesce(array_agg(step), '{}')), "
    "array_send(coalesce(array_agg(coalesce(value, 'NaN'::float8)), '{}')) "
    "FROM (SELECT step, value FROM metrics WHERE run_id = %s AND key = %s ORDER BY step) AS s"
)


def _fetch_postgres(connection: Connection, run_id: int, key: str) -> tuple[np.ndarray, np.ndarray]:
    cursor = connection.connection.driver_connection.cursor()
    count, steps, values = cursor.execute(_SERIES_ARRAYS, (run_id, key)).fetchone()
    cursor.close()
    if not count:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)
    steps = np.frombuffer(steps, dtype=[("n", ">i4"), ("x", ">i4")], offset=_ARRAY_HEADER)
    values = np.frombuffer(values, dtype=[("n", ">i4"), ("x", ">f8")], offset=_ARRAY_HEADER)
    return steps["x"].astype(np.int64), values["x"].astype(np.float64)


def _fetch_sqlite(connection: Connection, run_id: int, key: str) -> tuple[np.ndarray, np.ndarray]:
    cursor = connection.connection.driver_connection.cursor()
    # One tuple per row is unavoidable with sqlite3; with the cyclic garbage collector paused
    # the read of a 100k-point series takes half the time (the tuples hold no cycles).
    with _collector_paused():
        rows = cursor.execute(
            "SELECT step, value FROM metrics WHERE run_id = ? AND key = ? ORDER BY step",
            (run_id, key),
        ).fetchall()
        cursor.close()
        if not rows:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)
        steps, values = zip(*rows, strict=True)
        return np.array(steps, dtype=np.int64), np.array(values, dtype=np.float64)


@contextmanager
def _collector_paused() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
