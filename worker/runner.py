"""Executes one run end to end on this worker: claim it, train it with a heartbeat, record
everything, and leave it in a final status whatever happens.

Idempotent: a run is trained only if it can be claimed (status ``queued`` -> ``running`` in
one conditional update), so a redelivered task message for a run that already started,
finished or was cancelled does nothing.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from typing import Any

import torch
from sqlalchemy import select, update

from dynascope.server.db.models import Run, utcnow
from dynascope.server.db.session import get_engine
from dynascope.server.errors import DynascopeError
from dynascope.server.schemas.run_spec import RunSpec
from dynascope.server.settings import Settings, get_settings
from dynascope.worker.heartbeat import Heartbeat
from dynascope.worker.recorder import RunRecorder
from dynascope.worker.registry import DatasetError
from dynascope.worker.training import TrainingResult, train

log = logging.getLogger(__name__)

#: set when the worker process is asked to shut down; running runs stop at the next step
SHUTDOWN = threading.Event()


def claim_run(run_id: int, *, worker: str) -> dict[str, Any] | None:
    """Move ``run_id`` from queued to running for ``worker``; its spec, or None if the run is
    not queued (already taken, finished, cancelled or deleted)."""
    now = utcnow()
    with get_engine().begin() as connection:
        claimed = connection.execute(
            update(Run)
            .where(Run.id == run_id, Run.status == "queued")
            .values(status="running", started_at=now, heartbeat_at=now, worker=worker)
        ).rowcount
        if not claimed:
            return None
        return connection.scalar(select(Run.spec).where(Run.id == run_id))


def finish_run(run_id: int, **values: Any) -> None:
    """Record the final state of a run this worker holds (only if it is still running)."""
    with get_engine().begin() as connection:
        connection.execute(
            update(Run)
            .where(Run.id == run_id, Run.status == "running")
            .values(finished_at=utcnow(), **values)
        )


def worker_name() -> str:
    """This worker process's name, ``host:pid``: on the runs it claims and in ``workers``."""
    return f"{socket.gethostname()}:{os.getpid()}"


def worker_device(settings: Settings) -> torch.device:
    if settings.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(settings.device)


def execute_run(run_id: int, *, settings: Settings | None = None) -> str:
    """Train run ``run_id`` if it is queued; returns the status it ends in ("skipped" if it
    could not be claimed)."""
    settings = settings or get_settings()
    if settings.torch_threads is not None:
        torch.set_num_threads(settings.torch_threads)
    raw_spec = claim_run(run_id, worker=worker_name())
    if raw_spec is None:
        log.info("run %s is not queued; skipping", run_id)
        return "skipped"
    recorder = RunRecorder(
        run_id,
        flush_interval_s=settings.flush_interval_s,
        max_snapshot_bytes=settings.limits.max_snapshot_bytes,
    )
    with Heartbeat(run_id, interval_s=settings.heartbeat_interval_s) as heartbeat:
        try:
            result = train(
                RunSpec.model_validate(raw_spec),
                recorder=recorder,
                data_dir=settings.data_dir,  # type: ignore[arg-type]
                device=worker_device(settings),
                limits=settings.limits,
                should_stop=lambda: heartbeat.stop_reason is not None or SHUTDOWN.is_set(),
            )
            recorder.flush()
        except (DynascopeError, DatasetError) as error:
            return _fail(run_id, recorder, str(error))
        except Exception as error:
            log.exception("run %s failed", run_id)
            return _fail(run_id, recorder, f"{type(error).__name__}: {error}")
        status, error = _final_status(result, heartbeat.stop_reason)
        finish_run(
            run_id,
            status=status,
            step=result.step,
            error=error,
            diverged_step=result.diverged_step,
            timings=result.timings,
        )
        return status


def _final_status(result: TrainingResult, stop_reason: str | None) -> tuple[str, str | None]:
    if result.outcome == "completed":
        return "completed", None
    if result.outcome == "diverged":
        return "diverged", f"the loss became non-finite at step {result.diverged_step}"
    if stop_reason == "cancelled":
        return "cancelled", None
    if stop_reason == "lost":
        return "failed", "the run was no longer running on this worker (reaped or deleted)"
    return "failed", f"the worker shut down at step {result.step}; resubmit the run to train it"


def _fail(run_id: int, recorder: RunRecorder, message: str) -> str:
    try:
        recorder.flush()  # keep what was measured before the failure
    except Exception:
        log.exception("could not flush run %s's last metrics", run_id)
    finish_run(run_id, status="failed", error=message, step=recorder.step)
    return "failed"
