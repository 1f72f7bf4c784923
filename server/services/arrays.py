"""Array-valued results (spectra, densities, grids, coordinates): one row per (run, step,
kind), the values as little-endian float32 bytes with their shape, and a JSON ``meta``."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import Connection, insert, select
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


def read_arrays(session: Session, run_id: int, kinds: Iterable[str]) -> dict[str, list[ArrayPoint]]:
    """The arrays of ``run_id`` of each of ``kinds``, in step order (empty lists for kinds
    the run did not record)."""
    wanted = list(kinds)
    result: dict[str, list[ArrayPoint]] = {kind: [] for kind in wanted}
    rows = session.execute(
        select(ArrayResult.step, ArrayResult.kind, ArrayResult.shape, ArrayResult.payload,
               ArrayResult.meta)
        .where(ArrayResult.run_id == run_id, ArrayResult.kind.in_(wanted))
        .order_by(ArrayResult.kind, ArrayResult.step)
    )  # fmt: skip
    for step, kind, shape, payload, meta in rows:
        values = np.frombuffer(payload, dtype="<f4").reshape(shape)
        result[kind].append(ArrayPoint(step=step, kind=kind, values=values, meta=meta))
    return result
