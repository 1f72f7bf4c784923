"""The Celery application's configuration, shared by the API (which only sends) and the
worker (which also registers the tasks). Tasks carry only a run id."""

from __future__ import annotations

from celery import Celery

from dynascope.server.errors import BrokerUnavailableError
from dynascope.server.settings import Settings

TRAIN_RUN_TASK = "dynascope.train_run"
QUEUE = "dynascope"


def make_celery(settings: Settings) -> Celery:
    """A Celery app on the configured broker: late acks and prefetch 1 (long tasks), no
    result backend (results live in the database)."""
    app = Celery("dynascope", broker=settings.broker_url, set_as_current=False)
    app.conf.update(
        task_acks_late=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_default_queue=QUEUE,
        task_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=5,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
    )
    if settings.broker_url.startswith("redis"):
        # A run can last hours: do not redeliver a message that is merely slow.
        app.conf.broker_transport_options = {"visibility_timeout": 7 * 24 * 3600}
    return app


def enqueue_run(app: Celery, run_id: int) -> None:
    """Queue the training task for ``run_id``; call only after the run row is committed."""
    try:
        app.send_task(TRAIN_RUN_TASK, args=[run_id], retry=True, retry_policy={"max_retries": 2})
    except Exception as error:  # kombu raises transport-specific errors
        raise BrokerUnavailableError(
            f"could not queue run {run_id}: the broker is unreachable ({error})"
        ) from error


def declare_queue(app: Celery) -> None:
    """Create the task queue on the broker (and, for kombu's SQLAlchemy transport, its tables)
    if it is not there yet; harmless when it is.

    ``dynascope up`` calls this once before it starts the API and the worker: on the embedded
    SQLite broker both would otherwise create the ``kombu_queue`` row (and tables) on first
    use, and kombu guards that only within one process, so the loser of the race dies with an
    IntegrityError."""
    with app.connection_for_write() as connection:
        app.amqp.queues[QUEUE].bind(connection.default_channel).declare()


def broker_reachable(app: Celery, timeout: float = 3.0) -> tuple[bool, str]:
    """Whether the broker answers within ``timeout`` seconds, and why not if it does not."""
    try:
        with app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, timeout=timeout)
        return True, "ok"
    except Exception as error:
        return False, str(error)
