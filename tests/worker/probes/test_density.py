"""Stochastic Lanczos quadrature against the exact spectrum of dense float64 matrices."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dynascope.worker.probes.curvature import HessianOperator, LinearizedHessianOperator
from dynascope.worker.probes.density import (
    SLQNodes,
    density_grid,
    gaussian_density,
    slq_nodes,
)
from dynascope.worker.probes.operators import DenseSymmetricOperator
from tests.worker.probes.matrices import with_spectrum

# torch scripts its forward-AD decompositions on first use (the linearized Hessian) and warns
# that scripting is deprecated
pytestmark = pytest.mark.filterwarnings(
    "ignore:`torch.jit.script` is deprecated:DeprecationWarning"
)

MASS = 1e-3  # the density integrates to 1 on the grid within this
SIGMAS = 4.0  # standard errors allowed between a moment estimate and the exact moment


def hessian_like(n: int = 150, seed: int = 0) -> Tensor:
    """A bulk near 0 and a few outliers, as the Hessian spectra of Ghorbani et al. 2019."""
    generator = torch.Generator().manual_seed(seed)
    bulk = 0.3 * torch.randn(n - 4, generator=generator, dtype=torch.float64)
    return with_spectrum(torch.cat([torch.tensor([12.0, 7.0, 4.0, -1.5]), bulk]), seed)


def nodes_of(
    matrix: Tensor,
    *,
    steps: int,
    probes: int,
    seed: int = 1,
    distribution: str = "rademacher",
    lockstep: int | None = None,
) -> SLQNodes:
    operator = DenseSymmetricOperator(matrix)
    nodes = slq_nodes(
        operator,
        lanczos_steps=steps,
        probes=probes,
        generator=torch.Generator().manual_seed(seed),
        distribution=distribution,  # type: ignore[arg-type]
        lockstep=lockstep,
    )
    assert nodes.matvecs == operator.matvecs
    return nodes


def trapezoid(values: Tensor, grid: Tensor) -> float:
    return torch.trapezoid(values, grid).item()


@pytest.mark.parametrize("sigma", [0.05, 0.3])
def test_density_integrates_to_one_on_the_suggested_grid(sigma: float) -> None:
    nodes = nodes_of(hessian_like(), steps=40, probes=5)
    margin = 5 * sigma
    spread = nodes.values.max().item() - nodes.values.min().item() + 2 * margin
    grid = density_grid(nodes, points=math.ceil(2 * spread / sigma) + 1, margin=margin)
    density = gaussian_density(nodes, grid, sigma)
    assert density.shape == grid.shape and (density >= 0).all()
    assert abs(trapezoid(density, grid) - 1) < MASS
    assert torch.allclose(nodes.weights.sum(dim=1), torch.ones(5, dtype=torch.float64))


def test_moments_match_the_exact_spectrum() -> None:
    """First and second moments: tr(A)/n and ‖A‖_F²/n, within SIGMAS standard errors of a
    Rademacher quadratic form (the only error left once ``2m - 1 ≥ 2``)."""
    matrix = hessian_like()
    n, probes = matrix.shape[0], 40
    nodes = nodes_of(matrix, steps=20, probes=probes)
    square = matrix @ matrix
    for order, power in ((1, matrix), (2, square)):
        exact = torch.trace(power).item() / n
        variance = 2 * (power.square().sum() - power.diagonal().square().sum()).item()
        standard_error = math.sqrt(variance / probes) / n
        assert abs(nodes.moment(order) - exact) < SIGMAS * standard_error, order
    # The same moments from the density on a fine grid (σ² adds to the second moment).
    sigma = 0.05
    grid = density_grid(nodes, points=4001, margin=6 * sigma)
    density = gaussian_density(nodes, grid, sigma)
    assert abs(trapezoid(grid * density, grid) - nodes.moment(1)) < 1e-6
    second = trapezoid(grid.square() * density, grid)
    assert abs(second - nodes.moment(2) - sigma**2) < 1e-6


def test_each_probe_reproduces_its_quadratic_forms_exactly() -> None:
    """Gauss quadrature with m nodes is exact for moments up to 2m - 1: Σ τ θ^j = vᵀA^j v/‖v‖²
    for one probe, checked with the same generator drawing the same Rademacher vector."""
    matrix = hessian_like(60, seed=2)
    nodes = nodes_of(matrix, steps=6, probes=1, seed=3)
    generator = torch.Generator().manual_seed(3)
    signs = torch.randint(0, 2, (60, 1), generator=generator, dtype=torch.int8)
    vector = (2 * signs - 1).double()[:, 0] / math.sqrt(60)
    power = vector
    for order in range(1, 12):
        power = matrix @ power
        exact = torch.dot(vector, power).item()
        assert abs(nodes.moment(order) - exact) < 1e-9 * max(1.0, abs(exact)), order


def test_exact_spectrum_when_the_krylov_space_is_invariant() -> None:
    # Three distinct eigenvalues: every probe's Krylov space is invariant after 3 steps, the
    # quadrature has 3 nodes (the rest padded with zero weight), at the exact eigenvalues.
    values = torch.tensor([2.0] * 10 + [-1.0] * 20 + [0.5] * 30, dtype=torch.float64)
    nodes = nodes_of(with_spectrum(values, seed=4), steps=10, probes=3, distribution="gaussian")
    assert nodes.matvecs == 9
    kept = nodes.values[nodes.weights > 1e-12].reshape(3, 3)
    expected = torch.tensor([-1.0, 0.5, 2.0], dtype=torch.float64).expand(3, 3)
    assert (kept - expected).abs().max() < 1e-10
    grid = density_grid(nodes, points=3, margin=0.0)
    assert torch.allclose(grid, torch.tensor([-1.0, 0.5, 2.0], dtype=torch.float64))


@pytest.mark.parametrize("distribution", ["rademacher", "gaussian"])
def test_probes_in_lockstep_give_the_nodes_of_probes_one_at_a_time(distribution: str) -> None:
    """The same vectors are drawn and the same processes run, whether their products are taken
    as blocks (all probes, or groups of 2 and a last one) or one by one; the dense operator's
    block product rounds differently from its products with vectors, nothing more."""
    matrix = hessian_like(80, seed=5)
    runs = [
        nodes_of(matrix, steps=25, probes=5, distribution=distribution, lockstep=lockstep)
        for lockstep in (1, 2, 5)
    ]
    for run in runs[1:]:
        assert run.matvecs == runs[0].matvecs == 125
        assert (run.values - runs[0].values).abs().max() < 1e-10
        assert (run.weights - runs[0].weights).abs().max() < 1e-10


def test_lockstep_slq_on_a_network_equals_sequential_slq() -> None:
    """Float64, on a small tanh network: SLQ with the linearized Hessian's native block
    products (vmap, all probes in lockstep, the default for that operator) against SLQ with the
    double-backward Hessian, one probe at a time."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3)).double().eval()
    generator = torch.Generator().manual_seed(1)
    inputs = torch.randn(30, 5, generator=generator, dtype=torch.float64)
    targets = torch.randint(0, 3, (30,), generator=generator)
    options = {"lanczos_steps": 12, "probes": 4}
    batched = LinearizedHessianOperator(
        model, F.cross_entropy, inputs, targets, chunk_size=30, block_products=True
    )
    sequential = HessianOperator(model, F.cross_entropy, inputs, targets, chunk_size=30)
    assert batched.block_products and not sequential.block_products
    lockstep = slq_nodes(batched, generator=torch.Generator().manual_seed(2), **options)
    alone = slq_nodes(sequential, generator=torch.Generator().manual_seed(2), **options)
    assert lockstep.matvecs == alone.matvecs == 48
    scale = alone.values.abs().max()
    assert (lockstep.values - alone.values).abs().max() < 1e-10 * scale
    assert (lockstep.weights - alone.weights).abs().max() < 1e-10


def test_argument_checks() -> None:
    operator = DenseSymmetricOperator(torch.eye(5, dtype=torch.float64))
    generator = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="lanczos_steps"):
        slq_nodes(operator, lanczos_steps=0, probes=1, generator=generator)
    with pytest.raises(ValueError, match="lockstep"):
        slq_nodes(operator, lanczos_steps=2, probes=1, generator=generator, lockstep=0)
    with pytest.raises(ValueError, match="distribution"):
        slq_nodes(
            operator,
            lanczos_steps=2,
            probes=1,
            generator=generator,
            distribution="x",  # type: ignore[arg-type]
        )
    nodes = slq_nodes(operator, lanczos_steps=2, probes=1, generator=generator)
    with pytest.raises(ValueError, match="sigma"):
        gaussian_density(nodes, torch.zeros(3), 0.0)
    with pytest.raises(ValueError, match="points"):
        density_grid(nodes, points=1, margin=1.0)
