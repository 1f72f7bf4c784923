"""Model registry: output shapes, reproducible builds, parameter counts, batch norm,
transformer causality, and compatibility with ``torch.func`` (functional_call, HVPs)."""

from __future__ import annotations

from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.func import functional_call, grad, jvp

from dynascope.server.schemas.data_specs import (
    DigitsSpec,
    GaussianMixtureSpec,
    ModularArithmeticSpec,
    RandomImagesSpec,
    TeacherStudentSpec,
)
from dynascope.server.schemas.model_specs import (
    CNNSpec,
    LinearSpec,
    MLPSpec,
    ResNetSpec,
    TransformerSpec,
)
from dynascope.worker.registry import Dataset, build_model, count_parameters, load_dataset
from dynascope.worker.registry import loss_function as task_loss

DATA_SPECS = {
    "vectors": GaussianMixtureSpec(n_samples=40, n_classes=3, dim=5),
    "regression": TeacherStudentSpec(n_samples=20, dim=4, output_dim=2, teacher_widths=[4]),
    "digits": DigitsSpec(),
    "images": RandomImagesSpec(n_samples=20, channels=2, size=7, n_classes=4),
    "tokens": ModularArithmeticSpec(modulus=5),
}

CASES = {
    "mlp": (MLPSpec(widths=[8, 6]), "vectors"),
    "mlp_regression": (MLPSpec(widths=[5], activation="tanh"), "regression"),
    "mlp_bn_dropout": (MLPSpec(widths=[8], batch_norm=True, dropout=0.2), "digits"),
    "linear": (LinearSpec(), "regression"),
    "linear_images": (LinearSpec(bias=False), "digits"),
    "cnn": (CNNSpec(channels=[3, 4, 5], kernel_size=5), "images"),
    "cnn_residual_bn": (CNNSpec(channels=[3, 4], batch_norm=True, residual=True), "digits"),
    "resnet": (ResNetSpec(width=2, depth=2), "images"),
    "resnet_no_bn": (ResNetSpec(width=2, depth=1, batch_norm=False, activation="gelu"), "digits"),
    "transformer": (TransformerSpec(d_model=8, n_heads=2, n_layers=2), "tokens"),
    "transformer_ff_dropout": (
        TransformerSpec(d_model=8, n_heads=4, n_layers=1, d_ff=12, dropout=0.1),
        "tokens",
    ),
}


