"""A background thread that proves a run's worker is alive and relays cancellation."""

from __future__ import annotations

import logging
import threading

from sqlalchemy import select, update

from dynascope.server.db.models import Run, utcnow
from dynascope.server.db.session import get_engine

log = logging.getLogger(__name__)


class Heartbeat:
    """While running, stamps ``runs.heartbeat_at`` every ``interval_s`` seconds and reads the
    run's cancel flag. ``stop_reason`` becomes "cancelled" when a user cancelled the run, and
    "lost" when the row is no longer running (deleted, or reaped after a long stall); the
    training loop polls it each step.

    A thread rather than stamps from the training loop: a long probe or step must not look
    like a dead worker, and a dead process stops the thread with it.
    """

    def __init__(self, run_id: int, *, interval_s: float) -> None:
        self.run_id = run_id
        self.interval_s = interval_s
        self.stop_reason: str | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{run_id}", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._done.set()
        self._thread.join()

    def _beat(self) -> None:
        while not self._done.wait(self.interval_s):
            try:
                self._beat_once()
            except Exception:  # a database hiccup must not kill the thread
                log.exception("heartbeat of run %s failed; retrying", self.run_id)

    def _beat_once(self) -> None:
        with get_engine().begin() as connection:
            stamped = connection.execute(
                update(Run)
                .where(Run.id == self.run_id, Run.status == "running")
                .values(heartbeat_at=utcnow())
            ).rowcount
            cancel = connection.scalar(select(Run.cancel_requested).where(Run.id == self.run_id))
        if not stamped:
            self.stop_reason = "lost"
        elif cancel:
            self.stop_reason = "cancelled"
