"""run ids never reused: AUTOINCREMENT on SQLite (Postgres' sequences never reuse)

Without it SQLite gives a new run the id of the newest run after that run was deleted, and
links to the deleted run (dashboard URLs, a script's records) silently point at the new one.
SQLite can only add AUTOINCREMENT by rebuilding the table (Alembic's batch mode); the rows keep
their ids, and SQLite's counter starts from the largest of them. ``migrations/env.py`` turns
foreign-key enforcement off around SQLite migrations, so that dropping the old table does not
cascade into the metrics, arrays and snapshots that refer to it.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def _rebuild_runs(autoincrement: bool) -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    with op.batch_alter_table(
        "runs", recreate="always", table_kwargs={"sqlite_autoincrement": autoincrement}
    ):
        pass


def upgrade() -> None:
    _rebuild_runs(autoincrement=True)


def downgrade() -> None:
    _rebuild_runs(autoincrement=False)
