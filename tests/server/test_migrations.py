"""The Alembic migrations build exactly the schema the models describe, on both backends,
and can be undone."""

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from dynascope.server.db.migrate import alembic_config
from dynascope.server.db.models import Base
from dynascope.server.db.session import get_engine
from dynascope.server.settings import get_settings


def test_migrations_match_the_models(any_database):
    with get_engine().connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []


def test_downgrade_to_base_and_back(any_database):
    url = get_settings().database_url
    command.downgrade(alembic_config(url), "base")
    assert set(inspect(get_engine()).get_table_names()) <= {"alembic_version"}
    command.upgrade(alembic_config(url), "head")
    assert {"runs", "metrics", "metric_blocks", "array_results", "snapshots"} <= set(
        inspect(get_engine()).get_table_names()
    )
