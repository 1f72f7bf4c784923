"""Weight and gradient norms, distance and update ratios against hand-computed values."""

import math

import pytest
import torch

from dynascope.worker.probes.norms import (
    NormsResult,
    distance,
    gradient_norm,
    gradient_norms,
    measure_norms,
    update_ratios,
    weight_norms,
)
from dynascope.worker.probes.spectral import spectral_norms_exact

EXACT = 1e-12  # float64
SINGLE = 1e-6  # float32 accumulation


def small_params() -> dict[str, torch.Tensor]:
    """Norms chosen by hand: ||a|| = 5, ||b|| = 13, ||c|| = 0."""
    return {
        "a": torch.tensor([[3.0, 0.0], [0.0, 4.0]], dtype=torch.float64),
        "b": torch.tensor([5.0, 12.0], dtype=torch.float64),
        "c": torch.zeros(3, dtype=torch.float64),
    }


def random_params(seed: int, dtype: torch.dtype = torch.float64) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    shapes = {  # fc2.weight is large enough for Lanczos, the others are done exactly
        "conv.weight": (8, 3, 3, 3),
        "fc1.weight": (128, 72),
        "fc1.bias": (128,),
        "fc2.weight": (200, 128),
    }
    return {
        name: torch.randn(*shape, generator=generator, dtype=torch.float64).to(dtype)
        for name, shape in shapes.items()
    }


def test_weight_norms_by_hand() -> None:
    assert weight_norms(small_params()) == {"a": 5.0, "b": 13.0, "c": 0.0}
    assert weight_norms({}) == {}


@pytest.mark.parametrize(("dtype", "rel"), [(torch.float64, EXACT), (torch.float32, SINGLE)])
def test_weight_norms_are_frobenius_norms(dtype: torch.dtype, rel: float) -> None:
    params = random_params(0, dtype)
    norms = weight_norms(params)
    assert list(norms) == list(params)
    for name, value in params.items():
        assert norms[name] == pytest.approx(value.double().norm().item(), rel=rel)


def test_gradient_norms_total_and_per_layer() -> None:
    gradient = small_params()
    assert gradient_norms(gradient) == {"a": 5.0, "b": 13.0, "c": 0.0}
    assert gradient_norm(gradient) == pytest.approx(math.sqrt(25 + 169), rel=EXACT)
    assert gradient_norm({}) == 0.0
    flat = torch.cat([g.flatten() for g in random_params(1).values()])
    assert gradient_norm(random_params(1)) == pytest.approx(flat.norm().item(), rel=EXACT)


def test_distance_by_hand() -> None:
    params = small_params()
    reference = {name: torch.zeros_like(value) for name, value in params.items()}
    assert distance(params, reference) == pytest.approx(math.sqrt(25 + 169), rel=EXACT)
    assert distance(params, params) == 0.0
    moved = {**reference, "b": torch.tensor([5.0, 12.0 - 1.0], dtype=torch.float64)}
    # a: 5 away, b: (0, 1) away, c: 0 away
    assert distance(params, moved) == pytest.approx(math.sqrt(25 + 1), rel=EXACT)


def test_distance_is_the_norm_of_the_flat_difference() -> None:
    first, second = random_params(2), random_params(3)
    flat = torch.cat([(first[n] - second[n]).flatten() for n in first])
    assert distance(first, second) == pytest.approx(flat.norm().item(), rel=EXACT)


def test_update_ratios_by_hand_including_zero_tensors() -> None:
    before = small_params()
    after = {
        "a": before["a"] + torch.tensor([[0.0, 0.3], [0.4, 0.0]], dtype=torch.float64),
        "b": before["b"],
        "c": torch.tensor([0.0, 2.0, 0.0], dtype=torch.float64),
    }
    ratios = update_ratios(before, after)
    assert ratios["a"] == pytest.approx(0.5 / 5.0, rel=EXACT)
    assert ratios["b"] == 0.0
    assert ratios["c"] == math.inf  # a zero tensor that moved
    assert update_ratios(before, before)["c"] == 0.0  # a zero tensor that stayed


