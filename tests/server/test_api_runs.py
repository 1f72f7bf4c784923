"""The API's contract without a worker: validation (422 naming the field), 404s, queueing,
listing, cancelling and deleting, on the embedded store and broker."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from dynascope.server.app import create_app

SPEC = {
    "name": "mlp-digits",
    "seed": 0,
    "model": {"name": "mlp", "widths": [16], "activation": "tanh"},
    "data": {"name": "digits", "batch_size": 64},
    "optimizer": {"name": "sgd", "lr": 0.1},
    "steps": 20,
    "probes": {"every": 5, "batch_size": 128},
}


@pytest.fixture
def client(embedded_home, monkeypatch) -> TestClient:
    from dynascope.server.settings import get_settings

    # small limits, so specs of a test's size cross them (mlp 64-16-10: 1210 parameters)
    monkeypatch.setenv("DYNASCOPE_LIMIT_MAX_TRAINING_JACOBIAN_PARAMETERS", "1000")
    monkeypatch.setenv("DYNASCOPE_LIMIT_MAX_SNAPSHOT_BYTES", str(4 * 1210 * 15))
    monkeypatch.setenv("DYNASCOPE_LIMIT_MAX_PARAMETERS", "50000")
    get_settings.cache_clear()
    with TestClient(create_app()) as client:
        yield client


def _fields(response) -> dict[str, str]:
    assert response.status_code == 422, response.text
    return {item["field"]: item["msg"] for item in response.json()["detail"]}


def _with(**changes) -> dict:
    spec = {**SPEC}
    for path, value in changes.items():
        *parents, leaf = path.split("__")
        node = spec
        for part in parents:
            node[part] = dict(node[part])
            node = node[part]
        node[leaf] = value
    return spec


def test_submit_queues_a_run(client):
    response = client.post("/api/v1/runs", json=SPEC)
    assert response.status_code == 201
    body = response.json()
    assert body["status"] == "queued"
    run = client.get(f"/api/v1/runs/{body['id']}").json()
    assert run["status"] == "queued" and run["step"] == 0 and run["steps"] == 20
    assert run["progress"] == 0.0 and run["spec"]["model"]["widths"] == [16]
    listed = client.get("/api/v1/runs").json()
    assert listed["count"] == 1 and listed["data"][0]["id"] == body["id"]


@pytest.mark.parametrize(
    ("spec", "field", "words"),
    [
        (_with(model__name="nonexistent"), "model.name", "does not match"),
        (_with(optimizer__lr=-0.1), "optimizer.lr", "greater than 0"),
        (_with(model__widths=[16, -3]), "model.widths.1", "greater than 0"),
        (_with(model__widths="16"), "model.widths", "list"),
        (_with(steps=10**9), "steps", "above the configured limit"),
        (_with(probes__batch_size=5000), "probes.batch_size", "larger than the training set"),
        (_with(unknown_key=1), "unknown_key", "Extra inputs are not permitted"),
        (_with(model__depth=3), "model.depth", "Extra inputs"),
        (_with(model={"name": "transformer"}), "model.name", "takes tokens inputs"),
        (_with(optimizer={"name": "sgd", "nesterov": True}), "optimizer", "nesterov needs"),
        (_with(data={"name": "npz", "file": "../../etc/passwd"}), "data.file", "pattern"),
        (
            _with(probes__training_jacobian={}),
            "probes.training_jacobian",
            'needs optimizer "gd", not "sgd"',
        ),
        (
            _with(probes__training_jacobian={}, optimizer={"name": "gd", "lr": 0.1}),
            "probes.training_jacobian",
            "1210 parameters, above the training Jacobian's limit of 1000",
        ),
        (
            _with(probes__trajectory={"snapshot_every": 1}),
            "probes.trajectory.snapshot_every",
            "snapshot_every 2 fits",
        ),
        (
            _with(probes__landscape={"plane": "pca"}),
            "probes.landscape.plane",
            "enable probes.trajectory",
        ),
        (  # two snapshots (steps 0 and 20): the PCA would silently store nothing
            _with(probes__trajectory={"snapshot_every": 20}),
            "probes.trajectory.snapshot_every",
            "needs at least 3: use snapshot_every at most 19",
        ),
        (
            _with(steps=1, probes__trajectory={"snapshot_every": 1}),
            "probes.trajectory.snapshot_every",
            "use steps 2 or more",
        ),
        (  # one component: the "pca" plane would silently be left out
            _with(
                probes__trajectory={"snapshot_every": 5, "components": 1},
                probes__landscape={"plane": "pca"},
            ),
            "probes.trajectory.components",
            "use 2 or more",
        ),
        (  # the worker would fail at step 0 with PyTorch's "Expected more than 1 value"
            _with(model__batch_norm=True, data__batch_size=1),
            "data.batch_size",
            "a minibatch of 1 example leaves it a single value per channel",
        ),
        (  # 8x8 digits pooled to 1x1 before the fourth stage's batch norm
            _with(
                model={"name": "cnn", "channels": [4, 4, 4, 4], "batch_norm": True},
                data__batch_size=1,
            ),
            "data.batch_size",
            "use data.batch_size 2 or more, or model.batch_norm false",
        ),
        (
            _with(
                model__batch_norm=True,
                data={"name": "spirals", "n_samples": 2},
                optimizer={"name": "gd"},
                probes__batch_size=1,
            ),
            "model.batch_norm",
            "a minibatch of 1 example",
        ),
        (
            _with(probes__landscape={"plane": "random", "checkpoints": [5, 21]}),
            "probes.landscape.checkpoints.1",
            "after the last step",
        ),
        (_with(model__widths=[4096] * 4), "model", "above the configured limit of 50000"),
        # integers are JSON integers: no bool, float or string silently converted
        (_with(model__widths=[True, 16]), "model.widths.0", "valid integer"),
        (_with(model__widths=[16, 16.0]), "model.widths.1", "valid integer"),
        (_with(model={"name": "cnn", "channels": [8, 4.0]}), "model.channels.1", "valid integer"),
        (_with(model={"name": "resnet", "depth": True}), "model.depth", "valid integer"),
        (_with(steps=20.0), "steps", "valid integer"),
        (_with(seed="1"), "seed", "valid integer"),
        (_with(data__batch_size=True), "data.batch_size", "valid integer"),
        (_with(probes__batch_size=128.0), "probes.batch_size", "valid integer"),
        (_with(probes__hessian={"top_k": 2.0}), "probes.hessian.top_k", "valid integer"),
        (  # the broadening 2·range/(points − 21) needs more than 21 points
            _with(probes__hessian={"density": True, "density_points": 21}),
            "probes.hessian.density_points",
            "greater than or equal to 22",
        ),
        (  # Hutch++ splits its products in three parts of at least two
            _with(probes__hessian={"trace": True, "trace_matvecs": 5}),
            "probes.hessian.trace_matvecs",
            "greater than or equal to 6",
        ),
        (
            _with(probes__hessian={"top_k": 20, "max_iterations": 5}),
            "probes.hessian.max_iterations",
            "max_iterations (5) must be at least top_k (20)",
        ),
        (_with(optimizer__lr=True), "optimizer.lr", "valid number"),
        (_with(model__batch_norm=1), "model.batch_norm", "valid boolean"),
        (
            _with(data__batch_size=5000),
            "data.batch_size",
            "data.batch_size (5000) is larger than the training set (1438 examples)",
        ),
        (
            _with(optimizer={"name": "sgd", "schedule": {"name": "cosine", "warmup_steps": 500}}),
            "optimizer.schedule.warmup_steps",
            "warmup_steps (500) must be fewer than steps (20)",
        ),
        (
            _with(optimizer={"name": "adam", "schedule": {"warmup_steps": 20}}),
            "optimizer.schedule.warmup_steps",
            "warmup_steps (20) must be fewer than steps (20)",
        ),
    ],
)
def test_bad_specs_are_422_naming_the_field(client, spec, field, words):
    fields = _fields(client.post("/api/v1/runs", json=spec))
    assert field in fields, fields
    assert words in fields[field]
    assert client.get("/api/v1/runs").json()["count"] == 0  # nothing half-written


@pytest.mark.parametrize(
    "spec",
    [
        _with(model__widths=[16, 8]),  # JSON integers stay valid
        _with(optimizer__lr=1),  # an integer is a valid float
        _with(data__batch_size=1438),  # the whole training set
        _with(data__batch_size=5000, optimizer={"name": "gd", "lr": 0.1}),  # gd takes it all
        _with(optimizer={"name": "sgd", "schedule": {"name": "cosine", "warmup_steps": 19}}),
        _with(probes__trajectory={"snapshot_every": 19}),  # snapshots at 0, 19 and 20
        _with(model__batch_norm=True, data__batch_size=2),
        # one image, but batch norm on 8x8 and 4x4 feature maps: many values per channel
        _with(model={"name": "cnn", "channels": [4, 4], "batch_norm": True}, data__batch_size=1),
    ],
)
def test_valid_specs_near_the_new_checks_are_accepted(client, spec):
    response = client.post("/api/v1/runs", json=spec)
    assert response.status_code == 201, response.text


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity"])
@pytest.mark.parametrize(
    ("path", "field"),
    [
        (("optimizer", "lr"), "optimizer.lr"),
        (("optimizer", "weight_decay"), "optimizer.weight_decay"),
        (("probes", "hessian", "tolerance"), "probes.hessian.tolerance"),
        (("data", "test_fraction"), "data.test_fraction"),
    ],
)
def test_non_finite_numbers_are_422_naming_the_field(client, value, path, field):
    spec = _with(probes__hessian={"top_k": 1})
    node = spec
    for part in path[:-1]:
        node[part] = node = dict(node[part])
    node[path[-1]] = "PLACEHOLDER"
    # Python's JSON reader accepts NaN and Infinity, so a client can send them
    body = json.dumps(spec).replace('"PLACEHOLDER"', value)
    response = client.post(
        "/api/v1/runs", content=body, headers={"content-type": "application/json"}
    )
    fields = _fields(response)
    assert fields == {field: "Input should be a finite number"}
    assert client.get("/api/v1/runs").json()["count"] == 0


def test_snapshot_limits_name_only_what_is_exceeded(client, embedded_home, monkeypatch):
    from dynascope.server.settings import get_settings

    where, every_step = "probes.trajectory.snapshot_every", {"snapshot_every": 1}
    # bytes only (the fixture allows 15 snapshots' bytes): 21 snapshots of 1210 parameters
    spec = _with(probes__trajectory=every_step)
    bytes_only = _fields(client.post("/api/v1/runs", json=spec))[where]
    assert bytes_only == (
        "21 snapshots of 1210 parameters take 99.3 KiB, above the limit of 70.9 KiB by "
        "28.4 KiB (setting DYNASCOPE_LIMIT_MAX_SNAPSHOT_BYTES); snapshot_every 2 fits"
    )
    # both limits: 5001 snapshots
    spec = _with(steps=5000, probes__trajectory=every_step)
    both = _fields(client.post("/api/v1/runs", json=spec))[where]
    assert "above the limit of 2000 snapshots by 3001 (setting" in both
    assert "and the limit of 70.9 KiB by 23.0 MiB (setting" in both

    # the count only, under the default byte limit (256 MiB): the spec of the bug report
    monkeypatch.delenv("DYNASCOPE_LIMIT_MAX_SNAPSHOT_BYTES")
    get_settings.cache_clear()
    with TestClient(create_app()) as default_client:
        spec = _with(steps=50000, probes__trajectory=every_step)
        count_only = _fields(default_client.post("/api/v1/runs", json=spec))[where]
    assert count_only == (
        "50001 snapshots of 1210 parameters take 230.8 MiB, above the limit of 2000 snapshots "
        "by 48001 (setting DYNASCOPE_LIMIT_MAX_SNAPSHOTS); snapshot_every 26 fits"
    )


def test_step_limit_comes_from_settings(embedded_home, monkeypatch):
    from dynascope.server.settings import get_settings

    monkeypatch.setenv("DYNASCOPE_LIMIT_MAX_STEPS", "10")
    get_settings.cache_clear()
    with TestClient(create_app()) as client:
        fields = _fields(client.post("/api/v1/runs", json=SPEC))
    assert "limit of 10" in fields["steps"]


def test_unknown_ids_are_404(client):
    for method, path in [
        ("get", "/api/v1/runs/999"),
        ("post", "/api/v1/runs/999/cancel"),
        ("delete", "/api/v1/runs/999"),
        ("get", "/api/v1/runs/999/metrics"),
    ]:
        response = getattr(client, method)(path)
        assert response.status_code == 404
        assert "run 999 does not exist" in response.json()["detail"]


def test_cancel_then_delete_a_queued_run(client):
    run_id = client.post("/api/v1/runs", json=SPEC).json()["id"]
    cancelled = client.post(f"/api/v1/runs/{run_id}/cancel").json()
    assert cancelled["status"] == "cancelled"
    assert client.post(f"/api/v1/runs/{run_id}/cancel").status_code == 409
    assert client.delete(f"/api/v1/runs/{run_id}").status_code == 204
    assert client.get(f"/api/v1/runs/{run_id}").status_code == 404


def test_filters_and_paging(client):
    ids = [client.post("/api/v1/runs", json=_with(name=f"run-{i}")).json()["id"] for i in range(5)]
    client.post(f"/api/v1/runs/{ids[0]}/cancel")
    page = client.get("/api/v1/runs", params={"limit": 2, "offset": 1}).json()
    assert page["count"] == 5 and [r["id"] for r in page["data"]] == ids[3:1:-1]
    assert client.get("/api/v1/runs", params={"status": "cancelled"}).json()["count"] == 1
    assert client.get("/api/v1/runs", params={"name": "run-3"}).json()["count"] == 1
    assert client.get("/api/v1/runs", params={"status": "bogus"}).status_code == 422


def test_registry_lists_every_entry_with_schemas(client):
    registry = client.get("/api/v1/registry").json()
    assert set(registry["models"]) == {"mlp", "linear", "cnn", "resnet", "transformer"}
    assert set(registry["datasets"]) == {
        "digits", "gaussian_mixture", "spirals", "teacher_student", "modular_arithmetic",
        "random_images", "cifar10", "mnist", "npz",
    }  # fmt: skip
    assert set(registry["optimizers"]) == {"gd", "sgd", "adam", "adamw"}
    assert "widths" in registry["models"]["mlp"]["schema"]["properties"]
    assert registry["models"]["transformer"]["accepts"] == ["tokens"]
    assert registry["limits"]["max_steps"] == 100_000


def test_health_reports_database_and_broker(client):
    body = client.get("/api/v1/health").json()
    assert body["status"] == "ok"
    assert body["database"]["ok"] and body["broker"]["ok"]
    assert body["workers"] == {"alive": 0, "list": []}  # no worker here: said, still healthy


def test_health_counts_the_workers_alive(client):
    """A worker's presence is in /health from its start to its stop; a row stamped longer ago
    than the heartbeat timeout (a worker killed outright) no longer counts."""
    from datetime import timedelta

    from sqlalchemy import select, update

    from dynascope.server.db.models import Worker, utcnow
    from dynascope.server.db.session import get_engine, session_scope
    from dynascope.server.services.workers import forget_stale_workers
    from dynascope.worker.heartbeat import WorkerPresence

    presence = WorkerPresence("host-a:1", device="cpu", interval_s=0.05).start()
    stale = WorkerPresence("host-b:2", device="cuda:0", interval_s=60).start()
    try:
        with get_engine().begin() as connection:
            connection.execute(
                update(Worker)
                .where(Worker.name == "host-b:2")
                .values(last_seen=utcnow() - timedelta(seconds=100))
            )
        body = client.get("/api/v1/health").json()
        assert body["workers"]["alive"] == 1
        (alive,) = body["workers"]["list"]
        assert alive["name"] == "host-a:1" and alive["device"] == "cpu"
        assert alive["last_seen"] >= alive["started_at"]
        with session_scope() as session:
            # stale for /health (30 s), not yet for the API's own reaper (10 timeouts)
            assert forget_stale_workers(session, older_than_s=60) == 1  # host-b only
            assert [w.name for w in session.scalars(select(Worker))] == ["host-a:1"]
    finally:
        presence.stop()
        stale.stop()
    assert client.get("/api/v1/health").json()["workers"]["alive"] == 0


def test_health_reports_an_unreachable_broker(embedded_home, monkeypatch):
    from dynascope.server.settings import get_settings

    monkeypatch.setenv("DYNASCOPE_BROKER_URL", "redis://127.0.0.1:1/0")
    get_settings.cache_clear()
    with TestClient(create_app()) as client:
        response = client.get("/api/v1/health")
        assert response.status_code == 503
        assert response.json()["broker"]["ok"] is False
        submitted = client.post("/api/v1/runs", json=SPEC)
        assert submitted.status_code == 503 and "broker" in submitted.json()["detail"]
        assert client.get("/api/v1/runs").json()["count"] == 0  # the row was removed again


def test_dashboard_is_served(client):
    response = client.get("/")
    assert response.status_code == 200 and "dynascope" in response.text
