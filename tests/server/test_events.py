"""The server-sent event streams: GET /runs/{id}/events (one run, until it finishes) and
GET /events (every run). Against the embedded app, a run's progress is written to the
database the way a worker writes it; one integration test follows a real worker's run
through a real `dynascope up`."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterator

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from dynascope.server.api.routes import events
from dynascope.server.app import create_app
from dynascope.server.db.models import Run, utcnow
from dynascope.server.db.session import session_scope
from tests.integration.processes import (
    dynascope_process,
    environment,
    free_port,
    small_spec,
    wait_for_api,
)

SPEC = {
    "name": "streamed",
    "model": {"name": "mlp", "widths": [8]},
    "data": {"name": "digits", "batch_size": 32},
    "optimizer": {"name": "sgd", "lr": 0.1},
    "steps": 30,
    "probes": {"every": 10, "batch_size": 64},
}


@pytest.fixture
def client(embedded_home, monkeypatch) -> Iterator[TestClient]:
    monkeypatch.setattr(events, "POLL_INTERVAL_S", 0.02)
    monkeypatch.setattr(events, "HEARTBEAT_INTERVAL_S", 0.15)
    monkeypatch.setattr(events, "MAX_STREAM_S", 10.0)
    with TestClient(create_app()) as client:
        yield client


def parse_stream(text: str) -> list[tuple[str, str]]:
    """(field, value) per block of an event stream: ("run", data), ("end", data),
    ("deleted", data), ("comment", text) or ("retry", ms)."""
    blocks = []
    for block in text.split("\n\n"):
        lines = [line for line in block.split("\n") if line]
        if not lines:
            continue
        if lines[0].startswith(":"):
            blocks.append(("comment", lines[0][1:].strip()))
            continue
        fields = dict(line.split(": ", 1) for line in lines)
        if "event" in fields:
            blocks.append((fields["event"], fields["data"]))
        elif "retry" in fields:
            blocks.append(("retry", fields["retry"]))
    return blocks


def set_run(run_id: int, **values) -> None:
    """Write to a run's row as a worker does (step, status, summary, heartbeat)."""
    with session_scope() as session:
        session.execute(update(Run).where(Run.id == run_id).values(**values))


def later(*actions: tuple[float, Callable[[], object]]) -> threading.Thread:
    """Run each action after its delay (seconds from the previous), in a thread."""

    def play() -> None:
        for delay, action in actions:
            time.sleep(delay)
            action()

    thread = threading.Thread(target=play, daemon=True)
    thread.start()
    return thread


def test_unknown_run_is_404(client):
    response = client.get("/api/v1/runs/999/events")
    assert response.status_code == 404
    assert response.json() == {"detail": "run 999 does not exist"}


def test_run_stream_follows_progress_and_ends_with_the_final_run(client):
    run_id = client.post("/api/v1/runs", json=SPEC).json()["id"]
    started = utcnow()
    worker = later(
        (0.3, lambda: set_run(run_id, status="running", started_at=started, heartbeat_at=started)),
        (0.3, lambda: set_run(run_id, step=10, summary={"train/loss": 1.5})),
        # nothing changes for a while: heartbeat comments keep the connection alive
        (0.5, lambda: set_run(run_id, step=30, summary={"train/loss": 0.5})),
        (0.2, lambda: set_run(run_id, status="completed", finished_at=utcnow())),
    )
    response = client.get(f"/api/v1/runs/{run_id}/events")
    worker.join()
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["cache-control"] == "no-cache"
    blocks = parse_stream(response.text)
    assert blocks[0] == ("retry", str(events.RECONNECT_MS))
    assert ("comment", "heartbeat") in blocks
    runs = [(name, json.loads(data)) for name, data in blocks if name in {"run", "end"}]
    assert [name for name, _ in runs][-1] == "end" and [n for n, _ in runs].count("end") == 1
    statuses = [run["status"] for _, run in runs]
    assert statuses[0] == "queued" and "running" in statuses and statuses[-1] == "completed"
    steps = [run["step"] for _, run in runs]
    assert steps == sorted(steps) and {0, 10, 30} <= set(steps)
    final = runs[-1][1]
    # the data is the run exactly as GET /runs/{id} shows it
    assert final == client.get(f"/api/v1/runs/{run_id}").json()
    assert final["summary"] == {"train/loss": 0.5} and final["progress"] == 1.0
    # one event per change: no two consecutive identical payloads
    payloads = [data for name, data in blocks if name == "run"]
    assert all(a != b for a, b in zip(payloads, payloads[1:], strict=False))