def test_update_ratio_of_nan_parameters_is_nan() -> None:
    before = {"w": torch.full((2, 2), math.nan, dtype=torch.float64), "z": torch.zeros(2)}
    after = {"w": torch.ones(2, 2, dtype=torch.float64), "z": torch.full((2,), math.nan)}
    ratios = update_ratios(before, after)
    assert math.isnan(ratios["w"]) and math.isnan(ratios["z"])


def test_mismatched_names_are_refused() -> None:
    params = small_params()
    other = {"a": params["a"], "b": params["b"], "d": params["c"]}
    with pytest.raises(ValueError, match=r"missing \['c'\], unexpected \['d'\]"):
        distance(params, other)
    with pytest.raises(ValueError, match="after must have the same parameter names"):
        update_ratios(params, other)
    with pytest.raises(ValueError, match="gradient must have the same parameter names"):
        measure_norms(params, gradient=other, spectral=False)


def test_measure_norms_agrees_with_the_single_probes() -> None:
    params, initial, previous = random_params(4), random_params(5), random_params(6)
    gradient = random_params(7)

    result = measure_norms(params, gradient=gradient, initial=initial, previous=previous)

    assert result.weight_norms == pytest.approx(weight_norms(params), rel=EXACT)
    assert result.gradient_norms == pytest.approx(gradient_norms(gradient), rel=EXACT)
    assert result.gradient_norm == pytest.approx(gradient_norm(gradient), rel=EXACT)
    assert result.distance_from_init == pytest.approx(distance(params, initial), rel=EXACT)
    assert result.update_ratios == pytest.approx(update_ratios(previous, params), rel=EXACT)
    exact = spectral_norms_exact(params)
    assert result.spectral is not None
    assert result.spectral.values == pytest.approx(exact, rel=1e-4)

    metrics = result.metrics()
    assert metrics["grad_norm"] == result.gradient_norm
    assert metrics["distance_from_init"] == result.distance_from_init
    assert metrics["weight_norm/fc1.bias"] == result.weight_norms["fc1.bias"]
    assert metrics["grad_norm/fc1.weight"] == result.gradient_norms["fc1.weight"]
    assert metrics["update_ratio/conv.weight"] == result.update_ratios["conv.weight"]
    assert {k for k in metrics if k.startswith("spectral_norm/")} == {
        "spectral_norm/conv.weight",
        "spectral_norm/fc1.weight",
        "spectral_norm/fc2.weight",
    }
    assert len(metrics) == 4 * 3 + 3 + 2  # weight, grad, ratio per tensor; 3 spectral; 2 totals


def test_measure_norms_warm_starts_spectral_norms() -> None:
    params = random_params(8)
    first = measure_norms(params)
    assert first.spectral is not None
    moved = {name: value * 1.001 for name, value in params.items()}
    second = measure_norms(moved, spectral_state=first.spectral.vectors)
    assert second.spectral is not None
    for name, value in first.spectral.values.items():
        assert second.spectral.values[name] == pytest.approx(1.001 * value, rel=1e-4)
    assert 0 < second.spectral.matvecs < first.spectral.matvecs / 3


def test_measure_norms_with_only_weights() -> None:
    result = measure_norms(small_params(), spectral=False)
    assert result == NormsResult(
        weight_norms={"a": 5.0, "b": 13.0, "c": 0.0},
        spectral=None,
        gradient_norm=None,
        gradient_norms=None,
        distance_from_init=None,
        update_ratios=None,
    )
    assert result.metrics() == {"weight_norm/a": 5.0, "weight_norm/b": 13.0, "weight_norm/c": 0.0}
    empty = measure_norms({}, gradient={}, initial={}, previous={})
    assert empty.weight_norms == {} and empty.gradient_norm == 0.0
    assert empty.distance_from_init == 0.0 and empty.update_ratios == {}


