"""The run spec: everything a worker needs to train and observe one run (DESIGN.md)."""

from __future__ import annotations

from pydantic import Field, PositiveInt, field_validator, model_validator

from dynascope.server.schemas.base import StrictModel, check_at_most, field_error, limits
from dynascope.server.schemas.data_specs import DataSpec, input_kind
from dynascope.server.schemas.model_specs import ModelSpec
from dynascope.server.schemas.optimizer_specs import OptimizerSpec


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
