"""Loss landscapes and interpolation against closed forms (a convex loss, a double well, a
trajectory on a plane), and filter-normalised directions, in float64."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from dynascope.worker.probes.evaluation import evaluate
from dynascope.worker.probes.landscape import (
    PCA_MARGIN,
    barrier_height,
    filter_normalized_direction,
    interpolate,
    interpolation_line,
    pca_plane,
    random_line,
    random_plane,
)
from dynascope.worker.probes.params import detached_parameters
from dynascope.worker.probes.trajectory import trajectory_pca
from tests.worker.probes.small_models import (
    EXACT,
    cross_entropy,
    gaussian,
    half_squared_error,
    mlp,
)

# ---------------------------------------------------------------- (a) filter normalisation


def test_filter_normalised_directions_have_the_weights_filter_norms():
    torch.manual_seed(9)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(16, 7), nn.LayerNorm(7)
    ).double()
    embedding = nn.Embedding(11, 5).double()
    params = detached_parameters(model) | {
        f"embedding.{n}": p for n, p in detached_parameters(embedding).items()
    }
    direction = filter_normalized_direction(params, generator=torch.Generator().manual_seed(0))
    assert direction.keys() == params.keys()
    for name, tensor in params.items():
        if tensor.ndim < 2:  # biases, BatchNorm and LayerNorm scale and shift
            assert torch.equal(direction[name], torch.zeros_like(tensor)), name
            continue
        own = torch.linalg.vector_norm(direction[name].flatten(1), dim=1)
        reference = torch.linalg.vector_norm(tensor.flatten(1), dim=1)
        torch.testing.assert_close(own, reference, rtol=EXACT, atol=0)
        assert not torch.allclose(direction[name], tensor)  # random, not the weights
    again = filter_normalized_direction(params, generator=torch.Generator().manual_seed(0))
    assert all(torch.equal(again[n], direction[n]) for n in params)


def test_a_filter_of_zero_weights_gets_a_zero_direction():
    weight = torch.randn(3, 4)
    weight[1] = 0
    direction = filter_normalized_direction(
        {"w": weight}, generator=torch.Generator().manual_seed(0)
    )["w"]
    assert torch.equal(direction[1], torch.zeros(4)) and direction[0].norm() > 0


# ------------------------------------------------------------------- (b) interpolation


def test_interpolation_ends_reproduce_the_plain_losses_exactly():
    model, inputs, targets = mlp()
    model.float()
    inputs = inputs.float()
    theta_a = detached_parameters(model)
    theta_b = {n: t + 0.3 * torch.randn_like(t) for n, t in theta_a.items()}
    result = interpolate(
        model, cross_entropy, theta_a, theta_b, (inputs, targets), (inputs[:5], targets[:5]),
        task="classification", points=5,
    )  # fmt: skip
    with torch.no_grad():
        plain_a = cross_entropy(model(inputs), targets).item()  # the model is at θ_A
    assert result.train_loss[0].item() == plain_a
    for theta, index in ((theta_a, 0), (theta_b, -1)):
        train = evaluate(model, cross_entropy, inputs, targets, task="classification", params=theta)
        test = evaluate(
            model, cross_entropy, inputs[:5], targets[:5], task="classification", params=theta
        )
        assert result.train_loss[index].item() == train.loss
        assert result.test_loss is not None and result.test_loss[index].item() == test.loss
        assert result.train_accuracy is not None
        assert result.train_accuracy[index].item() == train.accuracy
    assert result.alphas.tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert result.evaluations == 10 and result.seconds > 0


def test_barrier_of_a_convex_loss_is_zero():
    torch.manual_seed(14)
    model = nn.Sequential(nn.Linear(4, 2)).double().eval()
    generator = torch.Generator().manual_seed(15)
    batch = (
        torch.randn(8, 4, generator=generator, dtype=torch.float64),
        torch.randn(8, 2, generator=generator, dtype=torch.float64),
    )
    theta = detached_parameters(model)
    same = interpolate(model, half_squared_error, theta, theta, batch, task="regression", points=7)
    assert abs(same.train_barrier) <= EXACT
    assert same.train_loss.max() - same.train_loss.min() <= EXACT
    other = gaussian(theta, 16)
    apart = interpolate(
        model, half_squared_error, theta, other, batch, batch, task="regression", points=9
    )
    assert apart.train_barrier == 0.0 and apart.test_barrier == 0.0  # the ends, exactly
    assert apart.train_accuracy is None


class Scalar(nn.Module):
    """One parameter ``w``; each output is ``w``."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros((), dtype=torch.float64))

    def forward(self, x: Tensor) -> Tensor:
        return self.w.expand(x.shape[0], 1)


