"""Geometry results of a run, as the API serves them: the trajectory's PCA and the loss
landscapes. Both are array results (``services/arrays.py``) written by the worker's
end-of-run analyses; this module names their kinds and turns rows into response bodies."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from dynascope.server.services.arrays import ArrayPoint, read_arrays

TRAJECTORY_KIND = "trajectory"
"""Values: the snapshots' coordinates on the principal components, (snapshots, components);
meta: steps, explained_variance_ratio, random_walk_reference, total_variance, cadence, cost."""

LANDSCAPE_KINDS = ("landscape_pca", "landscape_random", "landscape_random_1d", "landscape_line")
"""Values: the grids stacked along the first axis in the order of ``meta["layers"]``
(train_loss, test_loss, then train_accuracy, test_accuracy for classifiers), each (grid,) or
(grid, grid); meta: plane, dims, axes, path (pca), cost."""

LANDSCAPE_LAYERS = ("train_loss", "test_loss", "train_accuracy", "test_accuracy")


def read_trajectory(session: Session, run_id: int) -> dict[str, Any] | None:
    """The trajectory PCA of ``run_id`` (``None`` if the run recorded none)."""
    entries = read_arrays(session, run_id, [TRAJECTORY_KIND])[TRAJECTORY_KIND]
    if not entries:
        return None
    entry = entries[-1]
    meta = dict(entry.meta)
    return {
        "step": entry.step,
        "steps": meta.pop("steps"),
        "explained_variance_ratio": meta.pop("explained_variance_ratio"),
        "random_walk_reference": meta.pop("random_walk_reference"),
        "coordinates": entry.values,
        "meta": meta,
    }


def read_landscapes(session: Session, run_id: int) -> list[dict[str, Any]]:
    """Every landscape of ``run_id``: by kind (pca, random, random 1-D, line), then step."""
    arrays = read_arrays(session, run_id, LANDSCAPE_KINDS)
    return [_landscape(entry) for kind in LANDSCAPE_KINDS for entry in arrays[kind]]


def _landscape(entry: ArrayPoint) -> dict[str, Any]:
    meta = dict(entry.meta)
    layers = meta.pop("layers")
    grids = dict(zip(layers, entry.values, strict=True))
    return {
        "step": entry.step,
        "kind": entry.kind,
        "plane": meta.pop("plane"),
        "dims": meta.pop("dims"),
        "axes": meta.pop("axes"),
        **{layer: grids.get(layer) for layer in LANDSCAPE_LAYERS},
        "path": meta.pop("path", None),
        "meta": meta,
    }
