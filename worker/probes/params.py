"""Parameters as plain tensors, and one loss-and-gradient evaluation through ``torch.func``.

Every probe sees a model through :func:`torch.func.functional_call` with a dictionary of
detached parameters, so it can evaluate the loss (and its derivatives) at any point of
parameter space without touching the model being trained: nothing is written to ``.grad``,
no parameter is modified, no hook is installed.

Train or eval mode is the caller's choice. ``functional_call`` runs the module's own
``forward``, which reads ``model.training``: in train mode BatchNorm normalises with the
statistics of the batch and dropout is active; in eval mode BatchNorm uses its running
statistics and dropout is off. The runner puts the model in eval mode before it probes, so
that a probe measures a deterministic function of the parameters, and restores the mode after.
When a probe does run in train mode, BatchNorm's running statistics are updated in copies of
the buffers (see :func:`buffers_of`), never in the model's own.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.func import functional_call

LossFunction = Callable[[Tensor, Tensor], Tensor]
"""``loss_fn(outputs, targets)``: a scalar loss, the mean over the examples of the batch."""


def detached_parameters(model: nn.Module) -> dict[str, Tensor]:
    """The trainable parameters of ``model`` (those with ``requires_grad``), by qualified name,
    as detached tensors that share storage with the model (no copy is made)."""
    return {name: p.detach() for name, p in trainable_parameters(model)}


def trainable_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """The model's own trainable parameters (``requires_grad``), by qualified name."""
    return [(name, p) for name, p in model.named_parameters() if p.requires_grad]


def buffers_of(model: nn.Module, *, copy: bool = False) -> dict[str, Tensor]:
    """The buffers of ``model`` (BatchNorm running statistics, ...) by qualified name, detached.

    With ``copy=True`` they are cloned, so a forward pass in train mode, which updates
    running statistics in place, leaves the model's own buffers as they were.
    """
    if copy:
        return {name: b.detach().clone() for name, b in model.named_buffers()}
    return {name: b.detach() for name, b in model.named_buffers()}


def call_at(model: nn.Module, params: dict[str, Tensor], inputs: Tensor) -> Tensor:
    """The outputs of ``model`` on ``inputs`` with its parameters replaced by ``params``.

    Parameters missing from ``params`` (frozen ones) are taken from the model. In train mode
    the buffers are copies, so the model's running statistics do not move.
    """
    buffers = buffers_of(model, copy=model.training)
    return functional_call(model, (params, buffers), (inputs,))


def loss_and_gradient(
    model: nn.Module,
    loss_fn: LossFunction,
    inputs: Tensor,
    targets: Tensor,
    params: dict[str, Tensor] | None = None,
) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
    """The loss, the outputs and the gradient of the loss with respect to ``params``, from one
    forward and one backward pass.

    ``params`` defaults to the model's current trainable parameters
    (:func:`detached_parameters`). Returns ``(loss, outputs, gradient)``: a 0-dim tensor, the
    model's outputs on ``inputs``, and a dictionary with the same keys as ``params``; all three
    are detached from any autograd graph. The model's ``.grad`` fields are left untouched.

    Implementation: ``functional_call`` at fresh leaf tensors that share storage with
    ``params``, and ``torch.autograd.grad`` with respect to those leaves. This is the same
    computation as ``torch.func.grad_and_value`` (the tests compare them), without its
    functionalisation overhead — about a third less time on the small models we probe at
    every few steps. Nothing is written to the model: the leaves are new tensors and the
    gradient is returned, not accumulated.
    """
    with torch.enable_grad():
        if params is None and not model.training:
            # At the model's own point in eval mode nothing needs replacing: differentiate
            # with respect to its parameters directly (read-only: autograd.grad returns the
            # gradient and writes no .grad). Saves reparametrising the module every probe.
            leaves = dict(trainable_parameters(model))
            outputs = model(inputs)
        else:
            point = detached_parameters(model) if params is None else params
            leaves = {name: tensor.detach().requires_grad_() for name, tensor in point.items()}
            buffers = buffers_of(model, copy=model.training)
            outputs = functional_call(model, (leaves, buffers), (inputs,))
        loss = loss_fn(outputs, targets)
        gradient = torch.autograd.grad(loss, list(leaves.values()), allow_unused=True)
    return (
        loss.detach(),
        outputs.detach(),
        {
            name: torch.zeros_like(leaf) if grad is None else grad
            for (name, leaf), grad in zip(leaves.items(), gradient, strict=True)
        },
    )
