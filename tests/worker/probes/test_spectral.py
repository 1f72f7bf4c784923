"""Spectral norms by block Rayleigh-Ritz against singular values from a full SVD, in float64."""

import math

import pytest
import torch

from dynascope.worker.probes.spectral import (
    SPECTRAL_BLOCK,
    SPECTRAL_SMALL_SIDE,
    SPECTRAL_TOLERANCE,
    spectral_norms,
    spectral_norms_exact,
)

TOLERANCE = SPECTRAL_TOLERANCE  # relative, the one the iteration promises
LOWER = 1 + 1e-12  # Ritz values are lower bounds, up to float64 rounding

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


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


def assert_matches_svd(values: dict[str, float], weights: dict[str, torch.Tensor]) -> None:
    for name, weight in weights.items():
        exact = largest_singular_value(weight.cpu())
        assert values[name] == pytest.approx(exact, rel=TOLERANCE), name
        assert values[name] <= exact * LOWER, name


SHAPES = [(128, 64), (64, 128), (128, 128), (10, 128), (160, 120), (32, 16, 3, 3), (8, 3, 5, 5)]
LARGE = (SPECTRAL_SMALL_SIDE + 44, 40)  # batched by shape, not padded with the small ones


@pytest.mark.parametrize("shape", [*SHAPES, LARGE])
def test_matches_svd_on_random_weights(shape: tuple[int, ...]) -> None:
    weights = {f"w{seed}": gaussian(*shape, seed=seed) for seed in range(3)}
    assert_matches_svd(spectral_norms(weights).values, weights)


def test_weights_of_all_shapes_in_one_call_match_svd_and_each_alone() -> None:
    weights = {f"w{index}": gaussian(*shape, seed=index) for index, shape in enumerate(SHAPES)}
    weights |= {"large": gaussian(*LARGE, seed=99), "tiny": gaussian(5, 3, seed=98)}
    together = spectral_norms(weights).values
    assert_matches_svd(together, weights)
    for name, weight in weights.items():
        alone = spectral_norms({name: weight}).values[name]
        assert together[name] == pytest.approx(alone, rel=2 * TOLERANCE), name


def test_conv_kernel_is_the_norm_of_its_reshaped_matrix() -> None:
    kernel = gaussian(16, 8, 3, 3, seed=0)
    exact = torch.linalg.matrix_norm(kernel.reshape(16, 72), ord=2).item()
    assert spectral_norms_exact({"conv": kernel})["conv"] == pytest.approx(exact, rel=1e-12)
    assert spectral_norms({"conv": kernel}).values["conv"] == pytest.approx(exact, rel=TOLERANCE)


@pytest.mark.parametrize("second", [0.97, 0.99, 1.0 - 1e-6, 1.0])
def test_close_top_gap_converges_to_the_tolerance(second: float) -> None:
    spectrum = [1.0, second, *torch.linspace(0.9, 0.01, 78).tolist()]
    weight = with_spectrum(100, 80, spectrum, seed=3)
    for tolerance in (1e-3, 1e-4, 1e-6):
        result = spectral_norms({"w": weight}, tolerance=tolerance)
        assert result.values["w"] == pytest.approx(1.0, rel=tolerance)
        assert result.values["w"] <= LOWER


def test_warm_start_takes_fewer_rounds_and_products_than_cold() -> None:
    weight = gaussian(128, 96, seed=4)
    cold = spectral_norms({"w": weight})
    moved = weight + 1e-3 * gaussian(128, 96, seed=5)  # a few optimiser steps later

    warm_again = spectral_norms({"w": moved}, cold.vectors)
    cold_again = spectral_norms({"w": moved})

    exact = largest_singular_value(moved)
    assert warm_again.values["w"] == pytest.approx(exact, rel=TOLERANCE)
    assert cold_again.values["w"] == pytest.approx(exact, rel=TOLERANCE)
    assert warm_again.iterations["w"] <= cold_again.iterations["w"] / 3
    assert 0 < warm_again.matvecs <= cold_again.matvecs / 3
    unchanged = spectral_norms({"w": weight}, cold.vectors)
    assert unchanged.iterations["w"] == 1


