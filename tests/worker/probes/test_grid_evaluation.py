"""The loss at many combinations of parameter sets against closed forms (quadratic losses) and
against a naive loop that evaluates every parameter set by itself, in float64."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn
from torch.func import functional_call

from dynascope.worker.probes.grid_evaluation import (
    _Combinations,
    _combine,
    _split_first_layer,
    losses_at_combinations,
)
from dynascope.worker.probes.landscape import filter_normalized_direction
from dynascope.worker.probes.params import buffers_of, detached_parameters
from tests.worker.probes.small_models import (
    EXACT,
    cross_entropy,
    gaussian,
    half_squared_error,
    mlp,
)

SINGLE = 1e-5  # float32, relative to the loss: EXACT's two roundings, at float32 rounding


def cnn() -> tuple[nn.Module, Tensor, Tensor]:
    """Conv 2→4 + BatchNorm + ReLU + max-pool, conv 4→4, global pool, linear head; 6 images
    2×6×6, float64, eval mode with non-trivial running statistics."""
    torch.manual_seed(2)
    model = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 4, 3, padding=1, bias=False),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 3),
    ).double()
    norm = model[1]
    assert isinstance(norm, nn.BatchNorm2d)
    norm.running_mean.uniform_(-0.5, 0.5)
    norm.running_var.uniform_(0.5, 2.0)
    generator = torch.Generator().manual_seed(3)
    inputs = torch.randn(6, 2, 6, 6, generator=generator, dtype=torch.float64)
    targets = torch.randint(0, 3, (6,), generator=generator)
    return model.eval(), inputs, targets


class Residual(nn.Module):
    """Not a Sequential: the first layer's output is added back, so it runs whole."""

    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Linear(6, 6)
        self.head = nn.Linear(6, 3)

    def forward(self, x: Tensor) -> Tensor:
        x = x.flatten(1)
        return self.head(torch.tanh(self.first(x)) + x)


def plane_weights(axis: Tensor) -> Tensor:
    lattice = torch.cartesian_prod(axis, axis)
    return torch.cat([torch.ones(len(lattice), 1, dtype=axis.dtype), lattice], dim=1)


def naive_losses(model, loss_fn, inputs, targets, basis, weights) -> tuple[Tensor, Tensor]:
    """Each parameter set formed by itself and evaluated by its own functional_call."""
    losses, accuracies = [], []
    with torch.no_grad():
        for row in weights:
            params = {
                name: sum(w * b[name] for w, b in zip(row.tolist(), basis, strict=True))
                for name in basis[0]
            }
            outputs = functional_call(model, (params, buffers_of(model)), (inputs,))
            losses.append(loss_fn(outputs, targets).item())
            accuracies.append((outputs.argmax(-1) == targets).double().mean().item())
    return torch.tensor(losses, dtype=torch.float64), torch.tensor(accuracies, dtype=torch.float64)


# ---------------------------------------------------------------- (a) quadratic losses


class QuadraticForm(nn.Module):
    """``forward`` returns ``½ θᵀAθ`` for each example, so the mean loss is that form."""

    def __init__(self, matrix: Tensor) -> None:
        super().__init__()
        self.theta = nn.Parameter(torch.zeros(matrix.shape[0], dtype=matrix.dtype))
        self.register_buffer("matrix", matrix)

    def forward(self, x: Tensor) -> Tensor:
        return (0.5 * self.theta @ self.matrix @ self.theta).expand(x.shape[0], 1)


def mean_output(outputs: Tensor, targets: Tensor) -> Tensor:
    return outputs.mean()


