"""Linear mode connectivity of two runs' parameters, measured on run A's data (the maths is
``interpolate`` in ``worker/probes/landscape.py``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from dynascope.server.errors import InvalidSpecError
from dynascope.server.schemas.run_spec import RunSpec
from dynascope.worker.probes.landscape import interpolate
from dynascope.worker.probes.params import detached_parameters
from dynascope.worker.registry import (
    build_model,
    images_in_preferred_format,
    load_dataset,
    loss_function,
)


def measure_connectivity(
    spec: RunSpec,
    theta_a: np.ndarray,
    theta_b: np.ndarray,
    *,
    points: int,
    data_dir: Path | None,
    device: str,
) -> dict[str, Any]:
    """The train and held-out loss (and accuracy) of ``spec``'s model along
    ``(1 − a)·θ_A + a·θ_B`` for ``points`` values of ``a`` in [0, 1], on the spec's probe batch
    and held-out batch in eval mode, and the barriers. Snapshots hold parameters, not
    buffers, so models with BatchNorm statistics are refused (``InvalidSpecError``): their
    loss depends on running statistics the runs did not store."""
    data = load_dataset(spec.data, data_dir=data_dir or Path("/nonexistent"))
    torch.manual_seed(spec.seed)
    target = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                          "cpu" if device == "auto" else device)  # fmt: skip
    model = build_model(spec.model, data).to(target).eval()
    if any(True for _ in model.buffers()):
        raise InvalidSpecError(
            "the model has batch-norm running statistics, which parameter snapshots do not "
            "store, so the loss along the line cannot be evaluated: connectivity needs models "
            "without batch norm",
            field="run_a",
        )
    like = detached_parameters(model)
    size = sum(tensor.numel() for tensor in like.values())
    for label, theta in (("A", theta_a), ("B", theta_b)):
        if theta.size != size:
            raise InvalidSpecError(
                f"run {label}'s snapshot has {theta.size} parameters, run A's model {size}: "
                "the line between two parameter vectors needs the same model",
                field=f"run_{label.lower()}",
            )
    data = images_in_preferred_format(data, model)  # as the runs read them
    size_of = spec.probes.batch_size
    train = (data.x_train[:size_of].to(target), data.y_train[:size_of].to(target))
    test = (data.x_test[:size_of].to(target), data.y_test[:size_of].to(target))
    result = interpolate(
        model,
        loss_function(data.task),
        _as_parameters(theta_a, like),
        _as_parameters(theta_b, like),
        train,
        test,
        task=data.task,
        points=points,
    )
    meta: dict[str, Any] = {
        "evaluations": result.evaluations,
        "seconds": result.seconds,
        "examples": {"train": len(train[0]), "test": len(test[0])},
        "data": "run A's probe batch (train) and held-out batch, eval mode",
    }
    losses = {"train": result.train_loss, "test": result.test_loss}
    unmeasured = {
        split: int((~torch.isfinite(values)).sum())
        for split, values in losses.items()
        if values is not None and not bool(torch.isfinite(values).all())
    }
    if unmeasured:
        where = " and ".join(f"{n} of {points} points ({split})" for split, n in unmeasured.items())
        meta["note"] = (
            f"the loss is not finite at {where}, stored as null, so the barrier there is null:"
            " the parameters along the line (a diverging run's, or between far-apart points)"
            " overflow the loss"
        )
    return {
        "alphas": result.alphas.tolist(),
        "train_loss": result.train_loss.tolist(),
        "test_loss": None if result.test_loss is None else result.test_loss.tolist(),
        "train_accuracy": _list(result.train_accuracy),
        "test_accuracy": _list(result.test_accuracy),
        "barrier": {"train": result.train_barrier, "test": result.test_barrier},
        "meta": meta,
    }


def _as_parameters(flat: np.ndarray, like: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    vector = torch.from_numpy(np.array(flat, dtype=np.float32))
    pieces = vector.split([tensor.numel() for tensor in like.values()])
    return {
        name: piece.view_as(tensor).to(tensor.device, tensor.dtype)
        for (name, tensor), piece in zip(like.items(), pieces, strict=True)
    }


def _list(values: torch.Tensor | None) -> list[float] | None:
    return None if values is None else values.tolist()