def test_warm_start_follows_the_top_two_singular_values_across_a_crossing() -> None:
    """The top two singular values swap while their singular vectors stay put: the second
    vector of the warm block becomes the top one."""
    left, _ = torch.linalg.qr(gaussian(120, 120, seed=20))
    right, _ = torch.linalg.qr(gaussian(90, 90, seed=21))
    tail = torch.linspace(0.8, 0.05, 88, dtype=torch.float64)
    state = None
    for step in range(11):
        first, second = 1.0 - 0.01 * step, 0.95 + 0.01 * step  # equal at step 2.5
        spectrum = torch.cat([torch.tensor([first, second], dtype=torch.float64), tail])
        weight = left[:, :90] @ torch.diag(spectrum) @ right.T
        result = spectral_norms({"w": weight}, state)
        assert result.values["w"] == pytest.approx(max(first, second), rel=TOLERANCE), step
        state = result.vectors


def test_cold_start_is_deterministic_and_seedable() -> None:
    weights = {"a": gaussian(64, 48, seed=6), "b": gaussian(40, 72, seed=7)}
    first, second = spectral_norms(weights), spectral_norms(weights)
    assert first.values == second.values and first.iterations == second.iterations
    other = spectral_norms(weights, generator=torch.Generator().manual_seed(123))
    assert_matches_svd(other.values, weights)


def test_state_is_an_orthonormal_basis_of_the_top_singular_subspace() -> None:
    weights = {"tall": gaussian(90, 30, seed=8), "wide": gaussian(30, 90, seed=9)}
    for state in (None, spectral_norms(weights).vectors):  # cold, then checked as it is
        result = spectral_norms(weights, state, tolerance=1e-8)
        for name, weight in weights.items():
            block = result.vectors[name]
            assert block.shape == (SPECTRAL_BLOCK, 30)
            assert torch.allclose(block @ block.T, torch.eye(SPECTRAL_BLOCK, dtype=block.dtype))
            top = torch.linalg.svd(weight if name == "tall" else weight.T)[2][0]
            assert torch.linalg.vector_norm(block @ top).item() == pytest.approx(1.0, abs=1e-6)


def test_a_warm_block_that_is_not_orthonormal_is_not_trusted_as_it_is() -> None:
    weight = gaussian(60, 40, seed=24)
    top_two = torch.linalg.svd(weight)[2][:SPECTRAL_BLOCK]
    result = spectral_norms({"w": weight}, {"w": 2.0 * top_two})  # the right span, not unit
    assert result.values["w"] == pytest.approx(largest_singular_value(weight), rel=TOLERANCE)
    assert result.iterations["w"] == 2  # the check, then a Krylov round


def test_frobenius_norms_from_the_caller_give_the_same_values() -> None:
    weights = {"a": gaussian(64, 48, seed=10), "b": gaussian(30, 20, seed=11)}
    norms = {name: torch.linalg.vector_norm(weight).item() for name, weight in weights.items()}
    given = spectral_norms(weights, frobenius=norms).values
    assert given == pytest.approx(spectral_norms(weights).values, rel=1e-12)


