"""Array-valued results (spectra, densities, grids, coordinates): one row per (run, step,
kind), the values as little-endian float32 bytes with their shape, and a JSON ``meta``."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import ColumnElement, Connection, and_, false, insert, or_, select
from sqlalchemy.orm import Session

from dynascope.server.db.models import ArrayResult

#: the kinds of spectra a run may record (GET /runs/{id}/spectra?kind=...)
SPECTRUM_KINDS = (
    "hessian_topk",
    "hessian_min",
    "hessian_trace",
    "hessian_density",
    "ggn_topk",
    "ggn_trace",
    "ggn_density",
    "preconditioned_topk",
    "jacobian_input_output",
    "ntk",
    "training_jacobian",
)


@dataclass(frozen=True)
class ArrayPoint:
    """One array result of a run at a step."""

    step: int
    kind: str
    values: np.ndarray
    meta: dict[str, Any]


def write_arrays(connection: Connection, run_id: int, arrays: Sequence[ArrayPoint]) -> int:
    """Insert ``arrays`` for ``run_id`` in one statement (inside the caller's transaction)."""
    if not arrays:
        return 0
    connection.execute(
        insert(ArrayResult),
        [
            {
                "run_id": run_id,
                "step": array.step,
                "kind": array.kind,
                "shape": list(array.values.shape),
                "payload": np.ascontiguousarray(array.values, dtype="<f4").tobytes(),
                "meta": array.meta,
            }
            for array in arrays
        ],
    )
    return len(arrays)


def read_arrays(
    session: Session, run_id: int, kinds: Iterable[str], max_entries: int | None = None
) -> dict[str, list[ArrayPoint]]:
    """The arrays of ``run_id`` of each of ``kinds``, in step order (empty lists for kinds
    the run did not record). With ``max_entries``, at most that many of each kind, evenly
    spread over its entries (the first and the last always among them): for drawing a long
    run's spectra as columns of a heatmap, only the entries kept are read from the database."""
    wanted = list(kinds)
    result: dict[str, list[ArrayPoint]] = {kind: [] for kind in wanted}
    where = [ArrayResult.run_id == run_id, ArrayResult.kind.in_(wanted)]
    if max_entries is not None:
        where.append(_evenly_spread(session, run_id, wanted, max_entries))
    rows = session.execute(
        select(ArrayResult.step, ArrayResult.kind, ArrayResult.shape, ArrayResult.payload,
               ArrayResult.meta)
        .where(*where)
        .order_by(ArrayResult.kind, ArrayResult.step)
    )  # fmt: skip
    for step, kind, shape, payload, meta in rows:
        values = np.frombuffer(payload, dtype="<f4").reshape(shape)
        result[kind].append(ArrayPoint(step=step, kind=kind, values=values, meta=meta))
    return result


def _evenly_spread(
    session: Session, run_id: int, kinds: list[str], count: int
) -> ColumnElement[bool]:
    """A condition selecting, per kind, ``count`` of the run's entries evenly spread by index
    (all of them when there are no more), from the steps alone."""
    steps: dict[str, list[int]] = {kind: [] for kind in kinds}
    for kind, step in session.execute(
        select(ArrayResult.kind, ArrayResult.step)
        .where(ArrayResult.run_id == run_id, ArrayResult.kind.in_(kinds))
        .order_by(ArrayResult.kind, ArrayResult.step)
    ):
        steps[kind].append(step)
    chosen = []
    for kind, recorded in steps.items():
        if len(recorded) <= count:
            chosen.append(ArrayResult.kind == kind)
            continue
        picks = np.unique(np.round(np.linspace(0, len(recorded) - 1, count)).astype(int))
        kept = [recorded[i] for i in picks]
        chosen.append(and_(ArrayResult.kind == kind, ArrayResult.step.in_(kept)))
    return or_(false(), *chosen)
