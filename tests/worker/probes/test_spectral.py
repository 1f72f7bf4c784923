"""Spectral norms by Lanczos against singular values from a full SVD, in float64."""

import math

import pytest
import torch

from dynascope.worker.probes.spectral import (
    SPECTRAL_TOLERANCE,
    spectral_norms,
    spectral_norms_exact,
)

TOLERANCE = SPECTRAL_TOLERANCE  # relative, the one the iteration promises
ITERATE = {"gram_limit": 0}  # force the Lanczos path on small test matrices


def gaussian(*shape: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=generator, dtype=torch.float64)


def with_spectrum(rows: int, cols: int, singular_values: list[float], seed: int) -> torch.Tensor:
    """U diag(s) Vᵀ with random orthonormal U, V and the given singular values."""
    left, _ = torch.linalg.qr(gaussian(rows, rows, seed=seed))
    right, _ = torch.linalg.qr(gaussian(cols, cols, seed=seed + 1))
    k = len(singular_values)
    s = torch.tensor(singular_values, dtype=torch.float64)
    return left[:, :k] @ torch.diag(s) @ right[:, :k].T


def largest_singular_value(weight: torch.Tensor) -> float:
    return torch.linalg.svdvals(weight.reshape(weight.shape[0], -1).double())[0].item()


