"""Loss landscapes (Li et al. 2018) and linear interpolation between parameter sets.

Li et al. 2018, "Visualizing the Loss Landscape of Neural Nets", draw the loss on a line or a
plane through a point of parameter space: ``L(c + α d₁ + β d₂)`` over a grid of ``(α, β)``,
with random directions ``d`` rescaled filter by filter to the norms of the weights
(:func:`filter_normalized_direction`), so that the scale invariance of ReLU networks does not
distort the picture, or with the top principal directions of the training trajectory
(:func:`pca_plane`), on which the optimiser's path can be drawn. The same machinery gives the
loss along the straight line between two parameter sets: from initialisation to the end of a
run (:func:`interpolation_line`), or between two runs (:func:`interpolate`, linear mode
connectivity: Frankle et al. 2020, Entezari et al. 2022).

Every point is a linear combination ``Σ_j w_j b_j`` of a few basis parameter sets ``b_j``,
evaluated by :func:`~.grid_evaluation.losses_at_combinations` without ever loading parameters
into the model (see that function for the two exact shortcuts it takes). Results carry their
wall time and their number of loss evaluations.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from dynascope.worker.probes.evaluation import Task, evaluate
from dynascope.worker.probes.grid_evaluation import CHUNK_SIZE, losses_at_combinations
from dynascope.worker.probes.params import LossFunction, detached_parameters
from dynascope.worker.probes.trajectory import TrajectoryPCA, trajectory_pca

Batch = tuple[Tensor, Tensor]
"""``(inputs, targets)`` of a set of examples: the probe batch (train) or a held-out batch."""

PCA_MIN_ASPECT = 0.1
"""A PCA plane's shorter axis spans at least this fraction of its longer one."""
PCA_MARGIN = 0.2
"""A PCA plane's box reaches this fraction of the path's extent beyond it on every side, so
that the ends of the path (the checkpoint among them) lie inside the contours, not on their
edge."""


@dataclass(frozen=True)
class ProjectedPath:
    """How faithfully a trajectory drawn on a plane ``centre + Dᵀc`` represents it.

    For each snapshot ``θ_s`` (n of them): ``coordinates`` (n, 2), ``c_s = D(θ_s − centre)``;
    ``loss`` at ``θ_s`` itself; ``projected_loss`` at its projection ``centre + Dᵀc_s``
    (evaluated there, not read off the grid); ``residual`` ``‖(θ_s − centre) − Dᵀc_s‖``, the
    distance from the snapshot to the plane; ``relative_residual`` that over
    ``‖θ_s − centre‖`` (0 for a snapshot at the centre). All float64 on the host. Where the
    residual is large the drawn path is not where the run went, and ``loss`` and
    ``projected_loss`` say how much the contour under it misreports the run's loss."""

    coordinates: Tensor
    loss: Tensor
    projected_loss: Tensor
    residual: Tensor
    relative_residual: Tensor


@dataclass(frozen=True)
class Landscape:
    """Loss and accuracy on a 1-D or 2-D grid of parameter sets.

    ``kind``: ``"random"`` (filter-normalised random directions), ``"pca"`` (the trajectory's
    top-2 principal directions) or ``"interpolation"`` (the line from one parameter set to
    another). ``axes``: 1 or 2 float64 coordinate vectors. ``train_loss`` and the other grids
    are float64 on the host, shaped ``(len(axes[0]),)`` or ``(len(axes[0]), len(axes[1]))``
    with entry ``[i, j]`` at ``(axes[0][i], axes[1][j])``; the accuracies are ``None`` for
    regression, the ``test_`` grids ``None`` without a held-out batch. ``path``: the
    snapshots projected on a PCA plane (``None`` otherwise). ``evaluations``: loss
    evaluations (forward passes over a batch), path included; ``seconds``: wall time."""

    kind: str
    axes: list[Tensor]
    train_loss: Tensor
    train_accuracy: Tensor | None
    test_loss: Tensor | None
    test_accuracy: Tensor | None
    path: ProjectedPath | None
    evaluations: int
    seconds: float


