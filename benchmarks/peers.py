"""The curvature libraries that ``bench_curvature.py`` compares ours with, each behind a small
adapter that runs it on one ``(model, batch)`` and counts its Hessian-vector products (HVPs).

    pip install -e ".[bench]"
    pip install --no-deps curvlinops-for-pytorch  # not in the extra: it would replace torch

How each peer's HVPs are counted (every adapter returns the count with its result):

* PyHessian 0.1: its eigenvalue, trace and density loops on a single batch call the module-level
  ``pyhessian.hessian.hessian_vector_product``; :func:`_counting_pyhessian` replaces that name
  by a counting wrapper while the peer runs. Its constructor evaluates the gradient once with
  ``create_graph=True`` (one graph build) and every product reuses that graph, as ours does.
* hessian-eigenthings 1.0.0a5 (a rewrite: no ``compute_hessian_eigenthings``; ``lanczos``,
  ``deflated_power_iteration``, ``spectral_density`` take a ``CurvatureOperator``): its
  algorithms only call ``operator.matvec``, so :class:`CountingOperator` wraps its
  ``HessianOperator`` and counts. That operator rebuilds the gradient graph for every
  product (forward, backward with ``create_graph``, double backward), so each product is also
  a graph build.
* curvlinops 3.0.1: ``HessianLinearOperator`` multiplies blocks of vectors by ``vmap`` over
  ``jvp(jacrev(loss))`` (forward-over-reverse, no graph kept); :class:`CountingHessian`
  overrides ``_matmat`` and counts its columns. ``scipy.sparse.linalg.eigsh`` (ARPACK) sees
  it through ``to_scipy()`` and asks for one column at a time.

PyHessian needs the model itself (it calls ``loss.backward(create_graph=True)``, writing
``.grad``): the adapters give it a deep copy and clear the copy's ``.grad`` afterwards.
"""

from __future__ import annotations

import copy
import importlib
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import curvlinops
import hessian_eigenthings as eigenthings
import numpy as np
import torch
from scipy.sparse.linalg import eigsh
from torch import Tensor, nn

# ``pyhessian/__init__`` re-exports the class ``hessian`` under the submodule's name.
pyhessian_module = importlib.import_module("pyhessian.hessian")

