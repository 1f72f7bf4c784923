"""PCA of a training trajectory, beside the PCA of a high-dimensional random walk.

Antognini & Sohl-Dickstein 2018, "PCA of high dimensional random walks with comparison to
neural network training": the parameter snapshots ``θ_1 … θ_n`` of a run, centred on their
mean, are decomposed into principal components. For a random walk in ``P ≫ n`` dimensions
the centred snapshot matrix ``X`` has ``X Xᵀ → P·C L Lᵀ C`` (``L`` lower-triangular ones,
``C = I − 11ᵀ/n``), whose eigenvalues are exactly ``1 / (4 sin²(πk/(2n)))``, ``k = 1 … n−1``,
with eigenvectors ``cos(πk(t + ½)/n)``: the explained-variance ratio of the ``k``-th component
is ``3 / (2(n² − 1)) · csc²(πk/(2n))`` (:func:`random_walk_ratios`), which tends to
``(6/π²)/k²`` as ``n → ∞`` (:func:`random_walk_reference`), and the projection of the walk on
its ``k``-th component is a cosine with ``k`` half-periods. Training trajectories often look
like this too, which is the paper's point: a PCA plot of a trajectory that resembles a
Lissajous curve says little about the loss landscape.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

GRAM_BLOCK = 16384
"""Parameters per block when the Gram matrix is accumulated: ``n × GRAM_BLOCK`` float64
temporaries (25 MiB for 200 snapshots), the fastest of the block sizes we measured."""


@dataclass(frozen=True)
class TrajectoryPCA:
    """The principal components of ``n`` snapshots of ``P`` parameters, largest first.

    ``explained_variance_ratio`` (k,) float64 on the host: each component's share of the
    total variance of the mean-centred snapshots. ``coordinates`` (n, k) float64 on the host:
    the projection of each centred snapshot on each component. ``components`` (k, P): unit
    norm, orthogonal directions, in the snapshots' dtype and device (their sign is arbitrary,
    as in any PCA). ``mean`` (P,): the snapshots' mean, same dtype and device.
    ``total_variance``: the mean squared distance of the snapshots from their mean,
    ``Σ_s ‖θ_s − θ̄‖² / n`` (the sum over parameters of each one's variance, normalised by
    ``n``), so that component ``i`` has variance ``ratio_i · total_variance``.
    """

    explained_variance_ratio: Tensor
    coordinates: Tensor
    components: Tensor
    mean: Tensor
    total_variance: float


def random_walk_reference(k: int) -> Tensor:
    """``(6/π²)/i²`` for ``i = 1 … k`` (float64): the explained-variance ratios of the PCA of a
    high-dimensional random walk in the limit of many steps (Antognini & Sohl-Dickstein 2018).
    They sum to one over all ``i``."""
    if k < 0:
        raise ValueError(f"k must be non-negative, got {k}")
    index = torch.arange(1, k + 1, dtype=torch.float64)
    return (6.0 / math.pi**2) / index.square()


def random_walk_ratios(n: int, k: int | None = None) -> Tensor:
    """The exact explained-variance ratios of the PCA of ``n`` snapshots of a random walk with
    i.i.d. isotropic increments, in the limit of many dimensions: ``3 / (2(n² − 1)) ·
    csc²(πi/(2n))`` for ``i = 1 … min(k, n − 1)`` (float64). They sum to one over
    ``i < n`` and tend to :func:`random_walk_reference` as ``n`` grows (within 0.3% for
    ``i ≤ 5`` at ``n = 100``)."""
    if n < 2:
        raise ValueError(f"a random walk's PCA needs at least 2 snapshots, got {n}")
    count = n - 1 if k is None else min(k, n - 1)
    index = torch.arange(1, count + 1, dtype=torch.float64)
    return 1.5 / (n * n - 1) / torch.sin(math.pi * index / (2 * n)).square()


def trajectory_pca(snapshots: Tensor, *, components: int = 10) -> TrajectoryPCA:
    """The PCA of the rows of ``snapshots`` (n, P), ``n ≪ P``, centred on their mean
    (Antognini & Sohl-Dickstein 2018).

    Through the ``n × n`` Gram matrix ``G = X Xᵀ`` of the centred snapshots ``X``, never a
    ``P × P`` covariance: ``G = U Λ Uᵀ`` (``eigh``) gives the components ``v_i = Xᵀ u_i /
    √λ_i`` (renormalised to unit norm), the coordinates ``X v_i = √λ_i u_i`` and the ratios
    ``λ_i / trace(G)``. Precision: the snapshots are centred and ``G`` accumulated in float64
    whatever their dtype, one block of :data:`GRAM_BLOCK` parameters at a time (memory
    ``n × GRAM_BLOCK`` float64 beyond the input); with float32 snapshots, ``G`` is the exact
    Gram matrix of the float32 values up to float64 rounding. The components are formed in
    float64 and returned in the snapshots' dtype. Cost: ``n²P`` float64 multiply-adds for
    ``G`` plus ``k·n·P`` for the components, two passes over the snapshots: 1.2 to 1.4 s in
    all for 200 float32 snapshots of 10⁶ parameters on 2 CPU cores
    (``benchmarks/bench_landscape.py``).

    ``k = min(components, n − 1, rank)``, the rank counting the eigenvalues of ``G`` above
    ``n · ε₆₄ · λ_max`` (a centred set of ``n`` points spans at most ``n − 1`` directions).
    Raises ``ValueError`` for fewer than two snapshots, or when all snapshots are equal: the
    ratios are then ``0/0``, undefined (the caller records no trajectory, rather than made-up
    zeros).
    """
    if snapshots.ndim != 2:
        raise ValueError(f"snapshots must be (n, P), got shape {tuple(snapshots.shape)}")
    if components < 1:
        raise ValueError(f"components must be at least 1, got {components}")
    n, size = snapshots.shape
    if n < 2:
        raise ValueError(f"a trajectory's PCA needs at least 2 snapshots, got {n}")
    if not snapshots.is_floating_point():
        raise ValueError(f"snapshots must be floating point, got {snapshots.dtype}")
    gram, mean = _centred_gram(snapshots)
    trace = gram.diagonal().sum().item()
    if not math.isfinite(trace):
        raise ValueError("the snapshots contain NaN or infinite values: no PCA of them")
    values, vectors = torch.linalg.eigh(gram)
    values, vectors = values.flip(0), vectors.flip(1)  # largest first
    if trace <= 0.0 or values[0] <= 0.0:
        raise ValueError(
            f"all {n} snapshots are equal: the trajectory has no variance and its"
            " explained-variance ratios are undefined"
        )
    rank = int((values > n * torch.finfo(torch.float64).eps * values[0]).sum())
    k = min(components, n - 1, rank)
    values, vectors = values[:k], vectors[:, :k]
    scales = values.sqrt()
    directions = _components(snapshots, mean, vectors / scales)
    directions /= torch.linalg.vector_norm(directions, dim=1, keepdim=True)
    return TrajectoryPCA(
        explained_variance_ratio=(values / trace).cpu(),
        coordinates=(vectors * scales).cpu(),
        components=directions.to(snapshots.dtype),
        mean=mean.to(snapshots.dtype),
        total_variance=trace / n,
    )


def _centred_gram(snapshots: Tensor) -> tuple[Tensor, Tensor]:
    """``(X Xᵀ, mean)`` of the snapshots centred on their mean, both float64, accumulated one
    block of parameters at a time."""
    n, size = snapshots.shape
    gram = torch.zeros(n, n, dtype=torch.float64, device=snapshots.device)
    mean = torch.empty(size, dtype=torch.float64, device=snapshots.device)
    for start in range(0, size, GRAM_BLOCK):
        block = snapshots[:, start : start + GRAM_BLOCK].to(torch.float64)
        block_mean = block.mean(dim=0)
        mean[start : start + GRAM_BLOCK] = block_mean
        block = block - block_mean  # a copy when the snapshots are float64 already
        gram.addmm_(block, block.T)
    return gram, mean


def _components(snapshots: Tensor, mean: Tensor, coefficients: Tensor) -> Tensor:
    """``coefficientsᵀ X`` (k, P) in float64 for the centred snapshots ``X``, block by block."""
    size = snapshots.shape[1]
    result = torch.empty(coefficients.shape[1], size, dtype=torch.float64, device=snapshots.device)
    for start in range(0, size, GRAM_BLOCK):
        block = snapshots[:, start : start + GRAM_BLOCK].to(torch.float64)
        block = block - mean[start : start + GRAM_BLOCK]
        result[:, start : start + GRAM_BLOCK] = coefficients.T @ block
    return result
