"""The dataset registry: a data spec in, a ``Dataset`` of CPU tensors out."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from dynascope.server.schemas.data_specs import DataSpec, input_kind, task_of
from dynascope.worker.probes.memory_format import prefers_channels_last
from dynascope.worker.registry.builtin_datasets import BUILTIN_DATASETS
from dynascope.worker.registry.dataset_types import Dataset, DatasetError
from dynascope.worker.registry.file_datasets import FILE_DATASETS

__all__ = ["Dataset", "DatasetError", "images_in_preferred_format", "load_dataset"]


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


def images_in_preferred_format(data: Dataset, model: nn.Module) -> Dataset:
    """The dataset with its images in the memory format ``model`` runs fastest on
    (channels-last for most convolutional models on the CPU: see
    ``worker/probes/memory_format.py``), so that every minibatch, probe batch and analysis
    read from it reads them that way; ``data`` itself when the format stays. A new dataset,
    not a copy beside the old one: the contiguous tensors are freed when nothing else holds
    them. The runner and the connectivity measurement both read their batches through it,
    so that a run and a line through its parameters see the same inputs the same way."""
    if not prefers_channels_last(model, data.x_train):
        return data
    return replace(
        data,
        x_train=data.x_train.contiguous(memory_format=torch.channels_last),
        x_test=data.x_test.contiguous(memory_format=torch.channels_last),
    )
