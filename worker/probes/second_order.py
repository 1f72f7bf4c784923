"""ReLU, 2-D max-pooling, 2-D convolutions and batch norm in forms for graphs differentiated
twice.

A Hessian-vector product through a retained gradient graph
(:class:`.curvature.HessianOperator`) differentiates the backward passes of the model's
operators. For four of them PyTorch's derivative formulas do work whose result is known
to be nothing, or take a slow route:

* ReLU and max-pooling are piecewise linear: their backward passes depend on the activation
  only through a mask or the argmax indices, so their second derivatives are zero. PyTorch's
  derivative formulas for those backward passes (``threshold_backward``,
  ``max_pool2d_with_indices_backward``) still return, for the saved activation, a tensor of
  zeros of its size, which autograd then adds into that activation's gradient.
* The double backward of a convolution (``_convolution_double_backward``) computes the
  gradient with respect to the convolution's input, a transposed convolution, even when the
  input needs none (the first layer's: a gradient with respect to the images), and the
  part for the weight as a convolution with batch and channels swapped, on the CPU (oneDNN,
  channels-last) about three times as long as the weight-gradient kernel of an ordinary
  backward pass, plus a copy of each operand into that layout.
* Batch norm in eval mode (the probes' mode, running statistics) is a per-channel affine map,
  but its backward and double backward go through the kernels written for batch statistics:
  on a batch-normed ResNet a product took up to twice as long through them.

Here each is a custom autograd function whose forward is PyTorch's own operator (same
kernel, same values) and whose backward calls PyTorch's own backward kernels: ReLU's and
max-pooling's with the saved activation or input *detached*, a constant of the backward
graph; a convolution's as two bilinear functions, the input gradient ``convᵀ(g, w)`` and the
weight gradient ``corr(g, x)``, each with its exact derivatives written out in terms of the
forward convolution and the two backward kernels (``convolution_backward`` with one output
each); eval-mode batch norm is written as the affine map ``x·s + t`` in plain differentiable
operations (the same function; it rounds differently from PyTorch's kernel, within float
precision). A gradient computed through them with ``create_graph=True`` is then linear in the
incoming gradient at ReLU and max-pooling, whose derivative is the mask or the gather at the
indices alone, and differentiating a convolution's backward takes the kernels of ordinary
forward and backward passes, only for what needs a gradient. Gradients and Hessians are
those of PyTorch's operators (to rounding; the tests compare them in float64); on the
benchmark CNN (five 3×3 convolutions, each with ReLU and 2×2 max-pooling, batch 512,
channels-last, 2 CPU threads) a Hessian-vector product took about a quarter less time, on
the registry's batch-normed ResNet of width 16 (channels-last) half, of width 8 (contiguous)
a sixth less. On an MLP it changes nothing measurable. The functions support reverse mode
only (no ``jvp``, no ``vmap``), so they are used only where a graph is built for
``torch.autograd.grad``.

:func:`second_order_forms` puts them in place of ``relu`` and ``max_pool2d`` (without
``return_indices``; in-place ReLU keeps PyTorch's) and of ``conv2d`` on batches of images
(4-D) with numeric padding (other convolutions keep PyTorch's) and of ``batch_norm`` with
running statistics outside train mode, for the code run inside it, by a
``TorchFunctionMode``: the model is not modified.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.overrides import TorchFunctionMode

RELUS = frozenset({torch.relu, F.relu, Tensor.relu})
MAX_POOLS = frozenset({F.max_pool2d, torch.max_pool2d})
CONVOLUTIONS = frozenset({F.conv2d, torch.conv2d})


class _ReLU(torch.autograd.Function):
    """``relu(x)``; backward ``threshold_backward(grad, relu(x) detached, 0)``, PyTorch's own
    formula with the output as a constant."""

    @staticmethod
    def forward(ctx: Any, inputs: Tensor) -> Tensor:
        outputs = torch.relu(inputs)
        ctx.save_for_backward(outputs)
        return outputs

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        (outputs,) = ctx.saved_tensors
        return torch.ops.aten.threshold_backward(grad, outputs.detach(), 0)


class _MaxPool2d(torch.autograd.Function):
    """``max_pool2d(x)`` without indices; backward PyTorch's
    ``max_pool2d_with_indices_backward`` with the input as a constant (it supplies only the
    gradient's shape and layout) and the forward's indices."""

    @staticmethod
    def forward(
        ctx: Any,
        inputs: Tensor,
        kernel_size: Any,
        stride: Any,
        padding: Any,
        dilation: Any,
        ceil_mode: bool,
    ) -> Tensor:
        outputs, indices = torch.ops.aten.max_pool2d_with_indices(
            inputs, kernel_size, stride, padding, dilation, ceil_mode
        )
        ctx.save_for_backward(inputs, indices)
        ctx.options = (kernel_size, stride, padding, dilation, ceil_mode)
        return outputs

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        inputs, indices = ctx.saved_tensors
        return (
            torch.ops.aten.max_pool2d_with_indices_backward(
                grad, inputs.detach(), *ctx.options, indices
            ),
        ) + (None,) * 5


class _Conv2d(torch.autograd.Function):
    """``conv2d(x, w, b)``; backward: the input's gradient by :class:`_ConvInputGradient`, the
    weight's by :class:`_ConvWeightGradient`, the bias's by a sum, each only where needed."""

    @staticmethod
    def forward(
        ctx: Any,
        inputs: Tensor,
        weight: Tensor,
        bias: Tensor | None,
        stride: list[int],
        padding: list[int],
        dilation: list[int],
        groups: int,
    ) -> Tensor:
        ctx.save_for_backward(inputs, weight)
        ctx.options = (stride, padding, dilation, groups)
        return F.conv2d(inputs, weight, bias, stride, padding, dilation, groups)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        inputs, weight = ctx.saved_tensors
        needs = ctx.needs_input_grad
        input_grad = (
            _ConvInputGradient.apply(grad, weight, inputs.detach(), *ctx.options)
            if needs[0]
            else None
        )
        weight_grad = (
            _ConvWeightGradient.apply(grad, inputs, weight.detach(), *ctx.options)
            if needs[1]
            else None
        )
        bias_grad = grad.sum((0, 2, 3)) if needs[2] else None
        return (input_grad, weight_grad, bias_grad) + (None,) * 4


class _ConvInputGradient(torch.autograd.Function):
    """The input's gradient of ``conv2d(x, w)`` for the output gradient ``g``, a transposed
    convolution ``convᵀ(g, w)`` (PyTorch's ``convolution_backward``; ``x`` gives only the
    shape). It is bilinear in ``(g, w)``; backward for a cotangent ``c`` shaped like ``x``:
    ``conv2d(c, w)`` for ``g`` and the weight gradient of ``conv2d(c, ·)`` at output gradient
    ``g`` for ``w``."""

    @staticmethod
    def forward(
        ctx: Any,
        grad: Tensor,
        weight: Tensor,
        inputs: Tensor,
        stride: list[int],
        padding: list[int],
        dilation: list[int],
        groups: int,
    ) -> Tensor:
        ctx.save_for_backward(grad, weight)
        ctx.options = (stride, padding, dilation, groups)
        return _convolution_backward(grad, inputs, weight, ctx.options, 0)

    @staticmethod
    def backward(ctx: Any, cotangent: Tensor) -> tuple[Tensor | None, ...]:
        grad, weight = ctx.saved_tensors
        needs = ctx.needs_input_grad
        return (
            F.conv2d(cotangent, weight, None, *ctx.options) if needs[0] else None,
            _convolution_backward(grad, cotangent, weight, ctx.options, 1) if needs[1] else None,
        ) + (None,) * 5


class _ConvWeightGradient(torch.autograd.Function):
    """The weight's gradient of ``conv2d(x, w)`` for the output gradient ``g`` (PyTorch's
    ``convolution_backward``; ``w`` gives only the shape). It is bilinear in ``(g, x)``;
    backward for a cotangent ``C`` shaped like ``w``: ``conv2d(x, C)`` for ``g`` and the input
    gradient of ``conv2d(·, C)`` at output gradient ``g`` for ``x``. (PyTorch's own double
    backward takes the weight's part as a convolution with batch and channels swapped, three
    times slower on the CPU here, and the input's part even for inputs that need none.)"""

    @staticmethod
    def forward(
        ctx: Any,
        grad: Tensor,
        inputs: Tensor,
        weight: Tensor,
        stride: list[int],
        padding: list[int],
        dilation: list[int],
        groups: int,
    ) -> Tensor:
        ctx.save_for_backward(grad, inputs)
        ctx.options = (stride, padding, dilation, groups)
        return _convolution_backward(grad, inputs, weight, ctx.options, 1)

    @staticmethod
    def backward(ctx: Any, cotangent: Tensor) -> tuple[Tensor | None, ...]:
        grad, inputs = ctx.saved_tensors
        needs = ctx.needs_input_grad
        return (
            F.conv2d(inputs, cotangent, None, *ctx.options) if needs[0] else None,
            _convolution_backward(grad, inputs, cotangent, ctx.options, 0) if needs[1] else None,
        ) + (None,) * 5


def _convolution_backward(
    grad: Tensor, inputs: Tensor, weight: Tensor, options: tuple[Any, ...], which: int
) -> Tensor:
    """One gradient of ``conv2d(inputs, weight)`` at output gradient ``grad`` by PyTorch's
    kernel: the input's (``which=0``) or the weight's (``which=1``)."""
    stride, padding, dilation, groups = options
    mask = [which == 0, which == 1, False]
    gradients = torch.ops.aten.convolution_backward(
        grad, inputs, weight, None, stride, padding, dilation, False, [0, 0], groups, mask
    )
    return gradients[which]


def _conv2d(
    inputs: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: Any = 1,
    padding: Any = 0,
    dilation: Any = 1,
    groups: int = 1,
) -> Tensor | None:
    """``F.conv2d`` through :class:`_Conv2d` for a batch of images and numeric padding; None
    otherwise (the caller runs ``F.conv2d`` itself)."""
    if inputs.ndim != 4 or isinstance(padding, str):
        return None
    return _Conv2d.apply(
        inputs, weight, bias, _pair(stride), _pair(padding), _pair(dilation), groups
    )


def _batch_norm_at_running_statistics(
    inputs: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> Tensor | None:
    """``F.batch_norm`` in eval mode (running statistics) as the per-channel affine map it is,
    ``x·s + t`` with ``s = γ/√(var + ε)`` and ``t = β − mean·s``, in plain differentiable
    operations; None in train mode or without running statistics (the caller runs
    ``F.batch_norm``)."""
    if training or running_mean is None or running_var is None or inputs.ndim < 2:
        return None
    scale = torch.rsqrt(running_var + eps)
    if weight is not None:
        scale = scale * weight
    shift = -running_mean * scale
    if bias is not None:
        shift = shift + bias
    shape = (1, -1) + (1,) * (inputs.ndim - 2)
    return torch.addcmul(shift.view(shape), inputs, scale.view(shape))


def _pair(value: Any) -> list[int]:
    return [value, value] if isinstance(value, int) else list(value)


def _max_pool2d(
    inputs: Tensor,
    kernel_size: Any,
    stride: Any = None,
    padding: Any = 0,
    dilation: Any = 1,
    ceil_mode: bool = False,
) -> Tensor:
    """``F.max_pool2d`` through :class:`_MaxPool2d` (its arguments, ``stride`` defaulting to
    ``kernel_size`` as there)."""
    return _MaxPool2d.apply(
        inputs, kernel_size, [] if stride is None else stride, padding, dilation, ceil_mode
    )


def second_order_forms() -> TorchFunctionMode:
    """A context in which ``relu`` (``torch.relu``, ``F.relu`` not in place, ``Tensor.relu``)
    and ``F.max_pool2d`` without ``return_indices`` run as the forms of this module, and
    everything else as it is: ``with second_order_forms(): outputs = model(inputs)``."""
    return _SecondOrderForms()


class _SecondOrderForms(TorchFunctionMode):
    def __torch_function__(
        self,
        func: Any,
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        if func in RELUS and not kwargs.get("inplace", False) and len(args) == 1:
            return _ReLU.apply(args[0])
        if func in MAX_POOLS and not kwargs.get("return_indices", False) and len(args) <= 6:
            kwargs.pop("return_indices", None)
            return _max_pool2d(*args, **kwargs)
        if func in CONVOLUTIONS:
            form = _conv2d(*args, **kwargs)
            if form is not None:
                return form
        if func is F.batch_norm:
            form = _batch_norm_at_running_statistics(*args, **kwargs)
            if form is not None:
                return form
        return func(*args, **kwargs)
