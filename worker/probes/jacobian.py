"""Jacobian spectra on probe inputs: the input-output Jacobian and the empirical neural tangent
kernel (NTK), with the kernel's change between probes.

* **Input-output Jacobian.** For every probe input ``x`` the Jacobian ``∂f(x)/∂x`` of the
  model's outputs (flattened: ``C`` numbers) with respect to its input (flattened: ``d``
  numbers), and its singular values. Their spread measures how the network stretches its input
  space: a network at dynamical isometry has all of them near one (Pennington, Schoenholz &
  Ganguli 2017, "Resurrecting the sigmoid in deep learning through dynamical isometry"), and
  the Frobenius norm ``‖∂f/∂x‖_F`` on test points is the sensitivity that Novak et al. 2018,
  "Sensitivity and generalization in neural networks", find to track generalisation.
* **Empirical NTK.** ``Θ = J Jᵀ`` with ``J`` the ``(n·C) × P`` Jacobian of all ``C`` outputs of
  ``n`` probe inputs with respect to the ``P`` parameters (Jacot, Gabriel & Hongler 2018,
  "Neural tangent kernel"). In the lazy (kernel) regime ``Θ`` hardly moves during training; in
  the rich (feature-learning) regime it does, fastest early in training (Fort et al. 2020,
  "Deep learning versus kernel learning: an empirical study of loss landscape geometry and
  the time evolution of the neural tangent kernel"). :func:`ntk_velocity` and
  :func:`ntk_alignment_distance` measure its change between two probes on the same inputs;
  a lazy-to-rich transition (as in grokking) shows as a rise of both.

Both Jacobians are built row by row in reverse mode, ``vmap(jacrev(...))`` over the examples
of a chunk of ``chunk_size`` inputs: ``C`` vector-Jacobian products per example, each on that
example alone (a ``jacrev`` of the whole chunk's outputs would run every product over the whole
chunk). The model is evaluated through ``functional_call`` at detached parameters, one example
at a time, so it must treat examples independently: call these in eval mode (the runner does;
see :mod:`.params`), where BatchNorm uses its running statistics and dropout is off. Nothing is
written to the model or its ``.grad``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import functional_call, jacrev, vmap

from dynascope.worker.probes.params import buffers_of, detached_parameters

NTK_MAX_KERNEL_SIZE = 2048
"""Default bound on ``n·C``, the side of the kernel: the kernel then takes at most 16 MiB in
float32, its eigenvalues about a second on a CPU, and ``J`` at most ``2048·P`` numbers."""
NTK_PRODUCT_BLOCK = 128
QUANTILES = (0.1, 0.5, 0.9)


@dataclass(frozen=True)
class InputOutputJacobian:
    """Singular values of the input-output Jacobians of ``n`` probe inputs, and their summary.

    ``singular_values`` is ``n × r`` (float64, on the host), ``r = min(C, d)``, each row the
    singular values of one input's Jacobian in descending order. The summary is taken over the
    inputs for each index ``k`` (the ``k``-th largest singular value): ``mean``, ``median``,
    ``quantile_10`` and ``quantile_90`` (each of length ``r``; quantiles linearly interpolated,
    as ``torch.quantile``). Three numbers summarise the whole spectrum, averaged over inputs:
    ``mean_largest``, the mean of ``σ₁`` (the worst-case stretching, a local Lipschitz
    constant); ``mean_log_mean_square``, the mean of ``log((1/r) Σ_k σ_k²)`` (the log of the
    mean squared singular value, 0 at isometry in the sense of Pennington et al. 2017;
    ``-inf`` for an input whose Jacobian is zero); and ``mean_frobenius``, the mean of
    ``‖∂f/∂x‖_F = (Σ_k σ_k²)^{1/2}`` (the sensitivity of Novak et al. 2018). ``rows`` is the
    number of Jacobian rows computed (``n·C`` vector-Jacobian products). A Jacobian with a
    non-finite entry gets NaN singular values.
    """

    singular_values: Tensor
    mean: Tensor
    median: Tensor
    quantile_10: Tensor
    quantile_90: Tensor
    mean_largest: float
    mean_log_mean_square: float
    mean_frobenius: float
    rows: int


@dataclass(frozen=True)
class NTKResult:
    """The empirical NTK of ``n`` probe inputs and its spectrum.

    ``kernel`` is the ``(n·C) × (n·C)`` matrix ``Θ`` (example-major: row ``i·C + c`` is output
    ``c`` of input ``i``) in the parameters' dtype and device; keep it and pass it as
    ``previous`` to the next :func:`ntk_spectrum` on the same inputs. ``eigenvalues`` (float64,
    on the host) are in descending order, the top ``k`` if asked; ``trace`` is ``tr Θ = ‖J‖_F²``.
    ``velocity`` and ``alignment_distance`` compare with ``previous`` (``None`` without one):
    see :func:`ntk_velocity` and :func:`ntk_alignment_distance`. Cost: ``rows`` Jacobian rows
    (vector-Jacobian products, ``n·C``) over ``parameters`` parameters, and one ``(n·C) × P``
    by ``P × (n·C)`` matrix product.
    """

    eigenvalues: Tensor
    trace: float
    kernel: Tensor
    velocity: float | None
    alignment_distance: float | None
    rows: int
    parameters: int


def input_output_jacobians(
    model: nn.Module,
    inputs: Tensor,
    *,
    chunk_size: int,
    params: dict[str, Tensor] | None = None,
) -> Tensor:
    """The Jacobians ``∂f(x)/∂x`` of the model's flattened outputs with respect to its
    flattened input, for every input ``x`` of ``inputs`` (``n`` vectors or images, a float tensor
    of shape ``(n, ...)``): an ``n × C × d`` tensor in the inputs' dtype.

    Computed by ``vmap(jacrev(f))`` over chunks of ``chunk_size`` inputs at ``params`` (default:
    the model's detached trainable parameters), in the mode the caller set (eval: see the
    module's docstring); memory is that of ``chunk_size·C`` backward passes of one example.
    Token models (integer inputs) are not differentiable with respect to their inputs and raise
    ``ValueError``. Reference: Novak et al. 2018, "Sensitivity and generalization in neural
    networks".
    """
    return torch.cat(list(_input_output_chunks(model, inputs, chunk_size, params)))


def input_output_singular_values(
    model: nn.Module,
    inputs: Tensor,
    *,
    chunk_size: int,
    params: dict[str, Tensor] | None = None,
) -> InputOutputJacobian:
    """The singular values of the Jacobian ``∂f(x)/∂x`` (``C × d``, outputs and input
    flattened) of every input ``x`` of ``inputs`` (``n`` vectors or images, a float tensor of
    shape ``(n, ...)``), summarised over the inputs (see :class:`InputOutputJacobian`).

    The Jacobians are those of :func:`input_output_jacobians`, one chunk of ``chunk_size``
    inputs at a time (memory: ``chunk_size·C`` backward passes of one example and a
    ``chunk_size × C × d`` Jacobian); their singular values are taken in float64
    (``torch.linalg.svdvals``). Token models (integer inputs) raise ``ValueError``. References:
    Pennington, Schoenholz & Ganguli 2017 (dynamical isometry); Novak et al. 2018
    (sensitivity).
    """
    spectra = []
    rows = 0
    for jacobians in _input_output_chunks(model, inputs, chunk_size, params):
        rows += jacobians.shape[0] * jacobians.shape[1]
        spectra.append(_singular_values(jacobians.detach().to(torch.float64).cpu()))
    values = torch.cat(spectra)
    mean_square = values.square().mean(dim=1)
    quantiles = torch.quantile(values, torch.tensor(QUANTILES, dtype=torch.float64), dim=0)
    return InputOutputJacobian(
        singular_values=values,
        mean=values.mean(dim=0),
        median=quantiles[1],
        quantile_10=quantiles[0],
        quantile_90=quantiles[2],
        mean_largest=values[:, 0].mean().item(),
        mean_log_mean_square=mean_square.log().mean().item(),
        mean_frobenius=values.square().sum(dim=1).sqrt().mean().item(),
        rows=rows,
    )


def empirical_ntk(
    model: nn.Module,
    inputs: Tensor,
    *,
    chunk_size: int,
    params: dict[str, Tensor] | None = None,
    max_kernel_size: int = NTK_MAX_KERNEL_SIZE,
) -> Tensor:
    """The empirical neural tangent kernel ``Θ = J Jᵀ`` of the outputs of ``inputs`` (``n``
    examples, any dtype the model takes: vectors, images or tokens) with respect to ``params``
    (default: the model's detached trainable parameters), ``J`` the ``(n·C) × P`` Jacobian of
    all ``C`` outputs of every example, flattened example-major (Jacot et al. 2018).

    ``J`` is built by ``vmap(jacrev)`` over the parameters, ``chunk_size`` examples at a time,
    into one preallocated ``(n·C) × P`` matrix: ``n·C`` vector-Jacobian products, each a backward
    pass of one example (about ``2P`` multiply-adds for an MLP). ``Θ`` is then ``J`` times its
    transpose, by lower-triangular blocks (about ``(n·C)²·P/2`` multiply-adds), exactly
    symmetric, in the parameters' dtype and device. For 64 inputs of an MLP 64-128-128-10 the
    product is most of the cost. Memory: ``J`` (``n·C·P`` numbers: 67 MB in float32 for 640
    rows and 26k parameters) plus one chunk's Jacobian and backward passes. The matrix-free
    alternative, ``Θ`` column by column as ``J(Jᵀe)``, would need ``n·C`` Jacobian-vector
    products more, each over the whole batch, for memory ``O(P)`` instead of ``O(n·C·P)``: with
    ``n·C`` bounded by ``max_kernel_size`` the stored ``J`` is the cheaper choice. Raises
    ``ValueError`` when ``n·C`` exceeds ``max_kernel_size``, before any Jacobian is computed.
    """
    _check_batch(inputs, chunk_size)
    point = detached_parameters(model) if params is None else params
    if not point:
        raise ValueError("no trainable parameters: the neural tangent kernel is zero")
    outputs_of = _single_example_at(model)
    with torch.no_grad():
        outputs = outputs_of(point, inputs[0]).numel()
    size = inputs.shape[0] * outputs
    if size > max_kernel_size:
        raise ValueError(
            f"the kernel would be {size} × {size} ({inputs.shape[0]} inputs × {outputs} outputs),"
            f" above max_kernel_size={max_kernel_size}: probe fewer inputs or raise the limit"
        )
    first = next(iter(point.values()))
    jacobian = first.new_empty(size, sum(t.numel() for t in point.values()))
    per_example = vmap(jacrev(outputs_of), in_dims=(None, 0))
    row = 0
    for chunk in inputs.split(chunk_size):
        pieces = per_example(point, chunk)
        stop = row + chunk.shape[0] * outputs
        column = 0
        for name, tensor in point.items():
            width = tensor.numel()
            jacobian[row:stop, column : column + width] = pieces[name].reshape(stop - row, width)
            column += width
        row = stop
    return _gram(jacobian)


def ntk_eigenvalues(kernel: Tensor, k: int | None = None) -> Tensor:
    """The eigenvalues of a symmetric kernel in descending order (float64, on the host), the
    largest ``k`` if given, by ``torch.linalg.eigvalsh``. A kernel with a non-finite entry
    gets NaN eigenvalues."""
    if kernel.ndim != 2 or kernel.shape[0] != kernel.shape[1]:
        raise ValueError(f"expected a square kernel, got shape {tuple(kernel.shape)}")
    if k is not None and not 1 <= k <= kernel.shape[0]:
        raise ValueError(f"k must be between 1 and {kernel.shape[0]}, got {k}")
    matrix = kernel.detach().to(torch.float64)
    if not torch.isfinite(matrix).all():
        values = torch.full((kernel.shape[0],), math.nan, dtype=torch.float64)
    else:
        values = torch.linalg.eigvalsh(matrix).flip(0).cpu()
    return values if k is None else values[:k]


def ntk_velocity(previous: Tensor, current: Tensor) -> float:
    """The relative change of the kernel between two probes on the same inputs,
    ``‖Θ_t − Θ_{t−1}‖_F / ‖Θ_{t−1}‖_F`` (Fort et al. 2020 track this "kernel velocity"; Jacot
    et al. 2018 show it vanishes in the infinite-width limit). Large: rich, feature learning;
    small: lazy, kernel regime. Not divided by the steps between the probes: the runner knows
    them. Computed in float64; NaN when the previous kernel is zero."""
    before, after = _pair(previous, current)
    size = torch.linalg.matrix_norm(before).item()
    change = torch.linalg.matrix_norm(after - before).item()
    return change / size if size > 0 else math.nan


def ntk_alignment_distance(previous: Tensor, current: Tensor) -> float:
    """One minus the kernel alignment (cosine similarity) of two kernels,
    ``1 − ⟨Θ_t, Θ_{t−1}⟩_F / (‖Θ_t‖_F ‖Θ_{t−1}‖_F)``, in ``[0, 2]`` (0 for kernels equal up to
    a positive scale; Fort et al. 2020 use it between kernels along training, after Cristianini
    et al. 2002, "On kernel-target alignment"). Unlike :func:`ntk_velocity` it ignores the
    kernel's overall scale, so it tells a change of shape (features rotating) from a uniform
    growth. Computed in float64; NaN when either kernel is zero."""
    before, after = _pair(previous, current)
    scale = (torch.linalg.matrix_norm(before) * torch.linalg.matrix_norm(after)).item()
    if scale == 0:
        return math.nan
    return 1.0 - (before * after).sum().item() / scale


def ntk_spectrum(
    model: nn.Module,
    inputs: Tensor,
    *,
    chunk_size: int,
    params: dict[str, Tensor] | None = None,
    previous: Tensor | None = None,
    k: int | None = None,
    max_kernel_size: int = NTK_MAX_KERNEL_SIZE,
) -> NTKResult:
    """The empirical NTK of ``inputs`` (:func:`empirical_ntk`), its eigenvalues (the top ``k``
    if given; :func:`ntk_eigenvalues`) and trace, and its velocity and alignment distance from
    ``previous``, the kernel of the last probe on the same inputs (:func:`ntk_velocity`,
    :func:`ntk_alignment_distance`). Jacot et al. 2018; Fort et al. 2020."""
    point = detached_parameters(model) if params is None else params
    kernel = empirical_ntk(
        model, inputs, chunk_size=chunk_size, params=point, max_kernel_size=max_kernel_size
    )
    return NTKResult(
        eigenvalues=ntk_eigenvalues(kernel, k),
        trace=kernel.diagonal().sum().item(),
        kernel=kernel,
        velocity=None if previous is None else ntk_velocity(previous, kernel),
        alignment_distance=None if previous is None else ntk_alignment_distance(previous, kernel),
        rows=kernel.shape[0],
        parameters=sum(t.numel() for t in point.values()),
    )


def _single_example_at(model: nn.Module) -> Callable[[dict[str, Tensor], Tensor], Tensor]:
    """``f(params, x)``: the flattened outputs of the model on one example ``x`` (without its
    batch dimension) at ``params``, with the model's buffers."""
    buffers = buffers_of(model, copy=model.training)

    def outputs_of(params: dict[str, Tensor], example: Tensor) -> Tensor:
        return functional_call(model, (params, buffers), (example.unsqueeze(0),)).reshape(-1)

    return outputs_of


def _input_output_chunks(
    model: nn.Module, inputs: Tensor, chunk_size: int, params: dict[str, Tensor] | None
) -> Iterator[Tensor]:
    """The input-output Jacobians, ``chunk_size × C × d`` at a time."""
    if not inputs.is_floating_point():
        raise ValueError(
            f"the input-output Jacobian needs float inputs (vectors or images), got {inputs.dtype}"
            " inputs: a token model is not differentiable with respect to its inputs; probe its"
            " NTK (empirical_ntk) instead"
        )
    _check_batch(inputs, chunk_size)
    point = detached_parameters(model) if params is None else params
    outputs_of = _single_example_at(model)
    per_example = vmap(jacrev(outputs_of, argnums=1), in_dims=(None, 0))
    for chunk in inputs.split(chunk_size):
        yield per_example(point, chunk).reshape(chunk.shape[0], -1, chunk[0].numel())


def _check_batch(inputs: Tensor, chunk_size: int) -> None:
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
    if inputs.ndim < 1 or inputs.shape[0] == 0:
        raise ValueError("no probe inputs: expected a batch of shape (n, ...) with n >= 1")


def _singular_values(jacobians: Tensor) -> Tensor:
    """Batched ``svdvals`` (descending), NaN for a matrix with a non-finite entry."""
    finite = torch.isfinite(jacobians).flatten(1).all(dim=1)
    values = torch.full(
        (jacobians.shape[0], min(jacobians.shape[1:])), math.nan, dtype=jacobians.dtype
    )
    if finite.any():
        values[finite] = torch.linalg.svdvals(jacobians[finite])
    return values


def _gram(matrix: Tensor) -> Tensor:
    """``M Mᵀ``, exactly symmetric, from its lower triangle of blocks of ``NTK_PRODUCT_BLOCK``
    rows: a little over half the multiply-adds of ``M @ M.T`` (0.15 s against 0.22 s for
    ``M`` 640 × 26122 in float32 on one CPU thread)."""
    rows = matrix.shape[0]
    gram = matrix.new_empty(rows, rows)
    for start in range(0, rows, NTK_PRODUCT_BLOCK):
        stop = min(start + NTK_PRODUCT_BLOCK, rows)
        gram[start:stop, :stop] = matrix[start:stop] @ matrix[:stop].T
    return gram.tril() + gram.tril(-1).T


def _pair(previous: Tensor, current: Tensor) -> tuple[Tensor, Tensor]:
    """Two kernels of the same shape, in float64 on the current kernel's device."""
    if previous.shape != current.shape:
        raise ValueError(
            f"kernels of shapes {tuple(previous.shape)} and {tuple(current.shape)} cannot be"
            " compared: the NTK's change needs the same probe inputs at both probes"
        )
    return (
        previous.detach().to(current.device, torch.float64),
        current.detach().to(torch.float64),
    )
