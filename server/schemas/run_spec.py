"""The run spec: everything a worker needs to train and observe one run (DESIGN.md)."""

from __future__ import annotations

from typing import Literal

from pydantic import (
    Field,
    NonNegativeInt,
    PositiveInt,
    ValidationError,
    field_validator,
    model_validator,
)

from dynascope.server.errors import InvalidSpecError
from dynascope.server.schemas.base import StrictModel, check_at_most, field_error, limits
from dynascope.server.schemas.data_specs import DataSpec, ExampleShape, input_kind
from dynascope.server.schemas.model_specs import ModelSpec
from dynascope.server.schemas.optimizer_specs import GDSpec, OptimizerSpec
from dynascope.server.settings import Limits


class HessianProbeSpec(StrictModel):
    """Curvature of the training loss on the probe batch (see DESIGN.md): top-k eigenvalues
    by Lanczos (the sharpness curve against the stability threshold), optionally the smallest
    eigenvalue, the trace (Hutch++) and the spectral density (stochastic Lanczos quadrature).
    Evaluated in eval mode (BatchNorm on running statistics, dropout off)."""

    matrix: Literal["hessian", "ggn"] = Field(
        "hessian", description="the Hessian, or the generalised Gauss-Newton matrix"
    )
    top_k: int = Field(1, ge=1, le=20, description="how many of the largest eigenvalues")
    tolerance: float = Field(
        1e-4,
        gt=0.0,
        le=0.1,
        description="relative error bound at which an eigenvalue is done (Kato-Temple)",
    )
    max_iterations: int = Field(100, ge=5, le=1000, description="Lanczos iterations at most")
    min_eigenvalue: bool = Field(False, description="also the smallest (most negative) one")
    trace: bool = Field(False, description="Hutch++ estimate of the trace, with standard error")
    trace_matvecs: int = Field(
        48, ge=6, le=1000, description="products spent on the trace (≥36 for a reliable SE)"
    )
    density: bool = Field(False, description="spectral density by stochastic Lanczos quadrature")
    density_steps: int = Field(30, ge=5, le=300, description="Lanczos steps per density probe")
    density_probes: int = Field(4, ge=1, le=64, description="random vectors for the density")
    density_points: int = Field(
        200,
        ge=22,
        le=2000,
        description="grid points of the density (its broadening is 2·range/(points − 21))",
    )
    chunk_size: int = Field(
        1024, ge=1, le=65536, description="probe examples per chunk (bounds memory)"
    )

    @model_validator(mode="after")
    def _iterations_cover_top_k(self) -> HessianProbeSpec:
        if self.max_iterations < self.top_k:
            raise field_error(
                "HessianProbeSpec",
                ("max_iterations",),
                f"Lanczos finds at most one eigenvalue per iteration: max_iterations "
                f"({self.max_iterations}) must be at least top_k ({self.top_k})",
                self.max_iterations,
            )
        return self

    @model_validator(mode="after")
    def _ggn_is_psd(self) -> HessianProbeSpec:
        if self.matrix == "ggn" and self.min_eigenvalue:
            raise field_error(
                "HessianProbeSpec",
                ("min_eigenvalue",),
                "the Gauss-Newton matrix is positive semi-definite; the smallest eigenvalue "
                'is measured on the Hessian (matrix: "hessian")',
                True,
            )
        return self


class JacobianProbeSpec(StrictModel):
    """Jacobian spectra on the first ``n_inputs`` probe examples: singular values of the
    input-output Jacobian (vector and image inputs), and eigenvalues of the empirical neural
    tangent kernel with its change since the previous probe (NTK velocity)."""

    input_output: bool = Field(True, description="singular values of ∂outputs/∂inputs")
    ntk: bool = Field(True, description="eigenvalues of the empirical NTK, and its velocity")
    n_inputs: int = Field(32, ge=1, le=1024, description="probe examples used")
    top_k: int = Field(20, ge=1, le=2048, description="NTK eigenvalues kept (largest first)")
    chunk_size: int = Field(32, ge=1, le=4096, description="examples per vmap chunk")


