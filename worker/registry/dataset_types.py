"""The value every dataset loader returns (``Dataset``) and the error it raises."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from dynascope.server.errors import InvalidSpecError
from dynascope.server.schemas.data_specs import Task
from dynascope.server.schemas.model_specs import InputKind


class DatasetError(InvalidSpecError):
    """A dataset could not be loaded: a file is missing or malformed, or the spec asks for
    more examples than the data has. The message says what was expected and where. A data
    spec that this server cannot honour, hence an ``InvalidSpecError``."""


class DataShape(Protocol):
    """What a model builder reads of a dataset: a loaded ``Dataset`` or a spec's
    ``ExampleShape`` (which builds models without data, e.g. to count their parameters)."""

    @property
    def input_shape(self) -> tuple[int, ...]: ...

    @property
    def num_outputs(self) -> int: ...

    @property
    def input_kind(self) -> InputKind: ...

    @property
    def vocab_size(self) -> int | None: ...


@dataclass(frozen=True, eq=False)
class Dataset:
    """A train/test split held as CPU tensors.

    Inputs are float32 (vectors ``(N, D)``, images ``(N, C, H, W)``) or int64 token ids
    ``(N, seq_len)``; targets are int64 class labels ``(N,)`` for classification and float32
    ``(N, num_outputs)`` for regression. ``input_shape`` is the shape of one example.
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    task: Task
    num_outputs: int
    input_shape: tuple[int, ...]
    input_kind: InputKind
    vocab_size: int | None = None

    def __post_init__(self) -> None:
        for split, x, y in (
            ("train", self.x_train, self.y_train),
            ("test", self.x_test, self.y_test),
        ):
            if len(x) != len(y):
                raise ValueError(f"{split} split has {len(x)} inputs but {len(y)} targets")
            if tuple(x.shape[1:]) != self.input_shape:
                raise ValueError(
                    f"{split} inputs have shape {tuple(x.shape[1:])} per example, "
                    f"expected {self.input_shape}"
                )
        if (self.input_kind == "tokens") != (self.vocab_size is not None):
            raise ValueError("vocab_size is given exactly when the inputs are tokens")

    @property
    def n_train(self) -> int:
        """Number of training examples."""
        return len(self.x_train)

    @property
    def n_test(self) -> int:
        """Number of held-out examples."""
        return len(self.x_test)


def float_tensor(array: np.ndarray) -> torch.Tensor:
    """A float32 CPU tensor owning a copy of ``array``."""
    return torch.from_numpy(np.array(array, dtype=np.float32, copy=True))


def input_tensor(array: np.ndarray) -> torch.Tensor:
    """Model inputs as a float32 CPU tensor; uint8 (image bytes) is scaled to [0, 1]."""
    if array.dtype == np.uint8:
        return torch.from_numpy(array.astype(np.float32) / np.float32(255.0))
    return float_tensor(array)


def label_tensor(array: np.ndarray) -> torch.Tensor:
    """An int64 CPU tensor owning a copy of ``array``."""
    return torch.from_numpy(np.array(array, dtype=np.int64, copy=True))


def split_examples(
    x: np.ndarray, y: np.ndarray, n_train: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The first ``n_train`` examples train, the rest test: ``(x_train, y_train, x_test,
    y_test)``. Shuffle before calling when the order carries structure."""
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]
