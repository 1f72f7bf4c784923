"""The curvature probes of a run (``probes.hessian``): at each probe step, the top-k and
smallest eigenvalues of the Hessian (or GGN) of the training loss on the probe batch, the
trace, the spectral density, and for Adam the preconditioned sharpness; with their costs.

The maths is in ``worker/probes`` (operators, Lanczos, Hutch++, SLQ); this module decides
what to run, carries the warm starts from one probe to the next, and turns results into
metrics and arrays for the recorder.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from dynascope.server.schemas.run_spec import HessianProbeSpec, RunSpec
from dynascope.worker.probes.curvature import CurvatureOperator, GGNOperator, HessianOperator
from dynascope.worker.probes.density import density_grid, gaussian_density, slq_nodes
from dynascope.worker.probes.lanczos import LanczosResult, lanczos_top_eigenpairs
from dynascope.worker.probes.operators import DiagonalPreconditioned
from dynascope.worker.probes.params import LossFunction
from dynascope.worker.probes.trace import hutch_plus_plus_trace
from dynascope.worker.registry import preconditioned_stability_threshold, stability_threshold


@dataclass
class ProbeMeasurement:
    """What one probe produced: scalar metrics, and arrays as (kind, values, meta)."""

    metrics: dict[str, float] = field(default_factory=dict)
    arrays: list[tuple[str, np.ndarray, dict[str, Any]]] = field(default_factory=list)


def density_sigma(low: float, high: float, points: int) -> float:
    """The Gaussian broadening for a density on ``points`` grid points over [low, high]:
    σ = 2·(high − low)/(points − 21), so that with a margin of 5σ each side the spacing is
    at most σ/2 and the drawn density integrates to 1 within about 1e-6 (see
    ``density_grid``). A degenerate range gets σ = 1e-3·max(1, |high|)."""
    spread = high - low
    if spread <= 0:
        return 1e-3 * max(1.0, abs(high))
    return 2.0 * spread / (points - 21)


class CurvatureProber:
    """Runs ``probes.hessian`` for one run, keeping each probe's eigenvectors to warm-start
    the next (the sharpness changes slowly between probes, so Lanczos needs far fewer
    products from there than from a random vector)."""

    def __init__(self, spec: RunSpec, model: nn.Module, loss_fn: LossFunction, task: str):
        assert spec.probes.hessian is not None
        self.options: HessianProbeSpec = spec.probes.hessian
        self.optimizer_spec = spec.optimizer
        self.model = model
        self.loss_fn = loss_fn
        self.task = task
        self.seed = spec.seed
        self.matrix = self.options.matrix
        self._top: Tensor | None = None
        self._bottom: Tensor | None = None
        self._preconditioned: Tensor | None = None

    def measure(
        self,
        step: int,
        inputs: Tensor,
        targets: Tensor,
        lr: float,
        optimizer: torch.optim.Optimizer,
    ) -> ProbeMeasurement:
        """All enabled curvature probes at the model's current parameters (eval mode is the
        caller's), on (inputs, targets)."""
        started = time.perf_counter()
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        options, out = self.options, ProbeMeasurement()
        operator = self._operator(inputs, targets)
        top = self._eigenpairs(operator, options.top_k, "largest", self._top, generator)
        self._top = top.eigenvectors
        values = top.eigenvalues.flip(0)  # largest first
        out.metrics |= {f"{self.matrix}/top_{i + 1}": v for i, v in enumerate(values.tolist())}
        threshold = stability_threshold(self.optimizer_spec, lr)
        if threshold is not None:
            out.metrics[f"{self.matrix}/threshold"] = threshold
        out.arrays.append((f"{self.matrix}_topk", values.numpy(), _lanczos_meta(top, threshold)))
        if options.min_eigenvalue:
            bottom = self._eigenpairs(operator, 1, "smallest", self._bottom, generator)
            self._bottom = bottom.eigenvectors
            out.metrics[f"{self.matrix}/min"] = bottom.eigenvalues[0].item()
            out.arrays.append(
                (f"{self.matrix}_min", bottom.eigenvalues.numpy(), _lanczos_meta(bottom))
            )
        if options.trace:
            trace = hutch_plus_plus_trace(
                operator, matvecs=options.trace_matvecs, generator=generator
            )
            out.metrics |= {
                f"{self.matrix}/trace": trace.estimate,
                f"{self.matrix}/trace_se": trace.standard_error,
            }
            out.arrays.append(
                (
                    f"{self.matrix}_trace",
                    np.array([trace.estimate, trace.standard_error]),
                    {"method": "hutch++", "matvecs": trace.matvecs, "fields": ["trace", "se"]},
                )
            )
        if options.density:
            out.arrays.append(self._density(operator, generator))
        self._adam_preconditioned(operator, optimizer, lr, generator, out)
        out.metrics[f"cost/{self.matrix}/seconds"] = time.perf_counter() - started
        out.metrics[f"cost/{self.matrix}/hvps"] = float(operator.matvecs)
        out.metrics[f"cost/{self.matrix}/graph_builds"] = float(operator.graph_builds)
        return out

    def _operator(self, inputs: Tensor, targets: Tensor) -> CurvatureOperator[Any]:
        options = self.options
        chunk = options.chunk_size
        if self.matrix == "ggn":
            loss = "cross_entropy" if self.task == "classification" else "mean_squared_error"
            return GGNOperator(self.model, inputs, loss=loss, chunk_size=chunk)
        return HessianOperator(self.model, self.loss_fn, inputs, targets, chunk_size=chunk)

    def _eigenpairs(
        self,
        operator: Any,
        k: int,
        which: str,
        start: Tensor | None,
        generator: torch.Generator,
    ) -> LanczosResult:
        return lanczos_top_eigenpairs(
            operator,
            min(k, operator.size),
            which=which,  # type: ignore[arg-type]
            tolerance=self.options.tolerance,
            max_iterations=self.options.max_iterations,
            start=start,
            generator=generator,
        )

    def _density(
        self, operator: CurvatureOperator[Any], generator: torch.Generator
    ) -> tuple[str, np.ndarray, dict[str, Any]]:
        options = self.options
        nodes = slq_nodes(
            operator,
            lanczos_steps=min(options.density_steps, operator.size),
            probes=options.density_probes,
            generator=generator,
        )
        used = nodes.values[nodes.weights > 0]
        low, high = used.min().item(), used.max().item()
        sigma = density_sigma(low, high, options.density_points)
        grid = density_grid(nodes, options.density_points, 5.0 * sigma)
        density = gaussian_density(nodes, grid, sigma)
        meta = {
            "grid_start": grid[0].item(),
            "grid_stop": grid[-1].item(),
            "points": options.density_points,
            "sigma": sigma,
            "lanczos_steps": options.density_steps,
            "probes": options.density_probes,
            "matvecs": nodes.matvecs,
        }
        return f"{self.matrix}_density", density.numpy(), meta

    def _adam_preconditioned(
        self,
        operator: CurvatureOperator[Any],
        optimizer: torch.optim.Optimizer,
        lr: float,
        generator: torch.Generator,
        out: ProbeMeasurement,
    ) -> None:
        """For Adam/AdamW, λ₁(P⁻¹H) with Adam's own preconditioner P = diag(√v̂ + ε) (Cohen
        et al. 2022), once the optimizer has second-moment estimates."""
        threshold = preconditioned_stability_threshold(self.optimizer_spec, lr)
        diagonal = _adam_preconditioner(optimizer, self.model) if threshold is not None else None
        if diagonal is None:
            return
        preconditioned = DiagonalPreconditioned(operator, diagonal.to(operator.dtype))
        top = self._eigenpairs(preconditioned, 1, "largest", self._preconditioned, generator)
        self._preconditioned = top.eigenvectors
        out.metrics[f"{self.matrix}/preconditioned_top_1"] = top.eigenvalues[-1].item()
        out.metrics[f"{self.matrix}/preconditioned_threshold"] = float(threshold)  # type: ignore[arg-type]
        meta = _lanczos_meta(top, threshold) | {"matrix": self.matrix}
        out.arrays.append(("preconditioned_topk", top.eigenvalues.flip(0).numpy(), meta))


def _adam_preconditioner(optimizer: torch.optim.Optimizer, model: nn.Module) -> Tensor | None:
    """Adam's diagonal preconditioner √(v/(1 − β₂ᵗ)) + ε over the trainable parameters, in
    their order; None before the first step."""
    pieces = []
    for group in optimizer.param_groups:
        beta2, eps = group["betas"][1], group["eps"]
        for param in group["params"]:
            state = optimizer.state.get(param, {})
            if "exp_avg_sq" not in state:
                return None
            step = float(state["step"])
            v_hat = state["exp_avg_sq"] / (1.0 - beta2**step)
            pieces.append((param, v_hat.sqrt().add(eps)))
    by_param = {id(param): diagonal for param, diagonal in pieces}
    ordered = [by_param[id(p)].reshape(-1) for p in model.parameters() if p.requires_grad]
    return torch.cat(ordered)


def _lanczos_meta(result: LanczosResult, threshold: float | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "iterations": result.iterations,
        "matvecs": result.matvecs,
        "converged": bool(result.converged),
        "at_rounding_level": bool(result.at_rounding_level),
        "residuals": result.residuals.tolist(),
        "errors": result.errors.tolist(),
    }
    if threshold is not None:
        meta["threshold"] = threshold
    return meta
