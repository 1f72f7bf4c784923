"""Optimizer and learning-rate schedule specs."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, NonNegativeInt, model_validator

from dynascope.server.schemas.base import StrictModel


class ScheduleSpec(StrictModel):
    """lr(t) = lr · warmup(t) · decay(t): linear warmup over ``warmup_steps``, then constant
    or cosine decay to ``min_lr_ratio``·lr at the last step."""

    name: Literal["constant", "cosine"] = "constant"
    warmup_steps: NonNegativeInt = 0
    min_lr_ratio: float = Field(0.0, ge=0.0, le=1.0)


class _OptimizerSpecBase(StrictModel):
    name: str
    lr: float = Field(0.1, gt=0.0, le=100.0)
    weight_decay: float = Field(0.0, ge=0.0, le=10.0)
    schedule: ScheduleSpec = Field(default_factory=ScheduleSpec)


class GDSpec(_OptimizerSpecBase):
    """Full-batch gradient descent: every step uses the whole training set."""

    name: Literal["gd"] = "gd"


class SGDSpec(_OptimizerSpecBase):
    """Minibatch SGD with optional (Nesterov) heavy-ball momentum."""

    name: Literal["sgd"] = "sgd"
    momentum: float = Field(0.0, ge=0.0, lt=1.0)
    nesterov: bool = False

    @model_validator(mode="after")
    def _nesterov_needs_momentum(self) -> SGDSpec:
        if self.nesterov and self.momentum == 0.0:
            raise ValueError("nesterov needs momentum > 0")
        return self


class AdamSpec(_OptimizerSpecBase):
    """Adam (Kingma & Ba 2015); weight decay is added to the gradient (L2)."""

    name: Literal["adam"] = "adam"
    lr: float = Field(1e-3, gt=0.0, le=100.0)
    beta1: float = Field(0.9, ge=0.0, lt=1.0)
    beta2: float = Field(0.999, ge=0.0, lt=1.0)
    eps: float = Field(1e-8, gt=0.0)


class AdamWSpec(AdamSpec):
    """AdamW (Loshchilov & Hutter 2019): decoupled weight decay."""

    name: Literal["adamw"] = "adamw"  # type: ignore[assignment]
    weight_decay: float = Field(0.01, ge=0.0, le=10.0)


OptimizerSpec = Annotated[
    GDSpec | SGDSpec | AdamSpec | AdamWSpec,
    Field(discriminator="name"),
]

OPTIMIZER_SPECS: dict[str, type[_OptimizerSpecBase]] = {
    "gd": GDSpec,
    "sgd": SGDSpec,
    "adam": AdamSpec,
    "adamw": AdamWSpec,
}
