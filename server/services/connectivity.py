"""Linear mode connectivity between two runs (Frankle et al. 2020; Ainsworth et al. 2023,
"Git Re-Basin"): which runs and parameters, checked here; the loss along the line is
measured by ``worker/connectivity.py``."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from dynascope.server.db.models import Run
from dynascope.server.errors import ConflictError, InvalidSpecError
from dynascope.server.schemas.connectivity import ConnectivityRequest
from dynascope.server.schemas.run_spec import RunSpec
from dynascope.server.services.runs import get_run
from dynascope.server.services.snapshots import read_snapshot
from dynascope.server.settings import Settings


def connectivity(
    session: Session, request: ConnectivityRequest, settings: Settings
) -> dict[str, Any]:
    """The loss of run A's model along ``(1 − a)·θ_A + a·θ_B`` on run A's data, and the
    barrier; a 422 (``InvalidSpecError``) when the architectures differ, a 409 when a run has
    not completed and no step was given, a 404 when a snapshot is missing."""
    from dynascope.worker.connectivity import measure_connectivity  # torch, on first use

    run_a = get_run(session, run_id=request.run_a)
    run_b = get_run(session, run_id=request.run_b)
    spec_a, spec_b = RunSpec.model_validate(run_a.spec), RunSpec.model_validate(run_b.spec)
    _check_same_architecture(run_a.id, spec_a, run_b.id, spec_b)
    step_a = _step(run_a, spec_a, request.step_a, "step_a")
    step_b = _step(run_b, spec_b, request.step_b, "step_b")
    theta_a = read_snapshot(session, run_a.id, step_a)
    theta_b = read_snapshot(session, run_b.id, step_b)
    result = measure_connectivity(
        spec_a,
        theta_a,
        theta_b,
        points=request.points,
        data_dir=settings.data_dir,
        device=settings.device,
    )
    return {"run_a": run_a.id, "run_b": run_b.id, "step_a": step_a, "step_b": step_b} | result


def _check_same_architecture(id_a: int, spec_a: RunSpec, id_b: int, spec_b: RunSpec) -> None:
    if spec_a.model != spec_b.model:
        a, b = spec_a.model.model_dump(), spec_b.model.model_dump()
        if a["name"] != b["name"]:
            differing = f"model {a['name']!r} vs {b['name']!r}"
        else:
            differing = ", ".join(
                f"{key}: {a[key]!r} vs {b[key]!r}" for key in sorted(a) if a[key] != b[key]
            )
        raise InvalidSpecError(
            f"runs {id_a} and {id_b} have different architectures ({differing}): the line "
            "between two parameter vectors needs the same model",
            field="run_b",
        )
    shape_a, shape_b = spec_a.data.example_shape(), spec_b.data.example_shape()
    if shape_a is not None and shape_b is not None and shape_a != shape_b:
        raise InvalidSpecError(
            f"runs {id_a} and {id_b} read data of different shapes ({shape_a} vs {shape_b}), "
            "so their models differ: the line between two parameter vectors needs the same "
            "model",
            field="run_b",
        )


def _step(run: Run, spec: RunSpec, step: int | None, field: str) -> int:
    if step is not None:
        return step
    if run.status != "completed":
        raise ConflictError(
            f"run {run.id} is {run.status}, not completed: give {field}, a step with a stored "
            "snapshot, or wait for the run to complete"
        )
    return spec.steps
