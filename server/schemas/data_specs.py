"""Dataset specs. Generated datasets are deterministic functions of their spec (``seed`` is
the data seed, separate from the run seed, so several runs can share one dataset); file
datasets are read from the configured data directory, never from a path sent by a client.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, ClassVar, Literal

from pydantic import Field, PositiveInt, field_validator, model_validator

from dynascope.server.schemas.base import StrictModel, check_at_most, limits
from dynascope.server.schemas.model_specs import InputKind

Task = Literal["classification", "regression"]

DIGITS_SAMPLES = 1797


@dataclass(frozen=True)
class ExampleShape:
    """What a model builder needs to know of a dataset: the shape of one example, the number
    of outputs, the vocabulary (token inputs) and the kind of input. Loaded datasets carry
    the same attributes; specs know them without loading data (except ``npz``)."""

    input_shape: tuple[int, ...]
    num_outputs: int
    input_kind: InputKind
    vocab_size: int | None = None


class _DataSpecBase(StrictModel):
    input_kind: ClassVar[InputKind] = "vector"
    task: ClassVar[Task] = "classification"
    name: str
    batch_size: PositiveInt = 128
    seed: int = Field(0, ge=0, le=2**31 - 1, description="data seed (generation and split)")

    @field_validator("batch_size")
    @classmethod
    def _batch_bounded(cls, value: int) -> int:
        return check_at_most(value, limits().max_batch_size, "batch_size")

    def train_size(self) -> int | None:
        """Number of training examples, when known without reading files."""
        return None

    def example_shape(self) -> ExampleShape | None:
        """The shape of an example and of the outputs, when known without reading files."""
        return None


class _GeneratedSpecBase(_DataSpecBase):
    n_samples: PositiveInt = 2000
    test_fraction: float = Field(0.2, gt=0.0, lt=1.0)

    @field_validator("n_samples")
    @classmethod
    def _samples_bounded(cls, value: int) -> int:
        return check_at_most(value, limits().max_samples, "n_samples")

    def train_size(self) -> int:
        return self.n_samples - test_count(self.n_samples, self.test_fraction)


def test_count(n: int, test_fraction: float) -> int:
    """Held-out examples out of ``n`` (at least one, at most n-1)."""
    return min(max(1, math.floor(n * test_fraction)), n - 1)


class DigitsSpec(_DataSpecBase):
    """scikit-learn's 8x8 handwritten digits (1797 images, 10 classes), pixels scaled to [0, 1]."""

    input_kind: ClassVar[InputKind] = "image"
    name: Literal["digits"] = "digits"
    test_fraction: float = Field(0.2, gt=0.0, lt=1.0)

    def train_size(self) -> int:
        return DIGITS_SAMPLES - test_count(DIGITS_SAMPLES, self.test_fraction)

    def example_shape(self) -> ExampleShape:
        return ExampleShape((1, 8, 8), 10, "image")


class GaussianMixtureSpec(_GeneratedSpecBase):
    """Isotropic Gaussian clusters, one per class, centres ``separation`` apart on average."""

    name: Literal["gaussian_mixture"] = "gaussian_mixture"
    n_classes: int = Field(4, ge=2, le=1000)
    dim: PositiveInt = 16
    separation: float = Field(3.0, gt=0.0)
    noise: float = Field(1.0, gt=0.0)

    @field_validator("dim")
    @classmethod
    def _dim_bounded(cls, value: int) -> int:
        return check_at_most(value, limits().max_features, "dim")

    def example_shape(self) -> ExampleShape:
        return ExampleShape((self.dim,), self.n_classes, "vector")


class SpiralsSpec(_GeneratedSpecBase):
    """Interleaved 2-D spirals, one arm per class."""

    name: Literal["spirals"] = "spirals"
    n_arms: int = Field(2, ge=2, le=16)
    turns: float = Field(1.5, gt=0.0, le=10.0)
    noise: float = Field(0.1, ge=0.0)

    def example_shape(self) -> ExampleShape:
        return ExampleShape((2,), self.n_arms, "vector")


class TeacherStudentSpec(_GeneratedSpecBase):
    """Regression on the outputs of a random tanh teacher network plus Gaussian noise."""

    task: ClassVar[Task] = "regression"
    name: Literal["teacher_student"] = "teacher_student"
    dim: PositiveInt = 16
    teacher_widths: list[PositiveInt] = Field(default_factory=lambda: [32])
    output_dim: PositiveInt = 1
    noise: float = Field(0.0, ge=0.0)

    @model_validator(mode="after")
    def _sizes_bounded(self) -> TeacherStudentSpec:
        check_at_most(self.dim, limits().max_features, "dim")
        check_at_most(self.output_dim, limits().max_features, "output_dim")
        check_at_most(len(self.teacher_widths), limits().max_layers, "teacher layers")
        for width in self.teacher_widths:
            check_at_most(width, limits().max_width, "a teacher width")
        return self

    def example_shape(self) -> ExampleShape:
        return ExampleShape((self.dim,), self.output_dim, "vector")


