"""The run spec: everything a worker needs to train and observe one run (DESIGN.md)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, PositiveInt, field_validator, model_validator

from dynascope.server.schemas.base import StrictModel, check_at_most, field_error, limits
from dynascope.server.schemas.data_specs import DataSpec, input_kind
from dynascope.server.schemas.model_specs import ModelSpec
from dynascope.server.schemas.optimizer_specs import OptimizerSpec


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
        1e-4, gt=0.0, le=0.1, description="relative residual at which an eigenvalue is done"
    )
    max_iterations: int = Field(100, ge=5, le=1000, description="Lanczos iterations at most")
    min_eigenvalue: bool = Field(False, description="also the smallest (most negative) one")
    trace: bool = Field(False, description="Hutch++ estimate of the trace, with standard error")
    trace_matvecs: int = Field(
        48, ge=3, le=1000, description="products spent on the trace (≥36 for a reliable SE)"
    )
    density: bool = Field(False, description="spectral density by stochastic Lanczos quadrature")
    density_steps: int = Field(30, ge=5, le=300, description="Lanczos steps per density probe")
    density_probes: int = Field(4, ge=1, le=64, description="random vectors for the density")
    density_points: int = Field(200, ge=10, le=2000, description="grid points of the density")
    chunk_size: int = Field(
        1024, ge=1, le=65536, description="probe examples per chunk (bounds memory)"
    )

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
        jacobian = self.probes.jacobian
        if jacobian is not None and jacobian.input_output and input_kind(self.data) == "tokens":
            raise field_error(
                "RunSpec",
                ("probes", "jacobian", "input_output"),
                "token inputs are not differentiable: the input-output Jacobian needs vector "
                "or image inputs (the NTK works for every model)",
                True,
            )
        if jacobian is not None and jacobian.n_inputs > self.probes.batch_size:
            raise field_error(
                "RunSpec",
                ("probes", "jacobian", "n_inputs"),
                f"probes.jacobian.n_inputs ({jacobian.n_inputs}) is larger than "
                f"probes.batch_size ({self.probes.batch_size})",
                jacobian.n_inputs,
            )
        train_size = self.data.train_size()
        if train_size is not None and self.probes.batch_size > train_size:
            raise field_error(
                "RunSpec",
                ("probes", "batch_size"),
                f"probes.batch_size ({self.probes.batch_size}) is larger than the training "
                f"set ({train_size} examples)",
                self.probes.batch_size,
            )
        return self
