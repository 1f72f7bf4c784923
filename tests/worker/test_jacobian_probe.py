"""The Jacobian probes through the real runner: the recorded NTK spectrum equals the
eigenvalues of J Jᵀ formed densely at the stored final parameters; velocity and the
input-output summary are recorded; token models refuse the input-output Jacobian (422)."""

from __future__ import annotations

import numpy as np
import torch
from fastapi.testclient import TestClient
from torch.func import functional_call, jacrev

from dynascope.server.app import create_app
from dynascope.server.db.session import session_scope
from dynascope.server.schemas.run_spec import RunSpec
from dynascope.server.services.arrays import read_arrays
from dynascope.server.services.metrics import read_series
from dynascope.server.services.runs import create_run
from dynascope.server.services.snapshots import read_snapshot
from dynascope.worker.registry import build_model, load_dataset
from dynascope.worker.runner import execute_run

SPEC = {
    "seed": 1,
    "model": {"name": "mlp", "widths": [10], "activation": "tanh"},
    "data": {"name": "gaussian_mixture", "n_samples": 200, "n_classes": 3, "dim": 5},
    "optimizer": {"name": "sgd", "lr": 0.3},
    "steps": 30,
    "probes": {"every": 15, "batch_size": 64, "jacobian": {"n_inputs": 8, "chunk_size": 3}},
}


def test_recorded_ntk_matches_dense_j_jt(embedded_home):
    with session_scope() as session:
        run_id = create_run(session, spec=RunSpec.model_validate(SPEC), enqueue=lambda _id: None).id
    assert execute_run(run_id) == "completed"
    with session_scope() as session:
        arrays = read_arrays(session, run_id, ["ntk", "jacobian_input_output"])
        final = read_snapshot(session, run_id, 30)
        velocity = read_series(session, run_id, ["ntk/velocity"])["ntk/velocity"]
    spec = RunSpec.model_validate(SPEC)
    torch.manual_seed(spec.seed)
    data = load_dataset(spec.data, data_dir=embedded_home)
    model = build_model(spec.model, data).double().eval()
    shapes = {name: p.shape for name, p in model.named_parameters()}
    sizes = [p.numel() for p in model.parameters()]
    inputs = data.x_train[:8].double()

    def outputs_at(theta: torch.Tensor) -> torch.Tensor:
        pieces = dict(zip(shapes, theta.split(sizes), strict=True))
        params = {name: piece.reshape(shapes[name]) for name, piece in pieces.items()}
        return functional_call(model, params, (inputs,)).reshape(-1)

    jacobian = jacrev(outputs_at)(torch.tensor(final, dtype=torch.float64))
    exact = torch.linalg.eigvalsh(jacobian @ jacobian.T).flip(0).numpy()
    recorded = arrays["ntk"][-1]
    assert recorded.meta["mode"] == "eval"
    assert [a.step for a in arrays["ntk"]] == [0, 15, 30]
    assert recorded.meta["kernel_size"] == 8 * 3
    np.testing.assert_allclose(recorded.values, exact[: len(recorded.values)], rtol=1e-4)
    assert velocity.steps.tolist() == [15, 30] and np.all(velocity.values > 0)
    summary = arrays["jacobian_input_output"][-1]
    assert summary.values.shape == (4, 3)  # mean, median, q10, q90 of min(3 outputs, 5 inputs)
    assert np.all(np.diff(summary.values[0]) <= 0)  # singular values, descending


def test_token_models_get_a_422_for_the_input_output_jacobian(embedded_home):
    spec = {
        "model": {"name": "transformer", "d_model": 16, "n_heads": 2, "n_layers": 1},
        "data": {"name": "modular_arithmetic", "modulus": 7},
        "optimizer": {"name": "adamw", "lr": 0.001},
        "steps": 10,
        "probes": {"batch_size": 16, "jacobian": {"n_inputs": 4}},
    }
    with TestClient(create_app()) as client:
        response = client.post("/api/v1/runs", json=spec)
    assert response.status_code == 422
    fields = {item["field"]: item["msg"] for item in response.json()["detail"]}
    assert "not differentiable" in fields["probes.jacobian.input_output"]