class ModularArithmeticSpec(_DataSpecBase):
    """All pairs (a, b) with a, b < p, as token sequences [a, b, '='], labelled (a op b) mod p:
    the grokking task (Power et al. 2022). ``train_fraction`` of the pairs train, the rest test."""

    input_kind: ClassVar[InputKind] = "tokens"
    name: Literal["modular_arithmetic"] = "modular_arithmetic"
    modulus: int = Field(97, ge=2, le=1009)
    operation: Literal["add", "sub", "mul"] = "add"
    train_fraction: float = Field(0.5, gt=0.0, lt=1.0)

    def train_size(self) -> int:
        pairs = self.modulus**2
        return pairs - test_count(pairs, 1.0 - self.train_fraction)

    def example_shape(self) -> ExampleShape:
        return ExampleShape((3,), self.modulus, "tokens", vocab_size=self.modulus + 1)


class RandomImagesSpec(_GeneratedSpecBase):
    """Synthetic images: a random template per class plus Gaussian noise; with
    ``random_labels`` the labels are shuffled (memorisation, Zhang et al. 2017)."""

    input_kind: ClassVar[InputKind] = "image"
    name: Literal["random_images"] = "random_images"
    n_samples: PositiveInt = 1000
    channels: int = Field(3, ge=1, le=4)
    size: int = Field(32, ge=4, le=128)
    n_classes: int = Field(10, ge=2, le=1000)
    noise: float = Field(1.0, ge=0.0)
    random_labels: bool = False

    def example_shape(self) -> ExampleShape:
        return ExampleShape((self.channels, self.size, self.size), self.n_classes, "image")


class _FileSpecBase(_DataSpecBase):
    input_kind: ClassVar[InputKind] = "image"
    n_train: PositiveInt | None = Field(None, description="use only the first n_train examples")
    n_test: PositiveInt | None = Field(None, description="use only the first n_test examples")

    def train_size(self) -> int | None:
        return self.n_train


class Cifar10Spec(_FileSpecBase):
    """CIFAR-10 in its python-pickle batches, read from ``<data_dir>/cifar-10-batches-py``."""

    name: Literal["cifar10"] = "cifar10"

    def example_shape(self) -> ExampleShape:
        return ExampleShape((3, 32, 32), 10, "image")


class MNISTSpec(_FileSpecBase):
    """MNIST idx files (optionally gzipped), read from ``<data_dir>/mnist``."""

    name: Literal["mnist"] = "mnist"


class NpzSpec(_FileSpecBase):
    """A ``.npz`` file in the data directory with arrays x_train, y_train, x_test, y_test.
    Inputs of ndim 2 are vectors, of ndim 4 (N, C, H, W) images."""

    input_kind: ClassVar[InputKind] = "vector"
    name: Literal["npz"] = "npz"
    file: str = Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]*\.npz$", max_length=200)
    images: bool = Field(False, description="inputs are (N, C, H, W) images")
    regression: bool = Field(False, description="targets are real values, not class labels")

    @property
    def kind(self) -> InputKind:
        return "image" if self.images else "vector"


DataSpec = Annotated[
    DigitsSpec
    | GaussianMixtureSpec
    | SpiralsSpec
    | TeacherStudentSpec
    | ModularArithmeticSpec
    | RandomImagesSpec
    | Cifar10Spec
    | MNISTSpec
    | NpzSpec,
    Field(discriminator="name"),
]


def input_kind(spec: _DataSpecBase) -> InputKind:
    """What a model reads from this dataset: vectors, images or token sequences."""
    return spec.kind if isinstance(spec, NpzSpec) else spec.input_kind


def task_of(spec: _DataSpecBase) -> Task:
    """Classification or regression."""
    if isinstance(spec, NpzSpec):
        return "regression" if spec.regression else "classification"
    return spec.task


DATA_SPECS: dict[str, type[_DataSpecBase]] = {
    cls.model_fields["name"].default: cls
    for cls in (
        DigitsSpec,
        GaussianMixtureSpec,
        SpiralsSpec,
        TeacherStudentSpec,
        ModularArithmeticSpec,
        RandomImagesSpec,
        Cifar10Spec,
        MNISTSpec,
        NpzSpec,
    )
}
