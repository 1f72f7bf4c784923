"""The API's run resources (what clients read back)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, computed_field


class RunCreated(BaseModel):
    id: int
    status: str


class RunPublic(BaseModel):
    """A run as the API shows it: status, progress, timings, error, spec and latest values."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    status: str
    step: int
    steps: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    heartbeat_at: datetime | None
    cancel_requested: bool
    error: str | None
    diverged_step: int | None
    worker: str | None
    spec: dict[str, Any]
    summary: dict[str, float | None]
    timings: dict[str, Any]

    @computed_field  # type: ignore[prop-decorator]
    @property
    def progress(self) -> float:
        """Fraction of steps done."""
        return self.step / self.steps if self.steps else 0.0

    @computed_field  # type: ignore[prop-decorator]
    @property
    def duration_s(self) -> float | None:
        """Seconds from start to finish (or to the last heartbeat while running)."""
        end = self.finished_at or self.heartbeat_at
        if self.started_at is None or end is None:
            return None
        return (end - self.started_at).total_seconds()


class RunsPublic(BaseModel):
    data: list[RunPublic]
    count: int


class SeriesPublic(BaseModel):
    steps: list[int]
    values: list[float | None]
    total_points: int


class MetricsPublic(BaseModel):
    run_id: int
    series: dict[str, SeriesPublic]
