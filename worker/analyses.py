"""End-of-run analyses: what is measured once, after the last step, from the whole run — the
training Jacobian's spectrum (``probes.training_jacobian``), the PCA of the parameter
trajectory (``probes.trajectory``) and the loss landscapes (``probes.landscape``). Each
returns a :class:`ProbeMeasurement` (metrics at the last step, arrays by kind); the maths is in
``worker/probes/``."""

from __future__ import annotations

import math
import time

import torch
from torch import Tensor, nn

from dynascope.server.schemas.run_spec import TrainingJacobianProbeSpec
from dynascope.worker.curvature_probe import ProbeMeasurement
from dynascope.worker.probes.params import LossFunction
from dynascope.worker.probes.training_jacobian import (
    training_jacobian,
    training_jacobian_spectrum,
)


def measure_training_jacobian(
    options: TrainingJacobianProbeSpec,
    model: nn.Module,
    loss_fn: LossFunction,
    inputs: Tensor,
    targets: Tensor,
    *,
    initial: dict[str, Tensor],
    final: dict[str, Tensor],
    lr: float,
    steps: int,
    max_parameters: int,
) -> ProbeMeasurement:
    """The spectrum of ``dθ_T/dθ_0`` for the run's full-batch gradient descent on
    ``(inputs, targets)`` (the whole training set) from ``initial`` over ``steps`` steps at
    ``lr``, in the model's current mode (the caller keeps train mode: the replay is the
    run's own training). The replay is checked against the run: ``replay_deviation`` is
    ``‖θ_T(replay) − θ_T(run)‖ / ‖θ_T(run)‖``, ``θ_T(replay)`` the end point of the
    forward-mode replay itself (float rounding only: the run's batches are permutations of the
    same full batch)."""
    started = time.perf_counter()
    count = sum(tensor.numel() for tensor in initial.values())
    replay = training_jacobian(
        model,
        loss_fn,
        inputs,
        targets,
        lr=lr,
        steps=steps,
        params=initial,
        max_parameters=max_parameters,
        chunk_size=options.chunk_size,
    )
    spectrum = training_jacobian_spectrum(replay.jacobian, bulk_tolerance=options.bulk_tolerance)
    run = torch.cat([final[name].reshape(-1) for name in initial]).double()
    deviation = ((replay.end.double() - run).norm() / run.norm().clamp_min(1e-30)).item()
    seconds = time.perf_counter() - started
    chunks = math.ceil(count / options.chunk_size)
    meta = {
        "parameters": count,
        "steps": steps,
        "lr": lr,
        "chaotic": spectrum.chaotic,
        "bulk": spectrum.bulk,
        "stable": spectrum.stable,
        "bulk_tolerance": spectrum.bulk_tolerance,
        "chaotic_threshold": spectrum.chaotic_threshold,
        "stable_threshold": spectrum.stable_threshold,
        "replay_deviation": deviation,
        "hvps": count * steps,
        "gradients": chunks * steps,
        "seconds": seconds,
    }
    metrics = {
        "training_jacobian/chaotic": float(spectrum.chaotic),
        "training_jacobian/bulk": float(spectrum.bulk),
        "training_jacobian/stable": float(spectrum.stable),
        "training_jacobian/top_1": spectrum.singular_values[0].item(),
        "training_jacobian/replay_deviation": deviation,
        "cost/training_jacobian/seconds": seconds,
        "cost/training_jacobian/hvps": float(count * steps),
    }
    values = spectrum.singular_values.numpy()
    return ProbeMeasurement(metrics=metrics, arrays=[("training_jacobian", values, meta)])