@pytest.fixture(autouse=True, scope="module")
def _single_thread() -> Iterator[None]:
    """These models are tiny: intra-op threads only add overhead, and stall badly when the
    cores are busy with other work."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@cache
def _dataset(name: str) -> Dataset:
    return load_dataset(DATA_SPECS[name], data_dir=Path("/nonexistent"))


def _build(case: str, seed: int = 0) -> tuple[nn.Module, Dataset]:
    spec, data = CASES[case]
    dataset = _dataset(data)
    torch.manual_seed(seed)
    return build_model(spec, dataset), dataset


@pytest.mark.parametrize("case", CASES)
def test_model_maps_a_batch_to_one_output_row_per_example(case: str) -> None:
    model, dataset = _build(case)
    for mode in (model.train, model.eval):
        mode()
        outputs = model(dataset.x_train[:6])
        assert outputs.shape == (6, dataset.num_outputs)
        assert outputs.dtype == torch.float32 and torch.isfinite(outputs).all()


@pytest.mark.parametrize("case", CASES)
def test_build_is_reproducible_under_the_same_torch_seed(case: str) -> None:
    first, _ = _build(case, seed=3)
    again, _ = _build(case, seed=3)
    other, _ = _build(case, seed=4)
    first_state, again_state = first.state_dict(), again.state_dict()
    assert first_state.keys() == again_state.keys()
    assert all(torch.equal(first_state[key], again_state[key]) for key in first_state)
    assert any(
        not torch.equal(p, q) for p, q in zip(first.parameters(), other.parameters(), strict=True)
    )


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("batch_norm", [True, False])
def test_mlp_parameter_count_matches_the_formula(bias: bool, batch_norm: bool) -> None:
    dataset = _dataset("digits")  # 64 inputs, 10 classes
    widths = [7, 5, 3]
    model = build_model(MLPSpec(widths=widths, bias=bias, batch_norm=batch_norm), dataset)
    sizes = [64, *widths, 10]
    expected = sum(
        n_in * n_out + bias * n_out for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True)
    )
    expected += batch_norm * 2 * sum(widths)  # BatchNorm1d weight and bias
    assert count_parameters(model) == expected


def test_linear_parameter_count_and_buffers_are_not_counted() -> None:
    dataset = _dataset("regression")  # 4 inputs, 2 outputs
    assert count_parameters(build_model(LinearSpec(), dataset)) == 4 * 2 + 2
    bn_model = build_model(CNNSpec(channels=[3], batch_norm=True), _dataset("digits"))
    assert sum(buffer.numel() for buffer in bn_model.buffers()) > 0
    assert count_parameters(bn_model) == 1 * 3 * 9 + 2 * 3 + 3 * 10 + 10  # no conv bias


@pytest.mark.parametrize(
    ("case", "norm_type", "expected"),
    [
        ("mlp_bn_dropout", nn.BatchNorm1d, 1),
        ("mlp", nn.BatchNorm1d, 0),
        ("cnn_residual_bn", nn.BatchNorm2d, 2 * 3),  # per stage: conv norm + two in the block
        ("cnn", nn.BatchNorm2d, 0),
        ("resnet", nn.BatchNorm2d, 1 + 3 * 2 * 2 + 2),  # stem, 2 per block, 2 projections
        ("resnet_no_bn", nn.BatchNorm2d, 0),
    ],
)
def test_batch_norm_variants_contain_batch_norm_layers(case, norm_type, expected) -> None:
    model, _ = _build(case)
    assert sum(isinstance(module, norm_type) for module in model.modules()) == expected


def test_mlp_layers_follow_the_spec() -> None:
    model, _ = _build("mlp_bn_dropout")
    kinds = [type(module) for module in model.modules() if not list(module.children())]
    assert kinds == [nn.Flatten, nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Dropout, nn.Linear]
    tanh_model, _ = _build("mlp_regression")
    assert any(isinstance(module, nn.Tanh) for module in tanh_model.modules())


def test_resnet_downsamples_at_stages_two_and_three_with_projections() -> None:
    model, _ = _build("resnet")
    blocks = [*model.stage1, *model.stage2, *model.stage3]
    strides = [block.conv1.stride for block in blocks]
    assert strides == [(1, 1), (1, 1), (2, 2), (1, 1), (2, 2), (1, 1)]
    convolutions = [module for module in model.modules() if isinstance(module, nn.Conv2d)]
    projections = [conv for conv in convolutions if conv.kernel_size == (1, 1)]
    assert [conv.out_channels for conv in projections] == [4, 8]
    assert model.head.in_features == 8


def test_model_rejects_inputs_it_cannot_read() -> None:
    with pytest.raises(ValueError, match="takes image inputs"):
        build_model(CNNSpec(), _dataset("vectors"))
    with pytest.raises(ValueError, match="takes tokens inputs"):
        build_model(TransformerSpec(d_model=8, n_heads=2), _dataset("digits"))


def test_transformer_is_causal() -> None:
    model, dataset = _build("transformer")
    model.eval()
    tokens = dataset.x_train[:4].clone()
    changed = tokens.clone()
    changed[:, 1] = (changed[:, 1] + 1) % 5
    with torch.no_grad():
        before, after = model.hidden_states(tokens), model.hidden_states(changed)
    torch.testing.assert_close(before[:, 0], after[:, 0], rtol=0, atol=0)
    assert (before[:, 1:] - after[:, 1:]).abs().amax(dim=(0, 2)).min() > 1e-4
    torch.testing.assert_close(model(tokens), model.head(before[:, -1]))


@pytest.mark.parametrize("case", CASES)
def test_functional_call_with_own_parameters_reproduces_forward(case: str) -> None:
    model, dataset = _build(case)
    model.eval()
    params = {name: p.detach() for name, p in model.named_parameters()}
    buffers = dict(model.named_buffers())
    x = dataset.x_test[:5]
    with torch.no_grad():
        expected = model(x)
    torch.testing.assert_close(functional_call(model, (params, buffers), (x,)), expected)


# torch scripts its forward-AD decompositions on first use and warns that scripting is deprecated
@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
@pytest.mark.parametrize("case", CASES)
def test_forward_over_reverse_hvp_matches_reverse_over_reverse(case: str) -> None:
    """The probes take Hessian-vector products as jvp(grad); every layer must support it."""
    model, dataset = _build(case)
    model.eval().double()
    x = dataset.x_train[:6]
    x = x if dataset.input_kind == "tokens" else x.double()
    y = dataset.y_train[:6]
    y = y.double() if dataset.task == "regression" else y
    loss_of = task_loss(dataset.task)
    params = {name: p.detach() for name, p in model.named_parameters()}
    generator = torch.Generator().manual_seed(0)
    tangent = {
        name: torch.randn(p.shape, generator=generator, dtype=p.dtype) for name, p in params.items()
    }

    def loss(p: dict[str, torch.Tensor]) -> torch.Tensor:
        return loss_of(functional_call(model, p, (x,)), y)

    _, forward_over_reverse = jvp(grad(loss), (params,), (tangent,))

    def directional(p: dict[str, torch.Tensor]) -> torch.Tensor:
        gradient = grad(loss)(p)
        return sum((gradient[name] * tangent[name]).sum() for name in gradient)

    reverse_over_reverse = grad(directional)(params)
    for name in params:
        torch.testing.assert_close(
            forward_over_reverse[name], reverse_over_reverse[name], rtol=1e-8, atol=1e-10
        )
