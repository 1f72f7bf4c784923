"""The one settings object of dynascope, read from the environment (prefix ``DYNASCOPE_``).

Server, worker, CLI and Alembic all read their configuration from here; nothing else in
the code base reads ``os.environ``.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Limits(BaseSettings):
    """Upper bounds on what a run spec may ask for (a spec beyond them is a 422)."""

    model_config = SettingsConfigDict(env_prefix="DYNASCOPE_LIMIT_", extra="ignore")

    max_steps: int = Field(100_000, ge=1)
    max_batch_size: int = Field(8192, ge=1)
    max_probe_batch_size: int = Field(8192, ge=1)
    max_width: int = Field(4096, ge=1)
    max_layers: int = Field(64, ge=1)
    max_samples: int = Field(200_000, ge=1)
    max_features: int = Field(4096, ge=1)
    max_parameters: int = Field(50_000_000, ge=1)
    max_snapshot_bytes: int = Field(256 * 1024 * 1024, ge=0)
    max_snapshots: int = Field(2000, ge=2, description="parameter snapshots of one run")
    max_landscape_grid: int = Field(101, ge=3, description="landscape points per axis")
    max_training_jacobian_parameters: int = Field(4096, ge=1)
    max_training_jacobian_products: int = Field(
        2_000_000, ge=1, description="parameters × steps replayed by the training Jacobian"
    )


class Settings(BaseSettings):
    """Where state lives, how the pieces reach each other, and the limits of a spec.

    Embedded default: everything under ``home`` (a SQLite database and a SQLite-backed
    Celery broker). Deployment: set ``DYNASCOPE_DATABASE_URL`` and ``DYNASCOPE_BROKER_URL``
    to Postgres and Redis.
    """

    model_config = SettingsConfigDict(env_prefix="DYNASCOPE_", extra="ignore")

    home: Path = Field(default_factory=lambda: Path.home() / ".dynascope")
    database_url: str = ""
    broker_url: str = ""
    data_dir: Path | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    api_url: str = Field("", description="where CLI commands reach the API")
    device: str = Field("cpu", description='"cpu", "cuda", "cuda:N" or "auto"')
    torch_threads: int | None = Field(
        None,
        ge=1,
        description="CPU threads torch uses in a worker (default: torch's own, one per core). "
        "Set it to cores ÷ workers when several workers share a machine: oversubscribed "
        "threads wait on each other, and runs and probe timings slow down manyfold",
    )
    heartbeat_interval_s: float = Field(2.0, gt=0)
    heartbeat_timeout_s: float = Field(30.0, gt=0)
    reaper_interval_s: float = Field(5.0, gt=0)
    flush_interval_s: float = Field(1.0, gt=0)
    limits: Limits = Field(default_factory=Limits)

    @model_validator(mode="after")
    def _embedded_defaults(self) -> Settings:
        self.home = self.home.expanduser()
        if not self.database_url:
            self.database_url = f"sqlite:///{self.home / 'dynascope.sqlite'}"
        if not self.broker_url:
            self.broker_url = f"sqla+sqlite:///{self.home / 'broker.sqlite'}"
        if not self.api_url:
            self.api_url = f"http://{self.host}:{self.port}"
        if self.data_dir is None:
            self.data_dir = self.home / "data"
        return self

    @property
    def is_embedded_database(self) -> bool:
        return self.database_url.startswith("sqlite")


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
