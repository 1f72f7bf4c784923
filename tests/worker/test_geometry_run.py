"""Geometry through the runner and the API: the trajectory PCA and landscapes a run records at
its end, and linear mode connectivity between two runs (the maths is tested in
tests/worker/probes/test_landscape.py, test_grid_evaluation.py and test_trajectory.py)."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient

from dynascope.server.app import create_app
from dynascope.server.db.session import session_scope
from dynascope.server.schemas.run_spec import RunSpec
from dynascope.server.services.metrics import read_series
from dynascope.server.services.runs import create_run
from dynascope.worker.runner import execute_run

SPEC = {
    "model": {"name": "mlp", "widths": [12], "activation": "tanh"},
    "data": {"name": "digits", "batch_size": 64},
    "optimizer": {"name": "sgd", "lr": 0.2},
    "steps": 30,
    "probes": {
        "every": 10,
        "batch_size": 96,
        "trajectory": {"snapshot_every": 5, "components": 4},
        "landscape": {"plane": "pca", "grid": 7, "checkpoints": [10, 30]},
    },
}


def _run(spec: dict) -> int:
    with session_scope() as session:
        run_id = create_run(session, spec=RunSpec.model_validate(spec), enqueue=lambda _: None).id
    assert execute_run(run_id) == "completed"
    return run_id


def _final(run_id: int, key: str) -> float:
    with session_scope() as session:
        return read_series(session, run_id, [key])[key].values[-1].item()


@pytest.fixture
def client(embedded_home) -> TestClient:
    with TestClient(create_app()) as client:
        yield client


def test_trajectory_and_pca_landscapes_are_served(client):
    run_id = _run(SPEC)
    trajectory = client.get(f"/api/v1/runs/{run_id}/trajectory").json()["trajectory"]
    assert trajectory["steps"] == [0, 5, 10, 15, 20, 25, 30]
    ratios = trajectory["explained_variance_ratio"]
    assert len(ratios) == 4 and ratios == sorted(ratios, reverse=True) and sum(ratios) <= 1 + 1e-9
    assert trajectory["random_walk_reference"][0] == pytest.approx(6 / np.pi**2)
    assert np.array(trajectory["coordinates"]).shape == (7, 4)
    assert trajectory["meta"]["snapshot_every"] == 5 and trajectory["meta"]["parameters"] == 910

    landscapes = client.get(f"/api/v1/runs/{run_id}/landscapes").json()["landscapes"]
    kinds = [(entry["kind"], entry["step"]) for entry in landscapes]
    assert kinds == [("landscape_pca", 10), ("landscape_pca", 30), ("landscape_random_1d", 10),
                     ("landscape_random_1d", 30), ("landscape_line", 30)]  # fmt: skip
    final_loss = _final(run_id, "train/loss")
    for entry in landscapes:
        shape = (7, 7) if entry["dims"] == 2 else (len(entry["axes"][0]),)
        for layer in ("train_loss", "test_loss", "train_accuracy", "test_accuracy"):
            assert np.array(entry[layer]).shape == shape, (entry["kind"], layer)
        assert entry["meta"]["evaluations"] > 0 and entry["meta"]["seconds"] > 0
    pca = landscapes[1]
    path = pca["path"]
    assert path["steps"] == trajectory["steps"] and len(path["coordinates"]) == 7
    # the snapshot at the centre (the last step) is on the plane: no residual, and its own
    # loss is the run's final probe loss
    assert path["residual"][-1] == 0.0 and path["loss"][-1] == final_loss
    assert path["plane_loss"][-1] == pytest.approx(final_loss, rel=1e-6)
    assert all(value >= 0 for value in path["residual"])
    line = landscapes[-1]
    axis = line["axes"][0]
    # the line's point a = 1 is the final parameters: the run's own loss (stored as float32)
    assert line["train_loss"][axis.index(1.0)] == pytest.approx(final_loss, rel=1e-6)
    assert line["train_loss"][axis.index(0.0)] == pytest.approx(
        _first(run_id, "train/loss"), rel=1e-6
    )
    with session_scope() as session:
        cost = read_series(session, run_id, ["cost/landscape/seconds"])["cost/landscape/seconds"]
    assert cost.steps.tolist() == [10, 30]


def _first(run_id: int, key: str) -> float:
    with session_scope() as session:
        return read_series(session, run_id, [key])[key].values[0].item()


def test_random_plane_is_centred_on_the_checkpoint(client):
    spec = SPEC | {"probes": SPEC["probes"] | {"landscape": {"plane": "random", "grid": 5,
                                                             "slices": False}}}  # fmt: skip
    run_id = _run(spec)
    (entry,) = client.get(f"/api/v1/runs/{run_id}/landscapes").json()["landscapes"]
    assert entry["kind"] == "landscape_random" and entry["step"] == 30
    assert entry["axes"][0] == [-1.0, -0.5, 0.0, 0.5, 1.0] and entry["path"] is None
    assert entry["meta"]["mode"] == "eval"
    assert entry["train_loss"][2][2] == pytest.approx(_final(run_id, "train/loss"), rel=1e-6)
    assert entry["test_loss"][2][2] == pytest.approx(_final(run_id, "test/loss"), rel=1e-6)


def test_runs_without_geometry_probes_have_none(client):
    run_id = _run(SPEC | {"probes": {"every": 10, "batch_size": 96}})
    assert client.get(f"/api/v1/runs/{run_id}/trajectory").json() == {
        "run_id": run_id,
        "trajectory": None,
    }
    assert client.get(f"/api/v1/runs/{run_id}/landscapes").json()["landscapes"] == []
    assert client.get("/api/v1/runs/999/trajectory").status_code == 404


def test_connectivity_between_two_runs(client):
    spec = SPEC | {"probes": {"every": 10, "batch_size": 96}}
    run_a, run_b = _run(spec), _run(spec | {"seed": 1})
    response = client.post(
        "/api/v1/connectivity", json={"run_a": run_a, "run_b": run_b, "points": 11}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["alphas"][0] == 0.0 and body["alphas"][-1] == 1.0 and len(body["alphas"]) == 11
    # the ends are the two runs' own parameters: their recorded losses, bit for bit
    assert body["train_loss"][0] == _final(run_a, "train/loss")
    assert body["train_loss"][-1] == _final(run_b, "train/loss")
    assert body["test_loss"][0] == _final(run_a, "test/loss")
    assert body["test_accuracy"][-1] == _final(run_b, "test/accuracy")
    losses, alphas = np.array(body["train_loss"]), np.array(body["alphas"])
    chord = (1 - alphas) * losses[0] + alphas * losses[-1]
    assert body["barrier"]["train"] == pytest.approx((losses - chord).max())
    assert body["barrier"]["train"] > 0  # two independently trained tanh nets: a bump
    assert body["meta"]["evaluations"] == 2 * 11


def test_connectivity_refuses_what_it_cannot_measure(client):
    spec = SPEC | {"probes": {"every": 10, "batch_size": 96}}
    run_a = _run(spec)
    wider = _run(spec | {"model": {"name": "mlp", "widths": [13], "activation": "tanh"}})
    response = client.post("/api/v1/connectivity", json={"run_a": run_a, "run_b": wider})
    assert response.status_code == 422
    (problem,) = response.json()["detail"]
    assert problem["field"] == "run_b"
    assert "different architectures (widths: [12] vs [13])" in problem["msg"]
    linear = _run(spec | {"model": {"name": "linear"}})
    response = client.post("/api/v1/connectivity", json={"run_a": run_a, "run_b": linear})
    (problem,) = response.json()["detail"]
    assert "different architectures (model 'mlp' vs 'linear')" in problem["msg"]
    normed = {"name": "mlp", "widths": [12], "activation": "tanh", "batch_norm": True}
    bn_a, bn_b = _run(spec | {"model": normed}), _run(spec | {"model": normed, "seed": 2})
    response = client.post("/api/v1/connectivity", json={"run_a": bn_a, "run_b": bn_b})
    (problem,) = response.json()["detail"]
    assert response.status_code == 422 and problem["field"] == "run_a"
    assert "batch-norm" in problem["msg"]
    with session_scope() as session:
        queued = create_run(session, spec=RunSpec.model_validate(spec), enqueue=lambda _: None).id
    response = client.post("/api/v1/connectivity", json={"run_a": run_a, "run_b": queued})
    assert response.status_code == 409 and "give step_b" in response.json()["detail"]
    response = client.post(
        "/api/v1/connectivity", json={"run_a": run_a, "run_b": queued, "step_b": 0}
    )
    assert response.status_code == 404  # a queued run has no snapshot yet
    assert response.json()["detail"] == f"run {queued} has no parameter snapshots"
    response = client.post(
        "/api/v1/connectivity", json={"run_a": run_a, "run_b": run_a, "step_b": 7}
    )
    assert response.status_code == 404
    assert response.json()["detail"].endswith("it has snapshots at steps 0, 30")
    response = client.post("/api/v1/connectivity", json={"run_a": run_a, "run_b": 1, "points": 2})
    assert response.status_code == 422
    assert response.json()["detail"][0]["field"] == "points"


def test_connectivity_says_why_a_loss_along_the_line_is_null(embedded_home):
    # an end whose parameters overflow the loss (as a diverging run's last snapshot can)
    from dynascope.worker.connectivity import measure_connectivity

    spec = RunSpec.model_validate(SPEC | {"probes": {"every": 10, "batch_size": 96}})
    size = 64 * 12 + 12 + 12 * 10 + 10
    theta_a = np.random.default_rng(0).normal(scale=0.1, size=size).astype(np.float32)
    theta_b = np.full(size, 1e38, dtype=np.float32)  # logits overflow
    result = measure_connectivity(
        spec, theta_a, theta_b, points=5, data_dir=embedded_home, device="cpu"
    )
    train = np.array(result["train_loss"], dtype=float)
    assert np.isfinite(train[0]) and not np.isfinite(train[-1])
    assert np.isnan(result["barrier"]["train"])  # null once serialised
    unmeasured = int((~np.isfinite(train)).sum())
    assert f"not finite at {unmeasured} of 5 points (train)" in result["meta"]["note"]
    clean = measure_connectivity(spec, theta_a, theta_a, points=5, data_dir=embedded_home,
                                 device="cpu")  # fmt: skip
    assert "note" not in clean["meta"]
