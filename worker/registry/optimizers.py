"""The optimizer registry: an optimizer spec in, a torch optimizer and its learning-rate
schedule out; plus what the probes need to know about the optimizer (full batch or not,
and its edge-of-stability threshold)."""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
from torch.optim.lr_scheduler import LambdaLR, LRScheduler
from torch.optim.optimizer import ParamsT

from dynascope.server.schemas.optimizer_specs import (
    AdamSpec,
    AdamWSpec,
    GDSpec,
    OptimizerSpec,
    ScheduleSpec,
    SGDSpec,
)


def _gd(spec: GDSpec, params: ParamsT) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=spec.lr, momentum=0.0, weight_decay=spec.weight_decay)


def _sgd(spec: SGDSpec, params: ParamsT) -> torch.optim.Optimizer:
    return torch.optim.SGD(
        params,
        lr=spec.lr,
        momentum=spec.momentum,
        nesterov=spec.nesterov,
        weight_decay=spec.weight_decay,
    )


def _adam(spec: AdamSpec, params: ParamsT) -> torch.optim.Optimizer:
    return torch.optim.Adam(
        params,
        lr=spec.lr,
        betas=(spec.beta1, spec.beta2),
        eps=spec.eps,
        weight_decay=spec.weight_decay,
    )


def _adamw(spec: AdamWSpec, params: ParamsT) -> torch.optim.Optimizer:
    return torch.optim.AdamW(
        params,
        lr=spec.lr,
        betas=(spec.beta1, spec.beta2),
        eps=spec.eps,
        weight_decay=spec.weight_decay,
    )


OPTIMIZER_BUILDERS: dict[str, Callable[[Any, ParamsT], torch.optim.Optimizer]] = {
    "gd": _gd,
    "sgd": _sgd,
    "adam": _adam,
    "adamw": _adamw,
}
"""Builder of each optimizer, by spec name."""


def lr_factor(schedule: ScheduleSpec, step: int, *, steps: int) -> float:
    """The learning-rate multiplier at ``step`` (0-based) of a run of ``steps`` steps.

    Linear warmup (step + 1) / warmup_steps for the first ``warmup_steps`` steps, then 1
    (constant) or a cosine from 1 at step ``warmup_steps`` down to ``min_lr_ratio`` at the
    last step ``steps - 1``: m + (1 - m)·(1 + cos(π·p))/2 with
    p = (step - warmup_steps) / (steps - 1 - warmup_steps), clipped to [0, 1]. When no step
    is left after warmup the cosine has nowhere to decay and the factor stays 1.
    """
    warmup = schedule.warmup_steps
    if step < warmup:
        return (step + 1) / warmup
    if schedule.name == "constant":
        return 1.0
    span = steps - 1 - warmup
    if span <= 0:
        return 1.0
    progress = min(1.0, (step - warmup) / span)
    ratio = schedule.min_lr_ratio
    return ratio + (1.0 - ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_optimizer(
    spec: OptimizerSpec, params: ParamsT, *, steps: int
) -> tuple[torch.optim.Optimizer, LRScheduler]:
    """The torch optimizer a spec describes over ``params`` and its ``LambdaLR`` schedule
    (``lr_factor``) for a run of ``steps`` steps. gd and sgd are ``torch.optim.SGD`` (gd
    without momentum), adam is ``Adam`` with L2 weight decay added to the gradient, adamw is
    ``AdamW`` with decoupled weight decay (Loshchilov & Hutter 2019). Call
    ``scheduler.step()`` after each ``optimizer.step()``."""
    optimizer = OPTIMIZER_BUILDERS[spec.name](spec, params)
    scheduler = LambdaLR(optimizer, partial(lr_factor, spec.schedule, steps=steps))
    return optimizer, scheduler


def is_full_batch(spec: OptimizerSpec) -> bool:
    """Whether every step uses the whole training set (gradient descent)."""
    return isinstance(spec, GDSpec)


def stability_threshold(spec: OptimizerSpec, lr: float | None = None) -> float | None:
    """The sharpness (top Hessian eigenvalue of the training loss) above which an update
    with learning rate ``lr`` (default: the spec's base lr) is unstable on a quadratic: the
    line gradient descent hovers at on the edge of stability (Cohen et al. 2021).

    2/η for gd and momentum-free sgd; (2 + 2β)/η for heavy-ball momentum β; and
    (2 + 2β)/((1 + 2β)·η) for Nesterov momentum (Cohen et al. 2021, appendix). Coupled
    weight decay λ adds λ to every curvature, so λ is subtracted from the threshold on the
    loss's sharpness. None for Adam and AdamW, whose threshold applies to the
    preconditioned sharpness (see ``preconditioned_stability_threshold``).
    """
    eta = spec.lr if lr is None else lr
    if isinstance(spec, GDSpec):
        return 2.0 / eta - spec.weight_decay
    if isinstance(spec, SGDSpec):
        beta = spec.momentum
        denominator = (1.0 + 2.0 * beta) * eta if spec.nesterov else eta
        return (2.0 + 2.0 * beta) / denominator - spec.weight_decay
    return None


def preconditioned_stability_threshold(
    spec: OptimizerSpec, lr: float | None = None
) -> float | None:
    """For Adam and AdamW: the threshold (2 + 2β₁)/((1 − β₁)·η) on the preconditioned
    sharpness λ₁(P⁻¹H), P = diag(√v̂ + ε), which adaptive methods equilibrate at (Cohen et al.
    2022, "Adaptive Gradient Methods at the Edge of Stability": 38/η for β₁ = 0.9). None for
    the other optimizers."""
    if not isinstance(spec, AdamSpec):
        return None
    eta = spec.lr if lr is None else lr
    return (2.0 + 2.0 * spec.beta1) / ((1.0 - spec.beta1) * eta)
