"""Many parameter sets evaluated on one batch: the loss (and accuracy) at each of many linear
combinations ``θ_i = Σ_j w_ij b_j`` of a few basis parameter sets ``b_j``.

A point ``c + α d₁ + β d₂`` of a loss-landscape plane (Li et al. 2018) is the combination
``(1, α, β)`` of ``(c, d₁, d₂)``; a point ``(1 − a)θ_A + aθ_B`` of a segment is ``(1 − a, a)``
of ``(θ_A, θ_B)``. :func:`losses_at_combinations` evaluates many of them without ever loading
parameters into the model (``torch.func.functional_call``, point by point or ``vmap``-ed over
chunks), with two exact shortcuts: the first layer of a sequential model computed once per
basis element, and channels-last images (see that function). :mod:`.landscape` builds the
landscapes on it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap
from torch.nn import functional as F

from dynascope.worker.probes.evaluation import Task, correct_predictions
from dynascope.worker.probes.memory_format import is_channels_last, prefers_channels_last
from dynascope.worker.probes.params import LossFunction, buffers_of

CHUNK_SIZE = 64
"""Parameter sets materialised together (and vmapped together when vectorised)."""


@dataclass(frozen=True)
class GridValues:
    """Mean loss (and, for classification, accuracy) at each of ``n_points`` parameter sets:
    ``losses`` and ``accuracies`` (n_points,) float64 on the host, ``accuracies`` ``None`` for
    regression; ``evaluations`` loss evaluations (one forward pass over the batch each: here
    ``n_points``) in ``seconds`` of wall time."""

    losses: Tensor
    accuracies: Tensor | None
    evaluations: int
    seconds: float


def losses_at_combinations(
    model: nn.Module,
    loss_fn: LossFunction,
    inputs: Tensor,
    targets: Tensor,
    *,
    basis: Sequence[dict[str, Tensor]],
    weights: Tensor,
    task: Task = "classification",
    chunk_size: int = CHUNK_SIZE,
    vectorize: bool | None = None,
    channels_last: bool | None = None,
) -> GridValues:
    """The mean loss ``loss_fn(model(inputs; θ_i), targets)`` and, for classification, the
    accuracy (argmax over the last dimension equals the target) at ``θ_i = Σ_j weights[i, j]
    · basis[j]`` for every row ``i`` of ``weights`` (n_points, len(basis)).

    A grid point ``(α, β)`` around ``c`` is weights ``(1, α, β)`` on ``(c, d₁, d₂)``; a point
    of the segment from ``θ_A`` to ``θ_B`` is ``(1 − a, a)`` on ``(θ_A, θ_B)``, so its ends are
    exactly ``θ_A`` and ``θ_B`` (``1·x + 0·y = x`` in floating point). Weights are cast to the
    parameters' dtype. The basis dictionaries hold the same trainable parameters (the model's
    others are used as they are); buffers (BatchNorm statistics) come from the model, copied
    in train mode; the model's train/eval mode is the caller's (the runner sets eval).

    Parameters are never loaded into the model: ``chunk_size`` parameter sets at a time are
    formed by one ``tensordot`` per tensor and each is evaluated by
    ``torch.func.functional_call`` (``vectorize=False``), or the chunk by one
    ``vmap``-ed call (``vectorize=True``). Default: point by point on the CPU, vectorised
    elsewhere. On the CPU ``vmap`` turns each layer into a batched matmul or a grouped
    convolution, slower than as many plain ones: a 21×21 grid took 0.40 s vectorised against
    0.17 s point by point for an MLP of 26k parameters on 1024 examples, 10.4 s against 2.4
    to 3.2 s for a small CNN (``benchmarks/bench_landscape.py``, 2 cores); only tiny models
    gain (an MLP 2-32-32-2: 0.03 s against 0.05 s). Off the CPU (not measured here) batching
    the points amortises kernel launches. In train mode the points are evaluated one by one
    (running-statistics updates cannot be vmapped). All examples go through at once: memory
    is one forward pass (``chunk_size`` of them when vectorised) plus ``chunk_size``
    parameter sets.

    Two exact shortcuts, each a different rounding of the same value (tests compare them with
    the plain evaluation):

    * **First layer once per basis element.** When the model is an ``nn.Sequential`` (nested
      plain ``nn.Sequential`` allowed) whose first parametrised module is an ``nn.Linear`` or
      ``nn.Conv1d/2d/3d`` reached through parameter-free ``Flatten``/``Unflatten``/
      ``Identity`` only, with every parameter of that layer in the basis and no hooks on the
      way, that layer is affine in its own parameters on a fixed input:
      ``layer(x; Σ_j w_j b_j) = Σ_j w_j layer(x; b_j)``, bias included (``xWᵀ + b`` is
      linear in ``(W, b)``). It is computed once per basis element and combined per point
      (``len(basis)`` multiply-adds per output instead of a matmul or convolution), and the
      rest of the network runs as usual. Any other architecture runs whole, per point.
    * **Channels-last images.** Evaluated point by point, inputs are passed in channels-last
      memory format when :func:`~.memory_format.prefers_channels_last` says so
      (``channels_last=None``: 4-D CPU inputs of a model with a ``Conv2d``, checked by a
      trial forward pass): about twice as fast for small convolutions (measured).
      ``True``/``False`` force the choice.
    """
    started = time.perf_counter()
    if task not in ("classification", "regression"):
        raise ValueError(f"task must be 'classification' or 'regression', got {task!r}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
    _check_basis(basis, weights)
    if inputs.shape[0] == 0 or targets.shape[0] != inputs.shape[0]:
        raise ValueError(
            f"need a non-empty batch with one target per input, got {inputs.shape[0]}"
            f" inputs and {targets.shape[0]} targets"
        )
    names = list(basis[0])
    reference = basis[0]
    stacked = {name: torch.stack([b[name] for b in basis]) for name in names}
    weights = weights.to(dtype=reference[names[0]].dtype, device=reference[names[0]].device)
    vectorize = (inputs.device.type != "cpu") if vectorize is None else vectorize
    vectorize = vectorize and not model.training
    if channels_last is None:
        channels_last = (
            not vectorize
            and not is_channels_last(inputs)  # already so (the runner's): nothing to try
            and prefers_channels_last(model, inputs, reference)
        )
    if channels_last:
        inputs = inputs.contiguous(memory_format=torch.channels_last)
    split = _split_first_layer(model, set(names))
    buffers = buffers_of(model)
    if split is None:
        module, module_names, first = model, {name: name for name in names}, None
    else:
        module, module_names = split.tail, split.tail_names
        first = split.basis_outputs(inputs, basis)
        buffers = {tail: buffers[name] for tail, name in split.tail_buffers.items()}
    classification = task == "classification"

    def at_point(params: dict[str, Tensor], features: Tensor) -> tuple[Tensor, Tensor]:
        point_buffers = {n: b.clone() for n, b in buffers.items()} if model.training else buffers
        outputs = functional_call(module, (params, point_buffers), (features,))
        loss = loss_fn(outputs, targets)
        if not classification:
            return loss, loss.new_zeros((), dtype=torch.int64)
        return loss, correct_predictions(outputs, targets)

    combinations = None if first is None or vectorize else _Combinations(first)
    count = weights.shape[0]
    losses = torch.empty(count, dtype=torch.float64, device=inputs.device)
    correct = torch.zeros(count, dtype=torch.int64, device=inputs.device)
    with torch.no_grad():
        for start in range(0, count, chunk_size):
            rows = weights[start : start + chunk_size]
            params = {
                module_name: torch.tensordot(rows, stacked[name], dims=1)
                for module_name, name in module_names.items()
            }
            if vectorize:
                features = inputs if first is None else _combine_chunk(rows, first)
                chunk_losses, chunk_correct = vmap(
                    at_point, in_dims=(0, None if first is None else 0)
                )(params, features)
                losses[start : start + len(rows)] = chunk_losses
                correct[start : start + len(rows)] = chunk_correct
                continue
            row_values = rows.tolist()
            for offset, row in enumerate(row_values):
                features = inputs if combinations is None else combinations.at(row)
                point = {name: tensor[offset] for name, tensor in params.items()}
                loss, hits = at_point(point, features)
                losses[start + offset] = loss
                correct[start + offset] = hits
    accuracies = (correct.double() / inputs.shape[0]).cpu() if classification else None
    return GridValues(
        losses=losses.cpu(),
        accuracies=accuracies,
        evaluations=count,
        seconds=time.perf_counter() - started,
    )


def _check_basis(basis: Sequence[dict[str, Tensor]], weights: Tensor) -> None:
    if len(basis) == 0:
        raise ValueError("the basis is empty: give at least one parameter set")
    if weights.ndim != 2 or weights.shape[1] != len(basis):
        raise ValueError(
            f"weights must be (points, {len(basis)}) for a basis of {len(basis)} parameter"
            f" sets, got shape {tuple(weights.shape)}"
        )
    shapes = {name: tensor.shape for name, tensor in basis[0].items()}
    if not shapes:
        raise ValueError("the basis parameter sets are empty: no parameters to vary")
    for index, element in enumerate(basis[1:], start=1):
        if {name: tensor.shape for name, tensor in element.items()} != shapes:
            raise ValueError(
                f"basis[{index}] does not have the names and shapes of basis[0]: every"
                " basis element must be a parameter set of the same model"
            )


def _combine(row: list[float], outputs: list[Tensor]) -> Tensor:
    """``Σ_j row[j] · outputs[j]`` (keeps the memory format of the outputs)."""
    combined = outputs[0] * row[0]
    for weight, output in zip(row[1:], outputs[1:], strict=True):
        combined.add_(output, alpha=weight)
    return combined


class _Combinations:
    """``Σ_j row[j] · outputs[j]`` for one row of weights after another. While consecutive rows
    share all but their last weight (a grid's points along its last axis), the sum over the
    others is kept and each point costs one pass over the output instead of one per basis
    element: the same operations in the same order as :func:`_combine`, so the same bits.
    On the benchmark's CNN (first-layer output 512 × 4 × 32 × 32) that pass is what the
    shortcut costs per point."""

    def __init__(self, outputs: list[Tensor]) -> None:
        self.outputs = outputs
        self.shared: tuple[float, ...] | None = None
        self.partial: Tensor | None = None

    def at(self, row: list[float]) -> Tensor:
        if len(self.outputs) == 1:
            return self.outputs[0] * row[0]
        shared = tuple(row[:-1])
        if self.partial is None or shared != self.shared:
            self.shared, self.partial = shared, _combine(row[:-1], self.outputs[:-1])
        return torch.add(self.partial, self.outputs[-1], alpha=row[-1])


def _combine_chunk(rows: Tensor, outputs: list[Tensor]) -> Tensor:
    """``(chunk, *output shape)``: one combination of the outputs per row of weights."""
    shape = (rows.shape[0],) + (1,) * outputs[0].ndim
    combined = rows[:, 0].reshape(shape) * outputs[0]
    for j in range(1, len(outputs)):
        combined.add_(rows[:, j].reshape(shape) * outputs[j])
    return combined


# --------------------------------------------------------------- first layer, computed once

_PARAMETER_FREE = (nn.Flatten, nn.Unflatten, nn.Identity)
_AFFINE_FIRST = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


@dataclass(frozen=True)
class _FirstLayerSplit:
    """A sequential model cut after its first (affine) layer: ``prefix`` modules with no
    state run on the raw input, ``layer`` (named ``name``) is applied once per basis
    element, ``tail`` (the remaining modules, the model's own objects in a new container)
    runs per point; ``tail_names``/``tail_buffers`` map the tail's names to the model's."""

    prefix: list[nn.Module]
    layer: nn.Module
    name: str
    tail: nn.Sequential
    tail_names: dict[str, str]
    tail_buffers: dict[str, str]

    def basis_outputs(self, inputs: Tensor, basis: Sequence[dict[str, Tensor]]) -> list[Tensor]:
        """``layer(prefix(inputs); b_j)`` for every basis element ``b_j``."""
        features = inputs
        for module in self.prefix:
            features = module(features)
        outputs = []
        for element in basis:
            weight = element[f"{self.name}.weight"]
            bias = element.get(f"{self.name}.bias")
            if isinstance(self.layer, nn.Linear):
                outputs.append(F.linear(features, weight, bias))
            else:
                outputs.append(self.layer._conv_forward(features, weight, bias))  # type: ignore[operator]
        return outputs


def _split_first_layer(model: nn.Module, names: set[str]) -> _FirstLayerSplit | None:
    """The split of :func:`losses_at_combinations`'s first shortcut, or ``None`` when the
    model is not of that form (then it runs whole, per point)."""
    if type(model) is not nn.Sequential or _has_hooks(model):
        return None
    steps = _sequential_steps(model, "")
    if steps is None:
        return None
    for index, (name, module) in enumerate(steps):
        if type(module) in _PARAMETER_FREE and not _has_state(module):
            continue
        if type(module) not in _AFFINE_FIRST or _has_hooks(module):
            return None
        own = [f"{name}.{p}" for p, _ in module.named_parameters()]
        if not own or not set(own) <= names or any(True for _ in module.buffers()):
            return None
        rest = steps[index + 1 :]
        layer_parameters = {id(p) for p in module.parameters()}
        if any(id(p) in layer_parameters for _, m in rest for p in m.parameters()):
            return None  # weights tied to a later layer
        tail_names, tail_buffers = {}, {}
        for position, (qualified, step) in enumerate(rest):
            for p, _ in step.named_parameters():
                if f"{qualified}.{p}" in names:
                    tail_names[f"{position}.{p}"] = f"{qualified}.{p}"
            for b, _ in step.named_buffers():
                tail_buffers[f"{position}.{b}"] = f"{qualified}.{b}"
        return _FirstLayerSplit(
            prefix=[m for _, m in steps[:index]],
            layer=module,
            name=name,
            tail=nn.Sequential(*[m for _, m in rest]),
            tail_names=tail_names,
            tail_buffers=tail_buffers,
        )
    return None


def _sequential_steps(model: nn.Module, prefix: str) -> list[tuple[str, nn.Module]] | None:
    """The modules a plain ``nn.Sequential`` runs, in order, nested plain ``nn.Sequential``
    flattened (their forward is that loop), with qualified names; ``None`` if a nested
    container has hooks."""
    steps: list[tuple[str, nn.Module]] = []
    for name, child in model.named_children():
        if type(child) is nn.Sequential:
            if _has_hooks(child):
                return None
            inner = _sequential_steps(child, f"{prefix}{name}.")
            if inner is None:
                return None
            steps.extend(inner)
        else:
            steps.append((f"{prefix}{name}", child))
    return steps


def _has_hooks(module: nn.Module) -> bool:
    return bool(module._forward_hooks or module._forward_pre_hooks)


def _has_state(module: nn.Module) -> bool:
    return any(True for _ in module.parameters()) or any(True for _ in module.buffers())
