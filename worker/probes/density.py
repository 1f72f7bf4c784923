"""The eigenvalue density of a symmetric operator by stochastic Lanczos quadrature (SLQ).

The spectral density ``φ(t) = (1/n) Σⱼ δ(t - λⱼ)`` is estimated from a few random probe
vectors ``v``: ``m`` Lanczos steps from ``v/‖v‖`` give a tridiagonal ``T_m`` whose eigenvalues
``θᵢ`` and squared first eigenvector components ``τᵢ`` are the nodes and weights of the Gauss
quadrature of the spectral measure ``Σⱼ (vᵀuⱼ)²/‖v‖² δ(t - λⱼ)``, whose expectation over ``v``
is ``φ`` (Lin, Saad & Yang 2016, "Approximating spectral densities of large matrices"; Ghorbani,
Krishnan & Xiao 2019, "An investigation into neural net optimization via Hessian eigenvalue
density"). Averaging over probes and replacing each delta by a Gaussian of width
``σ`` gives a smooth density.

The expensive part (one Lanczos run, ``m`` products, per probe) is :func:`slq_nodes`; the cheap
part (placing Gaussians on a grid) is :func:`gaussian_density`, so the same nodes can be drawn
at several widths and on several grids without touching the operator again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from dynascope.worker.probes.lanczos import gaussian_vector, lanczos_tridiagonals
from dynascope.worker.probes.operators import SymmetricOperator
from dynascope.worker.probes.trace import rademacher

ProbeDistribution = Literal["rademacher", "gaussian"]
DENSITY_BLOCK = 1 << 22  # grid points × nodes evaluated at once


@dataclass(frozen=True)
class SLQNodes:
    """Quadrature nodes of stochastic Lanczos quadrature: row ``p`` of ``values`` holds the
    Ritz values ``θ`` of probe ``p`` and the same row of ``weights`` their weights ``τ``
    (squared first components of the eigenvectors of ``T_m``; they sum to 1 per probe). Both
    are ``probes × m`` float64 on the host; a probe whose Krylov space became invariant in fewer
    than ``m`` steps has its row padded with zero weights. ``size`` is the operator's ``n``
    and ``matvecs`` the products used."""

    values: Tensor
    weights: Tensor
    size: int
    matvecs: int

    def moment(self, order: int) -> float:
        """``(1/probes) Σₚ Σᵢ τ_{p,i} θ_{p,i}^order``: an unbiased estimate of
        ``tr(A^order)/n`` (exact per probe, ``vᵀA^order v/‖v‖²``, while
        ``order ≤ 2m - 1``)."""
        return (self.weights * self.values.pow(order)).sum(dim=1).mean().item()


def slq_nodes(
    operator: SymmetricOperator,
    *,
    lanczos_steps: int,
    probes: int,
    generator: torch.Generator,
    distribution: ProbeDistribution = "rademacher",
    lockstep: int | None = None,
) -> SLQNodes:
    """The nodes and weights of stochastic Lanczos quadrature: for each of ``probes`` random
    vectors (Rademacher or Gaussian, from ``generator``), ``lanczos_steps`` Lanczos steps with
    full reorthogonalisation, and the eigen-decomposition ``T_m = S diag(θ) Sᵀ``, giving nodes
    ``θᵢ`` and weights ``τᵢ = S₁ᵢ²`` (Lin, Saad & Yang 2016; Ghorbani, Krishnan & Xiao 2019).

    Costs ``probes · lanczos_steps`` products (fewer if a Krylov space becomes invariant).
    ``m`` steps reproduce the first ``2m - 1`` moments of each probe's spectral measure
    exactly; the probes' average has a sampling error that shrinks as ``1/√probes``, smaller
    for larger ``n`` (a single probe already gives ``tr(A)/n`` with standard deviation
    ``√(2(‖A‖_F² - Σ Aᵢᵢ²))/n`` for Rademacher vectors).

    The probes' Lanczos processes are independent; ``lockstep`` of them run side by side, each
    step multiplying their current vectors as one block (:meth:`SymmetricOperator.matmat`),
    which pays where the operator multiplies blocks natively (``block_products``). Default:
    all of them in that case, else one at a time. The vectors drawn, the processes and so the
    nodes are the same either way, up to the rounding of the products; memory grows to
    ``lockstep · (lanczos_steps + 1) · n`` numbers for the bases.
    """
    if lanczos_steps < 1 or probes < 1:
        raise ValueError(f"need lanczos_steps >= 1 and probes >= 1, got {lanczos_steps}, {probes}")
    if distribution not in ("rademacher", "gaussian"):
        raise ValueError(f"distribution must be 'rademacher' or 'gaussian', got {distribution!r}")
    if lockstep is not None and lockstep < 1:
        raise ValueError(f"lockstep must be at least 1, got {lockstep}")
    if lockstep is None:
        lockstep = probes if operator.block_products else 1
    steps = min(lanczos_steps, operator.size)
    values = torch.zeros(probes, steps, dtype=torch.float64)
    weights = torch.zeros(probes, steps, dtype=torch.float64)
    before = operator.matvecs
    for first in range(0, probes, lockstep):
        group = range(first, min(first + lockstep, probes))
        starts = [_probe_vector(operator, generator, distribution) for _ in group]
        tridiagonals = lanczos_tridiagonals(operator, starts, steps=steps)
        for probe, tridiagonal in zip(group, tridiagonals, strict=True):
            thetas, vectors = torch.linalg.eigh(tridiagonal.matrix())
            found = thetas.shape[0]
            values[probe, :found] = thetas
            weights[probe, :found] = vectors[0].square()
    return SLQNodes(
        values=values, weights=weights, size=operator.size, matvecs=operator.matvecs - before
    )


def _probe_vector(
    operator: SymmetricOperator, generator: torch.Generator, distribution: ProbeDistribution
) -> Tensor:
    """One random probe vector, drawn on the host in the operator's dtype and device."""
    if distribution == "rademacher":
        return rademacher(operator, 1, generator)[:, 0]
    return gaussian_vector(operator, generator)


