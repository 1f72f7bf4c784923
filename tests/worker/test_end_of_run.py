"""End-of-run analyses through the runner: what a completed run records after its last step,
checked against exact computations on models small enough for dense matrices."""

from __future__ import annotations

import numpy as np
import torch

from dynascope.server.db.session import session_scope
from dynascope.server.schemas.run_spec import RunSpec
from dynascope.server.services.arrays import read_arrays
from dynascope.server.services.metrics import read_series
from dynascope.server.services.runs import create_run, get_run
from dynascope.worker.registry import build_model, load_dataset, loss_function
from dynascope.worker.runner import execute_run

LEAST_SQUARES = {
    "seed": 3,
    "model": {"name": "linear"},
    "data": {"name": "teacher_student", "n_samples": 50, "dim": 6, "output_dim": 2},
    "optimizer": {"name": "gd", "lr": 0.2},
    "steps": 25,
    "probes": {"every": 25, "batch_size": 16, "training_jacobian": {"bulk_tolerance": 1e-3}},
}


def _run(spec: dict) -> int:
    with session_scope() as session:
        run_id = create_run(session, spec=RunSpec.model_validate(spec), enqueue=lambda _: None).id
    assert execute_run(run_id) == "completed"
    return run_id


def test_training_jacobian_of_least_squares_is_a_power_of_the_gd_step(embedded_home):
    """Full-batch GD on linear least squares: H is constant, dθ_T/dθ_0 = (I - lr·H)^T, whose
    singular values are |1 - lr·λ_i|^T (Belrose & Scherlis 2024)."""
    run_id = _run(LEAST_SQUARES)
    with session_scope() as session:
        (recorded,) = read_arrays(session, run_id, ["training_jacobian"])["training_jacobian"]
        series = read_series(
            session, run_id, ["training_jacobian/bulk", "cost/training_jacobian/hvps"]
        )
    spec = RunSpec.model_validate(LEAST_SQUARES)
    data = load_dataset(spec.data, data_dir=embedded_home)
    model = build_model(spec.model, data).double()
    x, y = data.x_train.double(), data.y_train.double()
    names = [name for name, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    sizes = [p.numel() for p in model.parameters()]

    def loss(theta: torch.Tensor) -> torch.Tensor:
        params = {
            n: t.reshape(s) for n, t, s in zip(names, theta.split(sizes), shapes, strict=True)
        }
        return loss_function("regression")(torch.func.functional_call(model, params, (x,)), y)

    hessian = torch.func.hessian(loss)(torch.zeros(sum(sizes), dtype=torch.float64))
    lr, steps = 0.2, 25
    exact = np.sort(np.abs(1.0 - lr * torch.linalg.eigvalsh(hessian).numpy()) ** steps)[::-1]
    assert recorded.step == steps and recorded.values.shape == (sum(sizes),)
    np.testing.assert_allclose(recorded.values, exact, rtol=2e-5, atol=1e-7)
    meta = recorded.meta
    assert meta["mode"] == "train"  # the replay of training, as it ran
    t = meta["bulk_tolerance"]
    assert meta["chaotic"] == int((exact > 1 + t).sum())
    assert meta["stable"] == int((exact < 1 - t).sum())
    assert meta["chaotic"] + meta["bulk"] + meta["stable"] == sum(sizes)
    assert meta["replay_deviation"] < 1e-5  # the replay is the run's own training
    assert meta["hvps"] == sum(sizes) * steps and meta["seconds"] > 0
    assert series["training_jacobian/bulk"].values.tolist() == [meta["bulk"]]
    assert series["cost/training_jacobian/hvps"].values.tolist() == [sum(sizes) * steps]


def test_a_model_over_the_training_jacobian_limit_fails_before_training(embedded_home, monkeypatch):
    """Where the spec cannot count the parameters (npz: the shapes are in the file), the worker
    checks the limit once it has the data, and the run fails with the limit in its error."""
    from dynascope.server.settings import get_settings

    data_dir = embedded_home / "data"
    data_dir.mkdir(parents=True)
    rng = np.random.default_rng(0)
    np.savez(
        data_dir / "small.npz",
        x_train=rng.normal(size=(20, 30)).astype(np.float32),
        y_train=rng.integers(0, 3, 20),
        x_test=rng.normal(size=(5, 30)).astype(np.float32),
        y_test=rng.integers(0, 3, 5),
    )
    monkeypatch.setenv("DYNASCOPE_DATA_DIR", str(data_dir))
    monkeypatch.setenv("DYNASCOPE_LIMIT_MAX_TRAINING_JACOBIAN_PARAMETERS", "50")
    get_settings.cache_clear()
    spec = LEAST_SQUARES | {"data": {"name": "npz", "file": "small.npz"}}
    with session_scope() as session:
        run_id = create_run(session, spec=RunSpec.model_validate(spec), enqueue=lambda _: None).id
    assert execute_run(run_id) == "failed"
    with session_scope() as session:
        run = get_run(session, run_id=run_id)
        assert "93 parameters, above the training Jacobian's limit of 50" in run.error
        assert run.step == 0
