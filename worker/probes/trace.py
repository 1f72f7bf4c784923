"""The trace of a symmetric operator from matrix-vector products with random sign vectors.

Hutchinson's estimator averages ``zᵀAz`` over Rademacher vectors ``z`` (entries ±1), each an
unbiased estimate of ``tr(A)`` with variance ``2(‖A‖_F² - Σᵢ Aᵢᵢ²)``. Hutch++ first captures
the top of the spectrum exactly on a sketched subspace and applies Hutchinson only to the rest,
which needs ``O(1/ε)`` rather than ``O(1/ε²)`` products for a relative error ``ε`` on positive
semi-definite matrices. Both take any :class:`SymmetricOperator` (HAWQ-V2, Dong et al. 2020,
uses the Hessian trace of each layer as its sensitivity).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from dynascope.worker.probes.operators import SymmetricOperator


@dataclass(frozen=True)
class TraceEstimate:
    """An estimate of ``tr(A)``, its standard error (see the estimator for exactly which), and
    the products with ``A`` it used."""

    estimate: float
    standard_error: float
    matvecs: int


def rademacher(operator: SymmetricOperator, count: int, generator: torch.Generator) -> Tensor:
    """An ``n × count`` block of independent ±1 entries (Rademacher vectors as columns), drawn
    on the host from ``generator`` and moved to the operator's dtype and device."""
    signs = torch.randint(0, 2, (operator.size, count), generator=generator, dtype=torch.int8)
    return (2 * signs - 1).to(operator.device, operator.dtype)


def hutchinson_trace(
    operator: SymmetricOperator, *, samples: int, generator: torch.Generator
) -> TraceEstimate:
    """Hutchinson's estimate of ``tr(A)``: the mean of ``zᵀAz`` over ``samples`` Rademacher
    vectors (Hutchinson 1990, "A stochastic estimator of the trace of the influence matrix for
    Laplacian smoothing splines"; Avron & Toledo 2011).

    ``standard_error`` is the sample standard deviation of the ``samples`` values ``zᵀAz``
    divided by ``√samples``: the estimated standard deviation of the estimate. ``samples``
    products with ``A``; at least 2, for the standard error.
    """
    if samples < 2:
        raise ValueError(f"samples must be at least 2 for a standard error, got {samples}")
    before = operator.matvecs
    mean, error = _hutchinson(operator, rademacher(operator, samples, generator))
    return TraceEstimate(estimate=mean, standard_error=error, matvecs=operator.matvecs - before)


def hutch_plus_plus_trace(
    operator: SymmetricOperator, *, matvecs: int, generator: torch.Generator
) -> TraceEstimate:
    """The Hutch++ estimate of ``tr(A)`` from ``matvecs`` products (Meyer, Musco, Musco &
    Woodruff 2021, "Hutch++: Optimal stochastic trace estimation", Algorithm 1).

    With ``s = matvecs // 3`` and ``h = matvecs - 2s``: ``Q`` is an orthonormal basis of ``AS``
    for an ``n × s`` Rademacher sketch ``S`` (``s`` products); the estimate is
    ``tr(QᵀAQ)`` (``s`` products) plus Hutchinson's estimate with ``h`` Rademacher vectors of
    the trace of the deflated remainder ``(I - QQᵀ) A (I - QQᵀ)`` (``h`` products).

    ``standard_error`` is the standard error of that Hutchinson part alone: the sample
    standard deviation of its ``h`` values ``zᵀ(I - QQᵀ)A(I - QQᵀ)z`` over ``√h``. Given the
    sketch, ``tr(QᵀAQ)`` carries no randomness, so this is the standard error of the estimate
    conditional on ``Q``; it does not include the variability of the sketch itself.
    ``matvecs`` must be at least 6 (``s ≥ 2``, ``h ≥ 2``).
    """
    if matvecs < 6:
        raise ValueError(f"Hutch++ needs at least 6 products, got {matvecs}")
    sketch_size = matvecs // 3
    remainder = matvecs - 2 * sketch_size
    before = operator.matvecs
    sketch = operator.matmat(rademacher(operator, sketch_size, generator))
    basis, _ = torch.linalg.qr(sketch)
    top = torch.sum(basis * operator.matmat(basis)).item()
    probes = rademacher(operator, remainder, generator)
    deflated = probes - basis @ (basis.T @ probes)
    mean, error = _hutchinson(operator, deflated)
    return TraceEstimate(
        estimate=top + mean, standard_error=error, matvecs=operator.matvecs - before
    )


def _hutchinson(operator: SymmetricOperator, probes: Tensor) -> tuple[float, float]:
    """Mean and standard error of ``zᵀAz`` over the columns ``z`` of ``probes``."""
    values = torch.sum(probes * operator.matmat(probes), dim=0).double()
    return values.mean().item(), values.std().item() / math.sqrt(values.numel())
