"""The training loss of each task."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from dynascope.server.schemas.data_specs import Task

LossFunction = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


CLASSES_LAID_OUT_LAST_BELOW = 16
"""Fewer classes than this (a float32 vector of AVX-512) take the transposed layout ..."""
LOGITS_LAID_OUT_LAST_FROM = 4096
"""... when there are at least this many logits (N·C)."""


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of logits (N, C) against int64 class labels (N,).

    The same function is computed in one of two layouts. PyTorch's CPU log-softmax vectorises
    along the last dimension, so over (N, C) with few classes it runs nearly scalar. On the
    CPU, with fewer than ``CLASSES_LAID_OUT_LAST_BELOW`` classes and at least
    ``LOGITS_LAID_OUT_LAST_FROM`` logits, it is taken on the (1, C, N) view instead (classes in
    the middle, examples last: ``F.cross_entropy``'s K-dimensional form, the same log-softmax
    over the classes and the same mean). Measured forward and backward
    (``benchmarks/bench_cross_entropy.py``): 1.4-3.5x faster for 10 classes and 410 to 4096
    examples, and 1.2-2.4x for 2 to 8 classes from that many logits on; slower with 16 or
    more classes, where the plain layout vectorises. The values agree to rounding, and
    autograd's double backward, forward mode and ``vmap`` go through both (tested)."""
    if (
        logits.ndim == 2
        and labels.ndim == 1
        and logits.device.type == "cpu"
        and logits.shape[1] < CLASSES_LAID_OUT_LAST_BELOW
        and logits.numel() >= LOGITS_LAID_OUT_LAST_FROM
    ):
        return F.cross_entropy(logits.T.unsqueeze(0), labels.unsqueeze(0))
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
