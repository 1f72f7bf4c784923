"""Run Alembic migrations programmatically (``dynascope migrate`` and start-up)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

import dynascope.migrations

MIGRATIONS_DIR = Path(dynascope.migrations.__file__).resolve().parent


def alembic_config(database_url: str) -> Config:
    """An Alembic config for the shipped migrations against ``database_url``."""
    config = Config(str(MIGRATIONS_DIR / "alembic.ini"))
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade_database(database_url: str) -> None:
    """Bring the database at ``database_url`` to the newest schema."""
    command.upgrade(alembic_config(database_url), "head")
