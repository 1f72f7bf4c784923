"""The training Jacobian ``dθ_T/dθ_0`` of full-batch gradient descent, and its spectrum.

Belrose & Scherlis 2024, "Understanding gradient descent through the training Jacobian",
differentiate the parameters after ``T`` steps of training with respect to the initial ones.
Its singular values fall in three regions: a few *chaotic* ones above one (perturbations of
the initialisation that training amplifies), a large *bulk* extremely close to one
(perturbations carried through training unchanged: directions the data never pushes on), and
*stable* ones below one (perturbations that training forgets). The sizes of the regions say
how much of parameter space training actually uses.

Gradient descent ``θ_{t+1} = θ_t − η ∇L(θ_t)`` has the step Jacobian ``I − η H_t``, ``H_t`` the
Hessian of the loss at ``θ_t``, so ``dθ_T/dθ_0 = Π_t (I − η H_t)``: for linear least squares,
where ``H`` is constant, it is ``(I − ηH)^T`` with singular values ``|1 − ηλ_i|^T``. The matrix
is ``P × P``, so this probe is for small models only (``max_parameters``, a few thousand).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, jvp, vmap

from dynascope.worker.probes.params import LossFunction, buffers_of, detached_parameters

TRAINING_JACOBIAN_MAX_PARAMETERS = 4096
TRAINING_JACOBIAN_CHUNK_SIZE = 512
BULK_TOLERANCE = 1e-3
"""Singular values within ``1e-3`` of one are the bulk. A mode of the Hessian with eigenvalue
``λ`` scales a perturbation by about ``exp(−ηλT)`` over training, so the bulk holds the
directions that training moved by less than 0.1%: far above the rounding of a float32 SVD
(``~1e-6`` relative), and far from the chaotic values Belrose & Scherlis report (orders of
magnitude above one). A run-spec may widen it: the bulk's width depends on ``lr·steps``."""


@dataclass(frozen=True)
class TrainingJacobianSpectrum:
    """The singular values of a training Jacobian and how many fall in each region.

    ``singular_values`` (float64, on the host) are in descending order. With ``t`` the
    ``bulk_tolerance``: ``chaotic`` counts ``σ > chaotic_threshold = 1 + t``, ``bulk``
    ``|σ − 1| ≤ t``, ``stable`` ``σ < stable_threshold = 1 − t`` (Belrose & Scherlis 2024). A
    Jacobian with a non-finite entry (training diverged) gets NaN singular values, in no region.
    """

    singular_values: Tensor
    chaotic: int
    bulk: int
    stable: int
    bulk_tolerance: float
    chaotic_threshold: float
    stable_threshold: float


@dataclass(frozen=True)
class TrainingJacobian:
    """The training Jacobian ``dθ_T/dθ_0`` (``P × P``) and the end point ``θ_T`` of the
    training it was taken along (flat, in the order of the parameter dictionary)."""

    jacobian: Tensor
    end: Tensor


