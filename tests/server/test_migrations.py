"""The Alembic migrations build exactly the schema the models describe, on both backends,
and can be undone."""

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from dynascope.server.db.migrate import alembic_config
from dynascope.server.db.models import Base, Run
from dynascope.server.db.session import get_engine, session_scope
from dynascope.server.services.metrics import read_series, write_metrics
from dynascope.server.settings import get_settings
from tests.server.stored_runs import delete_run, new_run_id


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


def test_run_ids_are_never_reused(any_database):
    """After the newest run is deleted, the next run gets a new id, not the deleted one's."""
    first, newest = new_run_id(), new_run_id()
    delete_run(newest)
    assert new_run_id() > newest > first


def test_the_autoincrement_migration_keeps_every_row_and_reference(embedded_home):
    """SQLite from the schema before run ids were protected (0002) to the newest: the runs
    table is rebuilt, yet runs, their metrics and their ids survive, the references from the
    metrics still hold (a deleted run's metrics go with it), and ids are not reused after."""
    url = get_settings().database_url
    command.downgrade(alembic_config(url), "0002")
    kept, newest = new_run_id(), new_run_id()
    with get_engine().begin() as connection:
        write_metrics(connection, kept, [(0, "loss", 1.0), (1, "loss", 0.5)])
    delete_run(newest)  # before the migration: its id is free again
    command.upgrade(alembic_config(url), "head")
    with session_scope() as session:
        assert [run.id for run in session.query(Run).all()] == [kept]
        assert list(read_series(session, kept, ["loss"])["loss"].values) == [1.0, 0.5]
    reused = new_run_id()
    assert reused == newest  # the id deleted before the migration could not be known
    delete_run(reused)
    assert new_run_id() > reused
    delete_run(kept)  # foreign keys enforced again: its metrics go with it
    with session_scope() as session:
        assert read_series(session, kept, ["loss"])["loss"].total_points == 0
