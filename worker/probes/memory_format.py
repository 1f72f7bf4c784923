"""Images for convolutional models on the CPU: channels-last memory format when it agrees.

PyTorch's CPU convolutions (oneDNN) run much faster on channels-last (NHWC) tensors than on
the default contiguous (NCHW) ones for the small convolutions of the models we train and probe,
and a channels-last input makes every later activation channels-last too. Measured on this
project's 2-core CPU (``benchmarks/bench_curvature.py``'s CNN, 25k parameters, 3×32×32
images): a gradient on 512 images 37–49 → 21–25 ms, a Hessian-vector product by double
backward 72–107 → 49–50 ms, a training step on 128 images 9.0 → 6.2 ms. The values are the
same up to rounding (a different summation order), so the choice is checked, not assumed: a
trial forward pass on two examples must run and agree with the contiguous one to 1e-4.

One exception, measured (``benchmarks/bench_memory_format.py``): batch norm over fewer than
16 channels is much slower channels-last (a CNN 8-8 with batch norm 0.53x, a ResNet of width
8 0.7-0.9x, the same ResNet without batch norm 1.5x faster), presumably because its
channels-last kernels vectorise over the channels (16 float32 lanes with AVX-512); with 16 or
more channels every model we measured gained (1.1-1.9x). A model with such a layer keeps
contiguous images.

Off the CPU inputs are left as they are (not measured there: on GPUs the gain depends on the
kernels and the precision).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.func import functional_call

from dynascope.worker.probes.params import buffers_of, detached_parameters

AGREEMENT = 1e-4
"""Relative tolerance (to the largest output) of the trial comparison."""

MIN_NORM_CHANNELS = 16
"""Fewest channels of a ``BatchNorm2d`` for which channels-last pays (see the module's
docstring)."""


def prefers_channels_last(
    model: nn.Module, inputs: Tensor, params: dict[str, Tensor] | None = None
) -> bool:
    """Whether ``inputs`` should reach ``model`` in channels-last memory format: 4-D inputs on
    the CPU, a model with an ``nn.Conv2d`` and no ``nn.BatchNorm2d`` over fewer than
    ``MIN_NORM_CHANNELS`` channels, and a trial forward pass at ``params`` (default: the
    model's own) on the first two examples that runs and agrees with the contiguous one to
    ``AGREEMENT`` relative. The trial runs in eval mode, without gradients, on copies of the
    buffers: the model is left as it was."""
    modules = list(model.modules())
    if (
        inputs.ndim != 4
        or inputs.device.type != "cpu"
        or not any(isinstance(module, nn.Conv2d) for module in modules)
        or any(
            isinstance(module, nn.BatchNorm2d) and module.num_features < MIN_NORM_CHANNELS
            for module in modules
        )
    ):
        return False
    trial = inputs[:2]
    state = (params or detached_parameters(model), buffers_of(model, copy=True))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            plain = functional_call(model, state, (trial.contiguous(),))
            other = functional_call(
                model, state, (trial.contiguous(memory_format=torch.channels_last),)
            )
    except RuntimeError:  # an operation that needs contiguous tensors (a view, ...)
        return False
    finally:
        model.train(was_training)
    if not isinstance(plain, Tensor) or not isinstance(other, Tensor):
        return False
    scale = plain.abs().max().item() if plain.numel() else 0.0
    return other.shape == plain.shape and bool(
        torch.allclose(other, plain, rtol=AGREEMENT, atol=AGREEMENT * scale)
    )


def in_preferred_format(
    model: nn.Module, inputs: Tensor, params: dict[str, Tensor] | None = None
) -> Tensor:
    """``inputs`` in channels-last memory format when :func:`prefers_channels_last`, else as
    they are. Rows sliced or indexed from the result keep its format, so a dataset converted
    once serves every minibatch and probe batch drawn from it."""
    if prefers_channels_last(model, inputs, params):
        return inputs.contiguous(memory_format=torch.channels_last)
    return inputs


def is_channels_last(inputs: Tensor) -> bool:
    """Whether ``inputs`` is a 4-D tensor laid out channels-last (and not also contiguous, as a
    tensor with one channel or one pixel is in both formats)."""
    return (
        inputs.ndim == 4
        and inputs.is_contiguous(memory_format=torch.channels_last)
        and not inputs.is_contiguous()
    )
