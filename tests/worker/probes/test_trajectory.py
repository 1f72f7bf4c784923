"""Trajectory PCA against a dense SVD in float64, and against the closed-form PCA of a
high-dimensional random walk (Antognini & Sohl-Dickstein 2018)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from dynascope.worker.probes.trajectory import (
    TrajectoryPCA,
    random_walk_ratios,
    random_walk_reference,
    trajectory_pca,
)

EXACT = 1e-10  # float64 Gram + eigh against a float64 SVD of the centred matrix
WALK_STEPS, WALK_DIMENSIONS = 100, 40_000
WALK_RATIO = 0.04
"""Relative tolerance on the walk's first five ratios. With ``P`` Gaussian increments the Gram
matrix is ``P·CLLᵀC`` perturbed by ``E`` with entries of variance ~1/P; to first order
``δλ_k/λ_k = ŵᵀEŵ`` (``ŵ`` a unit vector), of standard deviation ``√(2/P) = 0.71%`` at
``P = 40,000``: 0.04 is 5.7 standard deviations (over seeds 0-9 the largest deviation we saw
was 1.7%). The finite-n formula and its limit ``(6/π²)/k²`` differ by under 0.3% at ``n =
100``, ``k ≤ 5``, so the limit gets 0.05."""
WALK_COSINE = 0.99
"""The k-th coordinate series against ``cos(πk(t + ½)/n)``: eigenvectors move by about
``√(1/P)·λ_k/gap``, well under 1% here (0.9997 or more over seeds 0-9 for k ≤ 5)."""


def random_walk(steps: int, dimensions: int, seed: int) -> Tensor:
    """``steps`` snapshots of a walk with i.i.d. standard Gaussian increments, float64."""
    generator = torch.Generator().manual_seed(seed)
    increments = torch.randn(steps, dimensions, generator=generator, dtype=torch.float64)
    return increments.cumsum(dim=0)


def test_matches_the_svd_of_the_centred_snapshots():
    generator = torch.Generator().manual_seed(0)
    snapshots = torch.randn(12, 50, generator=generator, dtype=torch.float64) * 3 + 1
    result = trajectory_pca(snapshots, components=5)
    centred = snapshots - snapshots.mean(dim=0)
    left, singular, right = torch.linalg.svd(centred, full_matrices=False)
    variance = singular.square()
    torch.testing.assert_close(
        result.explained_variance_ratio, variance[:5] / variance.sum(), rtol=EXACT, atol=EXACT
    )
    signs = torch.sign((result.components * right[:5]).sum(dim=1))
    assert signs.abs().min() == 1  # each component is ± the right singular vector
    torch.testing.assert_close(result.components * signs[:, None], right[:5], rtol=0, atol=EXACT)
    torch.testing.assert_close(
        result.coordinates * signs, left[:, :5] * singular[:5], rtol=0, atol=EXACT
    )
    torch.testing.assert_close(result.mean, snapshots.mean(dim=0), rtol=0, atol=EXACT)
    assert result.total_variance == pytest.approx(centred.square().sum().item() / 12, rel=EXACT)
    gram = result.components @ result.components.T
    torch.testing.assert_close(gram, torch.eye(5, dtype=torch.float64), rtol=0, atol=EXACT)


def test_coordinates_are_the_projections_on_the_components():
    snapshots = random_walk(30, 200, seed=1)
    result = trajectory_pca(snapshots, components=4)
    projections = (snapshots - result.mean) @ result.components.T
    torch.testing.assert_close(result.coordinates, projections, rtol=0, atol=EXACT)


def test_float32_snapshots_give_float64_results_close_to_float64_ones():
    snapshots = random_walk(20, 3000, seed=2)
    single = trajectory_pca(snapshots.float(), components=3)
    double = trajectory_pca(snapshots.float().double(), components=3)
    assert single.components.dtype == torch.float32 and single.mean.dtype == torch.float32
    assert single.explained_variance_ratio.dtype == torch.float64
    # the same float32 values, with the Gram matrix in float64 either way: only the
    # components' final cast to float32 differs
    torch.testing.assert_close(
        single.explained_variance_ratio, double.explained_variance_ratio, rtol=1e-12, atol=0
    )
    torch.testing.assert_close(
        single.components.double().abs(), double.components.abs(), rtol=0, atol=1e-6
    )


@pytest.fixture(scope="module")
def walk_pca() -> TrajectoryPCA:
    return trajectory_pca(random_walk(WALK_STEPS, WALK_DIMENSIONS, seed=0), components=5)


def test_random_walk_ratios_follow_the_closed_form(walk_pca):
    ratios = walk_pca.explained_variance_ratio
    torch.testing.assert_close(ratios, random_walk_ratios(WALK_STEPS, 5), rtol=WALK_RATIO, atol=0)
    torch.testing.assert_close(ratios, random_walk_reference(5), rtol=0.05, atol=0)


def test_random_walk_projections_are_cosines_with_k_half_periods(walk_pca):
    t = torch.arange(WALK_STEPS, dtype=torch.float64)
    for k in range(1, 6):
        cosine = torch.cos(math.pi * k * (t + 0.5) / WALK_STEPS)
        pair = torch.stack([cosine, walk_pca.coordinates[:, k - 1]])
        assert torch.corrcoef(pair)[0, 1].abs() > WALK_COSINE


def test_white_noise_is_far_from_the_random_walk_reference():
    """The walk test can fail: i.i.d. points (no walk) have flat ratios, about 1/(n − 1)."""
    generator = torch.Generator().manual_seed(0)
    noise = torch.randn(WALK_STEPS, 2000, generator=generator, dtype=torch.float64)
    ratios = trajectory_pca(noise, components=5).explained_variance_ratio
    assert (ratios / random_walk_reference(5) - 1).abs().max() > 0.5


def test_reference_and_finite_walk_ratios():
    reference = random_walk_reference(1000)
    assert reference[0].item() == pytest.approx(6 / math.pi**2)
    assert reference.sum().item() == pytest.approx(1.0, abs=1e-3)  # tail Σ_{k>1000} ≈ 6e-4
    exact = random_walk_ratios(50)
    assert exact.shape == (49,) and exact.sum().item() == pytest.approx(1.0, rel=1e-12)
    # against the eigenvalues of the centred walk's covariance C L Lᵀ C
    n = 50
    walk = torch.tril(torch.ones(n, n, dtype=torch.float64))
    centring = torch.eye(n, dtype=torch.float64) - 1 / n
    values = torch.linalg.eigvalsh(centring @ walk @ walk.T @ centring).flip(0)[: n - 1]
    torch.testing.assert_close(exact, values / values.sum(), rtol=1e-10, atol=0)


def test_components_are_limited_by_the_number_and_rank_of_snapshots():
    assert trajectory_pca(random_walk(4, 100, seed=3), components=10).components.shape == (3, 100)
    line = torch.linspace(0, 1, 6, dtype=torch.float64)[:, None] * torch.ones(1, 20)
    result = trajectory_pca(line, components=3)
    assert result.components.shape == (1, 20)
    assert result.explained_variance_ratio.tolist() == pytest.approx([1.0])


def test_degenerate_trajectories_are_refused():
    with pytest.raises(ValueError, match="at least 2 snapshots"):
        trajectory_pca(torch.ones(1, 10))
    with pytest.raises(ValueError, match="no variance"):
        trajectory_pca(torch.ones(5, 10))
    with pytest.raises(ValueError, match="NaN"):
        trajectory_pca(torch.tensor([[0.0, 1.0], [float("nan"), 0.0]]))
