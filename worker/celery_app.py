"""The worker's Celery app and its one task. Start with ``dynascope worker``."""

from __future__ import annotations

from typing import Any

from celery.signals import worker_process_init, worker_ready, worker_shutdown, worker_shutting_down

from dynascope.server.db.session import dispose_engines
from dynascope.server.queue import TRAIN_RUN_TASK, make_celery
from dynascope.server.settings import get_settings
from dynascope.worker.heartbeat import WorkerPresence
from dynascope.worker.runner import SHUTDOWN, execute_run, worker_device, worker_name

app = make_celery(get_settings())
_presence: list[WorkerPresence] = []


@app.task(name=TRAIN_RUN_TASK)
def train_run(run_id: int) -> str:
    """Train run ``run_id`` (the message carries only the id; the spec is re-read)."""
    return execute_run(run_id)


@worker_process_init.connect
def _fresh_engines(**_kwargs: Any) -> None:
    # A forked pool process must not reuse its parent's database connections.
    dispose_engines()


@worker_shutting_down.connect
def _stop_runs(**_kwargs: Any) -> None:
    # Warm shutdown (Ctrl-C, SIGTERM): running runs stop at their next step and are
    # marked failed with the reason, instead of being left "running".
    SHUTDOWN.set()


@worker_ready.connect
def _announce(**_kwargs: Any) -> None:
    # In the workers table while alive, so /health can count the workers.
    settings = get_settings()
    presence = WorkerPresence(
        worker_name(),
        device=str(worker_device(settings)),
        interval_s=settings.heartbeat_interval_s,
    )
    _presence.append(presence.start())


@worker_shutdown.connect
def _withdraw(**_kwargs: Any) -> None:
    while _presence:
        _presence.pop().stop()
