"""Input-output Jacobians and the empirical NTK against dense float64 references from
``torch.autograd.functional.jacobian`` and ``torch.func.jacrev``."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn
from torch.func import functional_call, jacrev

from dynascope.worker.probes.jacobian import (
    empirical_ntk,
    input_output_jacobians,
    input_output_singular_values,
    ntk_alignment_distance,
    ntk_eigenvalues,
    ntk_spectrum,
    ntk_velocity,
)
from dynascope.worker.probes.params import detached_parameters

EXACT = 1e-10  # float64, the same derivatives by another route
EXAMPLES = 8
CHUNK = 3  # does not divide EXAMPLES: the last chunk is short


def mlp() -> nn.Module:
    """MLP 3-5-2 with tanh, float64."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2)).double().eval()


def convnet() -> nn.Module:
    """A small convolutional network on 1×4×4 images, 3 outputs, float64."""
    torch.manual_seed(1)
    return (
        nn.Sequential(
            nn.Conv2d(1, 2, 3), nn.Tanh(), nn.Flatten(), nn.Linear(8, 3), nn.BatchNorm1d(3)
        )
        .double()
        .eval()
    )


def float_inputs(*shape: int, seed: int = 2) -> Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(EXAMPLES, *shape, generator=generator, dtype=torch.float64)


def reference_jacobians(model: nn.Module, inputs: Tensor) -> Tensor:
    """``n × C × d`` by ``torch.autograd.functional.jacobian``, one input at a time."""
    return torch.stack(
        [
            torch.autograd.functional.jacobian(
                lambda x: model(x.unsqueeze(0)).reshape(-1), example
            ).reshape(-1, example.numel())
            for example in inputs
        ]
    )


def dense_ntk(model: nn.Module, inputs: Tensor) -> Tensor:
    """``J Jᵀ`` with ``J`` the ``jacrev`` of all flattened outputs with respect to one flat
    parameter vector."""
    params = detached_parameters(model)
    flat = torch.cat([p.reshape(-1) for p in params.values()])
    sizes = [p.numel() for p in params.values()]

    def outputs_at(vector: Tensor) -> Tensor:
        pieces = dict(zip(params, vector.split(sizes), strict=True))
        shaped = {name: pieces[name].view_as(p) for name, p in params.items()}
        return functional_call(model, shaped, (inputs,)).reshape(-1)

    jacobian = jacrev(outputs_at)(flat)
    return jacobian @ jacobian.T


@pytest.mark.parametrize(
    ("build", "shape"), [(mlp, (3,)), (convnet, (1, 4, 4))], ids=["mlp", "convnet"]
)
def test_input_output_jacobians_match_autograd(build, shape) -> None:
    model = build()
    inputs = float_inputs(*shape)
    expected = reference_jacobians(model, inputs)
    jacobians = input_output_jacobians(model, inputs, chunk_size=CHUNK)
    assert jacobians.shape == expected.shape
    torch.testing.assert_close(jacobians, expected, rtol=0, atol=EXACT)

    result = input_output_singular_values(model, inputs, chunk_size=CHUNK)
    values = torch.linalg.svdvals(expected)
    torch.testing.assert_close(result.singular_values, values, rtol=0, atol=EXACT)
    assert result.rows == EXAMPLES * expected.shape[1]


def test_channels_last_images_give_the_same_jacobians_and_kernel() -> None:
    """The runner hands a convolutional model channels-last images on the CPU (see
    ``memory_format``): the vmapped Jacobians and the kernel are those of the dense
    references all the same."""
    model = convnet()
    inputs = float_inputs(2, 4, 4)
    model[0] = nn.Conv2d(2, 2, 3).double()  # two channels, so that the formats differ
    images = inputs.contiguous(memory_format=torch.channels_last)
    assert not images.is_contiguous()
    jacobians = input_output_jacobians(model, images, chunk_size=CHUNK)
    torch.testing.assert_close(jacobians, reference_jacobians(model, inputs), rtol=0, atol=EXACT)
    kernel = empirical_ntk(model, images, chunk_size=CHUNK)
    torch.testing.assert_close(kernel, dense_ntk(model, inputs), rtol=0, atol=EXACT)


def test_summary_over_inputs() -> None:
    model = mlp()
    result = input_output_singular_values(model, float_inputs(3), chunk_size=CHUNK)
    values = result.singular_values
    assert values.shape == (EXAMPLES, 2)
    assert (values[:, :-1] >= values[:, 1:]).all()
    torch.testing.assert_close(result.mean, values.mean(dim=0))
    torch.testing.assert_close(result.median, values.quantile(0.5, dim=0))
    torch.testing.assert_close(result.quantile_10, values.quantile(0.1, dim=0))
    torch.testing.assert_close(result.quantile_90, values.quantile(0.9, dim=0))
    assert result.mean_largest == pytest.approx(values[:, 0].mean().item(), rel=1e-12)
    mean_squares = [float(row.square().mean()) for row in values]
    expected_log = sum(math.log(m) for m in mean_squares) / EXAMPLES
    assert result.mean_log_mean_square == pytest.approx(expected_log, rel=1e-12)
    frobenius = torch.linalg.matrix_norm(reference_jacobians(model, float_inputs(3))).mean()
    assert result.mean_frobenius == pytest.approx(frobenius.item(), rel=1e-12)


