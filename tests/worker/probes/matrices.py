"""Reference matrices for the probe tests."""

import torch
from torch import Tensor


def with_spectrum(eigenvalues: list[float] | Tensor, seed: int) -> Tensor:
    """``Q diag(λ) Qᵀ``: a dense symmetric float64 matrix with exactly these eigenvalues, in a
    random orthogonal basis ``Q``."""
    values = torch.as_tensor(eigenvalues, dtype=torch.float64)
    generator = torch.Generator().manual_seed(seed)
    n = values.numel()
    basis, _ = torch.linalg.qr(torch.randn(n, n, generator=generator, dtype=torch.float64))
    matrix = basis @ torch.diag(values) @ basis.T
    return (matrix + matrix.T) / 2
