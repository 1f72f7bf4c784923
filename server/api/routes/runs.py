"""/runs: submit, read, list, cancel, delete, and read a run's metrics."""

from __future__ import annotations

from typing import Annotated, Literal

import orjson
from fastapi import APIRouter, Query, Response, status

from dynascope.server.api.deps import CeleryDep, SessionDep
from dynascope.server.db.models import RUN_STATUSES
from dynascope.server.queue import enqueue_run
from dynascope.server.schemas.run_spec import RunSpec
from dynascope.server.schemas.runs import MetricsPublic, RunCreated, RunPublic, RunsPublic
from dynascope.server.services import arrays as arrays_service
from dynascope.server.services import metrics as metrics_service
from dynascope.server.services import runs as runs_service

router = APIRouter(prefix="/runs", tags=["runs"])

StatusFilter = Literal[RUN_STATUSES]  # type: ignore[valid-type]
SpectrumKind = Literal[arrays_service.SPECTRUM_KINDS]  # type: ignore[valid-type]


@router.post("", status_code=status.HTTP_201_CREATED, response_model=RunCreated)
def submit_run(spec: RunSpec, session: SessionDep, celery: CeleryDep) -> RunCreated:
    run = runs_service.create_run(
        session, spec=spec, enqueue=lambda run_id: enqueue_run(celery, run_id)
    )
    return RunCreated(id=run.id, status=run.status)


@router.get("", response_model=RunsPublic)
def list_runs(
    session: SessionDep,
    status: StatusFilter | None = None,
    name: Annotated[str | None, Query(max_length=200)] = None,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> RunsPublic:
    runs, count = runs_service.list_runs(
        session, status=status, name=name, offset=offset, limit=limit
    )
    return RunsPublic(data=[RunPublic.model_validate(run) for run in runs], count=count)


@router.get("/{run_id}", response_model=RunPublic)
def read_run(run_id: int, session: SessionDep) -> RunPublic:
    return RunPublic.model_validate(runs_service.get_run(session, run_id=run_id))


@router.post("/{run_id}/cancel", response_model=RunPublic)
def cancel_run(run_id: int, session: SessionDep) -> RunPublic:
    return RunPublic.model_validate(runs_service.cancel_run(session, run_id=run_id))


@router.delete("/{run_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_run(run_id: int, session: SessionDep) -> Response:
    runs_service.delete_run(session, run_id=run_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{run_id}/spectra")
def read_spectra(
    run_id: int,
    session: SessionDep,
    kind: Annotated[
        list[SpectrumKind] | None,
        Query(description="spectrum kinds (repeat the parameter); all kinds when omitted"),
    ] = None,
    max_entries: Annotated[
        int | None,
        Query(ge=2, le=10_000, description="at most this many entries per kind, evenly spread"),
    ] = None,
) -> Response:
    """Array-valued probe results of a run by kind, in step order: each entry has the step,
    the values (float32) with their shape, and the probe's metadata (iterations, products,
    residuals, the stability threshold, the density's grid, ...). ``max_entries`` thins each
    kind to that many entries spread evenly over its steps, the first and last included (for
    drawing: a long run's spectra then cost what a short run's do)."""
    runs_service.get_run(session, run_id=run_id)
    arrays = arrays_service.read_arrays(
        session, run_id, kind or arrays_service.SPECTRUM_KINDS, max_entries
    )
    body = {
        "run_id": run_id,
        "spectra": {
            name: [
                {"step": a.step, "shape": list(a.values.shape), "values": a.values, "meta": a.meta}
                for a in entries
            ]
            for name, entries in arrays.items()
        },
    }
    return Response(
        orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json"
    )


@router.get("/{run_id}/metrics", response_model=MetricsPublic)
def read_metrics(
    run_id: int,
    session: SessionDep,
    keys: Annotated[
        str | None, Query(description="comma-separated metric keys; all keys when omitted")
    ] = None,
    max_points: Annotated[
        int | None,
        Query(ge=4, le=100_000, description="downsample each series, keeping extremes"),
    ] = None,
) -> Response:
    runs_service.get_run(session, run_id=run_id)
    wanted = (
        [key for key in keys.split(",") if key]
        if keys
        else metrics_service.metric_keys(session, run_id)
    )
    series = metrics_service.read_series(session, run_id, wanted, max_points)
    body = {
        "run_id": run_id,
        "series": {
            key: {"steps": s.steps, "values": s.values, "total_points": s.total_points}
            for key, s in series.items()
        },
    }
    # orjson writes numpy arrays directly and NaN as null; this endpoint serves long series.
    return Response(
        orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json"
    )
