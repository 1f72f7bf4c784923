"""evaluate(): chunking changes nothing, and the numbers are the hand-computed ones."""

import math

import pytest
import torch
from torch import nn

from dynascope.worker.probes.evaluation import evaluate

EXACT = 1e-12  # float64


def linear_classifier() -> nn.Module:
    """Two inputs, three classes: logits = x @ W.T + b with chosen W, b."""
    model = nn.Linear(2, 3).double()
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]]))
        model.bias.copy_(torch.tensor([0.0, 0.5, 0.0]))
    return model


INPUTS = torch.tensor([[2.0, 0.0], [0.0, 1.0], [-1.0, -1.0], [1.0, 1.0], [0.0, 0.0]]).double()
LABELS = torch.tensor([0, 1, 2, 0, 1])


def hand_cross_entropy() -> tuple[float, float]:
    losses, correct = [], 0
    for (x0, x1), label in zip(INPUTS.tolist(), LABELS.tolist(), strict=True):
        logits = [x0, x1 + 0.5, -x0 - x1]
        log_normaliser = math.log(sum(math.exp(z) for z in logits))
        losses.append(log_normaliser - logits[label])
        correct += max(range(3), key=lambda k, logits=logits: logits[k]) == label
    return sum(losses) / len(losses), correct / len(losses)


def test_classification_matches_hand_computation() -> None:
    loss, accuracy = hand_cross_entropy()
    assert accuracy == 4 / 5  # all but (1, 1), whose logits (1, 1.5, -2) pick class 1
    result = evaluate(
        linear_classifier(), nn.functional.cross_entropy, INPUTS, LABELS, task="classification"
    )
    assert result.loss == pytest.approx(loss, rel=EXACT)
    assert result.accuracy == pytest.approx(accuracy, abs=0.0)


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 4, 5, 4096])
def test_chunking_changes_nothing(chunk_size: int) -> None:
    loss, accuracy = hand_cross_entropy()
    result = evaluate(
        linear_classifier(),
        nn.functional.cross_entropy,
        INPUTS,
        LABELS,
        task="classification",
        chunk_size=chunk_size,
    )
    assert result.loss == pytest.approx(loss, rel=EXACT)
    assert result.accuracy == accuracy


def test_chunked_equals_unchunked_on_a_larger_set() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 4)).double()
    generator = torch.Generator().manual_seed(1)
    inputs = torch.randn(300, 6, generator=generator, dtype=torch.float64)
    labels = torch.randint(0, 4, (300,), generator=generator)
    whole = evaluate(model, nn.functional.cross_entropy, inputs, labels, task="classification")
    chunked = evaluate(
        model, nn.functional.cross_entropy, inputs, labels, task="classification", chunk_size=37
    )
    assert chunked.loss == pytest.approx(whole.loss, rel=EXACT)
    assert chunked.accuracy == whole.accuracy
    reference = nn.functional.cross_entropy(model(inputs), labels).item()
    assert whole.loss == pytest.approx(reference, rel=EXACT)


def test_one_hot_targets_count_as_their_argmax() -> None:
    one_hot = nn.functional.one_hot(LABELS, 3).double()
    result = evaluate(
        linear_classifier(), nn.functional.cross_entropy, INPUTS, one_hot, task="classification"
    )
    loss, accuracy = hand_cross_entropy()
    assert result.loss == pytest.approx(loss, rel=EXACT)
    assert result.accuracy == accuracy


def test_regression_has_no_accuracy_and_the_mean_squared_error() -> None:
    model = nn.Linear(2, 1).double()
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, -2.0]]))
        model.bias.fill_(0.5)
    targets = torch.tensor([[1.0], [0.0], [2.0], [-1.0], [0.5]]).double()
    predictions = [x0 - 2.0 * x1 + 0.5 for x0, x1 in INPUTS.tolist()]
    expected = (
        sum((p - t) ** 2 for p, t in zip(predictions, targets.flatten().tolist(), strict=True)) / 5
    )
    for chunk_size in (2, 4096):
        result = evaluate(
            model, nn.functional.mse_loss, INPUTS, targets, task="regression", chunk_size=chunk_size
        )
        assert result.accuracy is None
        assert result.loss == pytest.approx(expected, rel=EXACT)


def test_evaluates_at_other_parameters_without_touching_the_model() -> None:
    model = linear_classifier()
    zeros = {name: torch.zeros_like(p) for name, p in model.named_parameters()}
    result = evaluate(
        model, nn.functional.cross_entropy, INPUTS, LABELS, task="classification", params=zeros
    )
    assert result.loss == pytest.approx(math.log(3.0), rel=EXACT)  # uniform logits
    assert model.bias[1].item() == 0.5
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize(
    ("inputs", "labels", "options", "message"),
    [
        (INPUTS, LABELS, {"task": "ranking"}, "task must be"),
        (INPUTS, LABELS, {"task": "classification", "chunk_size": 0}, "chunk_size"),
        (INPUTS[:0], LABELS[:0], {"task": "classification"}, "at least one example"),
        (INPUTS, LABELS[:3], {"task": "classification"}, "must match"),
    ],
)
def test_rejects_bad_arguments(inputs, labels, options, message) -> None:
    with pytest.raises(ValueError, match=message):
        evaluate(linear_classifier(), nn.functional.cross_entropy, inputs, labels, **options)


def test_classification_needs_a_score_per_class() -> None:
    model = nn.Sequential(nn.Linear(2, 1), nn.Flatten(0)).double()  # one logit per example
    with pytest.raises(ValueError, match=r"shape \(examples, classes\), got \(5,\)"):
        evaluate(
            model,
            nn.functional.binary_cross_entropy_with_logits,
            INPUTS,
            LABELS.double(),
            task="classification",
        )