@dataclass(frozen=True)
class Interpolation:
    """The loss along ``(1 − a)θ_A + aθ_B`` for ``alphas`` (points,) float64 in ``[0, 1]``, ends
    included: ``train_loss``, ``test_loss`` (``None`` without a held-out batch) and the
    accuracies (``None`` for regression), float64 on the host; the barrier heights
    (:func:`barrier_height`) of the train and held-out losses; loss evaluations and seconds."""

    alphas: Tensor
    train_loss: Tensor
    train_accuracy: Tensor | None
    test_loss: Tensor | None
    test_accuracy: Tensor | None
    train_barrier: float
    test_barrier: float | None
    evaluations: int
    seconds: float


# --------------------------------------------------------------------------- directions


def filter_normalized_direction(
    params: dict[str, Tensor], *, generator: torch.Generator
) -> dict[str, Tensor]:
    """A Gaussian random direction in parameter space, filter-normalised (Li et al. 2018, §4).

    For every tensor with two or more dimensions, each filter (slice along dimension 0: a
    convolution's output channel, a linear layer's output row, an embedding's row) of a
    standard Gaussian draw is rescaled to the norm of the matching filter of ``params``:
    ``d_f ← d_f / ‖d_f‖ · ‖θ_f‖`` (a filter of zero weights gets a zero direction). Tensors
    of fewer dimensions (biases, BatchNorm and LayerNorm scales and shifts) get a zero
    direction: the ``ignore='biasbn'`` choice of the authors' code, which keeps the plot
    about the weights. Drawn from ``generator`` on its device, in the order of ``params``,
    in their dtype, then moved to their device.
    """
    direction = {}
    for name, tensor in params.items():
        if tensor.ndim < 2:
            direction[name] = torch.zeros_like(tensor)
            continue
        draw = torch.randn(
            tensor.shape, generator=generator, dtype=tensor.dtype, device=generator.device
        ).to(tensor.device)
        filters = draw.reshape(tensor.shape[0], -1)
        target = torch.linalg.vector_norm(tensor.reshape(tensor.shape[0], -1), dim=1)
        norms = torch.linalg.vector_norm(filters, dim=1)
        scale = torch.where(norms > 0, target / norms, torch.zeros_like(norms))
        direction[name] = (filters * scale[:, None]).reshape(tensor.shape)
    return direction


# --------------------------------------------------------------------------- landscapes


def random_plane(
    model: nn.Module,
    loss_fn: LossFunction,
    train: Batch,
    test: Batch | None = None,
    *,
    generator: torch.Generator,
    task: Task,
    centre: dict[str, Tensor] | None = None,
    grid: int = 21,
    span: float = 1.0,
    chunk_size: int = CHUNK_SIZE,
    vectorize: bool | None = None,
) -> Landscape:
    """The loss on the plane ``centre + α d₁ + β d₂`` through two filter-normalised random
    directions (:func:`filter_normalized_direction`, drawn in that order from ``generator``),
    for ``α, β`` on ``grid`` evenly spaced values in ``[−span, span]`` (Li et al. 2018, who
    use ``[−1, 1]``). ``centre`` defaults to the model's parameters. The directions are not
    orthogonalised: two Gaussian directions in many dimensions are nearly orthogonal
    already (as in the authors' code)."""
    return _random_landscape(
        model, loss_fn, train, test, directions=2, generator=generator, task=task,
        centre=centre, grid=grid, span=span, chunk_size=chunk_size, vectorize=vectorize,
    )  # fmt: skip


def random_line(
    model: nn.Module,
    loss_fn: LossFunction,
    train: Batch,
    test: Batch | None = None,
    *,
    generator: torch.Generator,
    task: Task,
    centre: dict[str, Tensor] | None = None,
    grid: int = 21,
    span: float = 1.0,
    chunk_size: int = CHUNK_SIZE,
    vectorize: bool | None = None,
) -> Landscape:
    """The loss on the line ``centre + α d`` along one filter-normalised random direction
    (:func:`filter_normalized_direction`), ``α`` on ``grid`` values in ``[−span, span]``;
    ``centre`` defaults to the model's parameters (Li et al. 2018)."""
    return _random_landscape(
        model, loss_fn, train, test, directions=1, generator=generator, task=task,
        centre=centre, grid=grid, span=span, chunk_size=chunk_size, vectorize=vectorize,
    )  # fmt: skip


