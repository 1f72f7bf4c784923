"""The embedded default end to end: `dynascope up` with a SQLite store and a SQLite-backed
Celery broker, a real worker process, runs through the API and the CLI, Ctrl-C."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.processes import (
    dynascope_process,
    environment,
    free_port,
    processes_with_setting,
    small_spec,
    wait_for_api,
    wait_for_run,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def embedded(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    port = free_port()
    env = environment(home=str(home), flush_interval_s="0.2", heartbeat_interval_s="0.5")
    log = home / "up.log"
    with dynascope_process(["up", "--port", str(port)], env, log) as process:
        base = f"http://127.0.0.1:{port}"
        wait_for_api(base, process, log)
        yield {"base": base, "env": env, "home": home, "process": process, "log": log}


def test_run_goes_queued_running_completed(embedded):
    base = embedded["base"]
    created = httpx.post(f"{base}/api/v1/runs", json=small_spec())
    assert created.status_code == 201
    run = wait_for_run(base, created.json()["id"])
    assert run["status"] == "completed", run
    assert run["step"] == run["steps"] == 60 and run["progress"] == 1.0
    assert run["started_at"] and run["finished_at"] and run["duration_s"] > 0
    assert run["timings"]["total_s"] > 0 and "probe_norms_s" in run["timings"]
    assert run["summary"]["test/accuracy"] > 0.5  # digits is easy even for 60 steps

    metrics = httpx.get(f"{base}/api/v1/runs/{run['id']}/metrics").json()["series"]
    assert metrics["train/batch_loss"]["steps"] == list(range(60))
    assert metrics["test/loss"]["steps"] == [0, 10, 20, 30, 40, 50, 60]
    for key in (
        "train/loss",
        "train/accuracy",
        "test/accuracy",
        "grad_norm",
        "distance_from_init",
        "weight_norm/layer1.linear.weight",
        "cost/norms/seconds",
    ):
        assert key in metrics, key  # fmt: skip
    assert metrics["distance_from_init"]["values"][0] == 0.0
    # the update ratio exists from the first update on
    assert metrics["update_ratio/layer1.linear.weight"]["steps"] == [10, 20, 30, 40, 50, 60]
    loss = metrics["train/loss"]["values"]
    assert loss[-1] < loss[0]


def test_metrics_downsampled_and_selected(embedded):
    base = embedded["base"]
    run_id = httpx.post(f"{base}/api/v1/runs", json=small_spec(steps=400)).json()["id"]
    wait_for_run(base, run_id)
    body = httpx.get(
        f"{base}/api/v1/runs/{run_id}/metrics",
        params={"keys": "train/batch_loss,test/loss", "max_points": 50},
    ).json()
    assert set(body["series"]) == {"train/batch_loss", "test/loss"}
    series = body["series"]["train/batch_loss"]
    assert series["total_points"] == 400 and len(series["steps"]) <= 50
    full = httpx.get(
        f"{base}/api/v1/runs/{run_id}/metrics", params={"keys": "train/batch_loss"}
    ).json()["series"]["train/batch_loss"]["values"]
    assert max(series["values"]) == max(full) and min(series["values"]) == min(full)


def test_divergence_is_recorded_with_data_kept(embedded):
    base = embedded["base"]
    spec = small_spec(
        model={"name": "mlp", "widths": [32], "activation": "relu"},
        data={"name": "teacher_student", "n_samples": 500, "dim": 8, "batch_size": 64},
        optimizer={"name": "sgd", "lr": 3.0},
        steps=200,
        probes={"every": 10, "batch_size": 128},
    )
    run = wait_for_run(base, httpx.post(f"{base}/api/v1/runs", json=spec).json()["id"])
    assert run["status"] == "diverged", run
    step = run["diverged_step"]
    assert step is not None and "non-finite" in run["error"]
    losses = httpx.get(
        f"{base}/api/v1/runs/{run['id']}/metrics", params={"keys": "train/batch_loss"}
    ).json()["series"]["train/batch_loss"]
    assert losses["steps"][-1] == step and losses["values"][-1] is None  # the NaN, as null
    assert all(v is not None and math.isfinite(v) for v in losses["values"][:-1])


def test_cancel_stops_a_running_run(embedded):
    base = embedded["base"]
    spec = small_spec(steps=100_000, probes={"every": 1000, "batch_size": 64})
    run_id = httpx.post(f"{base}/api/v1/runs", json=spec).json()["id"]
    wait_for_run(base, run_id, {"running"}, timeout=60)
    assert httpx.post(f"{base}/api/v1/runs/{run_id}/cancel").json()["cancel_requested"]
    run = wait_for_run(base, run_id, timeout=30)
    assert run["status"] == "cancelled" and 0 < run["step"] < 100_000


def test_cli_submit_wait_and_list(embedded, tmp_path):
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(small_spec(name="from-cli")))
    cli = [sys.executable, "-m", "dynascope.server.cli"]
    url = ["--url", embedded["base"]]
    done = subprocess.run(
        [*cli, "submit", str(spec_file), "--wait", *url],
        env=embedded["env"], capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "completed at step 60/60" in done.stdout and "test/accuracy" in done.stdout
    listed = subprocess.run(
        [*cli, "runs", *url], env=embedded["env"], capture_output=True, text=True, timeout=60
    )
    assert listed.returncode == 0 and "from-cli" in listed.stdout

    spec_file.write_text(json.dumps(small_spec(optimizer={"name": "sgd", "lr": -1})))
    bad = subprocess.run(
        [*cli, "submit", str(spec_file), *url],
        env=embedded["env"], capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert bad.returncode != 0 and "optimizer.lr" in bad.stderr
    assert "the spec is invalid" in bad.stderr

    def cli_runs(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*cli, "runs", *args], env=embedded["env"], capture_output=True, text=True, timeout=60
        )

    with_api_path = cli_runs("--url", embedded["base"] + "/api/v1/", "--status", "completed")
    assert with_api_path.returncode == 0 and "from-cli" in with_api_path.stdout
    bogus = cli_runs(*url, "--status", "bogus")
    assert bogus.returncode == 2 and "'bogus' is not one of" in bogus.stderr


@contextmanager
def _up_training_a_long_run(tmp_path: Path, **settings: str) -> Iterator[dict[str, Any]]:
    """`dynascope up` with its own home and port (and ``settings``), training a run of
    100,000 steps: yields the process, base URL, run id, home, log and environment once the
    run is running."""
    home = tmp_path / "home"
    env = environment(home=str(home), heartbeat_interval_s="0.5", **settings)
    log = tmp_path / "up.log"
    port = free_port()
    with dynascope_process(["up", "--port", str(port)], env, log) as process:
        base = f"http://127.0.0.1:{port}"
        wait_for_api(base, process, log)
        spec = small_spec(steps=100_000, probes={"every": 1000, "batch_size": 64})
        run_id = httpx.post(f"{base}/api/v1/runs", json=spec).json()["id"]
        wait_for_run(base, run_id, {"running"}, timeout=60)
        yield {"process": process, "base": base, "run_id": run_id, "home": home, "log": log,
               "env": env, "port": port}  # fmt: skip


def test_ctrl_c_stops_api_and_worker(tmp_path):
    with _up_training_a_long_run(tmp_path) as up:
        process, base, run_id, home, log = (
            up["process"], up["base"], up["run_id"], up["home"], up["log"]
        )  # fmt: skip
        env, port = up["env"], up["port"]
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 0, log.read_text()
    # no worker left behind, and the interrupted run is not left "running"
    assert processes_with_setting("DYNASCOPE_HOME", str(home)) == []
    with dynascope_process(["up", "--port", str(port)], env, tmp_path / "up2.log") as again:
        wait_for_api(base, again, tmp_path / "up2.log")
        run = httpx.get(f"{base}/api/v1/runs/{run_id}").json()
        assert run["status"] == "failed" and "shut down" in run["error"], run


def test_a_killed_worker_is_replaced_and_its_run_failed(tmp_path):
    """`up` starts a new worker when its worker dies (SIGKILL, mid-run): the run it held is
    failed by the heartbeat check, and a run submitted afterwards is trained."""
    settings = {"flush_interval_s": "0.2", "heartbeat_timeout_s": "3", "reaper_interval_s": "0.5"}
    with _up_training_a_long_run(tmp_path, **settings) as up:
        process, base, held, home, log = (
            up["process"], up["base"], up["run_id"], up["home"], up["log"]
        )  # fmt: skip
        (worker,) = [pid for pid in processes_with_setting("DYNASCOPE_HOME", str(home))
                     if pid != process.pid]  # fmt: skip
        os.kill(worker, signal.SIGKILL)
        run = wait_for_run(base, held, timeout=60)
        assert run["status"] == "failed" and "worker lost" in run["error"], run
        after = httpx.post(f"{base}/api/v1/runs", json=small_spec()).json()["id"]
        assert wait_for_run(base, after, timeout=120)["status"] == "completed"
        assert "the worker exited" in log.read_text()
        assert process.poll() is None  # `up` itself kept serving
        workers = [
            p for p in processes_with_setting("DYNASCOPE_HOME", str(home)) if p != process.pid
        ]
        assert len(workers) == 1 and workers != [worker]
        alive = httpx.get(f"{base}/api/v1/health").json()["workers"]
        assert alive["alive"] == 1 and alive["list"][0]["name"].endswith(f":{workers[0]}")


def test_two_instances_with_different_homes_do_not_touch(embedded, tmp_path):
    port = free_port()
    env = environment(home=str(tmp_path / "other"), flush_interval_s="0.2")
    log = tmp_path / "other.log"
    with dynascope_process(["up", "--port", str(port)], env, log) as process:
        other = f"http://127.0.0.1:{port}"
        wait_for_api(other, process, log)
        mine = httpx.post(f"{embedded['base']}/api/v1/runs", json=small_spec(name="mine"))
        theirs = httpx.post(f"{other}/api/v1/runs", json=small_spec(name="theirs", steps=30))
        assert wait_for_run(other, theirs.json()["id"])["status"] == "completed"
        assert wait_for_run(embedded["base"], mine.json()["id"])["status"] == "completed"
        names = {run["name"] for run in httpx.get(f"{other}/api/v1/runs").json()["data"]}
        assert names == {"theirs"}
        mine_names = {
            r["name"] for r in httpx.get(f"{embedded['base']}/api/v1/runs").json()["data"]
        }
        assert "theirs" not in mine_names and "mine" in mine_names