def test_vectors_and_biases_are_skipped_and_odd_weights_handled() -> None:
    params = {
        "bias": gaussian(5, seed=12),
        "zero": torch.zeros(40, 30, dtype=torch.float64),
        "broken": torch.full((40, 30), math.nan, dtype=torch.float64),
        "infinite": torch.zeros(40, 30, dtype=torch.float64).index_fill_(
            0, torch.tensor([3]), math.inf
        ),
        "empty": torch.zeros(0, 3, dtype=torch.float64),
        "tiny": 1e-200 * gaussian(40, 30, seed=13),
        "huge": 1e200 * gaussian(40, 30, seed=14),
        "tiny_single": (1e-30 * gaussian(40, 30, seed=13)).float(),  # Frobenius norm underflows
        "huge_single": (1e30 * gaussian(40, 30, seed=14)).float(),  # and overflows in float32
        "rank_one": torch.outer(gaussian(40, seed=16), gaussian(30, seed=17)),
        "column": gaussian(40, 1, seed=15),  # σ₁ is the Frobenius norm: not iterated
        "row": gaussian(1, 2, 3, seed=16),
    }
    result = spectral_norms(params)
    assert list(result.values) == list(params)[1:]
    assert result.values["zero"] == 0.0 and result.values["empty"] == 0.0
    assert math.isnan(result.values["broken"]) and math.isnan(result.values["infinite"])
    assert set(result.vectors) == {"tiny", "huge", "tiny_single", "huge_single", "rank_one"}
    for name in [*result.vectors, "column", "row"]:
        exact = largest_singular_value(params[name])
        assert result.values[name] == pytest.approx(exact, rel=TOLERANCE), name
    assert result.iterations["column"] == result.iterations["row"] == 0
    assert list(spectral_norms_exact(params)) == list(params)[1:]


def test_a_block_in_the_null_space_restarts_from_a_gaussian_block() -> None:
    """A warm block orthogonal to the row space of a rank-one weight sees a zero matrix."""
    row = gaussian(30, seed=18)
    weight = torch.outer(gaussian(40, seed=19), row)
    stale, _ = torch.linalg.qr(torch.stack([row, gaussian(30, seed=20), gaussian(30, seed=21)]).T)
    state = {"w": stale[:, 1 : 1 + SPECTRAL_BLOCK].T.contiguous()}  # orthogonal to the row
    result = spectral_norms({"w": weight}, state)
    assert result.values["w"] == pytest.approx(largest_singular_value(weight), rel=TOLERANCE)


@pytest.mark.parametrize("device", DEVICES)
def test_float32_and_bfloat16_weights(device: str) -> None:
    weight = gaussian(128, 100, seed=13)
    exact = largest_singular_value(weight)
    single = spectral_norms({"w": weight.float().to(device)}).values["w"]
    assert single == pytest.approx(exact, rel=TOLERANCE)
    rounded = weight.bfloat16()
    half = spectral_norms({"w": rounded.to(device)}).values["w"]
    assert half == pytest.approx(largest_singular_value(rounded.double()), rel=TOLERANCE)


@pytest.mark.parametrize("device", DEVICES)
def test_warm_starts_along_a_drifting_weight(device: str) -> None:
    weight, state = gaussian(128, 64, seed=22), None
    for step in range(5):
        weight = weight + 0.05 * gaussian(128, 64, seed=23 + step)
        result = spectral_norms({"w": weight.float().to(device)}, state)
        assert result.values["w"] == pytest.approx(largest_singular_value(weight), rel=TOLERANCE)
        assert result.vectors["w"].device.type == device
        state = result.vectors


def test_a_stale_state_of_the_wrong_shape_is_ignored() -> None:
    weight = gaussian(64, 48, seed=14)
    result = spectral_norms({"w": weight}, {"w": torch.ones(7)})
    assert result.values["w"] == pytest.approx(largest_singular_value(weight), rel=TOLERANCE)


def test_max_iterations_caps_the_work() -> None:
    weight = gaussian(128, 128, seed=15)
    result = spectral_norms({"w": weight}, max_iterations=1)
    assert result.iterations["w"] == 1
    assert result.values["w"] <= largest_singular_value(weight) * LOWER


def test_rejects_bad_options() -> None:
    with pytest.raises(ValueError, match="tolerance"):
        spectral_norms({}, tolerance=0.0)
    with pytest.raises(ValueError, match="max_iterations"):
        spectral_norms({}, max_iterations=0)