@pytest.mark.parametrize("vectorize", [False, True])
def test_grid_of_a_quadratic_form_is_analytic(vectorize):
    generator = torch.Generator().manual_seed(4)
    root = torch.randn(5, 5, generator=generator, dtype=torch.float64)
    matrix = root @ root.T
    model = QuadraticForm(matrix).eval()
    centre, first, second = (
        {"theta": torch.randn(5, generator=generator, dtype=torch.float64)} for _ in range(3)
    )
    axis = torch.linspace(-2, 2, 7, dtype=torch.float64)
    weights = plane_weights(axis)
    values = losses_at_combinations(
        model, mean_output, torch.zeros(3, 1), torch.zeros(3), basis=[centre, first, second],
        weights=weights, task="regression", chunk_size=10, vectorize=vectorize,
    )  # fmt: skip
    c, u, v = centre["theta"], first["theta"], second["theta"]
    alpha, beta = weights[:, 1], weights[:, 2]
    expected = 0.5 * (
        c @ matrix @ c
        + 2 * alpha * (u @ matrix @ c)
        + 2 * beta * (v @ matrix @ c)
        + alpha**2 * (u @ matrix @ u)
        + 2 * alpha * beta * (u @ matrix @ v)
        + beta**2 * (v @ matrix @ v)
    )
    torch.testing.assert_close(values.losses, expected, rtol=EXACT, atol=EXACT)
    assert values.accuracies is None and values.evaluations == 49


def test_grid_of_least_squares_is_analytic_through_the_first_layer_shortcut():
    """A linear model with squared error: exactly quadratic in (W, b); the Sequential's first
    layer is also its last, so the whole network is the combined first layer."""
    torch.manual_seed(5)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2)).double().eval()
    generator = torch.Generator().manual_seed(6)
    inputs = torch.randn(9, 4, generator=generator, dtype=torch.float64)
    targets = torch.randn(9, 2, generator=generator, dtype=torch.float64)
    centre = detached_parameters(model)
    first, second = gaussian(centre, 7), gaussian(centre, 8)
    assert _split_first_layer(model, set(centre)) is not None
    axis = torch.linspace(-1, 1, 5, dtype=torch.float64)
    weights = plane_weights(axis)
    values = losses_at_combinations(
        model, half_squared_error, inputs, targets, basis=[centre, first, second],
        weights=weights, task="regression",
    )  # fmt: skip
    augmented = torch.cat([inputs, torch.ones(9, 1, dtype=torch.float64)], dim=1)

    def stacked(params: dict[str, Tensor]) -> Tensor:  # (out, in + 1) = [W b]
        return torch.cat([params["1.weight"], params["1.bias"][:, None]], dim=1)

    residual = augmented @ stacked(centre).T - targets
    d1, d2 = augmented @ stacked(first).T, augmented @ stacked(second).T

    def inner(a: Tensor, b: Tensor) -> Tensor:
        return (a * b).sum() / 9

    alpha, beta = weights[:, 1], weights[:, 2]
    expected = 0.5 * (
        inner(residual, residual)
        + 2 * alpha * inner(d1, residual)
        + 2 * beta * inner(d2, residual)
        + alpha**2 * inner(d1, d1)
        + 2 * alpha * beta * inner(d1, d2)
        + beta**2 * inner(d2, d2)
    )
    torch.testing.assert_close(values.losses, expected, rtol=EXACT, atol=EXACT)


# ------------------------------------------------------------- (b) against a naive loop


GRID_CASES = [(mlp, vectorize, False) for vectorize in (False, True)] + [
    (cnn, vectorize, channels_last)
    for vectorize in (False, True)
    for channels_last in (False, True, None)  # None: the automatic choice (trial forward)
]


@pytest.mark.parametrize(("build", "vectorize", "channels_last"), GRID_CASES)
@pytest.mark.filterwarnings("ignore:There is a performance drop:UserWarning")  # vmap, NHWC
def test_grid_matches_a_naive_loop(build, vectorize, channels_last):
    model, inputs, targets = build()
    centre = detached_parameters(model)
    generator = torch.Generator().manual_seed(10)
    basis = [centre] + [filter_normalized_direction(centre, generator=generator) for _ in "ab"]
    weights = plane_weights(torch.linspace(-1, 1, 4, dtype=torch.float64))
    assert _split_first_layer(model, set(centre)) is not None
    values = losses_at_combinations(
        model, cross_entropy, inputs, targets, basis=basis, weights=weights, chunk_size=5,
        vectorize=vectorize, channels_last=channels_last,
    )  # fmt: skip
    losses, accuracies = naive_losses(model, cross_entropy, inputs, targets, basis, weights)
    torch.testing.assert_close(values.losses, losses, rtol=EXACT, atol=EXACT)
    assert values.accuracies is not None
    torch.testing.assert_close(values.accuracies, accuracies, rtol=0, atol=0)


