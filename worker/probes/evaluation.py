"""Loss and accuracy of a model over a whole set of examples (a probe batch, a test split)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from dynascope.worker.probes.params import LossFunction, call_at, detached_parameters

Task = Literal["classification", "regression"]


@dataclass(frozen=True)
class Evaluation:
    """Mean loss over a set of examples, and the fraction classified correctly (``None`` for
    regression)."""

    loss: float
    accuracy: float | None


def evaluate(
    model: nn.Module,
    loss_fn: LossFunction,
    inputs: Tensor,
    targets: Tensor,
    *,
    task: Task,
    chunk_size: int = 4096,
    params: dict[str, Tensor] | None = None,
) -> Evaluation:
    """The mean loss of ``model`` over all of ``inputs`` and, for classification, its accuracy.

    The set is run forward in chunks of ``chunk_size`` examples under ``torch.no_grad``; each
    chunk's loss (``loss_fn`` must reduce by the mean over examples) is weighted by the
    chunk's length, so the result equals the loss of one pass over the whole set. A
    classification prediction is the argmax of the outputs over the last dimension; targets
    are class indices, or one row of scores per example (one-hot, soft labels), whose argmax
    is then the class. ``params`` evaluates at another point of parameter space (defaults to
    the model's own). Train or eval mode is the caller's (see :mod:`.params`); in train mode
    BatchNorm normalises each chunk by its own statistics and dropout draws from the global
    random generator, which is why the runner probes in eval mode.
    """
    if task not in ("classification", "regression"):
        raise ValueError(f"task must be 'classification' or 'regression', got {task!r}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
    count = inputs.shape[0]
    if count == 0:
        raise ValueError("evaluate() needs at least one example; the set is empty")
    if targets.shape[0] != count:
        raise ValueError(f"{count} inputs but {targets.shape[0]} targets; they must match")
    # At the model's own point in eval mode, call it directly (nothing to replace, nothing
    # it could update); otherwise through call_at, which protects the running statistics.
    direct = params is None and not model.training
    loss_sum = torch.zeros((), dtype=torch.float64, device=inputs.device)
    correct = torch.zeros((), dtype=torch.int64, device=inputs.device)
    with torch.no_grad():
        for start in range(0, count, chunk_size):
            chunk_inputs = inputs[start : start + chunk_size]
            chunk_targets = targets[start : start + chunk_size]
            if direct:
                outputs = model(chunk_inputs)
            else:
                outputs = call_at(model, params or detached_parameters(model), chunk_inputs)
            loss_sum += loss_fn(outputs, chunk_targets).double() * chunk_inputs.shape[0]
            if task == "classification":
                correct += _correct_predictions(outputs, chunk_targets)
    loss = loss_sum.item() / count
    accuracy = correct.item() / count if task == "classification" else None
    return Evaluation(loss=loss, accuracy=accuracy)


def _correct_predictions(outputs: Tensor, targets: Tensor) -> Tensor:
    """Number of examples whose argmax output is the target class."""
    if outputs.ndim != 2:
        raise ValueError(
            f"classification needs outputs of shape (examples, classes), got {tuple(outputs.shape)}"
        )
    predictions = outputs.argmax(dim=-1)
    labels = targets.argmax(dim=-1) if targets.ndim == outputs.ndim else targets
    return (predictions == labels).sum()
