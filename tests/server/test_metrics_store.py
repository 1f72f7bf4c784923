"""Batched metric writes and series reads, on SQLite and on the real Postgres."""

import math

import numpy as np

from dynascope.server.db.models import Run
from dynascope.server.db.session import get_engine, session_scope
from dynascope.server.services.metrics import metric_keys, read_series, write_metrics
from tests.server.stored_runs import new_run_id as _make_run


def test_batch_write_and_read_back(any_database):
    run_id = _make_run()
    points = [(step, "loss", 1.0 / (step + 1)) for step in range(5000)]
    points += [(step, "acc", float(step) / 5000) for step in range(0, 5000, 10)]
    points.append((5000, "loss", math.nan))
    points.append((5001, "loss", math.inf))
    with get_engine().begin() as connection:
        assert write_metrics(connection, run_id, points) == len(points)
    with session_scope() as session:
        assert metric_keys(session, run_id) == ["acc", "loss"]
        series = read_series(session, run_id, ["loss", "acc", "missing"])
    loss = series["loss"]
    assert loss.total_points == 5002
    assert np.array_equal(loss.steps[:5000], np.arange(5000))
    assert loss.values[99] == 1.0 / 100
    assert math.isnan(loss.values[5000]) and math.isnan(loss.values[5001])  # non-finite -> null
    assert series["acc"].total_points == 500
    assert series["missing"].total_points == 0


def test_read_downsampled_keeps_spike(any_database):
    run_id = _make_run()
    values = np.sin(np.arange(20_000) / 50.0)
    values[4321] = 10.0
    with get_engine().begin() as connection:
        write_metrics(connection, run_id, [(s, "x", float(v)) for s, v in enumerate(values)])
    with session_scope() as session:
        series = read_series(session, run_id, ["x"], max_points=500)["x"]
    assert len(series.steps) <= 500 and series.total_points == 20_000
    assert 4321 in series.steps and series.values.max() == 10.0


def test_deleting_a_run_deletes_its_metrics(any_database):
    run_id = _make_run()
    with get_engine().begin() as connection:
        write_metrics(connection, run_id, [(0, "x", 1.0)])
    with session_scope() as session:
        session.delete(session.get(Run, run_id))
    with session_scope() as session:
        assert read_series(session, run_id, ["x"])["x"].total_points == 0


def test_downsampled_read_from_blocks_keeps_extremes(any_database):
    from dynascope.server.services.metrics import BLOCK_POINTS, MetricWriter

    run_id = _make_run()
    rng = np.random.default_rng(3)
    n = 100_000 + 37  # a partial block at the end
    values = rng.normal(size=n).cumsum()
    values[54_321] = values.max() + 100.0  # a spike inside a block
    values[99_990] = values.min() - 100.0  # a dip in the unblocked tail... or the last block
    values[70_000:70_010] = np.nan  # a gap
    writer = MetricWriter(run_id)
    for start in range(0, n, 4096):  # flush by flush, as a worker writes
        with get_engine().begin() as connection:
            writer.write(
                connection,
                [(s, "x", float(values[s])) for s in range(start, min(start + 4096, n))],
            )
    with session_scope() as session:
        blocks = (
            session.connection()
            .exec_driver_sql("SELECT count(*) FROM metric_blocks WHERE key = 'x'")
            .scalar()
        )
        down = read_series(session, run_id, ["x"], max_points=1000)["x"]
    assert blocks == n // BLOCK_POINTS
    assert down.total_points == n
    assert len(down.steps) <= 1000 and np.all(np.diff(down.steps) > 0)
    assert down.steps[0] == 0 and down.steps[-1] == n - 1
    assert np.array_equal(down.values, values[down.steps], equal_nan=True)  # real points
    assert np.nanmax(down.values) == np.nanmax(values) and 54_321 in down.steps
    assert np.nanmin(down.values) == np.nanmin(values) and 99_990 in down.steps


def test_short_downsampled_reads_use_the_points(any_database):
    run_id = _make_run()
    values = np.sin(np.arange(3000) / 10.0)
    with get_engine().begin() as connection:
        write_metrics(connection, run_id, [(s, "y", float(v)) for s, v in enumerate(values)])
    with session_scope() as session:
        down = read_series(session, run_id, ["y"], max_points=500)["y"]
    assert down.total_points == 3000 and len(down.steps) <= 500
    assert np.array_equal(down.values, values[down.steps])
    assert down.values.max() == values.max() and down.values.min() == values.min()