def double_well(outputs: Tensor, targets: Tensor) -> Tensor:
    """``(w² − 1)²``: minima at ±1, a barrier of height 1 at 0."""
    return (outputs.square() - 1).square().mean()


def test_barrier_of_a_double_well_is_its_height():
    model = Scalar().eval()
    batch = (torch.zeros(2, 1), torch.zeros(2, 1))
    minus = {"w": torch.tensor(-1.0, dtype=torch.float64)}
    plus = {"w": torch.tensor(1.0, dtype=torch.float64)}
    result = interpolate(model, double_well, minus, plus, batch, task="regression", points=11)
    assert result.train_barrier == pytest.approx(1.0, abs=EXACT)
    # at a = 0.2: w = −0.6, L = (0.36 − 1)² = 0.4096 above a chord at 0
    assert result.train_loss[2].item() == pytest.approx(0.4096, abs=EXACT)
    skewed = {"w": torch.tensor(2.0, dtype=torch.float64)}  # L = 9 at the far end
    alphas = torch.linspace(0, 1, 31, dtype=torch.float64)
    w = -1 + 3 * alphas
    losses = (w.square() - 1).square()
    expected = (losses - 9 * alphas).max().item()
    result = interpolate(model, double_well, minus, skewed, batch, task="regression", points=31)
    assert result.train_barrier == pytest.approx(expected, abs=EXACT)
    assert barrier_height(alphas, losses) == pytest.approx(expected, abs=EXACT)


def test_interpolation_line_contains_both_ends_exactly():
    model, inputs, targets = mlp()
    start = detached_parameters(model)
    end = gaussian(start, 17)
    line = interpolation_line(
        model, cross_entropy, start, end, (inputs, targets), task="classification", grid=21
    )
    (axis,) = line.axes
    assert len(axis) == 21 and axis[0] == -0.5 and axis[-1] == 1.5
    assert (axis == 0).sum() == 1 and (axis == 1).sum() == 1
    for anchor, params in ((0.0, start), (1.0, end)):
        plain = evaluate(
            model, cross_entropy, inputs, targets, task="classification", params=params
        )
        assert line.train_loss[axis == anchor].item() == pytest.approx(plain.loss, rel=EXACT)
    odd = interpolation_line(
        model, cross_entropy, start, end, (inputs, targets), task="classification", grid=4
    )
    assert {0.0, 1.0} <= set(odd.axes[0].tolist()) and odd.train_loss.shape == (6,)


# --------------------------------------------------------------------- landscapes' shapes


def test_random_plane_and_line_shapes_and_centre():
    model, inputs, targets = mlp()
    train, test = (inputs, targets), (inputs[:4], targets[:4])
    plane = random_plane(
        model, cross_entropy, train, test, generator=torch.Generator().manual_seed(0),
        task="classification", grid=5, span=0.5,
    )  # fmt: skip
    assert plane.kind == "random" and [len(a) for a in plane.axes] == [5, 5]
    assert plane.axes[0][0] == -0.5 and plane.axes[0][-1] == 0.5
    for grid in (plane.train_loss, plane.train_accuracy, plane.test_loss, plane.test_accuracy):
        assert grid is not None and grid.shape == (5, 5) and grid.dtype == torch.float64
    at_centre = evaluate(model, cross_entropy, inputs, targets, task="classification")
    assert plane.train_loss[2, 2].item() == pytest.approx(at_centre.loss, rel=EXACT)
    assert plane.evaluations == 50 and plane.path is None
    line = random_line(
        model, half_squared_error, (inputs, torch.randn(10, 3, dtype=torch.float64)),
        generator=torch.Generator().manual_seed(0), task="regression", grid=7,
    )  # fmt: skip
    assert line.train_loss.shape == (7,) and line.train_accuracy is None and line.test_loss is None