def interpolation_line(
    model: nn.Module,
    loss_fn: LossFunction,
    start: dict[str, Tensor],
    end: dict[str, Tensor],
    train: Batch,
    test: Batch | None = None,
    *,
    task: Task,
    grid: int = 21,
    span: float = 1.0,
    chunk_size: int = CHUNK_SIZE,
    vectorize: bool | None = None,
) -> Landscape:
    """The loss at ``(1 − a)·start + a·end`` (e.g. initialisation to the last step; Goodfellow
    et al. 2015) for ``a`` on ``grid`` evenly spaced values in ``[−span/2, 1 + span/2]``
    (``span = 1``: ``[−0.5, 1.5]``), with ``a = 0`` and ``a = 1`` exactly: lattice values
    within rounding of them are snapped to them, and they are added where the lattice misses
    them (then the axis has up to ``grid + 2`` values). The points at 0 and 1 are exactly
    ``start`` and ``end`` (weights ``(1, 0)`` and ``(0, 1)``)."""
    started = time.perf_counter()
    if grid < 2 or not span >= 0:
        raise ValueError(f"need grid >= 2 and span >= 0, got {grid} and {span}")
    axis = torch.linspace(-span / 2, 1 + span / 2, grid, dtype=torch.float64)
    step = (1 + span) / (grid - 1)
    for anchor in (0.0, 1.0):
        near = (axis - anchor).abs() <= 1e-9 * step
        axis[near] = anchor
    axis = torch.cat([axis, torch.tensor([0.0, 1.0], dtype=torch.float64)]).unique(sorted=True)
    return _landscape(
        "interpolation", model, loss_fn, train, test, [start, end], [axis], task=task,
        chunk_size=chunk_size, vectorize=vectorize, started=started, affine=True,
    )  # fmt: skip


def pca_plane(
    model: nn.Module,
    loss_fn: LossFunction,
    snapshots: Tensor,
    train: Batch,
    test: Batch | None = None,
    *,
    task: Task,
    centre: dict[str, Tensor] | None = None,
    pca: TrajectoryPCA | None = None,
    grid: int = 21,
    span: float = 1.0,
    chunk_size: int = CHUNK_SIZE,
    vectorize: bool | None = None,
) -> Landscape:
    """The loss on the plane of the trajectory's top-2 principal directions through
    ``centre`` (default: the model's parameters, i.e. the checkpoint), with the path drawn on
    it (Li et al. 2018, §7) and a measure of how faithful that drawing is.

    ``snapshots`` (n, P) are flat parameter vectors in the order of ``centre``'s entries;
    ``pca`` is their :func:`trajectory_pca` (computed here if not given; it needs two
    components: three snapshots not on one line). With ``D`` (2, P) the components, each
    snapshot's coordinates are ``c_s = D(θ_s − centre)``. The grid covers the bounding box of
    the path and the centre widened by :data:`PCA_MARGIN` of its extent on every side, scaled
    by ``span`` about its middle (``span = 1``: that box; the path's ends are then inside it,
    not on its edge); an axis shorter than :data:`PCA_MIN_ASPECT` times the other is widened
    to that, and a path of zero length gets a box of half-width ``10⁻³·max(‖centre‖, 1)``. The path
    (:class:`ProjectedPath`) is measured on the train batch: each snapshot's own loss, the
    loss at its projection, and its distance from the plane."""
    started = time.perf_counter()
    centre = detached_parameters(model) if centre is None else centre
    pca = trajectory_pca(snapshots, components=2) if pca is None else pca
    if pca.components.shape[0] < 2:
        raise ValueError(
            "the trajectory spans a single direction (fewer than three snapshots, or all on"
            " one line): a PCA plane needs two principal components"
        )
    components = pca.components[:2]
    coordinates, residual, distance = _project(snapshots, centre, components)
    axes = _path_axes(coordinates, grid, span, _vector(centre).norm().item())
    directions = [_as_parameters(component, centre) for component in components]
    landscape = _landscape(
        "pca", model, loss_fn, train, test, [centre, *directions], axes, task=task,
        chunk_size=chunk_size, vectorize=vectorize, started=started,
    )  # fmt: skip
    inputs, targets = train
    own = torch.tensor(
        [
            evaluate(model, loss_fn, inputs, targets, task=task,
                     params=_as_parameters(snapshot, centre)).loss
            for snapshot in snapshots
        ],
        dtype=torch.float64,
    )  # fmt: skip
    ones = torch.ones(len(coordinates), 1, dtype=torch.float64)
    projected = losses_at_combinations(
        model, loss_fn, inputs, targets, basis=[centre, *directions],
        weights=torch.cat([ones, coordinates], dim=1), task=task, chunk_size=chunk_size,
        vectorize=vectorize,
    )  # fmt: skip
    relative = torch.where(distance > 0, residual / distance, torch.zeros_like(residual))
    path = ProjectedPath(coordinates, own, projected.losses, residual, relative)
    return Landscape(
        kind="pca",
        axes=landscape.axes,
        train_loss=landscape.train_loss,
        train_accuracy=landscape.train_accuracy,
        test_loss=landscape.test_loss,
        test_accuracy=landscape.test_accuracy,
        path=path,
        evaluations=landscape.evaluations + len(own) + projected.evaluations,
        seconds=time.perf_counter() - started,
    )


