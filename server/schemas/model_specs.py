"""Model specs: the parameters a client may choose for each registered architecture.

The worker's model registry builds an ``nn.Module`` from these; ``GET /api/v1/registry``
publishes their JSON schemas so forms and clients are generated from one source.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field, PositiveInt, field_validator, model_validator

from dynascope.server.schemas.base import StrictModel, check_at_most, limits

Activation = Literal["relu", "tanh", "gelu", "silu", "sigmoid", "identity"]
InputKind = Literal["vector", "image", "tokens"]


class _ModelSpecBase(StrictModel):
    #: input kinds (see the data specs) this architecture accepts
    accepts: ClassVar[tuple[InputKind, ...]] = ()
    name: str

    def check_input(self, kind: InputKind) -> None:
        """Raise ``ValueError`` if this architecture cannot read inputs of ``kind``."""
        if kind not in self.accepts:
            raise ValueError(
                f"model {self.name!r} takes {' or '.join(self.accepts)} inputs, "
                f"but the dataset gives {kind} inputs"
            )


def _check_width(value: int) -> int:
    return check_at_most(value, limits().max_width, "a width")


class MLPSpec(_ModelSpecBase):
    """Fully connected network; image inputs are flattened."""

    name: Literal["mlp"] = "mlp"
    widths: list[PositiveInt] = Field(default_factory=lambda: [128, 128])
    activation: Activation = "relu"
    batch_norm: bool = False
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    bias: bool = True
    accepts: ClassVar[tuple[InputKind, ...]] = ("vector", "image")

    @field_validator("widths")
    @classmethod
    def _widths_bounded(cls, widths: list[int]) -> list[int]:
        check_at_most(len(widths), limits().max_layers, "the number of hidden layers")
        for width in widths:
            _check_width(width)
        return widths


class LinearSpec(_ModelSpecBase):
    """A single affine map (linear or logistic regression); image inputs are flattened."""

    name: Literal["linear"] = "linear"
    bias: bool = True
    accepts: ClassVar[tuple[InputKind, ...]] = ("vector", "image")


class CNNSpec(_ModelSpecBase):
    """Small convolutional net: one stage per entry of ``channels`` (conv, optional batch
    norm, activation, optional residual block, 2x2 max-pool), global average pool, linear head."""

    name: Literal["cnn"] = "cnn"
    channels: list[PositiveInt] = Field(default_factory=lambda: [16, 32])
    kernel_size: Literal[3, 5] = 3
    activation: Activation = "relu"
    batch_norm: bool = False
    residual: bool = False
    accepts: ClassVar[tuple[InputKind, ...]] = ("image",)

    @field_validator("channels")
    @classmethod
    def _channels_bounded(cls, channels: list[int]) -> list[int]:
        check_at_most(len(channels), limits().max_layers, "the number of stages")
        for width in channels:
            _check_width(width)
        return channels


class ResNetSpec(_ModelSpecBase):
    """CIFAR-style ResNet (He et al. 2016): three stages of ``depth`` basic blocks with
    ``width``, 2·width and 4·width channels."""

    name: Literal["resnet"] = "resnet"
    width: PositiveInt = 16
    depth: PositiveInt = 1
    batch_norm: bool = True
    activation: Activation = "relu"
    accepts: ClassVar[tuple[InputKind, ...]] = ("image",)

    @field_validator("width")
    @classmethod
    def _width_bounded(cls, width: int) -> int:
        return _check_width(4 * width) // 4

    @field_validator("depth")
    @classmethod
    def _depth_bounded(cls, depth: int) -> int:
        return check_at_most(3 * depth, limits().max_layers, "the number of blocks (3·depth)") // 3


class TransformerSpec(_ModelSpecBase):
    """Tiny decoder-only transformer over token sequences; predicts from the last position."""

    name: Literal["transformer"] = "transformer"
    d_model: PositiveInt = 64
    n_heads: PositiveInt = 4
    n_layers: PositiveInt = 2
    d_ff: PositiveInt | None = None
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    accepts: ClassVar[tuple[InputKind, ...]] = ("tokens",)

    @model_validator(mode="after")
    def _shape_consistent(self) -> TransformerSpec:
        _check_width(self.d_model)
        _check_width(self.d_ff or 4 * self.d_model)
        check_at_most(self.n_layers, limits().max_layers, "n_layers")
        if self.d_model % self.n_heads:
            raise ValueError(
                f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})"
            )
        return self


ModelSpec = Annotated[
    MLPSpec | LinearSpec | CNNSpec | ResNetSpec | TransformerSpec,
    Field(discriminator="name"),
]

MODEL_SPECS: dict[str, type[_ModelSpecBase]] = {
    "mlp": MLPSpec,
    "linear": LinearSpec,
    "cnn": CNNSpec,
    "resnet": ResNetSpec,
    "transformer": TransformerSpec,
}
