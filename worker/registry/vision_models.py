"""Convolutional models for (N, C, H, W) images: a small CNN and a CIFAR-style ResNet."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from dynascope.server.schemas.model_specs import Activation, CNNSpec, ResNetSpec
from dynascope.worker.registry.activations import activation
from dynascope.worker.registry.dataset_types import DataShape


def _norm(channels: int, batch_norm: bool) -> nn.Module:
    return nn.BatchNorm2d(channels) if batch_norm else nn.Identity()


def _conv(
    in_channels: int, out_channels: int, kernel_size: int, *, stride: int = 1, batch_norm: bool
) -> nn.Conv2d:
    """A 'same'-padded convolution; its bias is dropped when batch norm follows."""
    return nn.Conv2d(
        in_channels,
        out_channels,
        kernel_size,
        stride=stride,
        padding=kernel_size // 2,
        bias=not batch_norm,
    )


class BasicBlock(nn.Module):
    """ResNet basic block (He et al. 2016): act(norm(conv(act(norm(conv(x))))) + skip(x)),
    with an identity skip, or a strided 1x1 convolution projection when the stride or the
    channel count changes."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        stride: int = 1,
        kernel_size: int = 3,
        batch_norm: bool,
        activation_name: Activation,
    ) -> None:
        super().__init__()
        self.conv1 = _conv(
            in_channels, out_channels, kernel_size, stride=stride, batch_norm=batch_norm
        )
        self.norm1 = _norm(out_channels, batch_norm)
        self.act1 = activation(activation_name)
        self.conv2 = _conv(out_channels, out_channels, kernel_size, batch_norm=batch_norm)
        self.norm2 = _norm(out_channels, batch_norm)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                _conv(in_channels, out_channels, 1, stride=stride, batch_norm=batch_norm),
                _norm(out_channels, batch_norm),
            )
        self.act2 = activation(activation_name)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        return self.act2(out + self.shortcut(x))


def _image_shape(dataset: DataShape) -> tuple[int, int, int]:
    if len(dataset.input_shape) != 3:
        raise ValueError(f"expected (C, H, W) images, the dataset gives {dataset.input_shape}")
    channels, height, width = dataset.input_shape
    return channels, height, width


def build_cnn(spec: CNNSpec, dataset: DataShape) -> nn.Module:
    """One stage per entry of ``channels``: conv (+ batch norm) + activation, a residual basic
    block if ``residual``, and a 2x2 max-pool while the feature map is at least 2x2; then
    global average pooling and a linear head."""
    in_channels, height, width = _image_shape(dataset)
    stages: OrderedDict[str, nn.Module] = OrderedDict()
    for index, channels in enumerate(spec.channels, start=1):
        stage: OrderedDict[str, nn.Module] = OrderedDict(
            conv=_conv(in_channels, channels, spec.kernel_size, batch_norm=spec.batch_norm),
            norm=_norm(channels, spec.batch_norm),
            act=activation(spec.activation),
        )
        if spec.residual:
            stage["block"] = BasicBlock(
                channels,
                channels,
                kernel_size=spec.kernel_size,
                batch_norm=spec.batch_norm,
                activation_name=spec.activation,
            )
        if min(height, width) >= 2:
            stage["pool"] = nn.MaxPool2d(2)
            height, width = height // 2, width // 2
        stages[f"stage{index}"] = nn.Sequential(stage)
        in_channels = channels
    stages["pool"] = nn.AdaptiveAvgPool2d(1)
    stages["flatten"] = nn.Flatten()
    stages["head"] = nn.Linear(in_channels, dataset.num_outputs)
    return nn.Sequential(stages)


def build_resnet(spec: ResNetSpec, dataset: DataShape) -> nn.Module:
    """CIFAR-style ResNet (He et al. 2016, section 4.2): a 3x3 stem to ``width`` channels,
    three stages of ``depth`` basic blocks with width, 2·width and 4·width channels (stride 2
    and a 1x1 projection shortcut at the start of stages 2 and 3), batch norm if
    ``batch_norm`` (else none), global average pooling and a linear head."""
    in_channels, _, _ = _image_shape(dataset)
    layers: OrderedDict[str, nn.Module] = OrderedDict(
        stem=nn.Sequential(
            OrderedDict(
                conv=_conv(in_channels, spec.width, 3, batch_norm=spec.batch_norm),
                norm=_norm(spec.width, spec.batch_norm),
                act=activation(spec.activation),
            )
        )
    )
    channels = spec.width
    for stage, multiplier in enumerate((1, 2, 4), start=1):
        out_channels = multiplier * spec.width
        blocks = []
        for index in range(spec.depth):
            blocks.append(
                BasicBlock(
                    channels,
                    out_channels,
                    stride=2 if stage > 1 and index == 0 else 1,
                    batch_norm=spec.batch_norm,
                    activation_name=spec.activation,
                )
            )
            channels = out_channels
        layers[f"stage{stage}"] = nn.Sequential(*blocks)
    layers["pool"] = nn.AdaptiveAvgPool2d(1)
    layers["flatten"] = nn.Flatten()
    layers["head"] = nn.Linear(channels, dataset.num_outputs)
    return nn.Sequential(layers)