class TrainingJacobianProbeSpec(StrictModel):
    """The training Jacobian dθ_T/dθ_0 of the run's own full-batch gradient descent (Belrose &
    Scherlis 2024), computed once at the end of the run by replaying training in forward mode
    (P·T Hessian-vector products for P parameters and T steps): its singular values and how
    many fall in the chaotic (σ > 1 + t), bulk (|σ − 1| ≤ t) and stable (σ < 1 − t) regions.
    Needs optimizer ``gd`` without weight decay on a constant schedule, a model without
    dropout, and a model small enough (limits ``max_training_jacobian_parameters`` and
    ``max_training_jacobian_products``). Replayed in train mode, as the run trained."""

    bulk_tolerance: float = Field(
        1e-3, gt=0.0, lt=1.0, description="t: singular values within t of one are the bulk"
    )
    chunk_size: int = Field(256, ge=1, le=4096, description="Jacobian columns per vmap chunk")


class TrajectoryProbeSpec(StrictModel):
    """Parameter snapshots every ``snapshot_every`` steps (and at the first and last), and at
    the end of the run their PCA (Antognini & Sohl-Dickstein 2018) beside the random-walk
    reference (6/π²)/k². Snapshots are float32, compressed; a spec whose snapshots would
    exceed the ``max_snapshot_bytes`` limit is refused (422) when the model's size is known
    from the spec; for datasets whose shape is only known from files (npz, MNIST) the worker
    thins the snapshots to fit and records the cadence it used."""

    snapshot_every: PositiveInt = Field(10, description="a snapshot every this many steps")
    components: int = Field(10, ge=1, le=50, description="principal components kept")


class LandscapeProbeSpec(StrictModel):
    """Loss landscapes at the end of the run (Li et al. 2018): a 2-D slice around each
    checkpoint, in the plane of the top-2 PCA directions of the trajectory with the path drawn
    on it (``pca``; needs ``probes.trajectory``) or of two filter-normalised random directions
    (``random``); with ``slices``, 1-D slices along a filter-normalised random direction and
    along the line from initialisation to the last step. Train and held-out loss (accuracy for
    classifiers) on the probe and held-out batches, in eval mode."""

    plane: Literal["pca", "random"] = Field("pca", description="the 2-D plane")
    grid: int = Field(21, ge=3, description="grid points per axis")
    span: float = Field(
        1.0,
        gt=0.0,
        le=10.0,
        description="random: coordinates in [-span, span] (filter-normalised units); pca: "
        "span × the path's extent with a 20% margin on each side; line: a in "
        "[-span/2, 1 + span/2]",
    )
    checkpoints: list[NonNegativeInt] | None = Field(
        None, min_length=1, max_length=8, description="steps to centre on; default: the last"
    )
    slices: bool = Field(True, description="also 1-D slices (random direction, init → final)")
    seed: int = Field(0, ge=0, le=2**31 - 1, description="seed of the random directions")
    chunk_size: int = Field(
        64, ge=1, le=4096, description="parameter sets per vmap chunk (bounds memory)"
    )

    @field_validator("grid")
    @classmethod
    def _grid_bounded(cls, value: int) -> int:
        return check_at_most(value, limits().max_landscape_grid, "probes.landscape.grid")


class ProbesSpec(StrictModel):
    """What is measured, and how often. Losses and accuracies (train on the probe batch,
    held-out on the test split) are always recorded on the probe cadence."""

    every: PositiveInt = Field(50, description="probe every this many steps (and at the last)")
    batch_size: PositiveInt = Field(512, description="size of the fixed probe batch")
    norms: bool = Field(
        True,
        description="per-layer weight L2 and spectral norms, gradient norm, distance from "
        "initialisation, per-layer update/weight ratio",
    )

    hessian: HessianProbeSpec | None = Field(
        None, description="curvature probes; absent: not measured"
    )
    jacobian: JacobianProbeSpec | None = Field(
        None, description="Jacobian and NTK spectra; absent: not measured"
    )
    training_jacobian: TrainingJacobianProbeSpec | None = Field(
        None, description="the training Jacobian's spectrum at the end; absent: not measured"
    )
    trajectory: TrajectoryProbeSpec | None = Field(
        None, description="parameter snapshots and their PCA; absent: not measured"
    )
    landscape: LandscapeProbeSpec | None = Field(
        None, description="loss landscapes at the end of the run; absent: not measured"
    )

    @field_validator("batch_size")
    @classmethod
    def _batch_bounded(cls, value: int) -> int:
        return check_at_most(value, limits().max_probe_batch_size, "probes.batch_size")


