"""Registries that turn a run spec's parts into torch objects: datasets, models, optimizers
and losses."""

from dynascope.worker.registry.datasets import (
    Dataset,
    DatasetError,
    images_in_preferred_format,
    load_dataset,
)
from dynascope.worker.registry.losses import loss_function
from dynascope.worker.registry.models import build_model, count_parameters, spec_parameter_count
from dynascope.worker.registry.optimizers import (
    build_optimizer,
    is_full_batch,
    preconditioned_stability_threshold,
    stability_threshold,
)

__all__ = [
    "Dataset",
    "DatasetError",
    "build_model",
    "build_optimizer",
    "count_parameters",
    "images_in_preferred_format",
    "is_full_batch",
    "load_dataset",
    "loss_function",
    "preconditioned_stability_threshold",
    "spec_parameter_count",
    "stability_threshold",
]
