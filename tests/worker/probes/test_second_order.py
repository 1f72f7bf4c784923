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
from dynascope.worker.probes.second_order import second_order_forms

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


def _gradient_and_hessian_products(
    function: Callable[[Tensor], Tensor], point: Tensor, vectors: Tensor
) -> tuple[Tensor, Tensor]:
    """The gradient of ``function`` at ``point`` and its Hessian times each row of ``vectors``,
    by double backward through one gradient graph."""
    leaf = point.clone().requires_grad_()
    (gradient,) = torch.autograd.grad(function(leaf), leaf, create_graph=True)
    products = [torch.autograd.grad(gradient, leaf, row, retain_graph=True)[0] for row in vectors]
    return gradient.detach(), torch.stack(products)


def _assert_same_derivatives(
    function: Callable[[Tensor], Tensor], point: Tensor, *, same_kernels: bool = True
) -> None:
    """Value, gradient and Hessian-vector products of ``function`` at ``point``, with and
    without the forms (float64; the products with four random vectors); the values bit for
    bit where the forms run PyTorch's own forward kernels."""
    formed = _with_forms(function)
    value, formed_value = function(point), formed(point)
    if same_kernels:
        assert torch.equal(value, formed_value)
    else:
        assert (value - formed_value).abs().item() <= 1e-13 * value.abs().item()
    vectors = torch.randn(
        4, point.numel(), generator=torch.Generator().manual_seed(5), dtype=point.dtype
    )
    exact = _gradient_and_hessian_products(function, point, vectors)
    through_forms = _gradient_and_hessian_products(formed, point, vectors)
    for reference, value in zip(exact, through_forms, strict=True):
        scale = reference.abs().max().item()
        assert scale > 0
        assert (reference - value).abs().max().item() <= 1e-13 * scale


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
def test_convolutions_keep_values_gradients_and_hessians(
    options: dict, channels_last: bool
) -> None:
    """A convolution of the images, an activation, and a second convolution (with the same
    options) of its outputs, weights and biases as the variables: every derivative of both
    forms (input, weight and bias, output gradient) is taken."""
    options = dict(options)
    has_bias = options.pop("bias", True)
    groups = options.get("groups", 1)
    images = _images(channels_last)
    shapes = [(6, 3 // groups, 3, 3), (3, 6 // groups, 2, 2)]
    shapes += [(6,), (3,)] if has_bias else []
    sizes = [torch.Size(shape).numel() for shape in shapes]
    generator = torch.Generator().manual_seed(1)

    def loss(flat: Tensor) -> Tensor:
        pieces = [piece.view(shape) for piece, shape in zip(flat.split(sizes), shapes, strict=True)]
        biases = pieces[2:] if has_bias else [None, None]
        hidden = torch.tanh(F.conv2d(images, pieces[0], biases[0], **options))
        return F.conv2d(hidden, pieces[1], biases[1], **options).square().sum()

    point = torch.randn(sum(sizes), generator=generator, dtype=torch.float64) / 3
    _assert_same_derivatives(loss, point)


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("channels_last", [False, True])
def test_batch_norm_at_running_statistics_keeps_values_gradients_and_hessians(
    channels_last: bool, affine: bool
) -> None:
    """Eval-mode batch norm (non-trivial running statistics) between two convolutions, the
    convolutions' weights and the norm's scale and shift as the variables."""
    images = _images(channels_last)
    generator = torch.Generator().manual_seed(6)
    mean = torch.randn(4, generator=generator, dtype=torch.float64)
    var = 0.5 + torch.rand(4, generator=generator, dtype=torch.float64)
    shapes = [(4, 3, 3, 3), (2, 4, 2, 2)] + ([(4,), (4,)] if affine else [])
    sizes = [torch.Size(shape).numel() for shape in shapes]

    def loss(flat: Tensor) -> Tensor:
        pieces = [piece.view(shape) for piece, shape in zip(flat.split(sizes), shapes, strict=True)]
        scale, shift = (pieces[2], pieces[3]) if affine else (None, None)
        hidden = F.batch_norm(F.conv2d(images, pieces[0]), mean, var, scale, shift, eps=1e-3)
        return F.conv2d(torch.tanh(hidden), pieces[1]).square().sum()

    point = torch.randn(sum(sizes), generator=generator, dtype=torch.float64) / 3
    _assert_same_derivatives(loss, point, same_kernels=False)


class _AtenCalls(TorchDispatchMode):
    """Records the ATen operators dispatched while it is active, and the shapes of the
    tensors they return."""

    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []
        self.shapes: list[tuple[int, ...]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        self.names.append(func.__name__.split(".")[0])
        result = func(*args, **(kwargs or {}))
        outputs = result if isinstance(result, tuple | list) else (result,)
        self.shapes += [tuple(t.shape) for t in outputs if isinstance(t, Tensor)]
        return result


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
    assert tuple(images.shape) in unformed.shapes  # a gradient with respect to the images
    assert tuple(images.shape) not in formed.shapes


def test_other_calls_run_unchanged() -> None:
    """In-place ReLU, pooling with indices, convolutions of unbatched inputs or with padding by
    name, and batch norm on batch statistics keep PyTorch's operators (and their nodes)."""
    images = _images(channels_last=False).requires_grad_()
    weight = torch.randn(4, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    with second_order_forms():
        pooled, indices = F.max_pool2d(images, 2, return_indices=True)
        named = F.conv2d(images, weight, padding="same")
        unbatched = F.conv2d(images[0], weight, padding=1)
        inplace = F.relu(images.clone(), inplace=True)
        formed = F.conv2d(images, weight, padding=1)
        batch_statistics = [
            F.batch_norm(images, images.new_zeros(3), images.new_ones(3), training=True),
            F.batch_norm(images, None, None, training=True),
        ]
    for normed in batch_statistics:
        assert "BatchNorm" in type(normed.grad_fn).__name__
    assert indices.dtype == torch.int64
    assert "MaxPool2DWithIndicesBackward" in type(pooled.grad_fn).__name__
    for node in (named.grad_fn, unbatched.grad_fn.next_functions[0][0]):
        assert "ConvolutionBackward" in type(node).__name__
    assert "Relu" in type(inplace.grad_fn).__name__ or "Threshold" in type(inplace.grad_fn).__name__
    assert type(formed.grad_fn).__name__ == "_Conv2dBackward"
    assert torch.equal(formed, F.conv2d(images, weight, padding=1))