def test_a_finished_run_gets_one_end_event(client):
    run_id = client.post("/api/v1/runs", json=SPEC).json()["id"]
    client.post(f"/api/v1/runs/{run_id}/cancel")
    blocks = parse_stream(client.get(f"/api/v1/runs/{run_id}/events").text)
    assert [name for name, _ in blocks] == ["retry", "end"]
    assert json.loads(blocks[1][1])["status"] == "cancelled"


def test_diverged_run_ends_with_its_step_and_error(client):
    run_id = client.post("/api/v1/runs", json=SPEC).json()["id"]
    later(
        (0.1, lambda: set_run(run_id, status="running", step=12, started_at=utcnow())),
        (
            0.2,
            lambda: set_run(
                run_id, status="diverged", diverged_step=12, error="non-finite loss at step 12"
            ),
        ),
    )
    blocks = parse_stream(client.get(f"/api/v1/runs/{run_id}/events").text)
    name, data = blocks[-1]
    end = json.loads(data)
    assert name == "end" and end["status"] == "diverged"
    assert end["diverged_step"] == 12 and "non-finite" in end["error"]


def test_deleting_the_run_ends_its_stream(client):
    run_id = client.post("/api/v1/runs", json=SPEC).json()["id"]
    later((0.3, lambda: client.delete(f"/api/v1/runs/{run_id}")))
    blocks = parse_stream(client.get(f"/api/v1/runs/{run_id}/events").text)
    assert blocks[-1] == ("deleted", json.dumps({"id": run_id}).replace(" ", ""))


def test_a_stream_closes_after_its_longest_duration(client, monkeypatch):
    """The browser reconnects (retry: ...), so an open tab never holds the server's
    graceful shutdown for longer than MAX_STREAM_S."""
    monkeypatch.setattr(events, "MAX_STREAM_S", 0.5)
    run_id = client.post("/api/v1/runs", json=SPEC).json()["id"]
    started = time.monotonic()
    blocks = parse_stream(client.get(f"/api/v1/runs/{run_id}/events").text)
    assert time.monotonic() - started < 3
    names = [name for name, _ in blocks]
    assert names[:2] == ["retry", "run"] and "end" not in names and "comment" in names


def test_list_stream_reports_new_moving_finished_and_deleted_runs(client, monkeypatch):
    monkeypatch.setattr(events, "MAX_STREAM_S", 2.0)
    old = client.post("/api/v1/runs", json=SPEC | {"name": "old"}).json()["id"]
    client.post(f"/api/v1/runs/{old}/cancel")  # finished before the stream: not reported
    waiting = client.post("/api/v1/runs", json=SPEC | {"name": "waiting"}).json()["id"]
    doomed = client.post("/api/v1/runs", json=SPEC | {"name": "doomed"}).json()["id"]
    created: dict[str, int] = {}

    def create() -> None:
        created["id"] = client.post("/api/v1/runs", json=SPEC | {"name": "new"}).json()["id"]

    later(
        (0.2, create),
        (0.2, lambda: set_run(created["id"], status="running", step=10, started_at=utcnow())),
        (0.2, lambda: set_run(created["id"], status="completed", step=30)),
        (0.2, lambda: client.post(f"/api/v1/runs/{waiting}/cancel")),
        (0.2, lambda: client.delete(f"/api/v1/runs/{doomed}")),  # a queued run may go
    )
    blocks = parse_stream(client.get("/api/v1/events").text)
    runs = [json.loads(data) for name, data in blocks if name == "run"]
    seen = [(run["id"], run["status"], run["step"]) for run in runs]
    new = created["id"]
    assert seen[:2] == [(waiting, "queued", 0), (doomed, "queued", 0)]  # active runs first
    assert old not in {run_id for run_id, _, _ in seen}
    assert [(s, step) for run_id, s, step in seen if run_id == new] == [
        ("queued", 0),
        ("running", 10),
        ("completed", 30),
    ]
    assert (waiting, "cancelled", 0) in seen
    assert ("deleted", json.dumps({"id": doomed}).replace(" ", "")) in blocks


