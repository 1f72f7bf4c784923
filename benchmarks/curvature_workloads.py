"""The models, batches and machine-precision references of ``bench_curvature.py``.

Workloads are float32, in eval mode, built with a fixed seed and lightly trained by minibatch
SGD (so the Hessian has the outliers of a trained network rather than the flat top of one at
initialisation). References are computed on float64 copies of the model and batch: the top
eigenvalues by our Lanczos at tolerance 1e-12 (checked a posteriori by one more float64
product per pair), the trace from the dense Hessian of ``torch.func.hessian``.
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import torch
from torch import Tensor, nn

from dynascope.server.schemas.data_specs import DigitsSpec, RandomImagesSpec
from dynascope.server.schemas.model_specs import CNNSpec, MLPSpec
from dynascope.worker.probes.curvature import HessianOperator
from dynascope.worker.probes.lanczos import lanczos_top_eigenpairs
from dynascope.worker.probes.memory_format import in_preferred_format
from dynascope.worker.probes.operators import SymmetricOperator
from dynascope.worker.probes.params import call_at, detached_parameters, loss_and_gradient
from dynascope.worker.registry import build_model, count_parameters, load_dataset, loss_function

LOSS = loss_function("classification")  # mean cross-entropy, as nn.CrossEntropyLoss()
NO_FILES = Path("/nonexistent")  # digits is bundled and random images generated: no files read
CHEAP_SECONDS = 10.0  # runs faster than this are repeated three times (median)


@dataclass
class Workload:
    """A model at a fixed point (float32, eval mode) and the probe batch it is measured on."""

    name: str
    model: nn.Module
    x: Tensor
    y: Tensor

    @property
    def size(self) -> int:
        return count_parameters(self.model)

    @cached_property
    def x_ours(self) -> Tensor:
        """The batch as the runner hands it to our probes: channels-last images for a
        convolutional model on the CPU (``worker/probes/memory_format.py``), ``x`` itself
        otherwise. The peers get ``x``, as their users pass it."""
        return in_preferred_format(self.model, self.x)


@dataclass(frozen=True)
class Reference:
    """Float64 top eigenvalues (largest first), the largest a posteriori relative residual
    ``‖Hv - λv‖/|λ|`` of their pairs, the products used and the wall time."""

    eigenvalues: list[float]
    residual: float
    iterations: int
    seconds: float


def train(
    model: nn.Module, x: Tensor, y: Tensor, *, steps: int, lr: float, batch: int, seed: int
) -> nn.Module:
    """``steps`` steps of plain SGD on minibatches of ``batch`` examples drawn from ``(x, y)``
    (the whole of it when ``batch >= len(x)``: gradient descent), in place, in eval mode."""
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        if batch < len(x):
            rows = torch.randint(0, len(x), (batch,), generator=generator)
            inputs, targets = x[rows], y[rows]
        else:
            inputs, targets = x, y
        _, _, gradient = loss_and_gradient(model, LOSS, inputs, targets)
        with torch.no_grad():
            for name, parameter in model.named_parameters():
                parameter.sub_(lr * gradient[name])
    return model


def synchronize() -> None:
    """Wait for the GPU's queued work (a no-op on the CPU), so that a wall-clock time taken
    next counts it: CUDA kernels run asynchronously."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def on_device(workloads: list[Workload], device: torch.device) -> list[Workload]:
    """The workloads, built and trained on the CPU (the same numbers whatever the device),
    with model and batch moved to ``device``."""
    return [Workload(w.name, w.model.to(device), w.x.to(device), w.y.to(device)) for w in workloads]


def at_point(model: nn.Module, point: dict[str, Tensor]) -> nn.Module:
    """A copy of ``model`` with its parameters set to ``point`` (for the peers, which read
    parameters from a model)."""
    copied = copy.deepcopy(model)
    with torch.no_grad():
        for name, parameter in copied.named_parameters():
            parameter.copy_(point[name])
    return copied


def eigen_workloads(seed: int) -> list[Workload]:
    """MLP 64-128-128-10 (ReLU) on digits, probe batch 1024; CNN with channels 4-8-16-32-64
    (3×3, ReLU, 2×2 max-pool per stage, global average pool, linear head) on 3×32×32 random
    images, probe batch 512. Each after 100 SGD steps, lr 0.1, minibatch 128."""
    digits = load_dataset(DigitsSpec(), data_dir=NO_FILES)
    torch.manual_seed(seed)
    mlp = build_model(MLPSpec(widths=[128, 128]), digits)
    train(mlp, digits.x_train, digits.y_train, steps=100, lr=0.1, batch=128, seed=seed)
    images = load_dataset(RandomImagesSpec(), data_dir=NO_FILES)
    torch.manual_seed(seed)
    cnn = build_model(CNNSpec(channels=[4, 8, 16, 32, 64]), images)
    train(cnn, images.x_train, images.y_train, steps=100, lr=0.1, batch=128, seed=seed)
    return [
        Workload("MLP 64-128-128-10, digits, batch 1024", mlp, digits.x_train[:1024],
                 digits.y_train[:1024]),
        Workload("CNN 4-8-16-32-64, random 3x32x32 images, batch 512", cnn,
                 images.x_train[:512], images.y_train[:512]),
    ]  # fmt: skip


