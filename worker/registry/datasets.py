"""The dataset registry: a data spec in, a ``Dataset`` of CPU tensors out."""

from __future__ import annotations

from pathlib import Path

from dynascope.server.schemas.data_specs import DataSpec, input_kind, task_of
from dynascope.worker.registry.builtin_datasets import BUILTIN_DATASETS
from dynascope.worker.registry.dataset_types import Dataset, DatasetError
from dynascope.worker.registry.file_datasets import FILE_DATASETS

__all__ = ["Dataset", "DatasetError", "load_dataset"]


def load_dataset(spec: DataSpec, *, data_dir: Path) -> Dataset:
    """Build the dataset a spec describes. Built-in datasets are deterministic functions of
    the spec (its ``seed`` included) and their train split has ``spec.train_size()``
    examples; file datasets are read from under ``data_dir`` only. Raises ``DatasetError``
    when files are missing or malformed."""
    if spec.name in BUILTIN_DATASETS:
        dataset = BUILTIN_DATASETS[spec.name](spec)
    elif spec.name in FILE_DATASETS:
        dataset = FILE_DATASETS[spec.name](spec, data_dir)
    else:
        known = sorted([*BUILTIN_DATASETS, *FILE_DATASETS])
        raise DatasetError(f"unknown dataset {spec.name!r}; known: {', '.join(known)}")
    _check_matches_spec(dataset, spec)
    return dataset


def _check_matches_spec(dataset: Dataset, spec: DataSpec) -> None:
    """The loader must agree with what the API validated the run spec against."""
    expected_train = spec.train_size()
    if expected_train is not None and dataset.n_train != expected_train:
        raise DatasetError(
            f"dataset {spec.name!r} has {dataset.n_train} training examples, "
            f"the spec promises {expected_train}"
        )
    if dataset.input_kind != input_kind(spec) or dataset.task != task_of(spec):
        raise DatasetError(
            f"dataset {spec.name!r} gives {dataset.input_kind} inputs for {dataset.task}, "
            f"the spec promises {input_kind(spec)} inputs for {task_of(spec)}"
        )