def training_jacobian(
    model: nn.Module,
    loss_fn: LossFunction,
    inputs: Tensor,
    targets: Tensor,
    *,
    lr: float,
    steps: int,
    params: dict[str, Tensor] | None = None,
    max_parameters: int = TRAINING_JACOBIAN_MAX_PARAMETERS,
    chunk_size: int = TRAINING_JACOBIAN_CHUNK_SIZE,
) -> TrainingJacobian:
    """The ``P × P`` training Jacobian ``dθ_T/dθ_0`` of ``steps`` steps of full-batch gradient
    descent ``θ_{t+1} = θ_t − lr·∇L(θ_t)`` on ``(inputs, targets)`` from ``θ_0 = params``
    (default: the model's detached trainable parameters), flattened in the order of the
    parameter dictionary: entry ``(i, j)`` is ``∂θ_T[i]/∂θ_0[j]`` (Belrose & Scherlis 2024),
    and the end point ``θ_T`` of that training (the primal of the forward-mode passes).

    Exact, in forward mode as in the paper: column ``j`` is the Jacobian-vector product of the
    unrolled training with the unit vector ``e_j`` (``torch.func.jvp`` through ``steps``
    gradients ``torch.func.grad`` of the loss at ``functional_call``: forward-over-reverse, a
    Hessian-vector product per step), ``vmap``-ed over ``chunk_size`` columns at a time; the
    trajectory itself is recomputed once per chunk. Forward mode keeps no graph across steps,
    so memory does not grow with ``steps``: it is ``P²`` for the result plus ``chunk_size``
    tangent copies of one step's activations. Cost: ``P·steps`` Hessian-vector products,
    ``⌈P / chunk_size⌉·steps`` gradients. The model runs in the mode the caller set (eval:
    BatchNorm's running statistics are not updated by this imaginary training; dropout off).
    Raises ``ValueError`` above ``max_parameters`` trainable parameters.
    """
    if steps < 0 or chunk_size < 1:
        raise ValueError(f"need steps >= 0 and chunk_size >= 1, got {steps} and {chunk_size}")
    point = detached_parameters(model) if params is None else params
    sizes = [tensor.numel() for tensor in point.values()]
    count = sum(sizes)
    if count == 0:
        raise ValueError("no trainable parameters: the training Jacobian is empty")
    if count > max_parameters:
        raise ValueError(
            f"the model has {count} trainable parameters, above the training Jacobian's limit"
            f" max_parameters={max_parameters} (the matrix is P × P and costs P forward-mode"
            " passes through training): probe a smaller model or raise the limit"
        )
    buffers = _replay_buffers(model)
    start = torch.cat([tensor.reshape(-1) for tensor in point.values()])

    def loss_at(flat: Tensor) -> Tensor:
        pieces = flat.split(sizes)
        params_at = {
            name: piece.view_as(tensor)
            for (name, tensor), piece in zip(point.items(), pieces, strict=True)
        }
        return loss_fn(functional_call(model, (params_at, buffers), (inputs,)), targets)

    gradient = grad(loss_at)

    def train(flat: Tensor) -> Tensor:
        for _ in range(steps):
            flat = flat - lr * gradient(flat)
        return flat

    def column(tangent: Tensor) -> tuple[Tensor, Tensor]:
        return jvp(train, (start,), (tangent,))

    columns = vmap(column)
    identity = torch.eye(count, dtype=start.dtype, device=start.device)
    jacobian = torch.empty_like(identity)
    end = start
    for first in range(0, count, chunk_size):
        last = min(first + chunk_size, count)
        ends, tangents = columns(identity[first:last])
        jacobian[:, first:last] = tangents.T
        end = ends[0]  # the primal is not batched: the same end point in every row
    return TrainingJacobian(jacobian=jacobian, end=end)


def _replay_buffers(model: nn.Module) -> dict[str, Tensor | None]:
    """The buffers for the replay: the model's own in eval mode; in train mode, copies, with
    batch norm's running statistics left out (``None``). A train-mode batch norm normalises
    with the batch's statistics whatever the running ones are, and would update those in
    place, which ``torch.func``'s transforms refuse for a tensor they did not create; without
    them it computes the same outputs and updates nothing."""
    buffers: dict[str, Tensor | None] = dict(buffers_of(model, copy=model.training))
    if model.training:
        for prefix, module in model.named_modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                for name, _ in module.named_buffers(recurse=False):
                    buffers[f"{prefix}.{name}" if prefix else name] = None
    return buffers


def training_jacobian_spectrum(
    jacobian: Tensor, *, bulk_tolerance: float = BULK_TOLERANCE
) -> TrainingJacobianSpectrum:
    """The singular values of a training Jacobian (:func:`training_jacobian`), in float64 by
    ``torch.linalg.svdvals``, and the counts in the chaotic (``σ > 1 + t``), bulk
    (``|σ − 1| ≤ t``) and stable (``σ < 1 − t``) regions for ``t = bulk_tolerance`` (see
    :data:`BULK_TOLERANCE` for the default; Belrose & Scherlis 2024)."""
    if jacobian.ndim != 2 or jacobian.shape[0] != jacobian.shape[1]:
        raise ValueError(f"expected a square Jacobian, got shape {tuple(jacobian.shape)}")
    if not bulk_tolerance >= 0:
        raise ValueError(f"bulk_tolerance must be non-negative, got {bulk_tolerance}")
    matrix = jacobian.detach().to(torch.float64)
    if torch.isfinite(matrix).all():
        values = torch.linalg.svdvals(matrix).cpu()
    else:
        values = torch.full((jacobian.shape[0],), math.nan, dtype=torch.float64)
    chaotic_threshold, stable_threshold = 1.0 + bulk_tolerance, 1.0 - bulk_tolerance
    return TrainingJacobianSpectrum(
        singular_values=values,
        chaotic=int((values > chaotic_threshold).sum()),
        bulk=int(((values >= stable_threshold) & (values <= chaotic_threshold)).sum()),
        stable=int((values < stable_threshold).sum()),
        bulk_tolerance=bulk_tolerance,
        chaotic_threshold=chaotic_threshold,
        stable_threshold=stable_threshold,
    )
