"""Background threads that prove a worker is alive: per run (and relaying cancellation), and
per worker process (for ``/health``)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from sqlalchemy import delete, insert, select, update

from dynascope.server.db.models import Run, Worker, utcnow
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
        _every(self.interval_s, self._done, self._beat_once, f"heartbeat of run {self.run_id}")

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


class WorkerPresence:
    """While running, stamps this worker process's row in ``workers`` every ``interval_s``
    seconds (creating it first), and removes the row on :meth:`stop`; ``/health`` counts the
    rows stamped within the heartbeat timeout. A process killed outright leaves its row, which
    simply goes stale."""

    def __init__(self, name: str, *, device: str, interval_s: float) -> None:
        self.name = name
        self.device = device
        self.interval_s = interval_s
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="worker-presence", daemon=True)

    def start(self) -> WorkerPresence:
        self._stamp()  # present before the first interval, or the start fails loudly
        self._thread.start()
        return self

    def stop(self) -> None:
        self._done.set()
        if self._thread.is_alive():
            self._thread.join()
        try:
            with get_engine().begin() as connection:
                connection.execute(delete(Worker).where(Worker.name == self.name))
        except Exception:
            log.exception("could not remove worker %s from the workers table", self.name)

    def _beat(self) -> None:
        _every(self.interval_s, self._done, self._stamp, f"presence of worker {self.name}")

    def _stamp(self) -> None:
        now = utcnow()
        with get_engine().begin() as connection:
            stamped = connection.execute(
                update(Worker).where(Worker.name == self.name).values(last_seen=now)
            ).rowcount
            if not stamped:
                connection.execute(
                    insert(Worker).values(
                        name=self.name, device=self.device, started_at=now, last_seen=now
                    )
                )


def _every(interval_s: float, done: threading.Event, action: Callable[[], None], what: str) -> None:
    """Call ``action`` every ``interval_s`` seconds until ``done`` is set; an error is logged
    and the next call made as planned (a database hiccup must not kill the thread)."""
    while not done.wait(interval_s):
        try:
            action()
        except Exception:
            log.exception("%s failed; retrying", what)