@pytest.mark.parametrize("vectorize", [False, True])
def test_models_outside_the_shortcut_run_whole(vectorize):
    torch.manual_seed(11)
    model = Residual().double().eval()
    _, inputs, targets = mlp()
    centre = detached_parameters(model)
    basis = [centre, gaussian(centre, 12)]
    weights = torch.tensor([[1.0, a] for a in (-0.5, 0.0, 0.25, 1.0)], dtype=torch.float64)
    assert _split_first_layer(model, set(centre)) is None
    values = losses_at_combinations(
        model, cross_entropy, inputs, targets, basis=basis, weights=weights, vectorize=vectorize
    )
    losses, _ = naive_losses(model, cross_entropy, inputs, targets, basis, weights)
    torch.testing.assert_close(values.losses, losses, rtol=EXACT, atol=EXACT)


def test_shortcut_is_refused_for_hooks_frozen_first_layers_and_tied_weights():
    model, _, _ = mlp()
    names = set(detached_parameters(model))
    assert _split_first_layer(model, names - {"1.0.bias"}) is None  # frozen bias
    handle = model[1][0].register_forward_hook(lambda module, args, output: output)
    assert _split_first_layer(model, names) is None
    handle.remove()
    tied = nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 4))
    tied[2].weight = tied[0].weight
    assert _split_first_layer(tied, set(detached_parameters(tied))) is None
    stateful_prefix = nn.Sequential(nn.BatchNorm1d(4), nn.Linear(4, 2))
    assert _split_first_layer(stateful_prefix, set(detached_parameters(stateful_prefix))) is None


def test_float32_shortcut_agrees_with_the_naive_loop_at_float32_rounding():
    model, inputs, targets = cnn()
    model, inputs = model.float(), inputs.float()
    centre = detached_parameters(model)
    basis = [centre, filter_normalized_direction(centre, generator=torch.Generator())]
    weights = torch.tensor([[1.0, a] for a in (-1.0, -0.3, 0.0, 0.6)])
    values = losses_at_combinations(
        model, cross_entropy, inputs, targets, basis=basis, weights=weights
    )
    losses, _ = naive_losses(model, cross_entropy, inputs, targets, basis, weights)
    torch.testing.assert_close(values.losses, losses, rtol=SINGLE, atol=0)


def test_train_mode_leaves_the_running_statistics_alone():
    model, inputs, targets = cnn()
    model.train()
    before = {n: b.clone() for n, b in buffers_of(model).items()}
    centre = detached_parameters(model)
    basis = [centre, gaussian(centre, 13)]
    weights = torch.tensor([[1.0, 0.0], [1.0, 0.1]], dtype=torch.float64)
    values = losses_at_combinations(
        model, cross_entropy, inputs, targets, basis=basis, weights=weights, vectorize=True
    )
    assert all(torch.equal(before[n], b) for n, b in buffers_of(model).items())
    with torch.no_grad():
        plain = cross_entropy(functional_call(model, (centre, before), (inputs,)), targets)
    assert values.losses[0].item() == pytest.approx(plain.item(), rel=EXACT)


def test_grid_rows_reuse_their_shared_part_to_the_same_bits() -> None:
    """Along a grid's last axis the first layer's combination keeps the sum over the other
    basis elements: every point's features are those of the plain combination, bit for bit,
    whether consecutive rows share weights or not (and with a single basis element)."""
    generator = torch.Generator().manual_seed(9)
    outputs = [torch.randn(6, 4, 5, 5, generator=generator) for _ in range(3)]
    combinations = _Combinations(outputs)
    rows = [[1.0, a, b] for a in (-0.5, 0.25) for b in (-1.0, 0.0, 0.3)] + [[0.7, 0.2, 0.1]]
    for row in rows:
        assert torch.equal(combinations.at(row), _combine(row, outputs))
    assert combinations.shared == (0.7, 0.2)
    single = _Combinations(outputs[:1])
    assert torch.equal(single.at([0.3]), outputs[0] * 0.3)
