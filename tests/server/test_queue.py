"""The task queue on the embedded broker (kombu's SQLAlchemy transport on a SQLite file)."""

from __future__ import annotations

import sqlite3

from dynascope.server.queue import QUEUE, declare_queue, make_celery
from dynascope.server.settings import get_settings


def _queues(settings) -> list[str]:
    path = settings.broker_url.removeprefix("sqla+sqlite:///")
    with sqlite3.connect(path) as connection:
        return [name for (name,) in connection.execute("SELECT name FROM kombu_queue")]


def test_declare_queue_creates_it_once(embedded_home):
    """`dynascope up` declares the queue before it starts the API and the worker, so that
    their first uses only read the row instead of racing to create it."""
    settings = get_settings()
    app = make_celery(settings)
    declare_queue(app)
    declare_queue(app)  # idempotent
    assert _queues(settings) == [QUEUE]
