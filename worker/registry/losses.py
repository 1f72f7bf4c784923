"""The training loss of each task."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from dynascope.server.schemas.data_specs import Task

LossFunction = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of logits (N, C) against int64 class labels (N,)."""
    return F.cross_entropy(logits, labels)


def mean_squared_error(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean of (outputs - targets)² over all elements.

    Written out rather than ``F.mse_loss``, whose backward breaks forward-over-reverse
    Hessian-vector products (``jvp`` of ``grad`` fails with "ZeroTensors are immutable").
    """
    return (outputs - targets).square().mean()


LOSSES: dict[Task, LossFunction] = {
    "classification": cross_entropy,
    "regression": mean_squared_error,
}


def loss_function(task: Task) -> LossFunction:
    """``loss(outputs, targets)`` for a task: mean cross-entropy of logits (N, C) against
    int64 labels (N,) for classification; mean squared error over all elements of
    (N, out) outputs and targets for regression."""
    return LOSSES[task]
