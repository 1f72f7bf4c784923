"""A known result, end to end through the runner: full-batch gradient descent on a small
tanh network sharpens progressively until the top Hessian eigenvalue reaches the stability
threshold 2/lr, then hovers at it (Cohen et al. 2021, "Gradient Descent on Neural Networks
Typically Occurs at the Edge of Stability"). Mean squared error, as in their figures."""

from __future__ import annotations

import numpy as np

from dynascope.server.db.session import session_scope
from dynascope.server.schemas.run_spec import RunSpec
from dynascope.server.services.metrics import read_series
from dynascope.server.services.runs import create_run
from dynascope.worker.runner import execute_run

LR = 0.35
SPEC = {
    "seed": 0,
    "model": {"name": "mlp", "widths": [32, 32], "activation": "tanh"},
    "data": {"name": "teacher_student", "n_samples": 250, "dim": 8, "teacher_widths": [16]},
    "optimizer": {"name": "gd", "lr": LR},
    "steps": 1200,
    "probes": {"every": 25, "batch_size": 200, "norms": False,
               "hessian": {"top_k": 1, "tolerance": 1e-3}},
}  # fmt: skip


def test_gradient_descent_sharpens_to_two_over_lr_and_stays_there(embedded_home):
    with session_scope() as session:
        spec = RunSpec.model_validate(SPEC)
        run_id = create_run(session, spec=spec, enqueue=lambda _id: None).id
    assert execute_run(run_id) == "completed"
    with session_scope() as session:
        series = read_series(session, run_id, ["hessian/top_1", "train/loss"])
    sharpness = series["hessian/top_1"].values
    threshold = 2.0 / LR  # the probe batch is the whole training set: full-batch GD
    assert sharpness[0] < 0.8 * threshold  # starts well below the line
    reached = int(np.argmax(sharpness >= 0.98 * threshold))
    assert sharpness[reached] >= 0.98 * threshold and reached > 3  # ... and rises to it
    after = sharpness[reached:]
    assert np.all(np.abs(after / threshold - 1.0) < 0.15)  # then hovers around it
    assert abs(np.mean(after) / threshold - 1.0) < 0.05
    loss = series["train/loss"].values
    assert loss[-1] < 0.05 * loss[0]  # while the loss keeps going down, non-monotonically
