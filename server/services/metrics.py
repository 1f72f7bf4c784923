"""Scalar metrics: batched writes (one statement per table per flush) and series reads.

Writes are batch-first: the worker buffers points and hands a whole batch to a
``MetricWriter`` inside the flush's transaction (Postgres gets ``COPY``, SQLite an
``executemany``); ``write_metrics`` is the one-shot form. Beside the points, the writer
stores a summary of every ``BLOCK_POINTS`` consecutive points of a series (its first, last,
minimum and maximum points), so that a downsampled read of a long series reads one row per
block instead of one per point, with the extremes exactly preserved.
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
BLOCK_POINTS = 64

_BLOCK_COLUMNS = (
    "run_id, key, block, first_step, first_value, last_step, last_value, "
    "min_step, min_value, max_step, max_value"
)


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


class MetricWriter:
    """Writes one run's metrics in batches, with block summaries. Each key's points must
    arrive in increasing step order across calls (the runner records them so)."""

    def __init__(self, run_id: int, *, summarise: bool = True) -> None:
        self.run_id = run_id
        self.summarise = summarise
        self._pending: dict[str, list[tuple[int, float | None]]] = {}
        self._blocks: dict[str, int] = {}

    def write(self, connection: Connection, points: Sequence[MetricPoint]) -> int:
        """Insert ``points`` (and the summaries of the blocks they complete) on
        ``connection``, inside the caller's transaction. Non-finite values are stored as
        NULL. Returns the number of points."""
        rows = []
        blocks = []
        for step, key, value in points:
            stored = _finite_or_none(float(value))
            rows.append((self.run_id, key, step, stored))
            if not self.summarise:
                continue
            pending = self._pending.setdefault(key, [])
            pending.append((step, stored))
            if len(pending) == BLOCK_POINTS:
                block = self._blocks.get(key, 0)
                blocks.append((self.run_id, key, block, *_summary(pending)))
                self._blocks[key] = block + 1
                self._pending[key] = []
        _insert(connection, "metrics", "run_id, key, step, value", rows)
        _insert(connection, "metric_blocks", _BLOCK_COLUMNS, blocks)
        return len(rows)


def _summary(points: list[tuple[int, float | None]]) -> tuple[int | float | None, ...]:
    """first step/value, last step/value, min step/value, max step/value of a block; the
    extremes among its finite values (the first point if it has none)."""
    finite = [point for point in points if point[1] is not None] or points[:1]
    low = min(finite, key=lambda point: point[1] or 0.0)
    high = max(finite, key=lambda point: point[1] or 0.0)
    return (*points[0], *points[-1], *low, *high)


def _insert(connection: Connection, table: str, columns: str, rows: list[tuple]) -> None:
    if not rows:
        return
    if connection.dialect.name == "postgresql":
        cursor = connection.connection.driver_connection.cursor()
        with cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
    else:
        marks = ", ".join("?" * len(rows[0]))
        connection.exec_driver_sql(f"INSERT INTO {table} ({columns}) VALUES ({marks})", rows)


def write_metrics(connection: Connection, run_id: int, points: Sequence[MetricPoint]) -> int:
    """Insert ``points`` for ``run_id`` in one batch, without block summaries (reads of these
    series use the points); a run written flush by flush uses one ``MetricWriter``."""
    return MetricWriter(run_id, summarise=False).write(connection, points)


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
    points with extremes kept when given. Unknown keys give empty series.

    When the series is long enough that each downsampling bucket would span whole blocks,
    the read takes the blocks' extremes (and the raw points after the last block) instead of
    every point: the same guarantees (at most ``max_points`` points, first and last kept,
    every block's minimum and maximum candidates, so the global extremes survive) at a
    fraction of the cost.
    """
    connection = session.connection()
    postgres = connection.dialect.name == "postgresql"
    fetch = _fetch_postgres if postgres else _fetch_sqlite
    result: dict[str, Series] = {}
    for key in keys:
        if max_points is not None:
            from_blocks = _from_blocks(connection, run_id, key, max_points, postgres)
            if from_blocks is not None:
                result[key] = from_blocks
                continue
        steps, values = fetch(connection, run_id, key)
        total = len(steps)
        if max_points is not None:
            steps, values = downsample_extremes(steps, values, max_points)
        result[key] = Series(steps=steps, values=values, total_points=total)
    return result


def _from_blocks(
    connection: Connection, run_id: int, key: str, max_points: int, postgres: bool
) -> Series | None:
    mark = "%s" if postgres else "?"
    cursor = connection.connection.driver_connection.cursor()
    blocks = cursor.execute(
        "SELECT first_step, first_value, last_step, last_value, min_step, min_value, "
        f"max_step, max_value FROM metric_blocks WHERE run_id = {mark} AND key = {mark} "
        "ORDER BY block",
        (run_id, key),
    ).fetchall()
    if 2 * len(blocks) < max_points:
        cursor.close()
        return None  # buckets finer than blocks: read the points
    tail = cursor.execute(
        f"SELECT step, value FROM metrics WHERE run_id = {mark} AND key = {mark} "
        f"AND step > {mark} ORDER BY step",
        (run_id, key, blocks[-1][2]),
    ).fetchall()
    cursor.close()
    candidates = {blocks[0][0]: blocks[0][1]}
    for block in blocks:
        candidates[block[4]] = block[5]
        candidates[block[6]] = block[7]
    candidates.update(tail)
    if not tail:
        candidates[blocks[-1][2]] = blocks[-1][3]
    steps = np.fromiter(sorted(candidates), dtype=np.int64, count=len(candidates))
    values = np.array([candidates[step] for step in steps.tolist()], dtype=np.float64)
    steps, values = downsample_extremes(steps, values, max_points)
    total = len(blocks) * BLOCK_POINTS + len(tail)
    return Series(steps=steps, values=values, total_points=total)


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