def test_linear_model_jacobian_is_its_weight() -> None:
    torch.manual_seed(3)
    model = nn.Linear(4, 3).double()
    inputs = float_inputs(4)
    jacobians = input_output_jacobians(model, inputs, chunk_size=CHUNK)
    torch.testing.assert_close(
        jacobians, model.weight.detach().expand(EXAMPLES, 3, 4), rtol=0, atol=EXACT
    )
    result = input_output_singular_values(model, inputs, chunk_size=CHUNK)
    weight_values = torch.linalg.svdvals(model.weight.detach())
    torch.testing.assert_close(
        result.singular_values, weight_values.expand(EXAMPLES, 3), rtol=0, atol=EXACT
    )
    torch.testing.assert_close(result.median, weight_values, rtol=0, atol=EXACT)


def test_token_inputs_are_refused() -> None:
    model = nn.Sequential(nn.Embedding(5, 3), nn.Flatten(), nn.Linear(6, 2))
    with pytest.raises(ValueError, match="float inputs"):
        input_output_singular_values(model, torch.zeros(4, 2, dtype=torch.long), chunk_size=2)


def test_empirical_ntk_matches_dense_jacobian_product() -> None:
    model = mlp()
    inputs = float_inputs(3)
    expected = dense_ntk(model, inputs)
    kernel = empirical_ntk(model, inputs, chunk_size=CHUNK)
    assert kernel.shape == (EXAMPLES * 2, EXAMPLES * 2)
    torch.testing.assert_close(kernel, expected, rtol=0, atol=EXACT)
    torch.testing.assert_close(
        ntk_eigenvalues(kernel), torch.linalg.eigvalsh(expected).flip(0), rtol=0, atol=EXACT
    )
    torch.testing.assert_close(
        ntk_eigenvalues(kernel, k=3), torch.linalg.eigvalsh(expected).flip(0)[:3]
    )


def test_empirical_ntk_of_a_token_model() -> None:
    torch.manual_seed(4)
    model = nn.Sequential(nn.Embedding(5, 3), nn.Flatten(), nn.Tanh(), nn.Linear(6, 2)).double()
    tokens = torch.randint(0, 5, (EXAMPLES, 2), generator=torch.Generator().manual_seed(5))
    kernel = empirical_ntk(model, tokens, chunk_size=CHUNK)
    torch.testing.assert_close(kernel, dense_ntk(model, tokens), rtol=0, atol=EXACT)


def test_ntk_spectrum_bundles_kernel_eigenvalues_and_change() -> None:
    model = mlp()
    inputs = float_inputs(3)
    first = ntk_spectrum(model, inputs, chunk_size=CHUNK)
    assert first.velocity is None and first.alignment_distance is None
    assert first.rows == EXAMPLES * 2
    assert first.parameters == sum(p.numel() for p in model.parameters())
    assert first.trace == pytest.approx(first.kernel.trace().item(), rel=1e-12)
    assert first.trace == pytest.approx(first.eigenvalues.sum().item(), rel=1e-10)

    with torch.no_grad():
        model[2].weight.mul_(1.5)
    second = ntk_spectrum(model, inputs, chunk_size=EXAMPLES, previous=first.kernel, k=4)
    assert second.eigenvalues.shape == (4,)
    assert second.velocity == pytest.approx(ntk_velocity(first.kernel, second.kernel))
    assert second.velocity > 0.1
    assert 0 < second.alignment_distance < 1


def test_velocity_and_alignment_by_hand() -> None:
    kernel = dense_ntk(mlp(), float_inputs(3))
    assert ntk_velocity(kernel, kernel) == 0.0
    assert ntk_alignment_distance(kernel, kernel) == pytest.approx(0.0, abs=1e-14)
    assert ntk_velocity(kernel, 2 * kernel) == pytest.approx(1.0, rel=1e-14)
    assert ntk_alignment_distance(kernel, 2 * kernel) == pytest.approx(0.0, abs=1e-14)
    one, other = torch.diag(torch.tensor([1.0, 0.0])), torch.diag(torch.tensor([0.0, 1.0]))
    assert ntk_velocity(one, other) == pytest.approx(math.sqrt(2), rel=1e-14)
    assert ntk_alignment_distance(one, other) == pytest.approx(1.0, rel=1e-14)
    assert math.isnan(ntk_velocity(torch.zeros(2, 2), one))
    with pytest.raises(ValueError, match="same probe inputs"):
        ntk_velocity(one, torch.eye(3))


def test_kernel_size_limit() -> None:
    with pytest.raises(ValueError, match="max_kernel_size=10"):
        empirical_ntk(mlp(), float_inputs(3), chunk_size=CHUNK, max_kernel_size=10)


def test_probes_leave_the_model_alone() -> None:
    model = mlp()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    inputs = float_inputs(3)
    input_output_singular_values(model, inputs, chunk_size=CHUNK)
    ntk_spectrum(model, inputs, chunk_size=CHUNK)
    for name, p in model.named_parameters():
        assert p.grad is None
        assert torch.equal(p, before[name])
