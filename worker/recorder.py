"""Where a run's measurements go: buffered in memory, written in one transaction per flush
together with the run's progress, latest values and heartbeat."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
from sqlalchemy import update

from dynascope.server.db.models import Run, utcnow
from dynascope.server.db.session import get_engine
from dynascope.server.services.arrays import ArrayPoint, write_arrays
from dynascope.server.services.metrics import MetricPoint, MetricWriter
from dynascope.server.services.snapshots import write_snapshot

#: keys whose latest value is kept on the run row (the run list shows them without a query
#: over the metrics table)
SUMMARY_KEYS = frozenset(
    {
        "train/batch_loss",
        "train/loss",
        "train/accuracy",
        "test/loss",
        "test/accuracy",
        "grad_norm",
        "distance_from_init",
    }
)


class RunRecorder:
    """Buffers metric points of one run and flushes them in batches.

    ``flush`` writes every buffered point with one batched statement, and updates the run's
    step, summary and heartbeat, all in one transaction: a reader never sees metrics of a
    step the run row does not claim, and a crash loses at most ``flush_interval_s`` of data.
    """

    def __init__(
        self, run_id: int, *, flush_interval_s: float, max_snapshot_bytes: int = 0
    ) -> None:
        self.run_id = run_id
        self.flush_interval_s = flush_interval_s
        self.max_snapshot_bytes = max_snapshot_bytes
        self.snapshot_bytes = 0
        self.snapshots_skipped: list[int] = []
        self._snapshots: list[tuple[int, np.ndarray]] = []
        self._writer = MetricWriter(run_id)
        self._arrays: list[ArrayPoint] = []
        self.step = 0
        self.summary: dict[str, float | None] = {}
        self.points_written = 0
        self._points: list[MetricPoint] = []
        self._last_flush = time.monotonic()

    def record(self, step: int, values: Mapping[str, float]) -> None:
        """Buffer ``values`` (key -> scalar) measured at ``step``."""
        for key, value in values.items():
            self._points.append((step, key, value))
            if key in SUMMARY_KEYS:
                self.summary[key] = value if math.isfinite(value) else None

    def record_array(
        self, step: int, kind: str, values: np.ndarray, meta: dict[str, Any] | None = None
    ) -> None:
        """Buffer an array result (a spectrum, a density, ...) of ``kind`` at ``step``."""
        self._arrays.append(ArrayPoint(step=step, kind=kind, values=values, meta=meta or {}))

    def snapshot(self, step: int, flat: np.ndarray) -> None:
        """Buffer the flattened parameters at ``step`` for the next flush, unless the run's
        snapshots would exceed ``max_snapshot_bytes`` uncompressed (then the step is noted in
        ``snapshots_skipped`` instead)."""
        size = 4 * flat.size
        if self.snapshot_bytes + size > self.max_snapshot_bytes:
            self.snapshots_skipped.append(step)
            return
        self.snapshot_bytes += size
        self._snapshots.append((step, flat))

    def progress(self, step: int) -> None:
        """Note that ``step`` updates are done; flush if the flush interval has passed."""
        self.step = step
        if time.monotonic() - self._last_flush >= self.flush_interval_s:
            self.flush()

    def flush(self) -> None:
        """Write what is buffered, the step, the summary and a heartbeat in one transaction."""
        points, self._points = self._points, []
        snapshots, self._snapshots = self._snapshots, []
        arrays, self._arrays = self._arrays, []
        with get_engine().begin() as connection:
            self.points_written += self._writer.write(connection, points)
            write_arrays(connection, self.run_id, arrays)
            for step, flat in snapshots:
                write_snapshot(connection, self.run_id, step, flat)
            connection.execute(
                update(Run)
                .where(Run.id == self.run_id)
                .values(step=self.step, summary=dict(self.summary), heartbeat_at=utcnow())
            )
        self._last_flush = time.monotonic()