# --------------------------------------------------------------------- (c) the PCA plane


def plane_snapshots(centre: dict[str, Tensor], seed: int) -> tuple[Tensor, Tensor]:
    """Nine snapshots ``centre + u_s e₁ + v_s e₂`` on a plane through the centre, and a unit
    vector ``e₃`` orthogonal to it."""
    flat = torch.cat([t.reshape(-1) for t in centre.values()])
    generator = torch.Generator().manual_seed(seed)
    frame, _ = torch.linalg.qr(torch.randn(flat.numel(), 3, generator=generator, dtype=flat.dtype))
    steps = torch.linspace(0, 1, 9, dtype=flat.dtype)
    u, v = 2 * (1 - steps), 4 * steps * (1 - steps)  # a curve ending at the centre
    return flat + u[:, None] * frame[:, 0] + v[:, None] * frame[:, 1], frame[:, 2]


def test_pca_path_in_the_plane_is_drawn_exactly():
    model, inputs, targets = mlp()
    centre = detached_parameters(model)
    snapshots, _ = plane_snapshots(centre, seed=18)
    landscape = pca_plane(
        model, cross_entropy, snapshots, (inputs, targets), task="classification", grid=5
    )
    path = landscape.path
    assert path is not None and landscape.kind == "pca"
    assert path.residual.max() <= 1e-10 and path.relative_residual.max() <= 1e-10
    torch.testing.assert_close(path.projected_loss, path.loss, rtol=1e-10, atol=1e-10)
    # the grid is the path's bounding box with a margin of PCA_MARGIN of its extent (span 1)
    for k in range(2):
        axis, coordinate = landscape.axes[k], path.coordinates[:, k]
        low, high = min(coordinate.min().item(), 0.0), max(coordinate.max().item(), 0.0)
        margin = PCA_MARGIN * (high - low)
        assert abs(axis[0].item() - (low - margin)) <= EXACT
        assert abs(axis[-1].item() - (high + margin)) <= EXACT
    assert path.coordinates[-1].abs().max() <= 1e-10  # the last snapshot is the centre
    assert path.relative_residual[-1] == 0.0
    assert landscape.train_loss.shape == (5, 5)
    assert landscape.evaluations == 25 + 2 * 9


def test_pca_path_off_the_plane_has_a_residual():
    """The plane of the in-plane trajectory, with one snapshot then moved off it by 0.05:
    that snapshot's residual is exactly 0.05, the others' stay zero."""
    model, inputs, targets = mlp()
    centre = detached_parameters(model)
    snapshots, normal = plane_snapshots(centre, seed=19)
    pca = trajectory_pca(snapshots, components=2)
    snapshots[4] += 0.05 * normal
    landscape = pca_plane(
        model, cross_entropy, snapshots, (inputs, targets), task="classification", pca=pca,
        grid=3, span=1.5,
    )  # fmt: skip
    path = landscape.path
    assert path is not None
    assert path.residual[4].item() == pytest.approx(0.05, rel=1e-10)
    assert torch.cat([path.residual[:4], path.residual[5:]]).max() <= 1e-10
    distance = (snapshots[4] - snapshots[-1]).norm()
    torch.testing.assert_close(path.relative_residual[4], path.residual[4] / distance)
    assert (path.projected_loss[4] - path.loss[4]).abs() > 1e-6


def test_pca_plane_needs_two_directions():
    model, inputs, targets = mlp()
    centre = detached_parameters(model)
    flat = torch.cat([t.reshape(-1) for t in centre.values()])
    line = flat + torch.linspace(0, 1, 4, dtype=flat.dtype)[:, None] * torch.ones_like(flat)
    with pytest.raises(ValueError, match="two principal components"):
        pca_plane(model, cross_entropy, line, (inputs, targets), task="classification")
