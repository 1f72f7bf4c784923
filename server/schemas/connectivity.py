"""The request of ``POST /connectivity``."""

from __future__ import annotations

from pydantic import Field, NonNegativeInt, PositiveInt, field_validator

from dynascope.server.schemas.base import StrictModel, check_at_most, limits


class ConnectivityRequest(StrictModel):
    """Two runs' parameters (their last steps by default) and the interpolation grid. The loss
    is measured on run A's data: its probe batch (train) and held-out batch, in eval mode."""

    run_a: PositiveInt
    run_b: PositiveInt
    step_a: NonNegativeInt | None = Field(None, description="run A's snapshot; default: last")
    step_b: NonNegativeInt | None = Field(None, description="run B's snapshot; default: last")
    points: int = Field(21, ge=3, description="interpolation points a in [0, 1], ends included")

    @field_validator("points")
    @classmethod
    def _points_bounded(cls, value: int) -> int:
        return check_at_most(value, limits().max_landscape_grid, "points")
