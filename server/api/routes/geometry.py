"""Geometry: a run's trajectory PCA and loss landscapes, and linear mode connectivity
between two runs."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Response

from dynascope.server.api.deps import SessionDep, SettingsDep
from dynascope.server.schemas.connectivity import ConnectivityRequest
from dynascope.server.services import connectivity as connectivity_service
from dynascope.server.services import geometry as geometry_service
from dynascope.server.services import runs as runs_service

router = APIRouter(tags=["geometry"])


def _json(body: dict[str, Any]) -> Response:
    return Response(
        orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json"
    )


@router.get("/runs/{run_id}/trajectory")
def read_trajectory(run_id: int, session: SessionDep) -> Response:
    """The PCA of the run's parameter snapshots (``null`` when ``probes.trajectory`` was not
    enabled or the run did not complete): snapshot steps, explained-variance ratios beside
    the random-walk reference (6/π²)/k², and each snapshot's coordinates on the components."""
    runs_service.get_run(session, run_id=run_id)
    return _json(
        {"run_id": run_id, "trajectory": geometry_service.read_trajectory(session, run_id)}
    )


@router.get("/runs/{run_id}/landscapes")
def read_landscapes(run_id: int, session: SessionDep) -> Response:
    """The run's loss landscapes (empty when ``probes.landscape`` was not enabled or the run
    did not complete): per landscape its centre step, plane (pca, random, line), axes, the
    train and held-out loss (and accuracy) on the grid, and for the PCA plane the projected
    path with each snapshot's own loss, the loss at its projection and the residual."""
    runs_service.get_run(session, run_id=run_id)
    return _json(
        {"run_id": run_id, "landscapes": geometry_service.read_landscapes(session, run_id)}
    )


@router.post("/connectivity")
def linear_mode_connectivity(
    request: ConnectivityRequest, session: SessionDep, settings: SettingsDep
) -> Response:
    """Linear mode connectivity of two completed runs of the same architecture: the train and
    held-out loss along ``(1 − a)·θ_A + a·θ_B`` and the barrier height. Computed here, in the
    API's thread pool (a few hundred forward passes of the probe batch)."""
    result = connectivity_service.connectivity(session, request, settings)
    return _json(result)
