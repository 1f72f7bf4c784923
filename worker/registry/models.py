"""The model registry: a model spec and a dataset in, an ``nn.Module`` out.

Builders draw their initial weights from torch's default generator, so the caller seeds
torch (``torch.manual_seed(run.seed)``) right before ``build_model`` and gets the same
weights every time; nothing here reseeds. Models are plain modules with no in-place
parameter tricks, so ``torch.func.functional_call`` reproduces their forward.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from dynascope.server.schemas.data_specs import DataSpec
from dynascope.server.schemas.model_specs import LinearSpec, MLPSpec, ModelSpec
from dynascope.worker.registry.activations import activation
from dynascope.worker.registry.dataset_types import DataShape
from dynascope.worker.registry.transformer import build_transformer
from dynascope.worker.registry.vision_models import build_cnn, build_resnet


def build_mlp(spec: MLPSpec, dataset: DataShape) -> nn.Module:
    """Flatten, then per width Linear (+ BatchNorm1d) + activation (+ Dropout), then a
    linear head; ``bias`` applies to the hidden and head layers."""
    in_features = math.prod(dataset.input_shape)
    layers: OrderedDict[str, nn.Module] = OrderedDict(flatten=nn.Flatten())
    for index, width in enumerate(spec.widths, start=1):
        layer: OrderedDict[str, nn.Module] = OrderedDict(
            linear=nn.Linear(in_features, width, bias=spec.bias)
        )
        if spec.batch_norm:
            layer["norm"] = nn.BatchNorm1d(width)
        layer["act"] = activation(spec.activation)
        if spec.dropout > 0:
            layer["dropout"] = nn.Dropout(spec.dropout)
        layers[f"layer{index}"] = nn.Sequential(layer)
        in_features = width
    layers["head"] = nn.Linear(in_features, dataset.num_outputs, bias=spec.bias)
    return nn.Sequential(layers)


def build_linear(spec: LinearSpec, dataset: DataShape) -> nn.Module:
    """Flatten and one affine map: linear or (multinomial) logistic regression."""
    return nn.Sequential(
        OrderedDict(
            flatten=nn.Flatten(),
            head=nn.Linear(math.prod(dataset.input_shape), dataset.num_outputs, bias=spec.bias),
        )
    )


MODEL_BUILDERS: dict[str, Callable[[Any, DataShape], nn.Module]] = {
    "mlp": build_mlp,
    "linear": build_linear,
    "cnn": build_cnn,
    "resnet": build_resnet,
    "transformer": build_transformer,
}
"""Builder of each architecture, by spec name."""


def build_model(spec: ModelSpec, dataset: DataShape) -> nn.Module:
    """The network a model spec describes, sized for ``dataset``: its forward maps a batch of
    the dataset's inputs to (N, num_outputs) outputs. Raises ``ValueError`` if the
    architecture cannot read the dataset's inputs. Initial weights come from torch's
    default generator: seed it before calling for a reproducible build."""
    spec.check_input(dataset.input_kind)
    return MODEL_BUILDERS[spec.name](spec, dataset)


def count_parameters(model: nn.Module) -> int:
    """Number of scalar parameters (buffers such as batch-norm statistics excluded)."""
    return sum(parameter.numel() for parameter in model.parameters())


def spec_parameter_count(model: ModelSpec, data: DataSpec) -> int | None:
    """Number of trainable parameters of the model a spec describes, without data and without
    memory: the model is built on torch's ``meta`` device from the data spec's
    :meth:`example_shape`. ``None`` when the shape is only known from the data files (npz,
    MNIST). Raises ``ValueError`` if the model cannot read the dataset's inputs."""
    shape = data.example_shape()
    if shape is None:
        return None
    with torch.device("meta"):
        return count_parameters(build_model(model, shape))


def batch_norm_minibatch_error(model: ModelSpec, shape: DataShape, batch_size: int) -> str | None:
    """PyTorch's error when the model a spec describes, in train mode, meets batch norm with
    a single value per channel on a minibatch of ``batch_size`` examples (one example through
    a fully connected layer, or one example whose feature map has shrunk to 1×1); ``None``
    when it trains. Runs the forward pass on torch's ``meta`` device: no data, no memory."""
    if not getattr(model, "batch_norm", False):
        return None
    with torch.device("meta"):
        network = build_model(model, shape).train()
        try:
            network(torch.zeros(batch_size, *shape.input_shape))
        except ValueError as error:
            return str(error)
    return None
