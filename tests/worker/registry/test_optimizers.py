"""Optimizer registry: optimizer classes and hyper-parameters, the learning-rate schedule
against hand-computed values, and the edge-of-stability thresholds, checked both by formula
and by running the torch optimizer on a one-dimensional quadratic."""

from __future__ import annotations

import math

import pytest
import torch

from dynascope.server.schemas.optimizer_specs import (
    AdamSpec,
    AdamWSpec,
    GDSpec,
    ScheduleSpec,
    SGDSpec,
)
from dynascope.worker.registry import build_optimizer, is_full_batch, stability_threshold
from dynascope.worker.registry.optimizers import lr_factor


def _parameters() -> list[torch.nn.Parameter]:
    return [torch.nn.Parameter(torch.zeros(3))]


def test_gd_is_plain_sgd_without_momentum() -> None:
    optimizer, _ = build_optimizer(GDSpec(lr=0.3, weight_decay=0.01), _parameters(), steps=5)
    assert type(optimizer) is torch.optim.SGD
    group = optimizer.param_groups[0]
    assert (group["lr"], group["momentum"], group["nesterov"]) == (0.3, 0.0, False)
    assert group["weight_decay"] == 0.01


def test_sgd_carries_momentum_and_nesterov() -> None:
    spec = SGDSpec(lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    optimizer, _ = build_optimizer(spec, _parameters(), steps=5)
    assert type(optimizer) is torch.optim.SGD
    group = optimizer.param_groups[0]
    assert (group["lr"], group["momentum"], group["nesterov"]) == (0.05, 0.9, True)
    assert group["weight_decay"] == 5e-4


@pytest.mark.parametrize(
    ("spec_type", "optimizer_type"),
    [(AdamSpec, torch.optim.Adam), (AdamWSpec, torch.optim.AdamW)],
)
def test_adam_and_adamw_carry_their_hyper_parameters(spec_type, optimizer_type) -> None:
    spec = spec_type(lr=3e-4, beta1=0.8, beta2=0.95, eps=1e-6, weight_decay=0.1)
    optimizer, _ = build_optimizer(spec, _parameters(), steps=5)
    assert type(optimizer) is optimizer_type
    group = optimizer.param_groups[0]
    assert group["lr"] == 3e-4 and group["betas"] == (0.8, 0.95)
    assert group["eps"] == 1e-6 and group["weight_decay"] == 0.1


def test_adamw_defaults_to_decoupled_weight_decay() -> None:
    optimizer, _ = build_optimizer(AdamWSpec(), _parameters(), steps=5)
    assert optimizer.param_groups[0]["weight_decay"] == 0.01


def test_constant_schedule_with_warmup() -> None:
    schedule = ScheduleSpec(name="constant", warmup_steps=4)
    factors = [lr_factor(schedule, step, steps=10) for step in range(10)]
    assert factors == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    assert lr_factor(ScheduleSpec(), 0, steps=10) == 1.0


def test_cosine_schedule_hand_computed_values() -> None:
    # warmup 2, then cosine over steps 2..6 (span 4) from 1 down to 0.1
    schedule = ScheduleSpec(name="cosine", warmup_steps=2, min_lr_ratio=0.1)
    expected = {
        0: 0.5,
        1: 1.0,
        2: 1.0,
        3: 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 4)),  # 0.868198
        4: 0.55,
        5: 0.1 + 0.9 * 0.5 * (1 + math.cos(3 * math.pi / 4)),  # 0.231802
        6: 0.1,
        9: 0.1,  # past the end stays at the floor
    }
    for step, factor in expected.items():
        assert lr_factor(schedule, step, steps=7) == pytest.approx(factor, abs=1e-12)
    assert lr_factor(schedule, 3, steps=7) == pytest.approx(0.868198, abs=1e-6)


def test_cosine_without_warmup_or_room_to_decay() -> None:
    schedule = ScheduleSpec(name="cosine")
    assert [lr_factor(schedule, step, steps=3) for step in range(3)] == pytest.approx(
        [1.0, 0.5, 0.0]
    )
    assert lr_factor(schedule, 0, steps=1) == 1.0


def test_scheduler_sets_the_lr_used_at_each_step() -> None:
    spec = SGDSpec(lr=0.2, schedule=ScheduleSpec(name="cosine", warmup_steps=2, min_lr_ratio=0.1))
    optimizer, scheduler = build_optimizer(spec, _parameters(), steps=7)
    used = []
    for _ in range(7):
        used.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    expected = [0.2 * lr_factor(spec.schedule, step, steps=7) for step in range(7)]
    assert used == pytest.approx(expected, abs=1e-12)
    assert used[0] == pytest.approx(0.1) and used[-1] == pytest.approx(0.02)


def test_only_gd_is_full_batch() -> None:
    assert is_full_batch(GDSpec())
    assert not any(is_full_batch(spec) for spec in (SGDSpec(), AdamSpec(), AdamWSpec()))


def test_stability_thresholds_by_formula() -> None:
    assert stability_threshold(GDSpec(lr=0.1)) == pytest.approx(20.0)
    assert stability_threshold(SGDSpec(lr=0.1)) == pytest.approx(20.0)
    assert stability_threshold(SGDSpec(lr=0.1, momentum=0.9)) == pytest.approx(38.0)
    nesterov = SGDSpec(lr=0.1, momentum=0.9, nesterov=True)
    assert stability_threshold(nesterov) == pytest.approx(3.8 / 0.28)
    assert stability_threshold(GDSpec(lr=0.1, weight_decay=0.5)) == pytest.approx(19.5)
    assert stability_threshold(AdamSpec()) is None
    assert stability_threshold(AdamWSpec()) is None


def _final_distance(spec: GDSpec | SGDSpec, curvature: float, steps: int = 600) -> float:
    """|x| after running the torch optimizer on curvature/2 · x² from x = 1."""
    x = torch.nn.Parameter(torch.ones(1, dtype=torch.float64))
    optimizer, _ = build_optimizer(spec, [x], steps=steps)
    for _ in range(steps):
        optimizer.zero_grad()
        (0.5 * curvature * x.square()).sum().backward()
        optimizer.step()
    return float(x.detach().abs())


@pytest.mark.parametrize(
    "spec",
    [
        GDSpec(lr=0.1),
        GDSpec(lr=0.05, weight_decay=2.0),
        SGDSpec(lr=0.1, momentum=0.5),
        SGDSpec(lr=0.1, momentum=0.9, nesterov=True),
        SGDSpec(lr=0.2, momentum=0.3, nesterov=True, weight_decay=1.0),
    ],
    ids=["gd", "gd_weight_decay", "heavy_ball", "nesterov", "nesterov_weight_decay"],
)
def test_threshold_separates_stable_from_unstable_quadratics(spec: GDSpec | SGDSpec) -> None:
    threshold = stability_threshold(spec)
    assert threshold is not None
    assert _final_distance(spec, 0.97 * threshold) < 1e-3
    assert _final_distance(spec, 1.03 * threshold) > 1e3
