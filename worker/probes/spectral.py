"""Spectral norms of weights, tracked along training by warm-started block Rayleigh-Ritz.

The spectral norm ``σ₁(W)`` is the square root of the largest eigenvalue ``λ₁`` of ``A = WᵀW``.
Between two probes a few optimiser steps apart the top singular vectors barely turn, so the
previous probe's top Ritz subspace, an orthonormal block ``X`` of two vectors, is an excellent
start. Each call first checks ``X`` as it is (Rayleigh-Ritz on ``span X``: two products with
the weight, no orthogonalisation, and a 2x2 eigenproblem solved in closed form), which late in
training often suffices; if not, it projects on the block Krylov space ``span[X, XA, XA²]``,
which nearly always does; early in training and on a cold start, on deeper spaces. A block of
two rather than one vector keeps tracking the top singular value when the top two cross, and
its second Ritz value gives the gap that sharpens the residual bound (Kato-Temple).

These run every few training steps on small layers, where the cost is the number of tensor
operations rather than their size: all the weights of one shape, and all the small weights
zero-padded to a common shape, go through each round as one batch, and each round ends with
one transfer of a few numbers to the host.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

SPECTRAL_TOLERANCE = 1e-4
SPECTRAL_MAX_ITERATIONS = 100
SPECTRAL_SEED = 0
SPECTRAL_BLOCK = 2  # so that checking a warm block is a 2x2 eigenproblem, solved in closed form
SPECTRAL_WARM_DEPTH = 2
SPECTRAL_RESTART_DEPTH = 4
SPECTRAL_SMALL_SIDE = 256
COLD_START_TIGHTENING = 0.01

Matrix2 = list[list[float]]  # a 2x2 matrix on the host, by rows


@dataclass(frozen=True)
class SpectralNorms:
    """Largest singular values, and what the next call needs to warm-start.

    ``vectors`` holds, for every weight iterated on, an orthonormal basis of its top Ritz
    subspace, as the rows of a ``(SPECTRAL_BLOCK, n)`` tensor (``n`` the shorter side of the
    matrix): pass it as ``state`` to the next :func:`spectral_norms` call. ``iterations`` counts
    Rayleigh-Ritz rounds per weight in this call, and ``matvecs`` the products of a weight (or
    its transpose) with a vector, all weights together.
    """

    values: dict[str, float]
    vectors: dict[str, Tensor]
    iterations: dict[str, int]
    matvecs: int


def spectral_norms(
    params: dict[str, Tensor],
    state: dict[str, Tensor] | None = None,
    *,
    tolerance: float = SPECTRAL_TOLERANCE,
    max_iterations: int = SPECTRAL_MAX_ITERATIONS,
    generator: torch.Generator | None = None,
    frobenius: dict[str, float] | None = None,
) -> SpectralNorms:
    """The largest singular value of every weight with two or more dimensions, by block
    Rayleigh-Ritz on ``A = WᵀW`` over block Krylov spaces ``span[X, XA, ..., XA^d]`` of a block
    ``X`` of ``SPECTRAL_BLOCK`` vectors, restarted from the top Ritz vectors until converged
    (Golub & Van Loan, *Matrix Computations*, 4th ed., §8.3.7 and §10.3.6; Saad, *Numerical
    Methods for Large Eigenvalue Problems*, 2nd ed., §4.3 and §6.1). A warm start (``state``)
    takes ``d = 0`` (the block itself), then ``SPECTRAL_WARM_DEPTH``, then
    ``SPECTRAL_RESTART_DEPTH``; a cold start ``SPECTRAL_RESTART_DEPTH`` from the first round.

    A weight of shape ``(out, ...)`` is taken as the matrix ``W.reshape(out, -1)``: for a
    convolution kernel this is the norm of the reshaped kernel, not the operator norm of the
    convolution it defines. Vectors live on the shorter side of that matrix, which is scaled by
    its Frobenius norm (``frobenius``, by name, when the caller has it; computed here otherwise)
    so that the eigenvalues of ``A`` lie in ``[0, 1]`` and sum to 1, in any precision. Each
    weight starts from its block in ``state`` (the ``vectors`` of the previous call); one
    without a usable block starts from a Gaussian block drawn from ``generator`` (a CPU
    generator; default: a fresh one seeded with ``SPECTRAL_SEED``, so results are
    reproducible). Low-precision weights are iterated in float32.

    Error bound. Let ``θ₁ ≥ θ₂`` be the top Ritz values and ``r₁, r₂`` the residual norms
    ``‖Ax - θx‖`` of their Ritz vectors, computed from the products themselves. Some eigenvalue
    of ``A`` lies in ``[θ₁, θ₁ + r₁]``; if it is ``λ₁`` and the second Ritz pair tracks ``λ₂``
    (``λ₂ ≤ θ₂ + r₂``), the Kato-Temple inequality (Parlett, *The Symmetric Eigenvalue
    Problem*, Thm 10.5.1) sharpens this to ``λ₁ ≤ θ₁ + r₁² / (θ₁ - θ₂ - r₂)`` when that gap is
    positive. A weight has converged when the smaller bound is at most ``2 · tolerance · θ₁``:
    the value returned, ``√θ₁ ≤ σ₁``, is then within ``tolerance`` of ``σ₁`` relative. A batch
    also stops after ``max_iterations`` rounds, with lower bounds. A Krylov method can miss the
    top singular vector when its start is nearly orthogonal to it, so a cold start runs to
    ``tolerance · COLD_START_TIGHTENING`` (a few more rounds, once per run), which amplifies any
    such component, and a weight whose bound falls short of ``λ₁ ≥ trace(A) / n = 1 / n``
    restarts from a Gaussian block. A weight with a non-finite entry gets NaN, a zero or empty
    one 0.0, and one with a single column or row its Frobenius norm, none of them iterated.
    """
    if tolerance <= 0 or max_iterations < 1:
        raise ValueError(
            f"need tolerance > 0 and max_iterations >= 1, got {tolerance} and {max_iterations}"
        )
    matrices = {
        name: _shorter_side_last(weight) for name, weight in params.items() if weight.ndim >= 2
    }
    norms = frobenius if frobenius is not None else _frobenius_norms(matrices)
    scales = {name: _scale(matrix, norms[name]) for name, matrix in matrices.items()}
    values = dict(scales)  # right as it is for a zero, non-finite or single-column matrix
    iterations = dict.fromkeys(matrices, 0)
    vectors: dict[str, Tensor] = {}
    matvecs = 0
    seeds = _Seeds(generator)
    live = {
        name: matrix
        for name, matrix in matrices.items()
        if 0 < scales[name] < math.inf and matrix.shape[1] > 1
    }
    for names in _batches(live):
        batch = _Batch.pack({name: live[name] for name in names}, scales, state or {}, seeds)
        rounds, tops = batch.iterate(tolerance, max_iterations)
        matvecs += batch.matvecs
        for index, name in enumerate(names):
            values[name] = scales[name] * math.sqrt(max(tops[index], 0.0))
            iterations[name] = rounds
            vectors[name] = batch.block[index, :, : batch.sizes[index]]
    return SpectralNorms(values=values, vectors=vectors, iterations=iterations, matvecs=matvecs)


def spectral_norms_exact(params: dict[str, Tensor]) -> dict[str, float]:
    """The largest singular value of every weight with two or more dimensions, reshaped as in
    :func:`spectral_norms`, from a full SVD in float64 (``torch.linalg.matrix_norm(ord=2)``):
    the reference to test against, too slow to run every few steps on large layers."""
    values = {}
    for name, weight in params.items():
        if weight.ndim < 2:
            continue
        if weight.numel() == 0:
            values[name] = 0.0
            continue
        matrix = _shorter_side_last(weight)
        if not torch.isfinite(matrix).all():
            values[name] = math.nan
        else:
            values[name] = torch.linalg.matrix_norm(matrix.double(), ord=2).item()
    return values


class _Seeds:
    """Gaussian start blocks, drawn on the host from one generator, created when first needed."""

    def __init__(self, generator: torch.Generator | None) -> None:
        self.generator = generator

    def block(self, columns: int) -> Tensor:
        if self.generator is None:
            self.generator = torch.Generator().manual_seed(SPECTRAL_SEED)
        return torch.randn(SPECTRAL_BLOCK, columns, generator=self.generator, dtype=torch.float64)


@dataclass
class _Batch:
    """Weights iterated together: ``matrices`` ``(B, m, n)``, each scaled to unit Frobenius
    norm and zero-padded to the largest shape; ``block`` ``(B, SPECTRAL_BLOCK, n)``, their
    vectors as rows; ``sizes`` the true ``n`` of each, and ``cold`` whether it started without
    a warm block; ``matvecs`` counts the products of one of them with a vector so far."""

    matrices: Tensor
    block: Tensor
    sizes: list[int]
    cold: list[bool]
    seeds: _Seeds
    matvecs: int = 0

    @classmethod
    def pack(
        cls,
        matrices: dict[str, Tensor],
        scales: dict[str, float],
        state: dict[str, Tensor],
        seeds: _Seeds,
    ) -> _Batch:
        first = next(iter(matrices.values()))
        dtype = torch.float64 if first.dtype == torch.float64 else torch.float32
        sizes = [matrix.shape[1] for matrix in matrices.values()]
        rows = max(matrix.shape[0] for matrix in matrices.values())
        stacked = first.new_zeros(len(sizes), rows, max(sizes), dtype=dtype)
        block = stacked.new_zeros(len(sizes), SPECTRAL_BLOCK, max(sizes))
        batch = cls(stacked, block, sizes, [], seeds)
        for index, (name, matrix) in enumerate(matrices.items()):
            size = sizes[index]
            matrix = matrix if matrix.dtype == dtype else matrix.to(dtype)
            torch.mul(matrix, 1.0 / scales[name], out=stacked[index, : matrix.shape[0], :size])
            start = state.get(name)
            batch.cold.append(start is None or start.shape != (SPECTRAL_BLOCK, size))
            block[index, :, :size] = seeds.block(size) if batch.cold[-1] else start
        return batch

    def iterate(self, tolerance: float, max_rounds: int) -> tuple[int, list[float]]:
        """Rayleigh-Ritz rounds until every weight has converged, at most ``max_rounds``;
        returns the rounds run and the top Ritz value of each weight."""
        warm, image = not any(self.cold), None
        for rounds in range(1, max_rounds + 1):
            checking = warm and rounds == 1
            if checking:  # products per vector of the block: X Mᵀ, then (X Mᵀ) M
                tops, bounds, image = _rayleigh_ritz_in_block(self.matrices, self.block)
                products = 2
            else:  # 2 per Krylov block not given, 2 per block of the basis
                depth = SPECTRAL_WARM_DEPTH if warm and rounds == 2 else SPECTRAL_RESTART_DEPTH
                products = 4 * depth + 2 - 2 * (image is not None)
                tops, bounds, self.block = _rayleigh_ritz(self.matrices, self.block, depth, image)
                image = None
            self.matvecs += len(self.sizes) * SPECTRAL_BLOCK * products
            converged = [
                self._converged(index, tops[index], bounds[index], tolerance, not checking)
                for index in range(len(self.sizes))
            ]
            if all(converged):
                break
        return rounds, tops

    def _converged(
        self, index: int, top: float, bound: float, tolerance: float, reseed: bool
    ) -> bool:
        """Whether weight ``index`` is within its tolerance. A Ritz value that cannot be ``λ₁``,
        which is at least ``trace(A) / n = 1 / n``, is not, and (with ``reseed``) restarts
        that weight from a Gaussian block."""
        if top + bound < 0.5 / self.sizes[index]:
            if reseed:
                self.restart(index)
            return False
        tightening = COLD_START_TIGHTENING if self.cold[index] else 1.0
        return bound <= 2.0 * tolerance * tightening * top

    def restart(self, index: int) -> None:
        """Start weight ``index`` again from a Gaussian block, as a cold start."""
        size = self.sizes[index]
        self.block[index] = 0.0
        self.block[index, :, :size] = self.seeds.block(size)
        self.cold[index] = True


def _rayleigh_ritz_in_block(
    matrices: Tensor, block: Tensor
) -> tuple[list[float], list[float], Tensor]:
    """Rayleigh-Ritz on ``A = MᵀM`` over ``span X`` itself, for a batch of matrices ``M``
    ``(B, m, n)`` and blocks ``X`` ``(B, 2, n)``, meant to be orthonormal: no QR. The 2x2
    matrices ``G = XXᵀ``, ``C = XAXᵀ`` and ``S = RRᵀ``, ``R = XA - CX``, go to the host, where
    the eigenpairs ``(θ, y)`` of ``C`` have a closed form. For ``x = yᵀX`` the Rayleigh quotient
    is ``ρ = θ / yᵀGy`` and ``‖xA - θx‖ = √(yᵀSy)``, so ``‖Ax̂ - ρx̂‖ ≤ √(yᵀSy / yᵀGy) + |θ - ρ|``
    for the unit ``x̂``: the bound holds even if ``X`` is not quite orthonormal.

    Returns the top Rayleigh quotient and the bound on ``λ₁ - ρ₁`` per matrix, and ``XA``.
    """
    projected = torch.bmm(block, matrices.mT)
    image = torch.bmm(projected, matrices)
    small = torch.bmm(projected, projected.mT)
    residual = torch.baddbmm(image, small, block, alpha=-1)
    gram, lack = torch.bmm(block, block.mT), torch.bmm(residual, residual.mT)
    checked = [_check(*three) for three in torch.stack([gram, small, lack], 1).tolist()]
    return [top for top, _ in checked], [bound for _, bound in checked], image


def _check(gram: Matrix2, small: Matrix2, lack: Matrix2) -> tuple[float, float]:
    """The top Rayleigh quotient ``ρ₁`` over ``span X`` and the bound on ``λ₁ - ρ₁``, from
    ``G``, ``C`` and ``S`` (see :func:`_rayleigh_ritz_in_block`); ``(0, inf)`` for a block
    with a zero combination."""
    quotients, residuals = [], []
    for theta, y in zip(*_symmetric_2x2(small), strict=True):
        length = _quadratic_form(gram, y)  # ‖x‖² for x = yᵀX
        if not length > 0:
            return 0.0, math.inf
        quotients.append(theta / length)
        lack_y = max(_quadratic_form(lack, y), 0.0)
        residuals.append(math.sqrt(lack_y / length) + abs(theta - quotients[-1]))
    return quotients[-1], _error_bound(quotients, residuals)


def _rayleigh_ritz(
    matrices: Tensor, block: Tensor, depth: int, image: Tensor | None = None
) -> tuple[list[float], list[float], Tensor]:
    """One Rayleigh-Ritz round on ``A = MᵀM`` over ``span[X, XA, ..., XA^depth]``, for a batch
    of matrices ``M`` ``(B, m, n)`` and blocks ``X`` ``(B, p, n)`` (vectors as rows), ``XA``
    given as ``image`` if already known.

    Returns, per matrix, the top Ritz value and the bound on ``λ₁ - θ₁``, and the top ``p``
    Ritz vectors as the rows of the next block. With ``Q`` the orthonormal basis (rows) and
    ``H = QAQᵀ``, the residual of ``x = yᵀQ`` is ``yᵀ(QA - HQ)``: taken from the products, not
    from a recurrence, it holds whatever the conditioning of the Krylov basis.
    """
    transposed = matrices.mT
    krylov = [block] if image is None else [block, image]
    while len(krylov) <= depth:
        krylov.append(torch.bmm(torch.bmm(krylov[-1], transposed), matrices))
    basis = torch.linalg.qr(torch.cat(krylov, 1).mT).Q.mT
    projected = torch.bmm(basis, transposed)  # Q Mᵀ
    small = torch.bmm(projected, projected.mT)  # H
    residual = torch.baddbmm(torch.bmm(projected, matrices), small, basis, alpha=-1)
    ritz, coordinates = torch.linalg.eigh(small)
    count = min(block.shape[1], ritz.shape[-1])
    top = coordinates[:, :, -count:].mT
    norms = torch.linalg.vector_norm(torch.bmm(top, residual), dim=-1)
    numbers = torch.cat([ritz[:, -count:], norms], 1).tolist()
    tops = [row[count - 1] for row in numbers]
    bounds = [_error_bound(row[:count], row[count:]) for row in numbers]
    return tops, bounds, torch.bmm(top, basis)


def _symmetric_2x2(matrix: Matrix2) -> tuple[list[float], list[tuple[float, float]]]:
    """Eigenvalues (increasing) and unit eigenvectors of a symmetric 2x2 matrix (its two
    off-diagonal entries averaged): the rotation by ``φ = atan2(2b, a - c) / 2`` diagonalises
    ``[[a, b], [b, c]]`` (Golub & Van Loan, §8.5.2)."""
    (a, b), (b_, c) = matrix
    mean, half, b = (a + c) / 2, (a - c) / 2, (b + b_) / 2
    radius = math.hypot(half, b)
    angle = math.atan2(b, half) / 2
    cos, sin = math.cos(angle), math.sin(angle)
    return [mean - radius, mean + radius], [(-sin, cos), (cos, sin)]


def _quadratic_form(matrix: Matrix2, y: tuple[float, float]) -> float:
    """``yᵀMy`` for a 2x2 matrix ``M``."""
    (aa, ab), (ba, bb) = matrix
    return aa * y[0] * y[0] + (ab + ba) * y[0] * y[1] + bb * y[1] * y[1]


def _error_bound(ritz: list[float], residuals: list[float]) -> float:
    """A bound on ``λ₁ - θ₁`` from the top Rayleigh quotients (increasing order) and residual
    norms ``‖Ax - θx‖`` of their unit vectors: ``r₁``, or Kato-Temple's
    ``r₁² / (θ₁ - θ₂ - r₂)`` when that gap is positive and the bound smaller."""
    bound = residuals[-1]
    if len(ritz) > 1 and (gap := ritz[-1] - ritz[-2] - residuals[-2]) > 0:
        bound = min(bound, bound * bound / gap)
    return bound


def _batches(matrices: dict[str, Tensor]) -> list[list[str]]:
    """Names of the matrices iterated together: by device and precision, the small ones (both
    sides at most ``SPECTRAL_SMALL_SIDE``, where the cost is the number of operations rather
    than their size) in one zero-padded batch, the others by shape."""
    batches: dict[tuple, list[str]] = {}
    for name, matrix in matrices.items():
        shape = None if max(matrix.shape) <= SPECTRAL_SMALL_SIDE else matrix.shape
        key = (matrix.device, matrix.dtype == torch.float64, shape)
        batches.setdefault(key, []).append(name)
    return list(batches.values())


def rescaled_norm(tensor: Tensor, subtrahend: Tensor | None = None) -> float:
    """The L2 (Frobenius) norm of ``tensor``, or of ``tensor - subtrahend``, taken in float64
    from the tensor divided by its largest magnitude, so that it neither overflows nor
    underflows whenever the norm itself is a finite float64: the fallback for a norm that a
    fused float32 sum of squares sent to infinity (entries above about 1.8e19) or to zero.
    One pass more than a plain norm and a transfer, so only for the few tensors that need it.
    Infinite if an entry (of the difference) is, NaN if one is NaN; 0.0 for an empty tensor."""
    values = tensor.detach().double()
    if subtrahend is not None:
        values = values - subtrahend.detach().double()
    if values.numel() == 0:
        return 0.0
    peak = values.abs().max().item()
    if peak == 0 or not math.isfinite(peak):
        return peak
    return peak * torch.linalg.vector_norm(values / peak).item()


def _scale(matrix: Tensor, frobenius: float) -> float:
    """``frobenius``, the Frobenius norm of ``matrix``, unless it underflowed to 0 or overflowed
    to infinity: then it is taken again by :func:`rescaled_norm`. 0.0 for a zero matrix, NaN
    for one with a non-finite entry (or, absurdly, a norm beyond the float64 range)."""
    if 0 < frobenius < math.inf or math.isnan(frobenius):
        return frobenius
    norm = rescaled_norm(matrix)
    return norm if norm < math.inf else math.nan


def _frobenius_norms(matrices: dict[str, Tensor]) -> dict[str, float]:
    """The Frobenius norm of each matrix, in float64, brought to the host in one transfer."""
    if not matrices:
        return {}
    norms = torch._foreach_norm(list(matrices.values()), 2, dtype=torch.float64)
    return dict(zip(matrices, torch.stack(norms).tolist(), strict=True))


def _shorter_side_last(weight: Tensor) -> Tensor:
    """``weight.reshape(shape[0], -1)``, transposed if it is wider than tall: the vectors then
    live on the shorter side, the last."""
    matrix = weight.detach().reshape(weight.shape[0], math.prod(weight.shape[1:]))
    return matrix if matrix.shape[0] >= matrix.shape[1] else matrix.T