def diverging_params() -> tuple[dict[str, torch.Tensor], ...]:
    """float32 weights of a diverging run, entries about 1e20 (their squares, about 1e40,
    overflow float32), their initialisation, and the weights before the last update."""
    generator = torch.Generator().manual_seed(9)
    shapes = {"layer.weight": (32, 8), "layer.bias": (32,), "head.weight": (1, 32)}
    initial = {
        name: torch.randn(*shape, generator=generator, dtype=torch.float64)
        for name, shape in shapes.items()
    }
    previous = {name: 1e20 * value for name, value in initial.items()}
    params = {name: value * 1.25 for name, value in previous.items()}
    as_float32 = [{n: v.float() for n, v in d.items()} for d in (params, initial, previous)]
    return tuple(as_float32)


def test_huge_float32_weights_get_finite_norms() -> None:
    params, initial, previous = diverging_params()
    assert torch.isinf(torch.linalg.vector_norm(params["layer.weight"]))  # the plain overflow
    result = measure_norms(params, gradient=params, initial=initial, previous=previous)
    exact = {name: value.double().norm().item() for name, value in params.items()}
    assert result.weight_norms == pytest.approx(exact, rel=SINGLE)
    assert result.gradient_norms == pytest.approx(exact, rel=SINGLE)
    flat = torch.cat([value.double().flatten() for value in params.values()])
    assert result.gradient_norm == pytest.approx(flat.norm().item(), rel=SINGLE)
    drift = torch.cat([(params[n].double() - initial[n].double()).flatten() for n in params])
    assert result.distance_from_init == pytest.approx(drift.norm().item(), rel=SINGLE)
    # the update is a quarter of the weights before it, in every layer: never 0 or NaN
    assert result.update_ratios == pytest.approx(dict.fromkeys(params, 0.25), rel=SINGLE)
    assert result.spectral is not None
    assert result.spectral.values == pytest.approx(spectral_norms_exact(params), rel=1e-4)
    metrics = result.metrics()
    assert all(math.isfinite(value) for value in metrics.values()), metrics
    # the single probes agree
    assert weight_norms(params) == pytest.approx(exact, rel=SINGLE)
    assert gradient_norm(params) == pytest.approx(flat.norm().item(), rel=SINGLE)
    assert distance(params, initial) == pytest.approx(drift.norm().item(), rel=SINGLE)
    assert update_ratios(previous, params) == pytest.approx(result.update_ratios, rel=SINGLE)


def test_a_difference_that_overflows_float32_gets_a_finite_norm() -> None:
    big = torch.full((4,), 3e38)  # finite float32, near the largest (3.4e38)
    # big - (-big) overflows float32, but its norm 2·3e38·√4 is a finite float64
    assert distance({"w": big}, {"w": -big}) == pytest.approx(12e38, rel=SINGLE)
    assert update_ratios({"w": -big}, {"w": big})["w"] == pytest.approx(2.0, rel=SINGLE)


def test_ordinary_norms_take_the_fused_path_only(monkeypatch: pytest.MonkeyPatch) -> None:
    def unexpected(*_args: object) -> float:
        raise AssertionError("an ordinary norm was taken again")

    monkeypatch.setattr("dynascope.worker.probes.norms.rescaled_norm", unexpected)
    params, initial, previous = (random_params(seed, torch.float32) for seed in (10, 11, 12))
    result = measure_norms(params, gradient=params, initial=initial, previous=previous)
    assert all(math.isfinite(value) for value in result.metrics().values())


def test_update_ratio_is_nan_when_a_norm_is_not_finite() -> None:
    # NaN: not measurable (recorded as null), not 0.0 and not inf
    before = {"w": torch.tensor([math.inf, 1.0]), "u": torch.tensor([1.0, 2.0])}
    after = {"w": torch.tensor([1.0, 1.0]), "u": torch.tensor([math.inf, 2.0])}
    ratios = update_ratios(before, after)
    assert math.isnan(ratios["w"]) and math.isnan(ratios["u"])
    result = measure_norms(after, previous=before, spectral=False)
    assert result.update_ratios is not None
    assert math.isnan(result.update_ratios["w"]) and math.isnan(result.update_ratios["u"])
