"""The registry's cross-entropy (``worker/registry/losses.py``) against ``F.cross_entropy`` on
(N, C) logits: the forward and backward pass, microseconds, medians of 5 rounds of 200, for
numbers of classes C and examples N, with the layout the registry picks.

    python benchmarks/bench_cross_entropy.py

With few classes PyTorch's CPU log-softmax over (N, C) runs nearly scalar; the registry then
takes the (1, C, N) view, whose last dimension is the examples. Torch's default thread count.
"""

from __future__ import annotations

import statistics
import time

import torch
import torch.nn.functional as F

from dynascope.worker.registry import loss_function
from dynascope.worker.registry.losses import (
    CLASSES_LAID_OUT_LAST_BELOW,
    LOGITS_LAID_OUT_LAST_FROM,
)

OURS = loss_function("classification")


def forward_backward_us(loss, logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Median microseconds of one loss and its gradient with respect to the logits."""
    rounds = []
    for _ in range(6):
        started = time.perf_counter()
        for _ in range(200):
            torch.autograd.grad(loss(logits, labels), logits)
        rounds.append((time.perf_counter() - started) / 200 * 1e6)
    return statistics.median(rounds[1:])


def main() -> None:
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; forward and backward,"
          " microseconds: F.cross_entropy / the registry's = speed-up")  # fmt: skip
    for classes in (2, 4, 10, 16, 100):
        cells = []
        for examples in (128, 512, 1024, 4096):
            generator = torch.Generator().manual_seed(classes * examples)
            logits = torch.randn(examples, classes, generator=generator, requires_grad=True)
            labels = torch.randint(0, classes, (examples,), generator=generator)
            plain = forward_backward_us(F.cross_entropy, logits, labels)
            ours = forward_backward_us(OURS, logits, labels)
            transposed = (
                classes < CLASSES_LAID_OUT_LAST_BELOW
                and logits.numel() >= LOGITS_LAID_OUT_LAST_FROM
            )
            mark = "*" if transposed else " "
            cells.append(f"N={examples:<5} {plain:6.1f} / {ours:6.1f} = {plain / ours:4.2f}x{mark}")
        print(f"  C={classes:<4} " + "  ".join(cells))
    print("  (* the registry takes the transposed layout)")


if __name__ == "__main__":
    main()