def trace_workload(seed: int) -> Workload:
    """MLP 64-16-10 (ReLU) on digits (1,210 parameters), probe batch 256, after 200 SGD steps:
    small enough for the dense Hessian."""
    digits = load_dataset(DigitsSpec(), data_dir=NO_FILES)
    torch.manual_seed(seed)
    model = build_model(MLPSpec(widths=[16]), digits)
    train(model, digits.x_train, digits.y_train, steps=200, lr=0.1, batch=128, seed=seed)
    return Workload(
        "MLP 64-16-10, digits, batch 256", model, digits.x_train[:256], digits.y_train[:256]
    )


def hessian_of(
    model: nn.Module, x: Tensor, y: Tensor, params: dict[str, Tensor] | None = None
) -> HessianOperator:
    """Our Hessian of the mean loss on the whole batch as one chunk (its graph kept)."""
    return HessianOperator(model, LOSS, x, y, chunk_size=len(x), params=params)


class Float64Recurrence(SymmetricOperator):
    """A float32 operator seen as a float64 one: products are taken in float32 and returned in
    float64, so a Lanczos run over it keeps its basis and recurrence in float64 (a diagnostic
    of how much of our float32 eigenvalue error comes from the recurrence, not the products).
    Its rounding floor is float64's, so the tolerance is met as documented."""

    def __init__(self, operator: SymmetricOperator) -> None:
        super().__init__(operator.size, torch.float64, operator.device)
        self.operator = operator

    def _matvec(self, vector: Tensor) -> Tensor:
        return self.operator.matvec(vector.to(self.operator.dtype)).double()


def reference(workload: Workload, seed: int, k: int) -> Reference:
    """Top ``k`` eigenvalues of the float64 Hessian by our Lanczos to relative residuals of
    1e-12 (the residual criterion: eigenvectors that accurate too, so the eigenvalues are good
    to rounding), and the largest a posteriori relative residual of the pairs (one more float64
    product each)."""
    started = time.perf_counter()
    model = copy.deepcopy(workload.model).double()
    hessian = hessian_of(model, workload.x.double(), workload.y)
    result = lanczos_top_eigenpairs(
        hessian, k, tolerance=1e-12, max_iterations=600, criterion="residual",
        generator=torch.Generator().manual_seed(seed),
    )  # fmt: skip
    seconds = time.perf_counter() - started
    vectors, values = result.eigenvectors, result.eigenvalues
    residuals = torch.linalg.vector_norm(hessian.matmat(vectors) - vectors * values, dim=0)
    return Reference(
        values.flip(0).tolist(), (residuals / values.abs()).max().item(), result.iterations,
        seconds,
    )  # fmt: skip


def exact_hessian_spectrum(workload: Workload) -> tuple[float, Tensor]:
    """The trace and eigenvalues of the dense float64 Hessian, by ``torch.func.hessian`` of the
    loss as a function of the flat parameter vector (independent of our operator)."""
    model = copy.deepcopy(workload.model).double()
    point = detached_parameters(model)
    shapes = [(name, tensor.shape) for name, tensor in point.items()]
    sizes = [tensor.numel() for tensor in point.values()]
    x = workload.x.double()

    def loss_of(flat: Tensor) -> Tensor:
        pieces = flat.split(sizes)
        params = {name: p.view(s) for (name, s), p in zip(shapes, pieces, strict=True)}
        return LOSS(call_at(model, params, x), workload.y)

    dense = torch.func.hessian(loss_of)(torch.cat([t.reshape(-1) for t in point.values()]))
    return dense.trace().item(), torch.linalg.eigvalsh(dense)


def relative_error(values: list[float], reference: list[float]) -> float:
    """The largest relative error of ``values`` (largest first) against ``reference``."""
    return max(abs(v - r) / abs(r) for v, r in zip(values, reference, strict=True))


def timed(run: Callable[[], object]) -> tuple[object, float]:
    """The result of ``run`` and its wall time: the median of three runs when the first took
    under ``CHEAP_SECONDS``, else the first run's."""
    results, times = [], []
    for _ in range(3):
        started = time.perf_counter()
        results.append(run())
        synchronize()
        times.append(time.perf_counter() - started)
        if times[0] >= CHEAP_SECONDS:
            break
    return results[0], statistics.median(times)


def timed_interleaved(
    runs: dict[str, Callable[[], object]], rounds: int = 3
) -> dict[str, tuple[object, list[float]]]:
    """Each run's first result and its wall times over ``rounds`` rounds, every round running
    each once in turn: so that a change of load on the machine hits all of them alike, and
    ratios can be taken round by round."""
    results: dict[str, object] = {}
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            started = time.perf_counter()
            result = run()
            synchronize()
            times[name].append(time.perf_counter() - started)
            results.setdefault(name, result)
    return {name: (results[name], times[name]) for name in runs}
