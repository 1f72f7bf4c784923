"""When images reach a model channels-last, and that the check leaves the model alone."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from dynascope.worker.probes.memory_format import (
    MIN_NORM_CHANNELS,
    in_preferred_format,
    is_channels_last,
    prefers_channels_last,
)


def convnet(channels: int = 16) -> nn.Sequential:
    """Convolution, batch norm, ReLU, pooling and a linear head on 3×6×6 images."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, channels, 3, padding=1),
        nn.BatchNorm2d(channels),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(9 * channels, 5),
    )


def images(count: int = 6) -> Tensor:
    return torch.randn(count, 3, 6, 6, generator=torch.Generator().manual_seed(1))


class FlattensByView(nn.Module):
    """A convolution followed by ``view``, which needs contiguous activations: channels-last
    inputs make it fail, so the check must say no."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 3)
        self.head = nn.Linear(32, 2)

    def forward(self, x: Tensor) -> Tensor:
        features = self.conv(x)
        return self.head(features.view(features.shape[0], -1))


def test_convolutional_models_on_cpu_images_get_channels_last_with_the_same_outputs() -> None:
    model, inputs = convnet().eval(), images()
    assert prefers_channels_last(model, inputs)
    converted = in_preferred_format(model, inputs)
    assert is_channels_last(converted) and not is_channels_last(inputs)
    assert torch.equal(converted, inputs)  # same values, another layout
    assert is_channels_last(converted[torch.tensor([4, 1, 2])])  # minibatches keep it
    assert is_channels_last(converted[:3])  # and so do probe batches
    with torch.no_grad():
        torch.testing.assert_close(model(converted), model(inputs), rtol=1e-5, atol=1e-6)


def test_the_check_leaves_mode_and_running_statistics_as_they_were() -> None:
    model = convnet().train()
    norm = model[1]
    assert isinstance(norm, nn.BatchNorm2d)
    before = {name: value.clone() for name, value in model.state_dict().items()}
    assert prefers_channels_last(model, images())
    assert model.training and norm.training
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name


def test_other_models_and_inputs_stay_as_they_are() -> None:
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(3 * 6 * 6, 2))
    assert not prefers_channels_last(mlp, images())  # no convolution
    conv1d = nn.Sequential(nn.Conv1d(3, 2, 3), nn.Flatten())
    sequences = torch.randn(4, 3, 8)
    assert not prefers_channels_last(conv1d, sequences)  # not 4-D
    assert not prefers_channels_last(convnet(channels=MIN_NORM_CHANNELS - 1), images())
    without_norm = convnet(channels=4)
    without_norm[1] = nn.Identity()
    assert prefers_channels_last(without_norm, images())  # narrow, but no batch norm
    model = FlattensByView()
    assert not prefers_channels_last(model, images())  # fails on channels-last
    inputs = images()
    assert in_preferred_format(model, inputs) is inputs


def test_a_model_whose_outputs_change_with_the_layout_is_refused() -> None:
    class LayoutDependent(nn.Module):
        """Reads the convolution's output in memory order: different values channels-last."""

        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 2, 3)

        def forward(self, x: Tensor) -> Tensor:
            features = self.conv(x)
            flat = features.as_strided((features.shape[0], features[0].numel()),
                                       (features[0].numel(), 1))  # fmt: skip
            return flat[:, :4]

    assert not prefers_channels_last(LayoutDependent(), images())


def test_single_channel_images_are_both_formats_and_count_as_contiguous() -> None:
    gray = torch.randn(4, 1, 5, 5)
    assert not is_channels_last(gray.contiguous(memory_format=torch.channels_last))
    assert not is_channels_last(torch.randn(4, 6))
