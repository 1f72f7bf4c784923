"""The deployment topology as processes: one API and two Celery workers against the real
Postgres and Redis of this machine (what docker-compose runs), and a worker killed mid-run."""

from __future__ import annotations

import os
import random
import signal
import time

import httpx
import pytest
import redis

from tests.conftest import REDIS_URL
from tests.integration.processes import (
    dynascope_process,
    environment,
    free_port,
    small_spec,
    wait_for_api,
    wait_for_run,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def deployment(postgres_url, tmp_path):
    """API + two workers on Postgres and Redis; yields the API's base URL and the workers."""
    db = random.randint(1, 15)
    broker = f"{REDIS_URL}/{db}"
    redis.Redis.from_url(broker).flushdb()
    port = free_port()
    env = environment(
        home=str(tmp_path / "home"),
        database_url=postgres_url,
        broker_url=broker,
        flush_interval_s="0.2",
        heartbeat_interval_s="0.3",
        heartbeat_timeout_s="3",
        reaper_interval_s="0.5",
    )
    logs = {name: tmp_path / f"{name}.log" for name in ("api", "worker1", "worker2")}
    with (
        dynascope_process(["api", "--port", str(port)], env, logs["api"]) as api,
        dynascope_process(["worker"], env, logs["worker1"]) as worker1,
        dynascope_process(["worker"], env, logs["worker2"]) as worker2,
    ):
        base = f"http://127.0.0.1:{port}"
        wait_for_api(base, api, logs["api"])
        yield {"base": base, "workers": [worker1, worker2], "logs": logs}
    redis.Redis.from_url(broker).flushdb()


def test_two_workers_share_the_runs(deployment):
    base = deployment["base"]
    ids = [
        httpx.post(f"{base}/api/v1/runs", json=small_spec(seed=seed, steps=150)).json()["id"]
        for seed in range(6)
    ]
    runs = [wait_for_run(base, run_id, timeout=180) for run_id in ids]
    assert all(run["status"] == "completed" for run in runs), runs
    workers = {run["worker"] for run in runs}
    assert len(workers) == 2, workers  # both worker processes took runs
    health = httpx.get(f"{base}/api/v1/health").json()
    assert health["database"]["ok"] and health["broker"]["ok"]
    assert health["workers"]["alive"] == 2
    assert {worker["name"] for worker in health["workers"]["list"]} == workers


def test_a_killed_worker_does_not_leave_its_run_running(deployment):
    base = deployment["base"]
    spec = small_spec(steps=100_000, probes={"every": 1000, "batch_size": 64})
    run_id = httpx.post(f"{base}/api/v1/runs", json=spec).json()["id"]
    run = wait_for_run(base, run_id, {"running"}, timeout=60)
    while run["step"] == 0:  # let it flush some progress first
        time.sleep(0.1)
        run = httpx.get(f"{base}/api/v1/runs/{run_id}").json()
    pid = int(run["worker"].rsplit(":", 1)[1])
    assert pid in [worker.pid for worker in deployment["workers"]]
    os.kill(pid, signal.SIGKILL)  # no warm shutdown, no chance to clean up
    started = time.monotonic()
    run = wait_for_run(base, run_id, timeout=30)
    assert run["status"] == "failed" and "worker lost" in run["error"], run
    assert time.monotonic() - started < 15
    assert run["step"] > 0  # what it recorded before dying is kept
    losses = httpx.get(
        f"{base}/api/v1/runs/{run_id}/metrics", params={"keys": "train/batch_loss"}
    ).json()["series"]["train/batch_loss"]
    assert losses["total_points"] > 0
    # the surviving worker still takes new runs
    second = httpx.post(f"{base}/api/v1/runs", json=small_spec()).json()["id"]
    assert wait_for_run(base, second, timeout=120)["status"] == "completed"
