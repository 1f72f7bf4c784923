"""A scratch store for the benchmarks: this process's settings pointed at a database and the
database migrated, and ``dynascope api`` serving it from a child process.

Importing this module puts the repository's root on ``sys.path``, so that a benchmark run as
``python benchmarks/bench_X.py`` can also import the test suite's helpers (``tests.…``).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.integration.processes import (  # noqa: E402
    dynascope_process,
    environment,
    free_port,
    wait_for_api,
)


def use_store(*, database_url: str | None = None, home: Path | None = None) -> str:
    """Point this process's settings at ``database_url`` (or, without one, at the database
    of the dynascope home, ``home`` where given), drop the engines of the previous one,
    migrate the database to the newest schema, and return its URL."""
    from dynascope.server.db.migrate import upgrade_database
    from dynascope.server.db.session import dispose_engines
    from dynascope.server.settings import get_settings

    if home is not None:
        os.environ["DYNASCOPE_HOME"] = str(home)
    if database_url is None:
        os.environ.pop("DYNASCOPE_DATABASE_URL", None)
    else:
        os.environ["DYNASCOPE_DATABASE_URL"] = database_url
    get_settings.cache_clear()
    dispose_engines()
    url = get_settings().database_url
    upgrade_database(url)
    return url


@contextmanager
def serving_api(
    home: Path, log: Path, *, database_url: str | None = None, migrate: bool = True
) -> Iterator[str]:
    """``dynascope api`` on a free local port with the dynascope home ``home`` (and
    ``database_url`` where given; ``migrate=False``: ``--no-migrate``), its output appended to
    ``log``; yields its base URL once it answers, and stops it on exit."""
    port = free_port()
    settings = {"home": str(home)}
    if database_url is not None:
        settings["database_url"] = database_url
    args = ["api", "--port", str(port)] + ([] if migrate else ["--no-migrate"])
    with dynascope_process(args, environment(**settings), log) as process:
        base = f"http://127.0.0.1:{port}"
        wait_for_api(base, process, log)
        yield base


def run_in_process(spec: dict) -> tuple[float, dict[str, float]]:
    """Submit ``spec`` to the store ``use_store`` set up (without a queue) and train it here,
    through the real runner (metrics written as in a worker); its wall seconds and the run's
    ``timings``."""
    from dynascope.server.db.session import session_scope
    from dynascope.server.schemas.run_spec import RunSpec
    from dynascope.server.services.runs import create_run, get_run
    from dynascope.worker.runner import execute_run

    with session_scope() as session:
        run_id = create_run(session, spec=RunSpec.model_validate(spec), enqueue=lambda _id: None).id
    started = time.perf_counter()
    status = execute_run(run_id)
    seconds = time.perf_counter() - started
    if status != "completed":
        raise RuntimeError(f"the benchmark run ended {status}")
    with session_scope() as session:
        return seconds, dict(get_run(session, run_id=run_id).timings or {})
