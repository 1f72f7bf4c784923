"""Shared fixtures: an isolated dynascope home (SQLite + SQLite broker) per test, and real
Postgres / Redis for the tests that need them."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from dynascope.server.db.session import dispose_engines
from dynascope.server.settings import get_settings

POSTGRES_ADMIN_URL = os.environ.get(
    "DYNASCOPE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("DYNASCOPE_TEST_REDIS_URL", "redis://127.0.0.1:6379")


def _reset_settings() -> None:
    get_settings.cache_clear()
    dispose_engines()


@pytest.fixture
def embedded_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Settings pointing at a fresh dynascope home (SQLite database and broker), migrated."""
    from dynascope.server.db.migrate import upgrade_database

    home = tmp_path / "home"
    monkeypatch.setenv("DYNASCOPE_HOME", str(home))
    for name in ("DYNASCOPE_DATABASE_URL", "DYNASCOPE_BROKER_URL"):
        monkeypatch.delenv(name, raising=False)
    _reset_settings()
    upgrade_database(get_settings().database_url)
    yield home
    _reset_settings()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, migrated Postgres database on the local server, dropped afterwards."""
    import psycopg

    from dynascope.server.db.migrate import upgrade_database

    name = f"dynascope_test_{uuid.uuid4().hex[:12]}"
    admin = POSTGRES_ADMIN_URL
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    url = admin.rsplit("/", 1)[0] + f"/{name}"
    upgrade_database(url)
    yield url
    dispose_engines()
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def postgres_settings(
    postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """Settings pointing at a fresh Postgres database (broker: embedded SQLite)."""
    monkeypatch.setenv("DYNASCOPE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DYNASCOPE_DATABASE_URL", postgres_url)
    _reset_settings()
    yield postgres_url
    _reset_settings()


@pytest.fixture(params=["sqlite", "postgres"])
def any_database(request: pytest.FixtureRequest) -> str:
    """Run the test once on the embedded SQLite store and once on Postgres."""
    if request.param == "sqlite":
        request.getfixturevalue("embedded_home")
    else:
        request.getfixturevalue("postgres_settings")
    return request.param
