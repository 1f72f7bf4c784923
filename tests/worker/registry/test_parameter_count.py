"""The parameter count of a spec (built on the meta device from the data spec's shapes) is the
count of the model the worker builds from the loaded data."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import TypeAdapter

from dynascope.server.schemas.data_specs import DataSpec, input_kind
from dynascope.server.schemas.model_specs import ModelSpec
from dynascope.worker.registry import (
    build_model,
    count_parameters,
    load_dataset,
    spec_parameter_count,
)

MODELS = [
    {"name": "mlp", "widths": [7, 5], "batch_norm": True},
    {"name": "mlp", "widths": [3], "bias": False},
    {"name": "linear"},
    {"name": "cnn", "channels": [4, 6], "batch_norm": True, "residual": True},
    {"name": "cnn", "channels": [3], "kernel_size": 5},
    {"name": "resnet", "width": 4, "depth": 2},
    {"name": "transformer", "d_model": 8, "n_heads": 2, "n_layers": 1},
]
DATA = [
    {"name": "digits"},
    {"name": "gaussian_mixture", "n_samples": 40, "dim": 5, "n_classes": 3},
    {"name": "spirals", "n_samples": 40, "n_arms": 3},
    {"name": "teacher_student", "n_samples": 40, "dim": 6, "output_dim": 2},
    {"name": "modular_arithmetic", "modulus": 7},
    {"name": "random_images", "n_samples": 20, "channels": 2, "size": 8, "n_classes": 4},
]


def _pairs() -> list[tuple[dict, dict]]:
    models, data = TypeAdapter(ModelSpec), TypeAdapter(DataSpec)
    return [
        (model, datum)
        for model in MODELS
        for datum in DATA
        if input_kind(data.validate_python(datum)) in models.validate_python(model).accepts
    ]


@pytest.mark.parametrize(("model", "data"), _pairs())
def test_spec_count_equals_the_built_models_count(model: dict, data: dict) -> None:
    model_spec = TypeAdapter(ModelSpec).validate_python(model)
    data_spec = TypeAdapter(DataSpec).validate_python(data)
    built = build_model(model_spec, load_dataset(data_spec, data_dir=Path("/nonexistent")))
    assert spec_parameter_count(model_spec, data_spec) == count_parameters(built)


def test_every_model_and_every_shaped_dataset_is_covered() -> None:
    pairs = _pairs()
    assert {model["name"] for model, _ in pairs} == {
        "mlp",
        "linear",
        "cnn",
        "resnet",
        "transformer",
    }
    assert {data["name"] for _, data in pairs} == {data["name"] for data in DATA}


def test_file_datasets_without_fixed_shapes_give_no_count() -> None:
    model_spec = TypeAdapter(ModelSpec).validate_python({"name": "linear"})
    for data in ({"name": "npz", "file": "x.npz"}, {"name": "mnist"}):
        assert spec_parameter_count(model_spec, TypeAdapter(DataSpec).validate_python(data)) is None
    cifar = TypeAdapter(DataSpec).validate_python({"name": "cifar10"})
    assert spec_parameter_count(model_spec, cifar) == 3 * 32 * 32 * 10 + 10
