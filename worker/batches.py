"""The order in which training examples are visited: seeded epochs of shuffled minibatches."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor


def minibatch_indices(
    n_examples: int, batch_size: int, *, generator: torch.Generator
) -> Iterator[Tensor]:
    """Endless minibatches of example indices: each epoch is a fresh permutation drawn from
    ``generator`` and split into batches of ``batch_size`` (the incomplete tail of an epoch
    is dropped, so every step sees the same number of examples). A batch size at least the
    number of examples gives the full batch, in order, every step (gradient descent)."""
    if batch_size >= n_examples:
        everything = torch.arange(n_examples)
        while True:
            yield everything
    per_epoch = n_examples // batch_size
    while True:
        order = torch.randperm(n_examples, generator=generator)
        for batch in range(per_epoch):
            yield order[batch * batch_size : (batch + 1) * batch_size]
