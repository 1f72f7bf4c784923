"""Lanczos eigenpairs against ``torch.linalg.eigh`` of dense float64 matrices."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dynascope.worker.probes.curvature import HessianOperator
from dynascope.worker.probes.lanczos import (
    LANCZOS_TOLERANCE,
    LanczosResult,
    lanczos_top_eigenpairs,
    lanczos_tridiagonal,
    lanczos_tridiagonals,
)
from dynascope.worker.probes.operators import DenseSymmetricOperator
from tests.worker.probes.matrices import with_spectrum


def hessian_like(n: int, seed: int) -> Tensor:
    """Five outliers above and five below a bulk in [-0.5, 4.5], as in Hessians (a bulk with
    a few large and a few negative outliers)."""
    generator = torch.Generator().manual_seed(seed)
    bulk = torch.rand(n - 10, generator=generator, dtype=torch.float64) * 5 - 0.5
    outliers = torch.tensor([10.0, 8, 6.5, 5.5, 5.0, -1.0, -1.2, -1.5, -2.0, -3.0])
    return with_spectrum(torch.cat([outliers, bulk]), seed)


def expected(matrix: Tensor, k: int, which: str) -> Tensor:
    values = torch.linalg.eigvalsh(matrix)
    if which == "largest":
        return values[-k:]
    if which == "smallest":
        return values[:k]
    return torch.cat([values[:k], values[-k:]])


def assert_eigenpairs(
    matrix: Tensor,
    result: LanczosResult,
    exact: Tensor,
    tolerance: float = LANCZOS_TOLERANCE,
    criterion: str = "eigenvalue",
) -> None:
    """Eigenvalues within ``tolerance`` relative and within their reported error bounds;
    eigenvectors with the true residuals reported (within ``tolerance`` for the residual
    criterion)."""
    values, vectors = result.eigenvalues, result.eigenvectors
    assert result.converged
    assert ((values - exact).abs() / exact.abs()).max().item() < tolerance
    assert ((values - exact).abs() <= result.errors + 1e-12 * exact.abs().max()).all()
    assert (result.errors <= result.residuals).all()
    # Eigenvectors, up to sign and within degenerate subspaces: orthonormal, and their true
    # residuals are what the iteration reported, and within the tolerance.
    k = values.numel()
    assert (vectors.T @ vectors - torch.eye(k, dtype=torch.float64)).abs().max() < 1e-10
    residuals = torch.linalg.vector_norm(matrix @ vectors - vectors * values, dim=0)
    scale = torch.linalg.matrix_norm(matrix, ord=2)
    assert (residuals - result.residuals).abs().max() < 1e-10 * scale
    if criterion == "residual":
        assert (residuals <= tolerance * values.abs() + 1e-12 * scale).all()


@pytest.mark.parametrize("k", [1, 5])
def test_eigenvalue_criterion_needs_fewer_products_for_the_same_accuracy(k: int) -> None:
    """Kato-Temple: an eigenvalue's error is quadratic in its residual, so stopping on the
    eigenvalue's error bound takes fewer products than stopping on the residual, for
    eigenvalues within the same tolerance (and within their reported bounds)."""
    matrix = hessian_like(300, seed=20)
    exact = expected(matrix, k, "largest")
    runs = {
        criterion: lanczos_top_eigenpairs(
            DenseSymmetricOperator(matrix),
            k,
            tolerance=1e-8,
            criterion=criterion,
            generator=torch.Generator().manual_seed(21),
        )  # fmt: skip
        for criterion in ("eigenvalue", "residual")
    }
    for criterion, result in runs.items():
        assert_eigenpairs(matrix, result, exact, 1e-8, criterion)
    assert runs["eigenvalue"].matvecs < runs["residual"].matvecs
    # the residual criterion's errors are its residuals; the eigenvalue one's are sharper
    assert torch.equal(runs["residual"].errors, runs["residual"].residuals)
    assert (runs["eigenvalue"].residuals > 1e-8 * exact.abs()).any()


@pytest.mark.parametrize("which", ["largest", "smallest", "both"])
@pytest.mark.parametrize("k", [1, 3, 5])
def test_extreme_eigenpairs_match_dense_eigh(k: int, which: str) -> None:
    matrix = hessian_like(200, seed=k)
    operator = DenseSymmetricOperator(matrix)
    result = lanczos_top_eigenpairs(
        operator, k, which=which, generator=torch.Generator().manual_seed(0)
    )
    assert_eigenpairs(matrix, result, expected(matrix, k, which))
    assert result.matvecs == result.iterations == operator.matvecs
    assert result.eigenvectors.shape == (200, result.eigenvalues.numel())
    assert torch.equal(result.eigenvalues, result.eigenvalues.sort().values)


def small_classifier_hessian() -> tuple[HessianOperator, Tensor]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()
    generator = torch.Generator().manual_seed(1)
    inputs = torch.randn(20, 4, generator=generator, dtype=torch.float64)
    targets = torch.randint(0, 3, (20,), generator=generator)
    operator = HessianOperator(model, F.cross_entropy, inputs, targets, chunk_size=20)
    return operator, operator.to_dense()


@pytest.mark.parametrize(("k", "which"), [(1, "largest"), (3, "largest"), (1, "smallest")])
def test_hessian_eigenvalues_of_a_small_network(k: int, which: str) -> None:
    operator, dense = small_classifier_hessian()
    result = lanczos_top_eigenpairs(operator, k, which=which)
    assert_eigenpairs(dense, result, expected(dense, k, which))
    if which == "smallest":
        assert result.eigenvalues[0] < 0  # a saddle direction, not the softmax null direction


@pytest.mark.parametrize("tolerance", [1e-4, 1e-6])
def test_warm_start_from_a_nearby_matrix_needs_far_fewer_products(tolerance: float) -> None:
    matrix = hessian_like(400, seed=10)
    generator = torch.Generator().manual_seed(11)
    noise = torch.randn(400, 400, generator=generator, dtype=torch.float64)
    perturbed = matrix + 1e-4 * (noise + noise.T) / (2 * 400**0.5)
    options = {"tolerance": tolerance}
    previous = lanczos_top_eigenpairs(DenseSymmetricOperator(matrix), 5, **options)
    cold = lanczos_top_eigenpairs(DenseSymmetricOperator(perturbed), 5, **options)
    warm = lanczos_top_eigenpairs(
        DenseSymmetricOperator(perturbed), 5, start=previous.eigenvectors, **options
    )
    exact = expected(perturbed, 5, "largest")
    assert_eigenpairs(perturbed, cold, exact, tolerance)
    assert_eigenpairs(perturbed, warm, exact, tolerance)
    assert warm.matvecs <= 0.65 * cold.matvecs, (warm.matvecs, cold.matvecs)
    # A single previous vector is a valid start too.
    single = lanczos_top_eigenpairs(
        DenseSymmetricOperator(perturbed), 1, start=previous.eigenvectors[:, -1], **options
    )
    assert single.matvecs < cold.matvecs


def test_repeated_eigenvalues_are_found_with_their_multiplicity() -> None:
    # Three distinct eigenvalues: the Krylov space of one vector is invariant after 3 steps
    # and holds one direction of each; restarts find the other copies.
    matrix = with_spectrum([3.0] * 10 + [2.0] * 10 + [1.0] * 30, seed=12)
    for which in ("largest", "smallest", "both"):
        result = lanczos_top_eigenpairs(DenseSymmetricOperator(matrix), 5, which=which)
        assert_eigenpairs(matrix, result, expected(matrix, 5, which))


def test_a_warm_start_keeps_the_copies_of_a_repeated_eigenvalue_it_was_given() -> None:
    # A linear model with two outputs has every Hessian eigenvalue twice (Σ ⊗ I₂). With many
    # distinct eigenvalues the Krylov space of one vector converges long before it could
    # become invariant, so no restart shows the second copy. Warm-started from both copies
    # (the previous probe's eigenvectors, plus the default noise), the start holds a single
    # direction of each eigenspace; the other lies outside the space built and is looked at
    # before stopping. Before that, k=2 stopped after 8 products at [5, 3], "converged".
    values = torch.cat([torch.tensor([5.0, 3.0, 2.0]), torch.linspace(0.0, 1.0, 297)])
    matrix = torch.kron(with_spectrum(values, seed=14), torch.eye(2, dtype=torch.float64))
    _, vectors = torch.linalg.eigh(matrix)
    for k in (2, 4):
        warm = lanczos_top_eigenpairs(DenseSymmetricOperator(matrix), k, start=vectors[:, -k:])
        exact = expected(matrix, k, "largest")
        assert warm.converged
        assert ((warm.eigenvalues - exact).abs() / exact).max().item() < LANCZOS_TOLERANCE
        found = warm.eigenvectors
        assert (found.T @ found - torch.eye(k, dtype=torch.float64)).abs().max() < 1e-10
        # The coupling dropped to look elsewhere was not small: the reported residuals are
        # then bounds (the triangle inequality), no longer equalities.
        residuals = torch.linalg.vector_norm(matrix @ found - found * warm.eigenvalues, dim=0)
        assert (residuals <= warm.residuals + 1e-12).all()


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_a_cold_start_looks_past_what_its_krylov_space_could_see(sign: float) -> None:
    # Σ ⊗ I₂ from one random vector: its space sees one copy of each eigenvalue and converges
    # long before it could break down; without looking it reports [5, 5, 3, 2] (the second 5
    # by rounding alone), "converged". The look from a random vector orthogonal to the pairs
    # found finds the other 3, and then nothing more in range. The smallest of −Σ ⊗ I₂ alike.
    values = torch.cat([torch.tensor([5.0, 3.0, 2.0]), torch.linspace(0.5, 1.0, 294)])
    values = torch.cat([values, torch.tensor([-1.2, -1.5, -2.0])])
    matrix = sign * torch.kron(with_spectrum(values, seed=18), torch.eye(2, dtype=torch.float64))
    which = "largest" if sign > 0 else "smallest"
    exact = expected(matrix, 4, which)
    operator = DenseSymmetricOperator(matrix)
    blind = lanczos_top_eigenpairs(operator, 4, which=which, look_past=False)
    assert blind.converged and (blind.eigenvalues - exact).abs().max() > 0.5
    result = lanczos_top_eigenpairs(operator, 4, which=which)
    assert result.converged
    assert ((result.eigenvalues - exact).abs() <= result.errors + 1e-12).all()
    assert ((result.eigenvalues - exact).abs() <= LANCZOS_TOLERANCE * exact.abs()).all()
    found = result.eigenvectors
    assert (found.T @ found - torch.eye(4, dtype=torch.float64)).abs().max() < 1e-10
    residuals = torch.linalg.vector_norm(matrix @ found - found * result.eigenvalues, dim=0)
    assert (residuals <= result.residuals + 1e-12).all()
    assert result.matvecs > blind.matvecs


def test_low_rank_operator_and_zero_operator() -> None:
    # A null space of dimension 42 under 8 distinct positive eigenvalues.
    matrix = with_spectrum([0.0] * 42 + [float(v) for v in range(1, 9)], seed=13)
    top = lanczos_top_eigenpairs(DenseSymmetricOperator(matrix), 5)
    assert torch.allclose(top.eigenvalues, torch.arange(4.0, 9.0, dtype=torch.float64))
    bottom = lanczos_top_eigenpairs(DenseSymmetricOperator(matrix), 3, which="smallest")
    assert bottom.converged and bottom.eigenvalues.abs().max() < 1e-12
    zero = DenseSymmetricOperator(torch.zeros(30, 30, dtype=torch.float64))
    result = lanczos_top_eigenpairs(zero, 3, which="both")
    assert result.converged and torch.equal(result.eigenvalues, torch.zeros(6, dtype=torch.float64))
    gram = result.eigenvectors.T @ result.eigenvectors
    assert (gram - torch.eye(6, dtype=torch.float64)).abs().max() < 1e-12


def huge_spread(cluster: float) -> Tensor:
    """Twenty eigenvalues in [-cluster, -cluster/2] (a diverging network's Hessian: a few
    enormous negative curvatures) beside a bulk in [-1, 2]: the top eigenvalue, 2, is far
    below ``‖A‖ = cluster``."""
    values = torch.cat([-cluster * torch.linspace(0.5, 1.0, 20), torch.linspace(-1.0, 2.0, 80)])
    return with_spectrum(values, seed=31)


@pytest.mark.parametrize("cluster", [1e8, 1e12])
def test_a_rounding_level_residual_is_not_convergence(cluster: float) -> None:
    """In float32 the products' rounding, about ε‖A‖ ≈ 1e-7·cluster, swamps the top eigenvalue:
    its residual reaches the rounding level after a few steps and the run stops there, but its
    error bound is far above tolerance·|θ| (the Ritz value is not even near 2), so the result
    says at_rounding_level, not converged."""
    operator = DenseSymmetricOperator(huge_spread(cluster).float())
    generator = torch.Generator().manual_seed(0)
    result = lanczos_top_eigenpairs(operator, 1, tolerance=1e-4, generator=generator)
    assert result.at_rounding_level and not result.converged
    assert result.iterations < 20  # stopped at the rounding level, not the iteration limit
    assert (result.errors > 1e-4 * result.eigenvalues.abs()).all()
    assert (result.eigenvalues - 2.0).abs().max() > 0.5


def test_float32_spread_within_reach_still_converges() -> None:
    """The same shape of spectrum with a spread float32 can resolve: converged, and not at the
    rounding level."""
    matrix = huge_spread(1e2)
    operator = DenseSymmetricOperator(matrix.float())
    result = lanczos_top_eigenpairs(operator, 1, tolerance=1e-4)
    assert result.converged and not result.at_rounding_level
    assert result.eigenvalues.item() == pytest.approx(2.0, rel=1e-4)
    assert (result.errors <= 1e-4 * result.eigenvalues.abs()).all()


def test_zero_eigenvalues_to_double_precision_are_converged_at_rounding_level() -> None:
    """A zero eigenvalue has no relative tolerance: within ε₆₄‖A‖ of zero it is converged, and
    at_rounding_level says that its error bound is absolute. An ordinary run is neither."""
    matrix = with_spectrum([0.0] * 42 + [float(v) for v in range(1, 9)], seed=13)
    bottom = lanczos_top_eigenpairs(DenseSymmetricOperator(matrix), 3, which="smallest")
    assert bottom.converged and bottom.at_rounding_level
    assert (bottom.errors > LANCZOS_TOLERANCE * bottom.eigenvalues.abs()).all()
    top = lanczos_top_eigenpairs(DenseSymmetricOperator(matrix), 5)
    assert top.converged and not top.at_rounding_level


def test_iteration_limit_returns_unconverged_pairs() -> None:
    matrix = hessian_like(200, seed=14)
    result = lanczos_top_eigenpairs(
        DenseSymmetricOperator(matrix), 5, which="smallest", max_iterations=8
    )
    assert not result.converged and result.iterations == 8 and result.matvecs == 8
    assert not result.at_rounding_level
    with pytest.raises(ValueError, match="fewer than"):
        lanczos_top_eigenpairs(DenseSymmetricOperator(matrix), 5, max_iterations=4)
    with pytest.raises(ValueError, match="k must be"):
        lanczos_top_eigenpairs(DenseSymmetricOperator(matrix), 0)


def test_small_matrix_is_solved_in_n_steps() -> None:
    matrix = with_spectrum([-2.0, 0.5, 1.0, 4.0], seed=15)
    result = lanczos_top_eigenpairs(DenseSymmetricOperator(matrix), 4)
    assert_eigenpairs(matrix, result, torch.linalg.eigvalsh(matrix))
    assert result.iterations <= 4


def test_tridiagonal_is_the_projection_on_an_orthonormal_krylov_basis() -> None:
    matrix = hessian_like(100, seed=16)
    start = torch.randn(100, generator=torch.Generator().manual_seed(17), dtype=torch.float64)
    run = lanczos_tridiagonal(DenseSymmetricOperator(matrix), start, steps=60, keep_basis=True)
    basis = run.basis
    assert basis is not None and basis.shape == (60, 100)
    assert (basis @ basis.T - torch.eye(60, dtype=torch.float64)).abs().max() < 1e-12
    assert (basis @ matrix @ basis.T - run.matrix()).abs().max() < 1e-10
    assert torch.allclose(basis[0], start / start.norm())


def test_processes_side_by_side_are_the_processes_alone() -> None:
    """Starts whose Krylov spaces become invariant after 2, 4 and 6 steps (they touch that
    many distinct eigenvalues of a diagonal matrix) and one that runs all 10 steps: run side by
    side, each stops on its own and gives what it gives alone."""
    values = torch.arange(1.0, 41.0, dtype=torch.float64)
    operator = DenseSymmetricOperator(torch.diag(values))
    generator = torch.Generator().manual_seed(18)
    starts = []
    for touched in (2, 4, 6, 40):
        start = torch.zeros(40, dtype=torch.float64)
        start[:touched] = 1.0 + torch.rand(touched, generator=generator, dtype=torch.float64)
        starts.append(start)
    together = lanczos_tridiagonals(operator, starts, steps=10, keep_basis=True)
    assert operator.matvecs == 2 + 4 + 6 + 10
    for start, run, length in zip(starts, together, (2, 4, 6, 10), strict=True):
        alone = lanczos_tridiagonal(operator, start, steps=10, keep_basis=True)
        assert run.alphas.shape == alone.alphas.shape == (length,)
        assert (run.alphas - alone.alphas).abs().max() < 1e-12
        assert (run.betas - alone.betas).abs().max() < 1e-12
        assert run.basis is not None and alone.basis is not None
        assert (run.basis - alone.basis).abs().max() < 1e-12
        assert (run.residual == 0.0) == (length < 10)
    with pytest.raises(ValueError, match="shape"):
        lanczos_tridiagonals(operator, [torch.ones(3, dtype=torch.float64)], steps=2)


def test_a_ritz_gap_is_not_trusted_while_the_residual_is_large() -> None:
    """Twenty eigenvalues near −10⁸ beside a bulk in [−1, 2], float64: early on, the top Ritz
    value sits in the unresolved bulk with a residual of order 1 and a Ritz gap of order 10⁷,
    which would make a Kato–Temple 'bound' of 10⁻⁷; the run must not stop there, but go on
    to the true top eigenvalue, 2."""
    operator = DenseSymmetricOperator(huge_spread(1e8))
    generator = torch.Generator().manual_seed(0)
    result = lanczos_top_eigenpairs(operator, 1, tolerance=1e-6, generator=generator)
    assert result.converged
    assert result.eigenvalues[-1].item() == pytest.approx(2.0, rel=1e-6)
