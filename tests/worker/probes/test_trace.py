"""Hutchinson and Hutch++ trace estimates against exact traces of dense float64 matrices."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from torch import Tensor

from dynascope.worker.probes.operators import DenseSymmetricOperator
from dynascope.worker.probes.trace import (
    TraceEstimate,
    hutch_plus_plus_trace,
    hutchinson_trace,
    rademacher,
)
from tests.worker.probes.matrices import with_spectrum

TRIALS = 200
COVERAGE = 0.90  # at least this fraction of ±2·SE intervals hold the exact trace


def indefinite(n: int = 100, seed: int = 0) -> Tensor:
    """A dense symmetric matrix with eigenvalues of both signs (as a Hessian away from a
    minimum), so that every off-diagonal entry adds variance."""
    generator = torch.Generator().manual_seed(seed)
    values = torch.randn(n, generator=generator, dtype=torch.float64) + 0.5
    values[:3] = torch.tensor([20.0, 10.0, 5.0])
    return with_spectrum(values, seed)


def decaying(n: int = 200, seed: int = 1) -> Tensor:
    """Positive semi-definite with eigenvalues 1/i²: the trace sits in the top few."""
    return with_spectrum(1.0 / torch.arange(1, n + 1, dtype=torch.float64).square(), seed)


@pytest.mark.parametrize(
    ("estimator", "budget"),
    [(hutchinson_trace, {"samples": 30}), (hutch_plus_plus_trace, {"matvecs": 90})],
    ids=["hutchinson", "hutch++"],
)
def test_standard_error_covers_the_exact_trace(
    estimator: Callable[..., TraceEstimate], budget: dict[str, int]
) -> None:
    matrix = indefinite()
    exact = torch.trace(matrix).item()
    covered = 0
    for trial in range(TRIALS):
        operator = DenseSymmetricOperator(matrix)
        result = estimator(operator, generator=torch.Generator().manual_seed(trial), **budget)
        assert result.matvecs == operator.matvecs == next(iter(budget.values()))
        assert result.standard_error > 0
        covered += abs(result.estimate - exact) <= 2 * result.standard_error
    assert covered / TRIALS >= COVERAGE, covered


def test_hutch_plus_plus_beats_hutchinson_on_a_decaying_spectrum() -> None:
    matrix = decaying()
    exact = torch.trace(matrix).item()
    errors: dict[str, list[float]] = {"hutchinson": [], "hutch++": []}
    for trial in range(50):
        operator = DenseSymmetricOperator(matrix)
        plain = hutchinson_trace(
            operator, samples=30, generator=torch.Generator().manual_seed(trial)
        )
        plus = hutch_plus_plus_trace(
            operator, matvecs=30, generator=torch.Generator().manual_seed(trial)
        )
        errors["hutchinson"].append((plain.estimate - exact) ** 2)
        errors["hutch++"].append((plus.estimate - exact) ** 2)
    rms = {name: math.sqrt(sum(values) / len(values)) for name, values in errors.items()}
    assert rms["hutch++"] < 0.2 * rms["hutchinson"], rms


def test_hutch_plus_plus_is_exact_when_the_sketch_spans_the_range() -> None:
    values = torch.zeros(80, dtype=torch.float64)
    values[:5] = torch.tensor([4.0, 3.0, -2.0, 1.0, 0.5])
    matrix = with_spectrum(values, seed=2)
    result = hutch_plus_plus_trace(
        DenseSymmetricOperator(matrix), matvecs=18, generator=torch.Generator().manual_seed(3)
    )
    assert abs(result.estimate - 6.5) < 1e-10
    assert result.standard_error < 1e-10


def test_hutchinson_is_exact_for_a_diagonal_matrix() -> None:
    # zᵀDz = Σ dᵢ zᵢ² = tr(D) for any sign vector: zero variance.
    matrix = torch.diag(torch.arange(1.0, 11.0, dtype=torch.float64))
    result = hutchinson_trace(
        DenseSymmetricOperator(matrix), samples=4, generator=torch.Generator().manual_seed(4)
    )
    assert result.estimate == pytest.approx(55.0, abs=1e-12)
    assert result.standard_error == pytest.approx(0.0, abs=1e-12)


def test_rademacher_vectors_and_argument_checks() -> None:
    operator = DenseSymmetricOperator(torch.eye(50, dtype=torch.float64))
    block = rademacher(operator, 7, torch.Generator().manual_seed(5))
    assert block.shape == (50, 7) and block.dtype == torch.float64
    assert set(block.unique().tolist()) == {-1.0, 1.0}
    generator = torch.Generator().manual_seed(6)
    with pytest.raises(ValueError, match="at least 2"):
        hutchinson_trace(operator, samples=1, generator=generator)
    with pytest.raises(ValueError, match="at least 6"):
        hutch_plus_plus_trace(operator, matvecs=5, generator=generator)
    assert hutch_plus_plus_trace(operator, matvecs=7, generator=generator).matvecs == 7