Criterion = Callable[[Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class TopRun:
    """One top-``k`` eigenvalue computation: eigenvalues largest first, the HVPs and graph
    builds (forward + backward with ``create_graph``) it used, its wall time and whether the
    method reported convergence (``None`` where it does not say)."""

    eigenvalues: list[float]
    hvps: int
    graph_builds: int
    seconds: float
    converged: bool | None


@dataclass(frozen=True)
class DensityRun:
    """One spectral-density computation: the largest quadrature node, HVPs and wall time."""

    largest_node: float
    hvps: int
    seconds: float


# --------------------------------------------------------------------------------- PyHessian


@contextmanager
def _counting_pyhessian() -> Iterator[list[int]]:
    """Count PyHessian's HVPs: ``counter[0]`` while the block runs."""
    counter = [0]
    original = pyhessian_module.hessian_vector_product

    def counted(gradients: list, params: list, vector: list) -> tuple:
        counter[0] += 1
        return original(gradients, params, vector)

    pyhessian_module.hessian_vector_product = counted
    try:
        yield counter
    finally:
        pyhessian_module.hessian_vector_product = original


@contextmanager
def _pyhessian(model: nn.Module, criterion: Criterion, x: Tensor, y: Tensor) -> Iterator:
    """A PyHessian ``hessian`` object on a copy of ``model`` (its graph built), cleaned up
    after."""
    clone = copy.deepcopy(model)
    try:
        yield pyhessian_module.hessian(clone, criterion, data=(x, y), cuda=x.is_cuda)
    finally:
        for parameter in clone.parameters():
            parameter.grad = None


def pyhessian_top(
    model: nn.Module,
    criterion: Criterion,
    x: Tensor,
    y: Tensor,
    *,
    k: int,
    max_iter: int,
    tol: float,
    seed: int,
) -> TopRun:
    """PyHessian's ``eigenvalues(top_n=k, maxIter, tol)``: power iteration with deflation,
    stopping each eigenvalue when its estimate changes by less than ``tol`` relatively between
    two iterations, or after ``max_iter`` products. It finds the largest in magnitude."""
    torch.manual_seed(seed)  # PyHessian draws its start vectors from the global generator
    started = time.perf_counter()
    with _counting_pyhessian() as counter, _pyhessian(model, criterion, x, y) as hessian:
        values, _ = hessian.eigenvalues(maxIter=max_iter, tol=tol, top_n=k)
    seconds = time.perf_counter() - started
    return TopRun(sorted(values, reverse=True), counter[0], 1, seconds, None)


def pyhessian_trace_samples(
    model: nn.Module, criterion: Criterion, x: Tensor, y: Tensor, *, seed: int
) -> list[float]:
    """PyHessian's ``trace()`` with its defaults (``maxIter=100, tol=1e-3``): the values
    ``vᵀHv`` it drew (Rademacher ``v``) before its stopping rule fired; one HVP each."""
    torch.manual_seed(seed)
    with _pyhessian(model, criterion, x, y) as hessian:
        return list(hessian.trace())


def pyhessian_density(
    model: nn.Module,
    criterion: Criterion,
    x: Tensor,
    y: Tensor,
    *,
    steps: int,
    probes: int,
    seed: int,
) -> DensityRun:
    """PyHessian's ``density(iter=steps, n_v=probes)`` (SLQ nodes and weights, no smoothing).
    It calls ``torch.eig``, which current torch removed: a stand-in built on
    ``torch.linalg.eigh`` (the tridiagonal is symmetric) is installed for the call only."""
    torch.manual_seed(seed)
    had_eig = hasattr(torch, "eig")
    previous = getattr(torch, "eig", None)
    torch.eig = _eig_stand_in
    try:
        started = time.perf_counter()
        with _counting_pyhessian() as counter, _pyhessian(model, criterion, x, y) as hessian:
            nodes, _ = hessian.density(iter=steps, n_v=probes)
        seconds = time.perf_counter() - started
    finally:
        if had_eig:
            torch.eig = previous
        else:
            del torch.eig
    return DensityRun(max(max(row) for row in nodes), counter[0], seconds)


def _eig_stand_in(matrix: Tensor, eigenvectors: bool = False) -> tuple[Tensor, Tensor]:
    """``torch.eig``'s old return format (``(n, 2)`` real and imaginary parts, eigenvectors as
    columns) for a symmetric matrix."""
    values, vectors = torch.linalg.eigh(matrix)
    return torch.stack([values, torch.zeros_like(values)], dim=1), vectors


def pyhessian_hvp(model: nn.Module, criterion: Criterion, x: Tensor, y: Tensor) -> Callable:
    """One PyHessian product (graph reused), as a function of nothing: for timing."""
    hessian = pyhessian_module.hessian(copy.deepcopy(model), criterion, data=(x, y), cuda=x.is_cuda)
    vector = [torch.randn_like(p) for p in hessian.params]
    return lambda: pyhessian_module.hessian_vector_product(hessian.gradsH, hessian.params, vector)


# ------------------------------------------------------------------------ hessian-eigenthings


class CountingOperator(eigenthings.CurvatureOperator):
    """hessian-eigenthings' ``HessianOperator`` on one batch, counting its products."""

    def __init__(self, model: nn.Module, criterion: Criterion, x: Tensor, y: Tensor) -> None:
        self.inner = eigenthings.HessianOperator(
            model, [(x, y)], eigenthings.supervised_loss(criterion), full_dataset=True
        )
        self.matvecs = 0

    @property
    def size(self) -> int:
        return self.inner.size

    @property
    def device(self) -> torch.device:
        return self.inner.device

    @property
    def dtype(self) -> torch.dtype:
        return self.inner.dtype

    def matvec(self, v: Tensor) -> Tensor:
        self.matvecs += 1
        return self.inner.matvec(v)


def eigenthings_lanczos_top(
    model: nn.Module,
    criterion: Criterion,
    x: Tensor,
    y: Tensor,
    *,
    k: int,
    max_iter: int | None,
    tol: float,
    seed: int,
) -> TopRun:
    """hessian-eigenthings' ``lanczos(k, max_iter, tol, which="LA")``: a fixed ``max_iter``
    Lanczos steps (default ``2k``), then the ``k`` largest Ritz values; ``tol`` only sets the
    ``converged`` flags. Full reorthogonalisation is asked for whatever ``max_iter``."""
    operator = CountingOperator(model, criterion, x, y)
    started = time.perf_counter()
    result = eigenthings.lanczos(
        operator, k=k, max_iter=max_iter, tol=tol, which="LA", seed=seed, reorthogonalize=True
    )
    seconds = time.perf_counter() - started
    values = sorted(result.eigenvalues.tolist(), reverse=True)
    return TopRun(values, operator.matvecs, operator.matvecs, seconds, bool(result.converged.all()))


def eigenthings_power_top(
    model: nn.Module,
    criterion: Criterion,
    x: Tensor,
    y: Tensor,
    *,
    k: int,
    max_iter: int,
    tol: float,
    seed: int,
) -> TopRun:
    """hessian-eigenthings' ``deflated_power_iteration(k, max_iter, tol)``: each eigenpair by
    power iteration on the deflated operator until both the relative change of the estimate
    and the relative residual are below ``tol``, or ``max_iter`` products (largest magnitude)."""
    operator = CountingOperator(model, criterion, x, y)
    started = time.perf_counter()
    result = eigenthings.deflated_power_iteration(
        operator, k=k, max_iter=max_iter, tol=tol, seed=seed
    )
    seconds = time.perf_counter() - started
    values = sorted(result.eigenvalues.tolist(), reverse=True)
    return TopRun(values, operator.matvecs, operator.matvecs, seconds, bool(result.converged.all()))


def eigenthings_density(
    model: nn.Module,
    criterion: Criterion,
    x: Tensor,
    y: Tensor,
    *,
    steps: int,
    probes: int,
    sigma: float,
    grid_points: int,
    seed: int,
) -> DensityRun:
    """hessian-eigenthings' ``spectral_density`` (SLQ with full reorthogonalisation, Gaussian
    smoothing of width ``sigma`` on ``grid_points`` points)."""
    operator = CountingOperator(model, criterion, x, y)
    started = time.perf_counter()
    result = eigenthings.spectral_density(
        operator,
        num_runs=probes,
        lanczos_steps=steps,
        num_grid_points=grid_points,
        sigma=sigma,
        seed=seed,
    )
    seconds = time.perf_counter() - started
    largest = float(torch.nan_to_num(result.raw_eigenvalues, nan=-torch.inf).max())
    return DensityRun(largest, operator.matvecs, seconds)


def eigenthings_hvp(model: nn.Module, criterion: Criterion, x: Tensor, y: Tensor) -> Callable:
    """One hessian-eigenthings product (graph rebuilt, as always), for timing."""
    operator = CountingOperator(model, criterion, x, y)
    vector = torch.randn(operator.size, device=x.device)
    return lambda: operator.matvec(vector)


def eigenthings_hutch_plus_plus(
    model: nn.Module, criterion: Criterion, x: Tensor, y: Tensor, *, matvecs: int, seed: int
) -> tuple[float, float, int]:
    """hessian-eigenthings' ``hutch_plus_plus(num_matvecs)``: estimate, standard error, HVPs."""
    operator = CountingOperator(model, criterion, x, y)
    result = eigenthings.hutch_plus_plus(operator, num_matvecs=matvecs, seed=seed)
    return result.estimate, result.stderr, operator.matvecs


# ---------------------------------------------------------------------------------- curvlinops


class CountingHessian(curvlinops.HessianLinearOperator):
    """curvlinops' ``HessianLinearOperator``, counting the vectors it multiplies."""

    matvecs = 0

    def _matmat(self, M: list[Tensor]) -> list[Tensor]:  # curvlinops' argument name
        self.matvecs += M[0].shape[-1]
        return super()._matmat(M)


def curvlinops_operator(model: nn.Module, x: Tensor, y: Tensor) -> CountingHessian:
    """curvlinops' Hessian of the mean cross-entropy on one batch (no determinism check)."""
    params = [p for p in model.parameters() if p.requires_grad]
    return CountingHessian(
        model, nn.CrossEntropyLoss(), params, [(x, y)], check_deterministic=False
    )


def curvlinops_top(
    model: nn.Module, x: Tensor, y: Tensor, *, k: int, tol: float, seed: int
) -> TopRun:
    """curvlinops' Hessian through ``to_scipy()`` and ARPACK's ``eigsh(k, which="LA", tol)``
    (implicitly restarted Lanczos; ``tol`` relative on Ritz residuals), start vector seeded."""
    started = time.perf_counter()
    operator = curvlinops_operator(model, x, y)
    start = np.random.default_rng(seed).standard_normal(operator.shape[0])
    values = eigsh(operator.to_scipy(), k=k, which="LA", tol=tol, v0=start)[0]
    seconds = time.perf_counter() - started
    return TopRun(sorted(values.tolist(), reverse=True), operator.matvecs, 0, seconds, True)


def curvlinops_hvp(model: nn.Module, x: Tensor, y: Tensor) -> Callable:
    """One curvlinops product (``jvp`` of ``jacrev``), for timing."""
    operator = curvlinops_operator(model, x, y)
    vector = torch.randn(operator.shape[1], device=x.device)
    return lambda: operator @ vector


def versions() -> dict[str, str]:
    """The installed versions of the peers."""
    from importlib.metadata import version

    names = ("PyHessian", "hessian-eigenthings", "curvlinops-for-pytorch", "scipy")
    return {name: version(name) for name in names}
