"""Metric store benchmark: batched ingestion rate into Postgres and SQLite, and latency of
reading a 100,000-point series through the real HTTP API, whole and with max_points=1000.

    python benchmarks/bench_store.py [--postgres postgresql://postgres@127.0.0.1:5432/postgres]

Needs the local Postgres (a scratch database is created and dropped). Targets (issue 2):
>= 100,000 points/s into each store; a 100k-point read < 150 ms whole, < 30 ms and < 40 KB
with max_points=1000.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import numpy as np
import psycopg
from scratch_store import serving_api, use_store

POINTS = 1_000_000
FLUSH = 50_000  # points per flush (one transaction each), like a worker's flush of a fast run
SERIES = 100_000


def ingest(database_url: str) -> tuple[float, int]:
    """Points per second writing POINTS points in flushes of FLUSH, and the run id."""
    from dynascope.server.db.models import Run
    from dynascope.server.db.session import get_engine, session_scope
    from dynascope.server.services.metrics import MetricWriter

    use_store(database_url=database_url)
    with session_scope() as session:
        run = Run(name="bench", spec={}, steps=SERIES, status="completed", summary={}, timings={})
        session.add(run)
        session.flush()
        run_id = run.id
    rng = np.random.default_rng(0)
    keys = [f"key{k}" for k in range(POINTS // SERIES)]
    values = rng.normal(size=SERIES).tolist()
    batches = []
    for key in keys:
        for start in range(0, SERIES, FLUSH):
            batches.append([(s, key, values[s]) for s in range(start, min(start + FLUSH, SERIES))])
    writer = MetricWriter(run_id)  # as a worker writes: one writer, flush by flush
    started = time.perf_counter()
    for batch in batches:
        with get_engine().begin() as connection:
            writer.write(connection, batch)
    elapsed = time.perf_counter() - started
    return POINTS / elapsed, run_id


def read_latency(database_url: str, run_id: int, home: Path) -> dict[str, float]:
    """Median latency (ms) and size (bytes) of GET .../metrics for one 100k-point series."""
    log = home / "api.log"
    with serving_api(home, log, database_url=database_url, migrate=False) as base:
        url = f"{base}/api/v1/runs/{run_id}/metrics"
        out = {}
        with httpx.Client() as client:
            for label, params in (
                ("whole", {"keys": "key0"}),
                ("max_points=1000", {"keys": "key0", "max_points": 1000}),
            ):
                times, size = [], 0
                for _ in range(15):
                    started = time.perf_counter()
                    response = client.get(url, params=params)
                    times.append(time.perf_counter() - started)
                    size = len(response.content)
                    assert response.status_code == 200
                out[f"{label} ms"] = 1000 * statistics.median(times[3:])
                out[f"{label} bytes"] = size
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    scratch = f"dynascope_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(args.postgres, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{scratch}"')
    postgres_url = args.postgres.rsplit("/", 1)[0] + f"/{scratch}"
    try:
        with tempfile.TemporaryDirectory() as tmp:
            sqlite_url = f"sqlite:///{tmp}/bench.sqlite"
            print(f"{POINTS:,} points in flushes of {FLUSH:,} (one transaction each)")
            columns = ("points/s", "read whole", "read 1000", "size 1000")
            print(f"{'store':<10} " + " ".join(f"{c:>11}" for c in columns))
            for name, url in (("postgres", postgres_url), ("sqlite", sqlite_url)):
                rate, run_id = ingest(url)
                read = read_latency(url, run_id, Path(tmp))
                print(
                    f"{name:<10} {rate:>12,.0f} {read['whole ms']:>8.1f} ms "
                    f"{read['max_points=1000 ms']:>7.1f} ms {read['max_points=1000 bytes']:>7,} B"
                    f"   (whole: {read['whole bytes']:,} B)"
                )
    finally:
        from dynascope.server.db.session import dispose_engines

        dispose_engines()
        with psycopg.connect(args.postgres, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{scratch}" WITH (FORCE)')


if __name__ == "__main__":
    main()