def density_grid(nodes: SLQNodes, points: int, margin: float) -> Tensor:
    """``points`` evenly spaced values from the smallest node minus ``margin`` to the largest
    plus ``margin`` (float64), on which to draw :func:`gaussian_density`.

    Choosing them: with ``margin ≥ 5σ`` the Gaussians lose less than ``3·10⁻⁷`` of their mass
    past the ends, and with a spacing ``(range + 2·margin)/(points - 1) ≤ σ/2`` the trapezoidal
    rule integrates the density to 1 within about ``10⁻⁶``; so take
    ``points ≥ 2·(range + 2·margin)/σ + 1``. Hessian spectra are often a bulk near 0 and a few
    large outliers; a ``σ`` fine enough for the bulk may need many points, or a second grid
    over the bulk only.
    """
    if points < 2:
        raise ValueError(f"points must be at least 2, got {points}")
    if margin < 0:
        raise ValueError(f"margin must be non-negative, got {margin}")
    present = nodes.values[nodes.weights > 0]
    if present.numel() == 0:
        raise ValueError("no nodes with positive weight")
    low, high = present.min().item(), present.max().item()
    return torch.linspace(low - margin, high + margin, points, dtype=torch.float64)


def gaussian_density(nodes: SLQNodes, grid: Tensor, sigma: float) -> Tensor:
    """The SLQ density estimate on ``grid``: ``(1/probes) Σₚ Σᵢ τ_{p,i} N(t; θ_{p,i}, σ²)``,
    a sum of Gaussians of standard deviation ``sigma`` (in the operator's units) at the nodes,
    normalised to integrate to 1 over the real line (Ghorbani, Krishnan & Xiao 2019;
    Lin, Saad & Yang 2016). Returns a float64 tensor shaped like ``grid``; see
    :func:`density_grid` for choosing the grid.
    """
    if sigma <= 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    grid = grid.to(torch.float64)
    keep = nodes.weights > 0
    centres = nodes.values[keep]
    masses = nodes.weights[keep] / nodes.values.shape[0]
    flat = grid.reshape(-1)
    rows = max(1, DENSITY_BLOCK // max(1, centres.numel()))  # bound the grid × nodes kernel
    pieces = []
    for start in range(0, flat.numel(), rows):
        offsets = (flat[start : start + rows, None] - centres) / sigma
        kernel = torch.exp(-0.5 * offsets.square()) / (sigma * math.sqrt(2 * math.pi))
        pieces.append(kernel @ masses)
    return torch.cat(pieces).reshape(grid.shape) if pieces else torch.zeros_like(grid)
