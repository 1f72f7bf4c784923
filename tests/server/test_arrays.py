"""Array results (spectra): written in one statement, read back by kind, and thinned for
drawing (`max_entries`), on SQLite and on the real Postgres."""

import numpy as np
from fastapi.testclient import TestClient

from dynascope.server.app import create_app
from dynascope.server.db.models import Run
from dynascope.server.db.session import get_engine, session_scope
from dynascope.server.services.arrays import ArrayPoint, read_arrays, write_arrays

DENSITY_STEPS = list(range(0, 1000, 10))  # 100 entries


def _run_with_spectra() -> int:
    with session_scope() as session:
        run = Run(name="r", spec={}, steps=1000, summary={}, timings={})
        session.add(run)
        session.flush()
        run_id = run.id
    arrays = [
        ArrayPoint(step, "hessian_density", np.full((2, 5), step, dtype=np.float32), {"s": step})
        for step in DENSITY_STEPS
    ]
    arrays += [ArrayPoint(step, "ntk", np.arange(3, dtype=np.float32), {}) for step in (0, 500)]
    with get_engine().begin() as connection:
        assert write_arrays(connection, run_id, arrays) == len(arrays)
    return run_id


def test_read_back_in_step_order(any_database):
    run_id = _run_with_spectra()
    with session_scope() as session:
        arrays = read_arrays(session, run_id, ["hessian_density", "ntk", "hessian_topk"])
    assert [a.step for a in arrays["hessian_density"]] == DENSITY_STEPS
    assert arrays["hessian_density"][7].values.shape == (2, 5)
    assert (arrays["hessian_density"][7].values == 70).all()
    assert arrays["hessian_density"][7].meta == {"s": 70}
    assert [a.step for a in arrays["ntk"]] == [0, 500] and arrays["hessian_topk"] == []


def test_max_entries_spreads_the_kept_entries_evenly(any_database):
    run_id = _run_with_spectra()
    with session_scope() as session:
        thinned = read_arrays(session, run_id, ["hessian_density", "ntk"], max_entries=12)
    steps = [a.step for a in thinned["hessian_density"]]
    assert len(steps) == 12 and steps[0] == 0 and steps[-1] == 990  # first and last kept
    gaps = np.diff(steps)
    assert gaps.min() >= 80 and gaps.max() <= 100  # every 9th of 99 intervals, rounded
    assert all((a.values == a.step).all() for a in thinned["hessian_density"])  # rows intact
    assert [a.step for a in thinned["ntk"]] == [0, 500]  # fewer than asked: all of them


def test_spectra_endpoint_thins_on_request(embedded_home):
    run_id = _run_with_spectra()
    with TestClient(create_app()) as client:
        url = f"/api/v1/runs/{run_id}/spectra"
        whole = client.get(url).json()["spectra"]
        assert len(whole["hessian_density"]) == 100
        thinned = client.get(url, params={"max_entries": 5, "kind": "hessian_density"}).json()
        steps = [e["step"] for e in thinned["spectra"]["hessian_density"]]
        assert steps == [0, 250, 500, 740, 990]  # indices 0, 24.75, 49.5, 74.25, 99 rounded
        assert client.get(url, params={"max_entries": 1}).status_code == 422