class RunSpec(StrictModel):
    """One training run: model, data, optimizer, length and probes."""

    name: str = Field("", max_length=200)
    seed: int = Field(0, ge=0, le=2**31 - 1, description="initialisation and batch-order seed")
    model: ModelSpec
    data: DataSpec
    optimizer: OptimizerSpec
    steps: PositiveInt
    probes: ProbesSpec = Field(default_factory=ProbesSpec)

    @field_validator("steps")
    @classmethod
    def _steps_bounded(cls, value: int) -> int:
        return check_at_most(value, limits().max_steps, "steps")

    @model_validator(mode="after")
    def _consistent(self) -> RunSpec:
        try:
            self.model.check_input(input_kind(self.data))
        except ValueError as error:
            raise field_error("RunSpec", ("model", "name"), str(error), self.model.name) from None
        self._check_jacobian()
        self._check_batch_sizes()
        self._check_warmup()
        self._check_training_jacobian()
        self._check_trajectory()
        self._check_landscape()
        self._check_sizes()
        return self

    def _check_jacobian(self) -> None:
        jacobian = self.probes.jacobian
        if jacobian is not None and jacobian.input_output and input_kind(self.data) == "tokens":
            raise _error(
                ("probes", "jacobian", "input_output"),
                "token inputs are not differentiable: the input-output Jacobian needs vector "
                "or image inputs (the NTK works for every model)",
                True,
            )
        if jacobian is not None and jacobian.n_inputs > self.probes.batch_size:
            raise _error(
                ("probes", "jacobian", "n_inputs"),
                f"probes.jacobian.n_inputs ({jacobian.n_inputs}) is larger than "
                f"probes.batch_size ({self.probes.batch_size})",
                jacobian.n_inputs,
            )

    def _check_batch_sizes(self) -> None:
        """The probe batch and the minibatch are drawn from the training set, so neither may
        be larger (when the spec knows the set's size; otherwise the worker checks them once it
        has the data: :func:`check_batch_sizes`). Gradient descent uses the
        whole training set whatever ``data.batch_size`` says."""
        train_size = self.data.train_size()
        if train_size is not None:
            check_batch_sizes(self, train_size, located=True)

    def _check_warmup(self) -> None:
        """A learning-rate warmup must end before the run does."""
        warmup = self.optimizer.schedule.warmup_steps
        if warmup and warmup >= self.steps:
            raise _error(
                ("optimizer", "schedule", "warmup_steps"),
                f"optimizer.schedule.warmup_steps ({warmup}) must be fewer than steps "
                f"({self.steps}): the warmup would take the whole run, the learning rate "
                f"rising linearly to only {self.steps / warmup:.3g} × optimizer.lr at the "
                "last step",
                warmup,
            )

    def _check_training_jacobian(self) -> None:
        if self.probes.training_jacobian is None:
            return
        where = ("probes", "training_jacobian")
        optimizer = self.optimizer
        if optimizer.name != "gd":
            raise _error(
                where,
                "the training Jacobian replays full-batch gradient descent: it needs "
                f'optimizer "gd", not "{optimizer.name}"',
                optimizer.name,
            )
        if optimizer.weight_decay != 0.0:
            raise _error(
                where,
                "the training Jacobian replays plain gradient descent: it needs "
                f"optimizer.weight_decay 0, not {optimizer.weight_decay}",
                optimizer.weight_decay,
            )
        schedule = optimizer.schedule
        if schedule.name != "constant" or schedule.warmup_steps:
            raise _error(
                where,
                "the training Jacobian replays gradient descent at a constant learning rate: "
                "it needs optimizer.schedule constant without warmup",
                schedule.name,
            )
        if getattr(self.model, "dropout", 0.0):
            raise _error(
                where,
                "dropout makes training random, so it cannot be replayed: the training "
                "Jacobian needs model.dropout 0",
                self.model.dropout,  # type: ignore[union-attr]
            )

    def _check_trajectory(self) -> None:
        """The PCA of the snapshots needs at least three of them (two snapshots have one
        direction of variation, and the worker would store nothing)."""
        trajectory = self.probes.trajectory
        if trajectory is None:
            return
        every = trajectory.snapshot_every
        taken = snapshot_steps(self.steps, every)
        if len(taken) >= 3:
            return
        fits = (
            f"use snapshot_every at most {self.steps - 1}"
            if self.steps >= 2
            else "a run of one step has only two; use steps 2 or more"
        )
        raise _error(
            ("probes", "trajectory", "snapshot_every"),
            f"snapshot_every {every} of {self.steps} steps takes {len(taken)} snapshots (steps "
            f"{', '.join(map(str, taken))}), and the trajectory's PCA needs at least 3: {fits}",
            every,
        )

    def _check_landscape(self) -> None:
        landscape = self.probes.landscape
        if landscape is None:
            return
        trajectory = self.probes.trajectory
        if landscape.plane == "pca" and trajectory is None:
            raise _error(
                ("probes", "landscape", "plane"),
                'the "pca" plane is spanned by the trajectory\'s principal directions: enable '
                'probes.trajectory, or use plane "random"',
                landscape.plane,
            )
        if landscape.plane == "pca" and trajectory is not None and trajectory.components < 2:
            raise _error(
                ("probes", "trajectory", "components"),
                'the "pca" landscape plane is spanned by the top two principal directions, '
                f"but probes.trajectory.components is {trajectory.components}: use 2 or more, "
                'or plane "random"',
                trajectory.components,
            )
        for index, step in enumerate(landscape.checkpoints or ()):
            if step > self.steps:
                raise _error(
                    ("probes", "landscape", "checkpoints", index),
                    f"checkpoint {step} is after the last step ({self.steps})",
                    step,
                )

    def _check_sizes(self) -> None:
        """Limits that depend on the model's parameter count, counted from the spec (when
        the data spec knows its shapes; otherwise the worker checks them once it has data)."""
        count = model_parameter_count(self)
        if count is None:
            return
        bounds = limits()
        if count > bounds.max_parameters:
            raise _error(
                ("model",),
                f"the model has {count} parameters, above the configured limit of "
                f"{bounds.max_parameters}",
                self.model.name,
            )
        if self.probes.training_jacobian is not None:
            check_training_jacobian_size(count, self.steps, bounds, located=True)
        trajectory = self.probes.trajectory
        if trajectory is not None:
            check_snapshots(count, self.steps, trajectory.snapshot_every, bounds, located=True)