def interpolate(
    model: nn.Module,
    loss_fn: LossFunction,
    theta_a: dict[str, Tensor],
    theta_b: dict[str, Tensor],
    train: Batch,
    test: Batch | None = None,
    *,
    task: Task,
    points: int = 21,
    chunk_size: int = CHUNK_SIZE,
    vectorize: bool | None = None,
) -> Interpolation:
    """The loss and accuracy along ``(1 − a)θ_A + aθ_B`` for ``points`` evenly spaced ``a`` in
    ``[0, 1]``, ends included, and the barrier height of the train and held-out losses
    (:func:`barrier_height`): linear mode connectivity (Frankle et al. 2020; Entezari et al.
    2022; Ainsworth et al. 2023, Git Re-Basin). The two ends are evaluated by the plain
    forward pass of :func:`~.evaluation.evaluate` at exactly ``θ_A`` and ``θ_B``, so they
    reproduce the losses the runs recorded (the runner evaluates the same way) bit for bit;
    the interior points by :func:`~.grid_evaluation.losses_at_combinations`."""
    started = time.perf_counter()
    if points < 3:
        raise ValueError(f"points must be at least 3 (both ends and one inside), got {points}")
    alphas = torch.linspace(0.0, 1.0, points, dtype=torch.float64)
    alphas[0], alphas[-1] = 0.0, 1.0
    inside = alphas[1:-1]
    weights = torch.stack([1 - inside, inside], dim=1)
    results: dict[str, tuple[Tensor, Tensor | None]] = {}
    evaluations = 0
    for label, batch in (("train", train), ("test", test)):
        if batch is None:
            continue
        inputs, targets = batch
        ends = [evaluate(model, loss_fn, inputs, targets, task=task, params=theta)
                for theta in (theta_a, theta_b)]  # fmt: skip
        middle = losses_at_combinations(
            model, loss_fn, inputs, targets, basis=[theta_a, theta_b], weights=weights,
            task=task, chunk_size=chunk_size, vectorize=vectorize,
        )  # fmt: skip
        evaluations += middle.evaluations + 2
        losses = _with_ends(ends[0].loss, middle.losses, ends[1].loss)
        accuracies = None
        if middle.accuracies is not None:
            accuracies = _with_ends(ends[0].accuracy, middle.accuracies, ends[1].accuracy)
        results[label] = (losses, accuracies)
    train_loss, train_accuracy = results["train"]
    test_loss, test_accuracy = results.get("test", (None, None))
    return Interpolation(
        alphas=alphas,
        train_loss=train_loss,
        train_accuracy=train_accuracy,
        test_loss=test_loss,
        test_accuracy=test_accuracy,
        train_barrier=barrier_height(alphas, train_loss),
        test_barrier=None if test_loss is None else barrier_height(alphas, test_loss),
        evaluations=evaluations,
        seconds=time.perf_counter() - started,
    )