SHAPES = [(128, 64), (64, 128), (128, 128), (10, 128), (160, 120), (32, 16, 3, 3), (8, 3, 5, 5)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("options", [ITERATE, {}], ids=["lanczos", "default"])
def test_matches_svd_on_random_weights(shape: tuple[int, ...], options: dict) -> None:
    weights = {f"w{seed}": gaussian(*shape, seed=seed) for seed in range(3)}
    result = spectral_norms(weights, **options)
    for name, weight in weights.items():
        exact = largest_singular_value(weight)
        assert result.values[name] == pytest.approx(exact, rel=TOLERANCE)
        assert result.values[name] <= exact * (1 + 1e-12)  # Ritz values are lower bounds


def test_conv_kernel_is_the_norm_of_its_reshaped_matrix() -> None:
    kernel = gaussian(16, 8, 3, 3, seed=0)
    exact = torch.linalg.matrix_norm(kernel.reshape(16, 72), ord=2).item()
    assert spectral_norms_exact({"conv": kernel})["conv"] == pytest.approx(exact, rel=1e-12)
    assert spectral_norms({"conv": kernel}, **ITERATE).values["conv"] == pytest.approx(
        exact, rel=TOLERANCE
    )


@pytest.mark.parametrize("second", [0.97, 0.99])
def test_close_top_gap_converges_to_the_tolerance(second: float) -> None:
    spectrum = [1.0, second, *torch.linspace(0.9, 0.01, 78).tolist()]
    weight = with_spectrum(100, 80, spectrum, seed=3)
    for tolerance in (1e-3, 1e-4, 1e-6):
        result = spectral_norms({"w": weight}, tolerance=tolerance, **ITERATE)
        assert result.values["w"] == pytest.approx(1.0, rel=tolerance)
        assert result.values["w"] <= 1.0 + 1e-12


def test_warm_start_takes_fewer_iterations_than_cold() -> None:
    weight = gaussian(128, 96, seed=4)
    cold = spectral_norms({"w": weight}, **ITERATE)
    moved = weight + 1e-3 * gaussian(128, 96, seed=5)  # a few optimiser steps later

    warm_again = spectral_norms({"w": moved}, cold.vectors, **ITERATE)
    cold_again = spectral_norms({"w": moved}, **ITERATE)

    exact = largest_singular_value(moved)
    assert warm_again.values["w"] == pytest.approx(exact, rel=TOLERANCE)
    assert cold_again.values["w"] == pytest.approx(exact, rel=TOLERANCE)
    assert warm_again.iterations["w"] <= cold_again.iterations["w"] / 3
    assert warm_again.matvecs == 2 * warm_again.iterations["w"]
    unchanged = spectral_norms({"w": weight}, cold.vectors, **ITERATE)
    assert unchanged.iterations["w"] <= 2


def test_cold_start_is_deterministic_and_seedable() -> None:
    weights = {"a": gaussian(64, 48, seed=6), "b": gaussian(40, 72, seed=7)}
    first, second = spectral_norms(weights, **ITERATE), spectral_norms(weights, **ITERATE)
    assert first.values == second.values and first.iterations == second.iterations
    other = spectral_norms(weights, generator=torch.Generator().manual_seed(123), **ITERATE)
    for name, weight in weights.items():
        assert other.values[name] == pytest.approx(largest_singular_value(weight), rel=TOLERANCE)


def test_state_vectors_are_unit_singular_vectors_on_the_shorter_side() -> None:
    weights = {"tall": gaussian(90, 30, seed=8), "wide": gaussian(30, 90, seed=9)}
    result = spectral_norms(weights, tolerance=1e-8, **ITERATE)
    for name, weight in weights.items():
        vector = result.vectors[name]
        assert vector.shape == (30,)
        assert torch.linalg.vector_norm(vector).item() == pytest.approx(1.0, rel=1e-12)
        matrix = weight if name == "tall" else weight.T
        image = torch.linalg.vector_norm(matrix @ vector).item()
        assert image == pytest.approx(largest_singular_value(weight), rel=1e-7)


def test_small_weights_are_exact_and_not_iterated() -> None:
    weights = {"small": gaussian(20, 10, seed=10), "large": gaussian(200, 150, seed=11)}
    result = spectral_norms(weights)
    assert result.iterations["small"] == 0 and "small" not in result.vectors
    assert result.values["small"] == pytest.approx(largest_singular_value(weights["small"]), 1e-12)
    assert result.iterations["large"] > 0 and result.vectors["large"].shape == (150,)


def test_vectors_and_biases_are_skipped_and_odd_weights_handled() -> None:
    params = {
        "bias": gaussian(5, seed=12),
        "zero": torch.zeros(40, 30, dtype=torch.float64),
        "broken": torch.full((40, 30), math.nan, dtype=torch.float64),
        "empty": torch.zeros(0, 3, dtype=torch.float64),
    }
    result = spectral_norms(params, **ITERATE)
    assert list(result.values) == ["zero", "broken", "empty"]
    assert result.values["zero"] == 0.0 and result.values["empty"] == 0.0
    assert math.isnan(result.values["broken"])
    assert result.vectors == {}  # nothing worth warm-starting from
    assert list(spectral_norms_exact(params)) == ["zero", "broken", "empty"]


def test_float32_and_bfloat16_weights() -> None:
    weight = gaussian(128, 100, seed=13)
    exact = largest_singular_value(weight)
    single = spectral_norms({"w": weight.float()}, **ITERATE).values["w"]
    assert single == pytest.approx(exact, rel=TOLERANCE)
    rounded = weight.bfloat16()
    half = spectral_norms({"w": rounded}, **ITERATE).values["w"]
    assert half == pytest.approx(largest_singular_value(rounded.double()), rel=TOLERANCE)


def test_a_stale_state_of_the_wrong_shape_is_ignored() -> None:
    weight = gaussian(64, 48, seed=14)
    result = spectral_norms({"w": weight}, {"w": torch.ones(7)}, **ITERATE)
    assert result.values["w"] == pytest.approx(largest_singular_value(weight), rel=TOLERANCE)


def test_max_iterations_caps_the_work() -> None:
    weight = gaussian(128, 128, seed=15)
    result = spectral_norms({"w": weight}, max_iterations=3, **ITERATE)
    assert result.iterations["w"] == 3
    assert result.values["w"] <= largest_singular_value(weight)


def test_rejects_bad_options() -> None:
    with pytest.raises(ValueError, match="tolerance"):
        spectral_norms({}, tolerance=0.0)
    with pytest.raises(ValueError, match="max_iterations"):
        spectral_norms({}, max_iterations=0)
