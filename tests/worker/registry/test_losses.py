"""Task losses: mean cross-entropy and mean squared error against direct formulas."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor
from torch.func import grad, jvp, vmap
from torch.nn import functional as F

from dynascope.worker.registry import loss_function


def test_classification_loss_is_mean_cross_entropy() -> None:
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.5]], dtype=torch.float64)
    labels = torch.tensor([0, 2])
    expected = -(logits.log_softmax(dim=1)[[0, 1], [0, 2]]).mean()
    torch.testing.assert_close(loss_function("classification")(logits, labels), expected)
    uniform = loss_function("classification")(logits[1:], labels[1:])
    torch.testing.assert_close(uniform, torch.tensor(3.0, dtype=torch.float64).log())


def test_regression_loss_is_mean_over_all_elements() -> None:
    outputs = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    targets = torch.tensor([[1.0, 0.0], [0.0, 4.0]])
    # squared errors 0, 4, 9, 0 -> mean 13/4
    torch.testing.assert_close(loss_function("regression")(outputs, targets), torch.tensor(3.25))


@pytest.mark.parametrize(
    ("examples", "classes", "transposed"),
    [(512, 10, True), (2048, 2, True), (40, 10, False), (512, 16, False)],
)
def test_cross_entropy_in_either_layout_is_the_formula_with_its_derivatives(
    examples, classes, transposed, monkeypatch
):
    """Few classes and many logits take the transposed layout, the rest the plain one: the
    value, gradient, Hessian-vector products (double backward and forward over reverse) and a
    vmap over parameter sets all match the direct formula in float64."""
    loss = loss_function("classification")
    generator = torch.Generator().manual_seed(examples + classes)
    logits = torch.randn(examples, classes, generator=generator, dtype=torch.float64)
    labels = torch.randint(0, classes, (examples,), generator=generator)
    tangent = torch.randn(examples, classes, generator=generator, dtype=torch.float64)

    def formula(z: Tensor) -> Tensor:
        return -(z.log_softmax(dim=1)[torch.arange(examples), labels]).mean()

    layouts = []
    plain = F.cross_entropy
    monkeypatch.setattr(F, "cross_entropy", lambda z, y: layouts.append(z.ndim) or plain(z, y))
    torch.testing.assert_close(loss(logits, labels), formula(logits), rtol=1e-12, atol=0)
    monkeypatch.undo()
    assert layouts == [3 if transposed else 2]
    gradient = grad(lambda z: loss(z, labels))(logits)
    torch.testing.assert_close(gradient, grad(formula)(logits), rtol=1e-12, atol=1e-15)
    by_formula = jvp(grad(formula), (logits,), (tangent,))[1]
    forward = jvp(grad(lambda z: loss(z, labels)), (logits,), (tangent,))[1]
    torch.testing.assert_close(forward, by_formula, rtol=1e-10, atol=1e-14)
    leaf = logits.clone().requires_grad_()
    first = torch.autograd.grad(loss(leaf, labels), leaf, create_graph=True)[0]
    second = torch.autograd.grad(first, leaf, grad_outputs=tangent)[0]
    torch.testing.assert_close(second, by_formula, rtol=1e-10, atol=1e-14)
    batched = vmap(lambda z: loss(z, labels))(torch.stack([logits, 2 * logits]))
    torch.testing.assert_close(batched[1], formula(2 * logits), rtol=1e-12, atol=0)