def barrier_height(alphas: Tensor, losses: Tensor) -> float:
    """``max_a [L(a) − ((1 − a)L(0) + aL(1))]`` over the evaluated ``a`` (the first and last
    must be 0 and 1): how far the loss along a segment rises above the chord between its
    ends (Frankle et al. 2020; Entezari et al. 2022). The ends count, so it is at least 0,
    and 0 for a convex loss. NaN if any loss is."""
    if alphas.ndim != 1 or alphas.shape != losses.shape or alphas[0] != 0 or alphas[-1] != 1:
        raise ValueError("need matching 1-D alphas and losses, alphas from exactly 0 to 1")
    alphas, losses = alphas.double(), losses.double()
    chord = (1 - alphas) * losses[0] + alphas * losses[-1]
    return (losses - chord).max().item()


# ----------------------------------------------------------------------------- internals


def _random_landscape(
    model: nn.Module,
    loss_fn: LossFunction,
    train: Batch,
    test: Batch | None,
    *,
    directions: int,
    generator: torch.Generator,
    task: Task,
    centre: dict[str, Tensor] | None,
    grid: int,
    span: float,
    chunk_size: int,
    vectorize: bool | None,
) -> Landscape:
    """:func:`random_plane` (two ``directions``) and :func:`random_line` (one): the centre
    (default: the model's parameters), that many filter-normalised directions drawn in turn
    from ``generator``, and the same axis ``[−span, span]`` of ``grid`` values along each."""
    started = time.perf_counter()
    centre = detached_parameters(model) if centre is None else centre
    drawn = [filter_normalized_direction(centre, generator=generator) for _ in range(directions)]
    axis = _symmetric_axis(span, grid)
    return _landscape(
        "random", model, loss_fn, train, test, [centre, *drawn], [axis] * directions,
        task=task, chunk_size=chunk_size, vectorize=vectorize, started=started,
    )  # fmt: skip


def _landscape(
    kind: str,
    model: nn.Module,
    loss_fn: LossFunction,
    train: Batch,
    test: Batch | None,
    basis: list[dict[str, Tensor]],
    axes: list[Tensor],
    *,
    task: Task,
    chunk_size: int,
    vectorize: bool | None,
    started: float,
    affine: bool = False,
) -> Landscape:
    """Train (and held-out) grids at the points ``basis[0] + Σ_k axes_k · basis[k+1]`` over the
    lattice of ``axes``, or ``(1 − a)·basis[0] + a·basis[1]`` with ``affine``."""
    if affine:
        (axis,) = axes
        weights = torch.stack([1 - axis, axis], dim=1)
    else:
        lattice = torch.cartesian_prod(*axes).reshape(-1, len(axes))
        weights = torch.cat([torch.ones(len(lattice), 1, dtype=torch.float64), lattice], dim=1)
    shape = tuple(len(axis) for axis in axes)
    grids: dict[str, tuple[Tensor | None, Tensor | None]] = {"test": (None, None)}
    evaluations = 0
    for label, batch in (("train", train), ("test", test)):
        if batch is None:
            continue
        values = losses_at_combinations(
            model, loss_fn, batch[0], batch[1], basis=basis, weights=weights, task=task,
            chunk_size=chunk_size, vectorize=vectorize,
        )  # fmt: skip
        evaluations += values.evaluations
        accuracy = None if values.accuracies is None else values.accuracies.reshape(shape)
        grids[label] = (values.losses.reshape(shape), accuracy)
    train_loss, train_accuracy = grids["train"]
    assert train_loss is not None
    return Landscape(
        kind=kind,
        axes=axes,
        train_loss=train_loss,
        train_accuracy=train_accuracy,
        test_loss=grids["test"][0],
        test_accuracy=grids["test"][1],
        path=None,
        evaluations=evaluations,
        seconds=time.perf_counter() - started,
    )