def check_batch_sizes(
    spec: RunSpec, train_size: int, *, located: bool, shape: ExampleShape | None = None
) -> None:
    """Refuse a ``probes.batch_size`` or a ``data.batch_size`` larger than the ``train_size``
    training examples (both are drawn from them; gradient descent, which takes all of them,
    is exempt from the second), and a minibatch that leaves batch norm a single value per
    channel (``shape``: the examples' shape, default the data spec's): a 422 at the field, or
    an ``InvalidSpecError`` when the worker finds it once it has read the data files."""
    if spec.probes.batch_size > train_size:
        raise _limit_error(
            ("probes", "batch_size"),
            f"probes.batch_size ({spec.probes.batch_size}) is larger than the training set "
            f"({train_size} examples)",
            spec.probes.batch_size,
            located,
        )
    full_batch = isinstance(spec.optimizer, GDSpec)
    if not full_batch and spec.data.batch_size > train_size:
        raise _limit_error(
            ("data", "batch_size"),
            f"data.batch_size ({spec.data.batch_size}) is larger than the training set "
            f'({train_size} examples): use at most {train_size}, or optimizer "gd" for '
            "full-batch gradient descent",
            spec.data.batch_size,
            located,
        )
    _check_batch_norm_minibatch(spec, train_size if full_batch else spec.data.batch_size,
                                located=located, shape=shape)  # fmt: skip


def _check_batch_norm_minibatch(
    spec: RunSpec, minibatch: int, *, located: bool, shape: ExampleShape | None
) -> None:
    """Batch norm in train mode normalises each channel over the minibatch (and an image's
    positions); PyTorch refuses a single value per channel, so such a run would fail at its
    first step."""
    shape = shape or spec.data.example_shape()
    if shape is None or not getattr(spec.model, "batch_norm", False):
        return
    from dynascope.worker.registry.models import batch_norm_minibatch_error  # torch

    error = batch_norm_minibatch_error(spec.model, shape, minibatch)
    if error is None:
        return
    where: tuple[str, ...] = ("data", "batch_size")
    fix = "use data.batch_size 2 or more, or model.batch_norm false"
    if isinstance(spec.optimizer, GDSpec):
        where, fix = ("model", "batch_norm"), "use a larger training set, or model.batch_norm false"
    raise _limit_error(
        where,
        f"batch norm in training mode normalises each channel over the minibatch, and a "
        f"minibatch of {minibatch} example{'s' if minibatch != 1 else ''} leaves it a single "
        f"value per channel (PyTorch: {error}): {fix}",
        spec.model.batch_norm,  # type: ignore[union-attr]
        located,
    )


def model_parameter_count(spec: RunSpec) -> int | None:
    """The spec's model's trainable parameters, counted without data (``None`` when only the
    data files know the shapes). Builds the model on torch's meta device, so it imports the
    worker's model registry (and torch) on first use."""
    from dynascope.worker.registry.models import spec_parameter_count

    return spec_parameter_count(spec.model, spec.data)


