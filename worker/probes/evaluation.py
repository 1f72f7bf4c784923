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
    loss, correct = evaluation_sums(
        model, loss_fn, inputs, targets, task=task, chunk_size=chunk_size, params=params
    )
    count = inputs.shape[0]
    return Evaluation(
        loss=loss.item(), accuracy=None if correct is None else correct.item() / count
    )


def evaluation_sums(
    model: nn.Module,
    loss_fn: LossFunction,
    inputs: Tensor,
    targets: Tensor,
    *,
    task: Task,
    chunk_size: int = 4096,
    params: dict[str, Tensor] | None = None,
) -> tuple[Tensor, Tensor | None]:
    """What :func:`evaluate` computes, left on the device for the caller to bring to the host
    with other values in one transfer: the mean loss (a 0-dim tensor, float64 when the set
    takes several chunks) and, for classification, the number of examples classified
    correctly (a 0-dim int64 tensor; ``None`` for regression). A set of at most
    ``chunk_size`` examples at the model's own point in eval mode is one forward pass and
    nothing else (what the runner's probes do every few steps).
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
    classification = task == "classification"
    # At the model's own point in eval mode, call it directly (nothing to replace, nothing
    # it could update); otherwise through call_at, which protects the running statistics.
    direct = params is None and not model.training
    with torch.no_grad():
        if direct and count <= chunk_size:
            outputs = model(inputs)
            correct = correct_predictions(outputs, targets) if classification else None
            return loss_fn(outputs, targets), correct
        loss_sum = torch.zeros((), dtype=torch.float64, device=inputs.device)
        correct = torch.zeros((), dtype=torch.int64, device=inputs.device)
        for start in range(0, count, chunk_size):
            chunk_inputs = inputs[start : start + chunk_size]
            chunk_targets = targets[start : start + chunk_size]
            if direct:
                outputs = model(chunk_inputs)
            else:
                outputs = call_at(model, params or detached_parameters(model), chunk_inputs)
            loss_sum += loss_fn(outputs, chunk_targets).double() * chunk_inputs.shape[0]
            if classification:
                correct += correct_predictions(outputs, chunk_targets)
    return loss_sum / count, correct if classification else None


def correct_predictions(outputs: Tensor, targets: Tensor) -> Tensor:
    """Number of examples whose argmax output is the target class."""
    if outputs.ndim != 2:
        raise ValueError(
            f"classification needs outputs of shape (examples, classes), got {tuple(outputs.shape)}"
        )
    predictions = outputs.argmax(dim=-1)
    labels = targets.argmax(dim=-1) if targets.ndim == outputs.ndim else targets
    return (predictions == labels).sum()