@pytest.mark.parametrize(
    ("bundle", "header"),
    [("plotly.min.js", b"plotly.js v"), ("plotly-cartesian.min.js", b"plotly.js (cartesian")],
)
def test_plotly_is_served_locally_with_caching(client, bundle, header):
    response = client.get(f"/vendor/{bundle}", headers={"accept-encoding": "gzip"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/javascript")
    assert response.headers["content-encoding"] == "gzip"
    assert "max-age" in response.headers["cache-control"]
    assert header in response.content[:200]  # httpx decompressed it
    etag = response.headers["etag"]
    again = client.get(f"/vendor/{bundle}", headers={"if-none-match": etag})
    assert again.status_code == 304 and not again.content


def test_both_plotly_bundles_are_the_same_version(client):
    """The vendored cartesian bundle must match the full one the plotly package ships, up to
    patch releases (a page may draw with both); a new minor release of plotly means vendoring
    its cartesian bundle anew (pyproject.toml pins the minor release)."""
    versions = [
        re.search(rb"v(\d+\.\d+)\.\d+", client.get(f"/vendor/{bundle}").content[:200])
        for bundle in ("plotly.min.js", "plotly-cartesian.min.js")
    ]
    assert versions[0] and versions[1] and versions[0][1] == versions[1][1]


# ---- against a real `dynascope up` and its worker -----------------------------------------


def follow_events(url: str, done: Callable[[str, dict], bool], timeout: float = 120):
    """Read the event stream at ``url`` like a browser (reconnecting when the server closes
    it) until ``done(event, data)``; returns every (event, data) seen."""
    seen: list[tuple[str, dict]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with httpx.stream("GET", url, timeout=30) as response:
            assert response.status_code == 200
            event = None
            for line in response.iter_lines():
                if line.startswith("event: "):
                    event = line[len("event: ") :]
                elif line.startswith("data: ") and event:
                    seen.append((event, json.loads(line[len("data: ") :])))
                    if done(*seen[-1]):
                        return seen
    raise TimeoutError(f"{url}: not done after {timeout} s; saw {seen}")


@pytest.mark.integration
def test_real_run_streams_to_completion(tmp_path):
    port = free_port()
    env = environment(
        home=str(tmp_path / "home"), flush_interval_s="0.2", heartbeat_interval_s="0.5"
    )
    log = tmp_path / "up.log"
    with dynascope_process(["up", "--port", str(port)], env, log) as process:
        base = f"http://127.0.0.1:{port}"
        wait_for_api(base, process, log)
        listing: list[tuple[str, dict]] = []
        run_id: dict[str, int] = {}

        def listen() -> None:
            listing.extend(
                follow_events(
                    f"{base}/api/v1/events",
                    lambda event, run: (
                        run.get("id") == run_id.get("id") and run["status"] == "completed"
                    ),
                )
            )

        listener = threading.Thread(target=listen, daemon=True)
        listener.start()
        time.sleep(0.5)
        spec = small_spec(steps=200, probes={"every": 20, "batch_size": 128})
        run_id["id"] = httpx.post(f"{base}/api/v1/runs", json=spec).json()["id"]
        seen = follow_events(
            f"{base}/api/v1/runs/{run_id['id']}/events", lambda event, _: event == "end"
        )
        listener.join(timeout=60)

    final_event, final = seen[-1]
    assert final_event == "end" and final["status"] == "completed"
    assert final["step"] == final["steps"] == 200 and final["summary"]["test/accuracy"] > 0.5
    steps = [run["step"] for _, run in seen]
    assert steps == sorted(steps) and len(set(steps)) >= 2  # progress arrived, in order
    mine = [run for event, run in listing if event == "run" and run["id"] == run_id["id"]]
    assert mine[-1]["status"] == "completed" and mine[-1]["step"] == 200