def _with_ends(first: float | None, middle: Tensor, last: float | None) -> Tensor:
    ends = torch.tensor([first, last], dtype=torch.float64)
    return torch.cat([ends[:1], middle, ends[1:]])


def _symmetric_axis(span: float, grid: int) -> Tensor:
    if grid < 2 or not span > 0:
        raise ValueError(f"need grid >= 2 and span > 0, got {grid} and {span}")
    return torch.linspace(-span, span, grid, dtype=torch.float64)


def _path_axes(coordinates: Tensor, grid: int, span: float, scale: float) -> list[Tensor]:
    """The PCA plane's axes: the bounding box of the path and the origin with a margin of
    :data:`PCA_MARGIN`, scaled by ``span`` about its middle, no axis under
    :data:`PCA_MIN_ASPECT` of the other (see :func:`pca_plane`)."""
    if grid < 2 or not span > 0:
        raise ValueError(f"need grid >= 2 and span > 0, got {grid} and {span}")
    low = coordinates.min(dim=0).values.clamp(max=0.0)
    high = coordinates.max(dim=0).values.clamp(min=0.0)
    middle, half = (low + high) / 2, span * (1 + 2 * PCA_MARGIN) * (high - low) / 2
    longest = half.max().item()
    if longest == 0.0:
        half = torch.full_like(half, 1e-3 * max(scale, 1.0))
    else:
        half = half.clamp(min=PCA_MIN_ASPECT * longest)
    unit = torch.linspace(-1.0, 1.0, grid, dtype=torch.float64)
    return [middle[k] + half[k] * unit for k in range(len(half))]


def _project(
    snapshots: Tensor, centre: dict[str, Tensor], components: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """For each snapshot, in float64: the coordinates ``D(θ_s − centre)`` (n, 2), the residual
    ``‖(θ_s − centre) − Dᵀc_s‖`` and the distance ``‖θ_s − centre‖``, computed one block of
    parameters at a time (snapshots can be 200 × 10⁶)."""
    origin = _vector(centre).to(device=snapshots.device, dtype=torch.float64)
    basis = components.to(torch.float64)
    count, size = snapshots.shape
    if size != origin.numel() or basis.shape[1] != size:
        raise ValueError(
            f"snapshots have {size} parameters, the centre {origin.numel()} and the"
            f" components {basis.shape[1]}: they must be the same model's"
        )
    block = 1 << 16
    coordinates = torch.zeros(count, len(basis), dtype=torch.float64, device=snapshots.device)
    distance = torch.zeros(count, dtype=torch.float64, device=snapshots.device)
    for start in range(0, size, block):
        delta = (
            snapshots[:, start : start + block].to(torch.float64) - origin[start : start + block]
        )
        coordinates += delta @ basis[:, start : start + block].T
        distance += delta.square().sum(dim=1)
    residual = torch.zeros_like(distance)
    for start in range(0, size, block):
        delta = (
            snapshots[:, start : start + block].to(torch.float64) - origin[start : start + block]
        )
        residual += (delta - coordinates @ basis[:, start : start + block]).square().sum(dim=1)
    return coordinates.cpu(), residual.sqrt().cpu(), distance.sqrt().cpu()


def _vector(params: dict[str, Tensor]) -> Tensor:
    return torch.cat([tensor.reshape(-1) for tensor in params.values()])


def _as_parameters(vector: Tensor, like: dict[str, Tensor]) -> dict[str, Tensor]:
    """A flat vector as a parameter set with the names, shapes, dtype and device of ``like``."""
    pieces = vector.split([tensor.numel() for tensor in like.values()])
    return {
        name: piece.reshape(tensor.shape).to(dtype=tensor.dtype, device=tensor.device)
        for (name, tensor), piece in zip(like.items(), pieces, strict=True)
    }
