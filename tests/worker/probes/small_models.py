"""Small float64 models, losses and parameter sets shared by the grid-evaluation and the
landscape tests."""

from __future__ import annotations

import torch
from torch import Tensor, nn

EXACT = 1e-12  # float64: two roundings of the same sums (combined first layer, vmap)


def cross_entropy(outputs: Tensor, targets: Tensor) -> Tensor:
    return nn.functional.cross_entropy(outputs, targets)


def half_squared_error(outputs: Tensor, targets: Tensor) -> Tensor:
    """``½ · mean over examples of ‖outputs − targets‖²``."""
    return 0.5 * (outputs - targets).square().sum(dim=-1).mean()


def mlp() -> tuple[nn.Module, Tensor, Tensor]:
    """Flatten + MLP 6-8-8-3 (tanh), 10 examples of 2×3 inputs, float64, eval mode."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Flatten(),
        nn.Sequential(nn.Linear(6, 8), nn.Tanh()),
        nn.Sequential(nn.Linear(8, 8), nn.ReLU()),
        nn.Linear(8, 3),
    )
    generator = torch.Generator().manual_seed(1)
    inputs = torch.randn(10, 2, 3, generator=generator, dtype=torch.float64)
    targets = torch.randint(0, 3, (10,), generator=generator)
    return model.double().eval(), inputs, targets


def gaussian(params: dict[str, Tensor], seed: int) -> dict[str, Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {
        name: torch.randn(t.shape, generator=generator, dtype=t.dtype) for name, t in params.items()
    }
