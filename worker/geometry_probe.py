"""The geometry analyses of a run, at its end (``probes.trajectory``, ``probes.landscape``):
the PCA of the parameter snapshots and the loss landscapes around checkpoints; the maths is in
``worker/probes/trajectory.py`` and ``worker/probes/landscape.py``."""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import Tensor, nn

from dynascope.server.schemas.run_spec import LandscapeProbeSpec, TrajectoryProbeSpec
from dynascope.worker.curvature_probe import ProbeMeasurement
from dynascope.worker.probes.evaluation import Task
from dynascope.worker.probes.landscape import (
    Batch,
    Landscape,
    interpolation_line,
    pca_plane,
    random_line,
    random_plane,
)
from dynascope.worker.probes.params import LossFunction
from dynascope.worker.probes.trajectory import (
    TrajectoryPCA,
    random_walk_reference,
    trajectory_pca,
)


def measure_trajectory(
    options: TrajectoryProbeSpec,
    steps: list[int],
    stacked: Tensor,
    *,
    snapshot_every: int,
) -> tuple[ProbeMeasurement, TrajectoryPCA | None]:
    """The PCA of the snapshots ``stacked`` (n, P) taken at ``steps``, stored as the
    ``trajectory`` array (coordinates, snapshots × components) with the explained-variance
    ratios beside the random-walk reference (6/π²)/k² (Antognini & Sohl-Dickstein 2018). Fewer
    than three snapshots, or snapshots that never moved, have no PCA (nothing stored)."""
    if len(steps) < 3:
        return ProbeMeasurement(), None
    started = time.perf_counter()
    try:
        pca = trajectory_pca(stacked, components=options.components)
    except ValueError:
        return ProbeMeasurement(), None
    seconds = time.perf_counter() - started
    k = int(pca.explained_variance_ratio.numel())
    ratios = pca.explained_variance_ratio.tolist()
    meta: dict[str, Any] = {
        "steps": steps,
        "explained_variance_ratio": ratios,
        "random_walk_reference": random_walk_reference(k).tolist(),
        "total_variance": pca.total_variance,
        "snapshot_every": snapshot_every,
        "requested_snapshot_every": options.snapshot_every,
        "parameters": int(stacked.shape[1]),
        "seconds": seconds,
    }
    metrics = {f"trajectory/explained_variance_{i}": r for i, r in enumerate(ratios[:3], 1)}
    metrics["cost/trajectory/seconds"] = seconds
    coordinates = pca.coordinates.numpy()
    return ProbeMeasurement(metrics, [("trajectory", coordinates, meta)]), pca


def measure_landscapes(
    options: LandscapeProbeSpec,
    model: nn.Module,
    loss_fn: LossFunction,
    task: Task,
    train: Batch,
    test: Batch,
    *,
    checkpoints: dict[int, dict[str, Tensor]],
    initial: dict[str, Tensor],
    final: dict[str, Tensor],
    last_step: int,
    snapshots: Tensor | None,
    snapshot_steps: list[int] | None,
    pca: TrajectoryPCA | None,
) -> list[tuple[int, ProbeMeasurement]]:
    """The landscapes of ``probes.landscape`` (Li et al. 2018), each recorded at its centre's
    step: per checkpoint the 2-D plane (``landscape_pca`` with the projected path, or
    ``landscape_random``) and with ``slices`` the 1-D random slice
    (``landscape_random_1d``); once, with ``slices``, the line from initialisation to the last
    step (``landscape_line``, at the last step). The model is evaluated in the caller's mode
    (eval). Every checkpoint's random directions come from the same seed, so the slices of
    different checkpoints are drawn with the same Gaussian draws (each rescaled to its own
    checkpoint's filters)."""
    common = {"task": task, "grid": options.grid, "span": options.span,
              "chunk_size": options.chunk_size}  # fmt: skip
    results: dict[int, ProbeMeasurement] = {}
    for step, centre in sorted(checkpoints.items()):
        out = results.setdefault(step, ProbeMeasurement())
        if options.plane == "pca":
            # fewer than three distinct snapshots: no plane to draw, but the slices still are
            if snapshots is not None and pca is not None and pca.components.shape[0] >= 2:
                plane = pca_plane(model, loss_fn, snapshots, train, test, centre=centre,
                                  pca=pca, **common)  # fmt: skip
                _add(out, "landscape_pca", plane, options, steps=snapshot_steps)
        else:
            generator = torch.Generator().manual_seed(options.seed)
            plane = random_plane(model, loss_fn, train, test, generator=generator,
                                 centre=centre, **common)  # fmt: skip
            _add(out, "landscape_random", plane, options)
        if options.slices:
            generator = torch.Generator().manual_seed(options.seed)
            line = random_line(model, loss_fn, train, test, generator=generator, centre=centre,
                               **common)  # fmt: skip
            _add(out, "landscape_random_1d", line, options)
    if options.slices:
        line = interpolation_line(model, loss_fn, initial, final, train, test, **common)
        _add(results.setdefault(last_step, ProbeMeasurement()), "landscape_line", line, options)
    return sorted(results.items())


def _add(
    out: ProbeMeasurement,
    kind: str,
    landscape: Landscape,
    options: LandscapeProbeSpec,
    *,
    steps: list[int] | None = None,
) -> None:
    """Stack ``landscape``'s grids into one array of ``kind`` with its axes, path and cost."""
    layers = {"train_loss": landscape.train_loss, "test_loss": landscape.test_loss,
              "train_accuracy": landscape.train_accuracy,
              "test_accuracy": landscape.test_accuracy}  # fmt: skip
    present = {name: grid for name, grid in layers.items() if grid is not None}
    values = torch.stack(list(present.values())).numpy()
    meta: dict[str, Any] = {
        "layers": list(present),
        "plane": landscape.kind,
        "dims": len(landscape.axes),
        "axes": [axis.tolist() for axis in landscape.axes],
        "span": options.span,
        "seed": options.seed,
        "evaluations": landscape.evaluations,
        "seconds": landscape.seconds,
    }
    path = landscape.path
    if path is not None:
        meta["path"] = {
            "steps": steps,
            "coordinates": path.coordinates.tolist(),
            "loss": path.loss.tolist(),
            "plane_loss": path.projected_loss.tolist(),
            "residual": path.residual.tolist(),
            "relative_residual": path.relative_residual.tolist(),
        }
        out.metrics["landscape/path_max_relative_residual"] = path.relative_residual.max().item()
    out.arrays.append((kind, values, meta))
    seconds = out.metrics.get("cost/landscape/seconds", 0.0) + landscape.seconds
    evaluations = out.metrics.get("cost/landscape/evaluations", 0.0) + landscape.evaluations
    out.metrics |= {"cost/landscape/seconds": seconds, "cost/landscape/evaluations": evaluations}