def snapshot_steps(steps: int, every: int) -> list[int]:
    """The steps a trajectory snapshots: 0, every multiple of ``every`` and the last."""
    return sorted(set(range(0, steps + 1, every)) | {steps})


def snapshot_count(steps: int, every: int) -> int:
    """``len(snapshot_steps(steps, every))``, without listing them."""
    return steps // every + 1 + (1 if steps % every else 0)


def check_snapshots(count: int, steps: int, every: int, bounds: Limits, *, located: bool) -> None:
    """Refuse snapshots of ``count`` parameters every ``every`` of ``steps`` steps beyond the
    ``max_snapshots`` or ``max_snapshot_bytes`` limits, naming only the limits exceeded, each
    with by how much, and the cadence that fits (a 422 at
    ``probes.trajectory.snapshot_every``, or an ``InvalidSpecError``)."""
    n = snapshot_count(steps, every)
    size = 4 * count * n
    exceeded = []
    if n > bounds.max_snapshots:
        exceeded.append(
            f"the limit of {bounds.max_snapshots} snapshots by {n - bounds.max_snapshots} "
            "(setting DYNASCOPE_LIMIT_MAX_SNAPSHOTS)"
        )
    if size > bounds.max_snapshot_bytes:
        exceeded.append(
            f"the limit of {_size(bounds.max_snapshot_bytes)} by "
            f"{_size(size - bounds.max_snapshot_bytes)} (setting "
            "DYNASCOPE_LIMIT_MAX_SNAPSHOT_BYTES)"
        )
    if not exceeded:
        return
    fits = smallest_fitting_cadence(count, steps, every, bounds)
    raise _limit_error(
        ("probes", "trajectory", "snapshot_every"),
        f"{n} snapshots of {count} parameters take {_size(size)}, above "
        + " and ".join(exceeded)
        + "; "
        + (f"snapshot_every {fits} fits" if fits else "no cadence fits"),
        every,
        located,
    )


def _size(size: int) -> str:
    """A byte count for a message: in MiB, KiB or bytes, whichever shows it without
    rounding it to zero."""
    if size >= 2**20:
        return f"{size / 2**20:.1f} MiB"
    if size >= 2**10:
        return f"{size / 2**10:.1f} KiB"
    return f"{size} bytes"


def smallest_fitting_cadence(count: int, steps: int, every: int, bounds: Limits) -> int | None:
    """The smallest multiple of ``every`` whose snapshots fit the limits (``None``: none)."""
    for multiple in range(every, steps + every, every):
        n = snapshot_count(steps, multiple)
        if n <= bounds.max_snapshots and 4 * count * n <= bounds.max_snapshot_bytes:
            return multiple
    return None


def check_training_jacobian_size(count: int, steps: int, bounds: Limits, *, located: bool) -> None:
    """Refuse a training Jacobian of a model above ``max_training_jacobian_parameters``, or
    one whose replay (parameters × steps Hessian-vector products) is above
    ``max_training_jacobian_products``."""
    where = ("probes", "training_jacobian")
    if count > bounds.max_training_jacobian_parameters:
        raise _limit_error(
            where,
            f"the model has {count} parameters, above the training Jacobian's limit of "
            f"{bounds.max_training_jacobian_parameters} (the matrix is P × P; setting "
            "DYNASCOPE_LIMIT_MAX_TRAINING_JACOBIAN_PARAMETERS)",
            count,
            located,
        )
    if count * steps > bounds.max_training_jacobian_products:
        raise _limit_error(
            where,
            f"replaying {steps} steps for {count} parameters costs {count * steps} "
            "Hessian-vector products, above the training Jacobian's limit of "
            f"{bounds.max_training_jacobian_products} (setting "
            "DYNASCOPE_LIMIT_MAX_TRAINING_JACOBIAN_PRODUCTS)",
            count * steps,
            located,
        )


def _error(loc: tuple[str | int, ...], message: str, value: object) -> ValidationError:
    return field_error("RunSpec", loc, message, value)


def _limit_error(
    loc: tuple[str | int, ...], message: str, value: object, located: bool
) -> Exception:
    """A located 422 while validating a spec; an ``InvalidSpecError`` (the run fails with the
    message) when the worker finds it once it has the data."""
    return _error(loc, message, value) if located else InvalidSpecError(message)
