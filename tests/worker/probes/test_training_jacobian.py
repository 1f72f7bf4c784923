"""The training Jacobian against closed forms (linear least squares, one step) and central
finite differences of gradient descent run by hand, in float64."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import Tensor, nn
from torch.func import functional_call, hessian
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from dynascope.worker.probes.training_jacobian import (
    BULK_TOLERANCE,
    training_jacobian,
    training_jacobian_spectrum,
)

# torch scripts its forward-AD decompositions on first use and warns that scripting is
# deprecated
pytestmark = pytest.mark.filterwarnings(
    "ignore:`torch.jit.script` is deprecated:DeprecationWarning"
)

EXACT = 1e-10  # float64, closed forms
FINITE_DIFFERENCES = 1e-6  # relative; central differences with step 1e-5 in float64


def half_mean_squared_error(outputs: Tensor, targets: Tensor) -> Tensor:
    """``½ · mean over examples of ‖outputs − targets‖²`` (one output: Hessian ``XᵀX / n`` for
    a linear model without bias)."""
    return 0.5 * (outputs - targets).square().sum(dim=-1).mean()


def least_squares(eigenvalues: list[float]) -> tuple[nn.Module, Tensor, Tensor, Tensor]:
    """A linear model without bias and data whose Hessian ``H = XᵀX / n`` has the given
    eigenvalues; returns ``(model, inputs, targets, H)``."""
    generator = torch.Generator().manual_seed(0)
    dimension = len(eigenvalues)
    examples = 2 * dimension
    left, _ = torch.linalg.qr(
        torch.randn(examples, dimension, generator=generator, dtype=torch.float64)
    )
    right, _ = torch.linalg.qr(
        torch.randn(dimension, dimension, generator=generator, dtype=torch.float64)
    )
    scale = torch.tensor(eigenvalues, dtype=torch.float64).mul(examples).sqrt()
    inputs = left @ torch.diag(scale) @ right.T
    targets = torch.randn(examples, 1, generator=generator, dtype=torch.float64)
    torch.manual_seed(1)
    model = nn.Linear(dimension, 1, bias=False).double()
    return model, inputs, targets, inputs.T @ inputs / examples


def tanh_mlp() -> tuple[nn.Module, Tensor, Tensor]:
    """MLP 3-5-2 with tanh (32 parameters), 8 examples, float64."""
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2)).double()
    generator = torch.Generator().manual_seed(3)
    inputs = torch.randn(8, 3, generator=generator, dtype=torch.float64)
    targets = torch.randn(8, 2, generator=generator, dtype=torch.float64)
    return model, inputs, targets


def descend_by_hand(
    model: nn.Module, start: Tensor, inputs: Tensor, targets: Tensor, lr: float, steps: int
) -> Tensor:
    """Full-batch gradient descent with ``.backward()`` on a copy of the model, from the flat
    parameters ``start``; the flat parameters at the end."""
    trained = copy.deepcopy(model)
    vector_to_parameters(start, trained.parameters())
    for _ in range(steps):
        trained.zero_grad()
        half_mean_squared_error(trained(inputs), targets).backward()
        with torch.no_grad():
            for p in trained.parameters():
                p -= lr * p.grad
    return parameters_to_vector(trained.parameters()).detach()


def test_linear_least_squares_closed_form() -> None:
    # lr·λ: 0 (bulk: |1 − 0|^T = 1), 0.08, 0.4, 0.8 (stable), 2.24, 2.56 (chaotic)
    eigenvalues = [0.0, 0.1, 0.5, 1.0, 2.8, 3.2]
    lr, steps = 0.8, 5
    model, inputs, targets, curvature = least_squares(eigenvalues)
    torch.testing.assert_close(
        torch.linalg.eigvalsh(curvature), torch.tensor(eigenvalues, dtype=torch.float64)
    )
    jacobian = training_jacobian(
        model, half_mean_squared_error, inputs, targets, lr=lr, steps=steps, chunk_size=4
    ).jacobian
    step = torch.eye(len(eigenvalues), dtype=torch.float64) - lr * curvature
    torch.testing.assert_close(jacobian, torch.linalg.matrix_power(step, steps), rtol=0, atol=EXACT)

    spectrum = training_jacobian_spectrum(jacobian)
    expected = sorted((abs(1 - lr * value) ** steps for value in eigenvalues), reverse=True)
    torch.testing.assert_close(
        spectrum.singular_values, torch.tensor(expected, dtype=torch.float64), rtol=0, atol=EXACT
    )
    assert (spectrum.chaotic, spectrum.bulk, spectrum.stable) == (2, 1, 3)
    assert spectrum.bulk_tolerance == BULK_TOLERANCE
    assert spectrum.chaotic_threshold == 1 + BULK_TOLERANCE
    assert spectrum.stable_threshold == 1 - BULK_TOLERANCE


def test_one_step_is_identity_minus_lr_hessian() -> None:
    model, inputs, targets = tanh_mlp()
    names = [name for name, _ in model.named_parameters()]
    sizes = [p.numel() for p in model.parameters()]
    start = parameters_to_vector(model.parameters()).detach()

    def loss_at(flat: Tensor) -> Tensor:
        pieces = dict(zip(names, flat.split(sizes), strict=True))
        shaped = {name: pieces[name].view_as(p) for name, p in model.named_parameters()}
        return half_mean_squared_error(functional_call(model, shaped, (inputs,)), targets)

    jacobian = training_jacobian(
        model, half_mean_squared_error, inputs, targets, lr=0.3, steps=1
    ).jacobian
    expected = torch.eye(start.numel(), dtype=torch.float64) - 0.3 * hessian(loss_at)(start)
    torch.testing.assert_close(jacobian, expected, rtol=0, atol=EXACT)
    zero_steps = training_jacobian(model, half_mean_squared_error, inputs, targets, lr=1, steps=0)
    torch.testing.assert_close(zero_steps.jacobian, torch.eye(start.numel(), dtype=torch.float64))
    torch.testing.assert_close(zero_steps.end, start, rtol=0, atol=0)


def test_tanh_mlp_matches_central_differences() -> None:
    model, inputs, targets = tanh_mlp()
    lr, steps, epsilon = 0.2, 20, 1e-5
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    replay = training_jacobian(
        model, half_mean_squared_error, inputs, targets, lr=lr, steps=steps, chunk_size=10
    )
    jacobian = replay.jacobian
    for name, p in model.named_parameters():  # the probe trained nothing
        assert p.grad is None
        assert torch.equal(p, before[name])

    start = parameters_to_vector(model.parameters()).detach()
    # the end point is the primal of the same forward-mode passes: training by hand
    end = descend_by_hand(model, start.clone(), inputs, targets, lr, steps)  # it trains in place
    torch.testing.assert_close(replay.end, end, rtol=0, atol=EXACT)
    generator = torch.Generator().manual_seed(4)
    for _ in range(3):
        direction = torch.randn(start.numel(), generator=generator, dtype=torch.float64)
        plus = descend_by_hand(model, start + epsilon * direction, inputs, targets, lr, steps)
        minus = descend_by_hand(model, start - epsilon * direction, inputs, targets, lr, steps)
        difference = (plus - minus) / (2 * epsilon)
        product = jacobian @ direction
        error = torch.linalg.vector_norm(product - difference) / torch.linalg.vector_norm(product)
        assert error.item() < FINITE_DIFFERENCES


def test_batch_norm_in_train_mode_replays_with_batch_statistics() -> None:
    # a train-mode batch norm updates its running statistics in place, which torch.func's
    # transforms refuse; the replay normalises with the batch's statistics, as the run did
    torch.manual_seed(5)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Tanh(), nn.Linear(4, 2))
    model = model.double().train()
    _, inputs, targets = tanh_mlp()
    lr, steps, epsilon = 0.2, 5, 1e-5
    buffers = {name: b.clone() for name, b in model.named_buffers()}
    replay = training_jacobian(
        model, half_mean_squared_error, inputs, targets, lr=lr, steps=steps, chunk_size=7
    )
    for name, b in model.named_buffers():  # the replay moved no running statistic
        assert torch.equal(b, buffers[name])
    start = parameters_to_vector(model.parameters()).detach()
    end = descend_by_hand(model, start.clone(), inputs, targets, lr, steps)
    torch.testing.assert_close(replay.end, end, rtol=0, atol=EXACT)
    direction = torch.randn(start.numel(), generator=torch.Generator().manual_seed(6),
                            dtype=torch.float64)  # fmt: skip
    plus = descend_by_hand(model, start + epsilon * direction, inputs, targets, lr, steps)
    minus = descend_by_hand(model, start - epsilon * direction, inputs, targets, lr, steps)
    product = replay.jacobian @ direction
    error = torch.linalg.vector_norm(product - (plus - minus) / (2 * epsilon))
    assert (error / torch.linalg.vector_norm(product)).item() < FINITE_DIFFERENCES


def test_parameter_limit() -> None:
    model, inputs, targets = tanh_mlp()
    with pytest.raises(ValueError, match="max_parameters=31"):
        training_jacobian(
            model, half_mean_squared_error, inputs, targets, lr=0.1, steps=1, max_parameters=31
        )


def test_spectrum_regions_and_divergence() -> None:
    jacobian = torch.diag(torch.tensor([5.0, 1.0005, 1.0, 0.9995, 0.5, 0.0]))
    spectrum = training_jacobian_spectrum(jacobian)
    assert (spectrum.chaotic, spectrum.bulk, spectrum.stable) == (1, 3, 2)
    wide = training_jacobian_spectrum(jacobian, bulk_tolerance=0.6)
    assert (wide.chaotic, wide.bulk, wide.stable) == (1, 4, 1)
    diverged = training_jacobian_spectrum(torch.tensor([[math.inf, 0.0], [0.0, 1.0]]))
    assert diverged.singular_values.isnan().all()
    assert (diverged.chaotic, diverged.bulk, diverged.stable) == (0, 0, 0)
