"""Task losses: mean cross-entropy and mean squared error against direct formulas."""

from __future__ import annotations

import torch

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
