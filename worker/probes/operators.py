"""Symmetric matrices known only through their products with vectors, as the eigensolvers,
trace estimators and spectral densities (:mod:`.lanczos`, :mod:`.trace`, :mod:`.density`) see
them: an operator implements only its matrix-vector product (``_matvec``, and ``_matmat`` where
it can multiply a block faster than column by column); the base class counts the products and
derives the rest (block products, a dense matrix for tests). The curvature matrices of a loss
are such operators (:mod:`.curvature`); so are a dense matrix and a diagonally preconditioned
operator, here. None of them sees a model (as in curvlinops).
"""

from __future__ import annotations

import torch
from torch import Tensor


class SymmetricOperator:
    """A real symmetric ``n × n`` matrix known only through its products with vectors.

    Subclasses implement ``_matvec(v)`` for a flat vector ``v`` of length ``n`` in the
    operator's dtype and device, and may implement ``_matmat(V)`` for an ``n × j`` block when
    they can multiply several vectors at once faster than one by one (then they set
    ``block_products``, which tells callers such as :func:`.density.slq_nodes` that batching
    their vectors pays). :meth:`matvec` and :meth:`matmat` check their argument and count the
    products in ``matvecs`` (one per vector); :meth:`to_dense` builds the whole matrix from
    ``n`` products (for tests on small problems).
    """

    block_products = False
    """Whether :meth:`matmat` multiplies a block natively rather than column by column."""

    def __init__(self, size: int, dtype: torch.dtype, device: torch.device | str) -> None:
        self.size = size
        self.dtype = dtype
        self.device = torch.device(device)
        self.matvecs = 0

    @property
    def shape(self) -> tuple[int, int]:
        """``(n, n)``."""
        return (self.size, self.size)

    def _matvec(self, vector: Tensor) -> Tensor:
        raise NotImplementedError

    def matvec(self, vector: Tensor) -> Tensor:
        """The product of the matrix with a flat vector of length ``n`` (counted in
        ``matvecs``)."""
        if vector.shape != (self.size,):
            raise ValueError(
                f"expected a vector of shape ({self.size},), got {tuple(vector.shape)}"
            )
        if vector.dtype != self.dtype:
            raise ValueError(f"expected a {self.dtype} vector, got {vector.dtype}")
        self.matvecs += 1
        return self._matvec(vector.to(self.device))

    def __matmul__(self, vector: Tensor) -> Tensor:
        return self.matvec(vector) if vector.ndim == 1 else self.matmat(vector)

    def matmat(self, block: Tensor) -> Tensor:
        """The product with an ``n × j`` block (counted as ``j`` products in ``matvecs``): one
        product per column unless the operator has a native block product (``_matmat``)."""
        if block.ndim != 2 or block.shape[0] != self.size:
            raise ValueError(
                f"expected a block of shape ({self.size}, j), got {tuple(block.shape)}"
            )
        if block.dtype != self.dtype:
            raise ValueError(f"expected a {self.dtype} block, got {block.dtype}")
        if block.shape[1] == 0:
            return torch.empty_like(block, device=self.device)
        self.matvecs += block.shape[1]
        return self._matmat(block.to(self.device))

    def _matmat(self, block: Tensor) -> Tensor:
        return torch.stack([self._matvec(column) for column in block.unbind(1)], dim=1)

    def to_dense(self) -> Tensor:
        """The whole matrix, from ``n`` products with the unit vectors."""
        return self.matmat(torch.eye(self.size, dtype=self.dtype, device=self.device))


class DenseSymmetricOperator(SymmetricOperator):
    """A symmetric matrix held in memory, as an operator (reference problems, small models)."""

    def __init__(self, matrix: Tensor) -> None:
        if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
            raise ValueError(f"expected a square matrix, got shape {tuple(matrix.shape)}")
        super().__init__(matrix.shape[0], matrix.dtype, matrix.device)
        self.matrix = matrix
        self.block_products = True

    def _matvec(self, vector: Tensor) -> Tensor:
        return self.matrix @ vector

    def _matmat(self, block: Tensor) -> Tensor:
        return self.matrix @ block


class DiagonalPreconditioned(SymmetricOperator):
    """``P^{-1/2} A P^{-1/2}`` for a symmetric operator ``A`` and a positive diagonal ``P``.

    It is similar to ``P^{-1} A``, so it has the same eigenvalues; an eigenvector ``y`` of this
    operator gives the eigenvector ``P^{-1/2} y`` of ``P^{-1} A``. With ``A`` the Hessian and
    ``P`` Adam's preconditioner its top eigenvalue is the preconditioned sharpness of Cohen et
    al. 2022, "Adaptive gradient methods at the edge of stability". ``diagonal`` is the flat
    diagonal of ``P`` (see :meth:`CurvatureOperator.flatten`).
    """

    def __init__(self, operator: SymmetricOperator, diagonal: Tensor) -> None:
        super().__init__(operator.size, operator.dtype, operator.device)
        if diagonal.shape != (operator.size,):
            raise ValueError(
                f"expected a diagonal of shape ({operator.size},), got {tuple(diagonal.shape)}"
            )
        if not (torch.isfinite(diagonal).all() and (diagonal > 0).all()):
            raise ValueError("the preconditioner's diagonal must be finite and positive")
        self.operator = operator
        self.scale = diagonal.to(self.device, self.dtype).rsqrt()
        self.block_products = operator.block_products

    def _matvec(self, vector: Tensor) -> Tensor:
        return self.scale * self.operator.matvec(self.scale * vector)

    def _matmat(self, block: Tensor) -> Tensor:
        scale = self.scale[:, None]
        return scale * self.operator.matmat(scale * block)
