"""loss_and_gradient against autograd in float64, and the model left as it was."""

import pytest
import torch
from torch import nn

from dynascope.worker.probes.params import (
    buffers_of,
    call_at,
    detached_parameters,
    loss_and_gradient,
)

EXACT = 1e-12  # float64, same operations in another order


def tiny_mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3)).double()


def batch(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(11, 5, generator=generator, dtype=torch.float64)
    targets = torch.randint(0, 3, (11,), generator=generator)
    return inputs, targets


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.clone() for name, value in model.state_dict().items()}


def assert_unchanged(model: nn.Module, before: dict[str, torch.Tensor]) -> None:
    after = model.state_dict()
    assert after.keys() == before.keys()
    for name, value in before.items():
        assert torch.equal(after[name], value), name


def test_detached_parameters_share_storage_and_skip_frozen() -> None:
    model = tiny_mlp()
    model[2].bias.requires_grad_(False)
    params = detached_parameters(model)
    assert list(params) == ["0.weight", "0.bias", "2.weight"]
    for name, value in params.items():
        assert not value.requires_grad
        assert value.data_ptr() == model.get_parameter(name).data_ptr()


def test_buffers_of_copies_only_when_asked() -> None:
    model = nn.BatchNorm1d(4)
    shared, copied = buffers_of(model), buffers_of(model, copy=True)
    assert set(shared) == {"running_mean", "running_var", "num_batches_tracked"}
    assert shared["running_mean"].data_ptr() == model.running_mean.data_ptr()
    assert copied["running_mean"].data_ptr() != model.running_mean.data_ptr()
    assert torch.equal(copied["running_var"], model.running_var)


def test_loss_and_gradient_match_autograd_in_float64() -> None:
    model, (inputs, targets) = tiny_mlp(), batch()
    loss_fn = nn.functional.cross_entropy
    before = snapshot(model)

    loss, outputs, gradient = loss_and_gradient(model, loss_fn, inputs, targets)

    reference_outputs = model(inputs)
    reference_loss = loss_fn(reference_outputs, targets)
    reference = torch.autograd.grad(reference_loss, list(model.parameters()))
    assert loss.item() == pytest.approx(reference_loss.item(), rel=EXACT)
    torch.testing.assert_close(outputs, reference_outputs.detach(), rtol=EXACT, atol=EXACT)
    assert list(gradient) == [name for name, _ in model.named_parameters()]
    for (name, _), expected in zip(model.named_parameters(), reference, strict=True):
        torch.testing.assert_close(gradient[name], expected, rtol=EXACT, atol=EXACT)
    assert not loss.requires_grad and not outputs.requires_grad
    assert all(p.grad is None for p in model.parameters())
    assert_unchanged(model, before)


def test_loss_and_gradient_at_other_parameters() -> None:
    model, (inputs, targets) = tiny_mlp(), batch()
    other = tiny_mlp(seed=7)
    point = detached_parameters(other)
    before = snapshot(model)

    loss, _, gradient = loss_and_gradient(
        model, nn.functional.cross_entropy, inputs, targets, point
    )

    reference_loss = nn.functional.cross_entropy(other(inputs), targets)
    reference = torch.autograd.grad(reference_loss, list(other.parameters()))
    assert loss.item() == pytest.approx(reference_loss.item(), rel=EXACT)
    for (name, _), expected in zip(other.named_parameters(), reference, strict=True):
        torch.testing.assert_close(gradient[name], expected, rtol=EXACT, atol=EXACT)
    assert_unchanged(model, before)


def test_frozen_parameters_are_used_but_not_differentiated() -> None:
    model, (inputs, targets) = tiny_mlp(), batch()
    model[0].weight.requires_grad_(False)
    _, _, gradient = loss_and_gradient(model, nn.functional.cross_entropy, inputs, targets)
    reference_loss = nn.functional.cross_entropy(model(inputs), targets)
    trainable = [p for p in model.parameters() if p.requires_grad]
    reference = torch.autograd.grad(reference_loss, trainable)
    assert list(gradient) == ["0.bias", "2.weight", "2.bias"]
    for value, expected in zip(gradient.values(), reference, strict=True):
        torch.testing.assert_close(value, expected, rtol=EXACT, atol=EXACT)


def batch_norm_model() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 3)).double()
    with torch.no_grad():  # running statistics that differ from any batch's
        model[1].running_mean.uniform_(-1.0, 1.0)
        model[1].running_var.uniform_(0.5, 2.0)
    return model


def test_eval_mode_uses_running_statistics() -> None:
    model, (inputs, targets) = batch_norm_model().eval(), batch()
    _, outputs, _ = loss_and_gradient(model, nn.functional.cross_entropy, inputs, targets)
    torch.testing.assert_close(outputs, model(inputs).detach(), rtol=EXACT, atol=EXACT)


def test_train_mode_leaves_running_statistics_alone() -> None:
    model, (inputs, targets) = batch_norm_model().train(), batch()
    before = snapshot(model)

    loss, _, gradient = loss_and_gradient(model, nn.functional.cross_entropy, inputs, targets)
    outputs = call_at(model, detached_parameters(model), inputs)

    assert_unchanged(model, before)
    reference_loss = nn.functional.cross_entropy(model(inputs), targets)  # batch statistics
    reference = torch.autograd.grad(reference_loss, list(model.parameters()))
    assert loss.item() == pytest.approx(reference_loss.item(), rel=EXACT)
    for value, expected in zip(gradient.values(), reference, strict=True):
        torch.testing.assert_close(value, expected, rtol=EXACT, atol=EXACT)
    torch.testing.assert_close(outputs, model(inputs).detach(), rtol=EXACT, atol=EXACT)


def test_loss_and_gradient_equal_torch_func_grad_and_value() -> None:
    from torch.func import functional_call, grad_and_value

    model, (inputs, targets) = tiny_mlp().eval(), batch()
    params = {name: p.detach() * 1.5 for name, p in model.named_parameters()}

    def loss_at(point: dict[str, torch.Tensor]) -> torch.Tensor:
        return nn.functional.cross_entropy(functional_call(model, point, (inputs,)), targets)

    expected_gradient, expected_loss = grad_and_value(loss_at)(params)
    loss, _, gradient = loss_and_gradient(
        model, nn.functional.cross_entropy, inputs, targets, params
    )
    assert loss.item() == pytest.approx(expected_loss.item(), rel=EXACT)
    for name, value in gradient.items():
        torch.testing.assert_close(value, expected_gradient[name], rtol=EXACT, atol=EXACT)
        assert not value.requires_grad
