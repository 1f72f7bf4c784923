"""The twice-differentiable forms of ReLU, max-pooling and convolutions on data against
PyTorch's own operators: same values, gradients and Hessians; fewer operations."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call
from torch.utils._python_dispatch import TorchDispatchMode

from dynascope.worker.probes.curvature import HessianOperator
from dynascope.worker.probes.piecewise import second_order_forms

POOLINGS = [
    {"kernel_size": 2},
    {"kernel_size": 3, "stride": 2, "padding": 1},
    {"kernel_size": (2, 3), "stride": (1, 2), "dilation": 2, "ceil_mode": True},
]
CONVOLUTIONS = [
    {"padding": 1},
    {"stride": 2, "padding": (1, 0), "dilation": (1, 2)},
    {"groups": 3, "bias": False},
]


def _with_forms(function: Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
    def formed(argument: Tensor) -> Tensor:
        with second_order_forms():
            return function(argument)

    return formed


def _images(channels_last: bool, channels: int = 3) -> Tensor:
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(5, channels, 9, 9, generator=generator, dtype=torch.float64)
    return images.contiguous(memory_format=torch.channels_last) if channels_last else images


def _assert_same_derivatives(function: Callable[[Tensor], Tensor], point: Tensor) -> None:
    """Value, gradient and Hessian of ``function`` at ``point``, with and without the forms."""
    formed = _with_forms(function)
    assert torch.equal(function(point), formed(point))
    for derivative in (torch.autograd.functional.jacobian, torch.autograd.functional.hessian):
        exact, through_forms = derivative(function, point), derivative(formed, point)
        scale = exact.abs().max().item()
        assert scale > 0
        assert (exact - through_forms).abs().max().item() <= 1e-13 * scale


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("options", POOLINGS)
def test_relu_and_max_pooling_keep_values_gradients_and_hessians(
    options: dict, channels_last: bool
) -> None:
    images = _images(channels_last)

    def loss(scale: Tensor) -> Tensor:
        pooled = F.max_pool2d(torch.relu(images * scale), **options)
        return (pooled.relu() ** 3).sum() + (images * scale).relu().square().sum()

    _assert_same_derivatives(loss, torch.linspace(-1.0, 2.0, 9, dtype=torch.float64))


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("options", CONVOLUTIONS)
def test_convolutions_on_data_keep_values_gradients_and_hessians(
    options: dict, channels_last: bool
) -> None:
    """A convolution of the images (the form) followed by one of its activations (PyTorch's
    own, its input needing a gradient), with the weights and bias as the variables."""
    options = dict(options)
    has_bias = options.pop("bias", True)
    groups = options.get("groups", 1)
    images = _images(channels_last)
    shapes = [(6, 3 // groups, 3, 3)] + ([(6,)] if has_bias else [])
    sizes = [torch.Size(shape).numel() for shape in shapes]
    generator = torch.Generator().manual_seed(1)
    second = torch.randn(2, 6, 2, 2, generator=generator, dtype=torch.float64)

    def loss(flat: Tensor) -> Tensor:
        pieces = [piece.view(shape) for piece, shape in zip(flat.split(sizes), shapes, strict=True)]
        weight, bias = pieces[0], pieces[1] if has_bias else None
        hidden = F.conv2d(images, weight, bias, **options)
        return F.conv2d(torch.tanh(hidden), second).square().sum()

    point = torch.randn(sum(sizes), generator=generator, dtype=torch.float64) / 3
    _assert_same_derivatives(loss, point)


class _AtenCalls(TorchDispatchMode):
    """Records the ATen operators dispatched while it is active."""

    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        self.names.append(func.__name__.split(".")[0])
        return func(*args, **(kwargs or {}))


def test_hessian_products_skip_the_zero_second_derivatives_and_the_images_gradient() -> None:
    """Through PyTorch's operators a Hessian-vector product of a ReLU/max-pool CNN makes
    tensors of zeros (ReLU's and max-pooling's second derivatives) and a transposed convolution
    giving the first layer's gradient with respect to the images; through the forms it makes
    neither, and the products are the same."""
    torch.manual_seed(2)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(4, 5, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(5, 3),
    ).double().eval()  # fmt: skip
    images = _images(channels_last=True)
    targets = torch.tensor([0, 1, 2, 1, 0])
    operator = HessianOperator(model, F.cross_entropy, images, targets, chunk_size=5)
    vector = torch.randn(
        operator.size, generator=torch.Generator().manual_seed(3), dtype=torch.float64
    )
    operator.matvec(vector)  # builds the graph
    with _AtenCalls() as formed:
        product = operator.matvec(vector)

    class Plain(HessianOperator):  # PyTorch's operators throughout
        def _leaves_and_outputs(self, index: int) -> tuple[list[Tensor], Tensor]:
            leaves = {name: t.detach().requires_grad_() for name, t in self.point.items()}
            return list(leaves.values()), functional_call(self.model, leaves, (self.inputs,))

    plain = Plain(model, F.cross_entropy, images, targets, chunk_size=5)
    plain.matvec(vector)
    with _AtenCalls() as unformed:
        expected = plain.matvec(vector)
    assert (product - expected).abs().max().item() <= 1e-12 * expected.abs().max().item()

    def count(calls: _AtenCalls, names: tuple[str, ...]) -> int:
        return sum(calls.names.count(name) for name in names)

    zeros = ("zeros_like", "zeros")
    assert count(unformed, zeros) - count(formed, zeros) == 3  # two ReLUs and a max-pooling
    convolutions = ("convolution", "_convolution")
    assert count(unformed, convolutions) - count(formed, convolutions) == 1  # the images' gradient


def test_other_calls_run_unchanged() -> None:
    """In-place ReLU, pooling with indices, convolutions of inputs that need a gradient, of
    unbatched inputs or with padding by name keep PyTorch's operators (and their nodes)."""
    images = _images(channels_last=False).requires_grad_()
    weight = torch.randn(4, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    with second_order_forms():
        pooled, indices = F.max_pool2d(images, 2, return_indices=True)
        convolved = F.conv2d(images, weight, padding=1)
        named = F.conv2d(images.detach(), weight, padding="same")
        unbatched = F.conv2d(images.detach()[0], weight, padding=1)
        inplace = F.relu(images.clone(), inplace=True)
        formed = F.conv2d(images.detach(), weight, padding=1)
    assert indices.dtype == torch.int64
    assert "MaxPool2DWithIndicesBackward" in type(pooled.grad_fn).__name__
    for result in (convolved, named, unbatched.grad_fn.next_functions[0][0]):
        node = result if not isinstance(result, Tensor) else result.grad_fn
        assert "ConvolutionBackward" in type(node).__name__
    assert "Relu" in type(inplace.grad_fn).__name__ or "Threshold" in type(inplace.grad_fn).__name__
    assert type(formed.grad_fn).__name__ == "_DataConv2dBackward"
    assert torch.equal(formed, F.conv2d(images.detach(), weight, padding=1))
