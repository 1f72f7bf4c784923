"""The curvature probes through the real runner: recorded top-k and smallest eigenvalues
against the dense Hessian of the stored final parameters, the stability threshold, trace,
density, Adam's preconditioned sharpness, and the /spectra endpoint."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from torch.func import functional_call

from dynascope.server.app import create_app
from dynascope.server.db.session import session_scope
from dynascope.server.schemas.run_spec import RunSpec
from dynascope.server.services.arrays import read_arrays
from dynascope.server.services.metrics import metric_keys, read_series
from dynascope.server.services.runs import create_run
from dynascope.server.services.snapshots import read_snapshot
from dynascope.worker.registry import build_model, load_dataset, loss_function
from dynascope.worker.runner import execute_run

SPEC = {
    "seed": 3,
    "model": {"name": "mlp", "widths": [12], "activation": "tanh"},
    "data": {"name": "digits", "batch_size": 64},
    "optimizer": {"name": "gd", "lr": 0.5},
    "steps": 40,
    "probes": {
        "every": 20,
        "batch_size": 200,
        "hessian": {"top_k": 3, "tolerance": 1e-6, "min_eigenvalue": True, "trace": True,
                    "density": True, "chunk_size": 64},
    },
}  # fmt: skip


def _run(spec: dict) -> int:
    with session_scope() as session:
        run_id = create_run(session, spec=RunSpec.model_validate(spec), enqueue=lambda _id: None).id
    assert execute_run(run_id) == "completed"
    return run_id


def _dense_hessian_eigenvalues(spec: RunSpec, flat: np.ndarray, data_dir) -> np.ndarray:
    """eigvalsh of the float64 Hessian of the mean loss on the probe batch, eval mode."""
    torch.manual_seed(spec.seed)
    data = load_dataset(spec.data, data_dir=data_dir)
    model = build_model(spec.model, data).double().eval()
    names = [name for name, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    sizes = [p.numel() for _, p in model.named_parameters()]
    inputs = data.x_train[: spec.probes.batch_size].double()
    targets = data.y_train[: spec.probes.batch_size]
    loss_fn = loss_function(data.task)

    def loss_at(theta: torch.Tensor) -> torch.Tensor:
        pieces = theta.split(sizes)
        params = {n: p.reshape(s) for n, p, s in zip(names, pieces, shapes, strict=True)}
        return loss_fn(functional_call(model, params, (inputs,)), targets)

    theta = torch.tensor(flat, dtype=torch.float64)
    return torch.linalg.eigvalsh(torch.func.hessian(loss_at)(theta)).numpy()


def test_recorded_spectrum_matches_the_dense_hessian(embedded_home):
    run_id = _run(SPEC)
    spec = RunSpec.model_validate(SPEC)
    with session_scope() as session:
        arrays = read_arrays(session, run_id, ["hessian_topk", "hessian_min", "hessian_trace",
                                               "hessian_density"])  # fmt: skip
        final = read_snapshot(session, run_id, 40)
        threshold = read_series(session, run_id, ["hessian/threshold"])["hessian/threshold"]
    exact = _dense_hessian_eigenvalues(spec, final, embedded_home)
    assert [a.step for a in arrays["hessian_topk"]] == [0, 20, 40]
    top = arrays["hessian_topk"][-1]
    # float32 training parameters, float32 Hessian-vector products: agreement to ~1e-4
    np.testing.assert_allclose(top.values, exact[::-1][:3], rtol=2e-4)
    assert top.meta["converged"] and top.meta["threshold"] == pytest.approx(2 / 0.5)
    assert all(a[-1].meta["mode"] == "eval" for a in arrays.values())  # DESIGN: stated
    assert top.meta["at_rounding_level"] is False
    np.testing.assert_allclose(arrays["hessian_min"][-1].values, exact[:1], rtol=2e-3, atol=1e-5)
    assert np.all(threshold.values == pytest.approx(4.0))
    estimate, error = arrays["hessian_trace"][-1].values
    assert abs(estimate - exact.sum()) < 4 * error + 1e-3 * abs(exact.sum())
    density = arrays["hessian_density"][-1]
    grid = np.linspace(density.meta["grid_start"], density.meta["grid_stop"],
                       density.meta["points"])  # fmt: skip
    assert np.trapezoid(density.values, grid) == pytest.approx(1.0, abs=1e-3)


def test_adam_records_its_preconditioned_sharpness(embedded_home):
    spec = SPEC | {
        "optimizer": {"name": "adam", "lr": 0.01, "beta1": 0.9},
        "probes": {"every": 20, "batch_size": 200, "hessian": {"top_k": 1}},
    }
    run_id = _run(spec)
    with session_scope() as session:
        arrays = read_arrays(session, run_id, ["preconditioned_topk", "hessian_topk"])
    # no second-moment estimate before the first step; then one per probe
    assert [a.step for a in arrays["preconditioned_topk"]] == [20, 40]
    assert arrays["preconditioned_topk"][0].meta["threshold"] == pytest.approx(38 / 0.01)
    assert "threshold" not in arrays["hessian_topk"][0].meta  # 2/lr does not apply to Adam
    assert arrays["preconditioned_topk"][0].meta["matrix"] == "hessian"
    with session_scope() as session:
        keys = set(metric_keys(session, run_id))
    assert {"hessian/preconditioned_top_1", "hessian/preconditioned_threshold"} <= keys


def test_adam_with_the_gauss_newton_matrix_keeps_its_keys_under_ggn(embedded_home):
    spec = SPEC | {
        "optimizer": {"name": "adam", "lr": 0.01},
        "probes": {"every": 20, "batch_size": 200, "hessian": {"top_k": 1, "matrix": "ggn"}},
    }
    run_id = _run(spec)
    with session_scope() as session:
        keys = set(metric_keys(session, run_id))
        (first, _) = read_arrays(session, run_id, ["preconditioned_topk"])["preconditioned_topk"]
    assert {"ggn/top_1", "ggn/preconditioned_top_1", "ggn/preconditioned_threshold"} <= keys
    assert not any(key.startswith("hessian/") for key in keys)
    assert first.meta["matrix"] == "ggn"


def test_spectra_endpoint(embedded_home):
    run_id = _run(SPEC | {"steps": 20})
    with TestClient(create_app()) as client:
        body = client.get(f"/api/v1/runs/{run_id}/spectra", params={"kind": "hessian_topk"})
        assert body.status_code == 200
        entries = body.json()["spectra"]["hessian_topk"]
        assert [e["step"] for e in entries] == [0, 20] and len(entries[0]["values"]) == 3
        everything = client.get(f"/api/v1/runs/{run_id}/spectra").json()["spectra"]
        assert everything["ntk"] == [] and len(everything["hessian_density"]) == 2
        assert client.get(f"/api/v1/runs/{run_id}/spectra?kind=bogus").status_code == 422
        assert client.get("/api/v1/runs/999/spectra").status_code == 404


def test_ggn_has_no_smallest_eigenvalue(embedded_home):
    with TestClient(create_app()) as client:
        spec = SPEC | {"probes": {"hessian": {"matrix": "ggn", "min_eigenvalue": True}}}
        response = client.post("/api/v1/runs", json=spec)
    assert response.status_code == 422
    fields = {item["field"]: item["msg"] for item in response.json()["detail"]}
    assert "semi-definite" in fields["probes.hessian.min_eigenvalue"]


def test_a_repeated_eigenvalue_keeps_its_copies_at_every_probe(embedded_home):
    # A linear model with two outputs under mean squared error: its Hessian is Σ ⊗ I₂, every
    # eigenvalue twice. One Lanczos start vector sees a single copy of each; the look past
    # what it found (cold at the first probe, from the previous eigenvectors after) must
    # keep both at every probe. Before it, the probes read [λ₁, λ₂] instead of [λ₁, λ₁]. The
    # Hessian of a linear least-squares model does not depend on the parameters.
    spec_dict = {
        "seed": 1,
        "model": {"name": "linear"},
        "data": {"name": "teacher_student", "output_dim": 2, "n_samples": 400},
        "optimizer": {"name": "gd", "lr": 0.05},
        "steps": 20,
        "probes": {"every": 5, "batch_size": 256, "norms": False, "hessian": {"top_k": 2}},
    }  # fmt: skip
    run_id = _run(spec_dict)
    spec = RunSpec.model_validate(spec_dict)
    with session_scope() as session:
        arrays = read_arrays(session, run_id, ["hessian_topk"])["hessian_topk"]
        final = read_snapshot(session, run_id, 20)
    exact = _dense_hessian_eigenvalues(spec, final, embedded_home)[::-1]
    assert exact[0] == pytest.approx(exact[1], rel=1e-9)  # every eigenvalue twice
    assert [a.step for a in arrays] == [0, 5, 10, 15, 20]
    for array in arrays:
        np.testing.assert_allclose(sorted(array.values, reverse=True), exact[:2], rtol=1e-5)
        assert array.meta["converged"]
