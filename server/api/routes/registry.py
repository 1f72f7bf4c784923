"""/registry: what a run spec may name, with each entry's parameter schema and the limits."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from dynascope.server.api.deps import SettingsDep
from dynascope.server.schemas.data_specs import DATA_SPECS, NpzSpec
from dynascope.server.schemas.model_specs import MODEL_SPECS
from dynascope.server.schemas.optimizer_specs import OPTIMIZER_SPECS, ScheduleSpec
from dynascope.server.schemas.run_spec import ProbesSpec, RunSpec

router = APIRouter(tags=["registry"])


def _entry(spec_class: type, **extra: Any) -> dict[str, Any]:
    return {
        "description": (spec_class.__doc__ or "").strip(),
        "schema": _schema(spec_class),
    } | extra


def _schema(spec_class: Any) -> dict[str, Any]:
    return spec_class.model_json_schema()


@router.get("/registry")
def read_registry(settings: SettingsDep) -> dict[str, Any]:
    """Models, datasets, optimizers and probes with their parameter schemas and limits, so
    forms and clients are generated from one source."""
    datasets = {}
    for name, cls in DATA_SPECS.items():
        if cls is NpzSpec:  # decided by the spec's `images` and `regression` flags
            datasets[name] = _entry(
                cls, input_kind="vector|image", task="classification|regression"
            )
        else:
            datasets[name] = _entry(cls, input_kind=cls.input_kind, task=cls.task)
    return {
        "models": {
            name: _entry(cls, accepts=list(cls.accepts)) for name, cls in MODEL_SPECS.items()
        },
        "datasets": datasets,
        "optimizers": {name: _entry(cls) for name, cls in OPTIMIZER_SPECS.items()},
        "schedules": _schema(ScheduleSpec),
        "probes": _schema(ProbesSpec),
        "run_spec": _schema(RunSpec),
        "limits": settings.limits.model_dump(),
    }
