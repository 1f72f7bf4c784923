"""The activation functions a model spec may name, as module constructors."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from dynascope.server.schemas.model_specs import Activation

ACTIVATIONS: dict[Activation, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "sigmoid": nn.Sigmoid,
    "identity": nn.Identity,
}


def activation(name: Activation) -> nn.Module:
    """A fresh (not in-place) activation module for a spec's activation name."""
    return ACTIVATIONS[name]()
