"""Matrix-free Hessian and GGN operators against dense float64 matrices from ``torch.func``."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, hessian, jacrev

from dynascope.worker.probes.curvature import (
    GGNOperator,
    HessianOperator,
    LinearizedHessianOperator,
)
from dynascope.worker.probes.operators import (
    DenseSymmetricOperator,
    DiagonalPreconditioned,
    SymmetricOperator,
)
from dynascope.worker.probes.params import detached_parameters
from dynascope.worker.registry.transformer import DecoderTransformer

# torch scripts its forward-AD decompositions on first use (torch.func.hessian) and warns that
# scripting is deprecated
pytestmark = pytest.mark.filterwarnings(
    "ignore:`torch.jit.script` is deprecated:DeprecationWarning"
)

EXACT = 1e-10  # float64, same derivatives by another route
EXAMPLES = 20
Case = tuple[nn.Module, Callable[[Tensor, Tensor], Tensor], Tensor, Tensor, str]


def mean_squared_error(outputs: Tensor, targets: Tensor) -> Tensor:
    return (outputs - targets).square().mean()


def classifier() -> Case:
    """MLP 4-6-3 with tanh, 20 examples, mean cross-entropy."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()
    generator = torch.Generator().manual_seed(1)
    inputs = torch.randn(EXAMPLES, 4, generator=generator, dtype=torch.float64)
    targets = torch.randint(0, 3, (EXAMPLES,), generator=generator)
    return model, F.cross_entropy, inputs, targets, "cross_entropy"


def regressor() -> Case:
    """Two layers with a linear regression head (3-5-2, tanh), 20 examples, mean squared error
    over all elements."""
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2)).double()
    generator = torch.Generator().manual_seed(3)
    inputs = torch.randn(EXAMPLES, 3, generator=generator, dtype=torch.float64)
    targets = torch.randn(EXAMPLES, 2, generator=generator, dtype=torch.float64)
    return model, mean_squared_error, inputs, targets, "mean_squared_error"


CASES = {"classifier": classifier, "regressor": regressor}
CHUNKINGS = {  # (chunk_size, retain_graphs)
    "one-chunk": (EXAMPLES, False),
    "chunks-retained": (6, True),
    "chunks-rebuilt": (6, False),
    "single-examples": (1, False),
}


def unflattener(params: dict[str, Tensor]) -> Callable[[Tensor], dict[str, Tensor]]:
    """Map a flat parameter vector to the parameter dictionary, in the dictionary's order."""
    shapes = [(name, t.shape, t.numel()) for name, t in params.items()]

    def unflatten(flat: Tensor) -> dict[str, Tensor]:
        pieces = flat.split([numel for _, _, numel in shapes])
        return {name: p.view(shape) for (name, shape, _), p in zip(shapes, pieces, strict=True)}

    return unflatten


def flat_parameters(params: dict[str, Tensor]) -> Tensor:
    return torch.cat([t.reshape(-1) for t in params.values()])


def dense_hessian(case: Case, params: dict[str, Tensor] | None = None) -> Tensor:
    model, loss_fn, inputs, targets, _ = case
    params = detached_parameters(model) if params is None else params
    unflatten = unflattener(params)

    def loss(flat: Tensor) -> Tensor:
        return loss_fn(functional_call(model, unflatten(flat), (inputs,)), targets)

    return hessian(loss)(flat_parameters(params))


def dense_ggn(case: Case) -> Tensor:
    """``Jᵀ H_out J`` with ``H_out`` the Hessian of the mean loss with respect to all outputs."""
    model, loss_fn, inputs, targets, _ = case
    params = detached_parameters(model)
    unflatten = unflattener(params)
    flat = flat_parameters(params)
    outputs = functional_call(model, params, (inputs,))

    def outputs_of(point: Tensor) -> Tensor:
        return functional_call(model, unflatten(point), (inputs,)).reshape(-1)

    jacobian = jacrev(outputs_of)(flat)

    def loss_of_outputs(values: Tensor) -> Tensor:
        return loss_fn(values.reshape(outputs.shape), targets)

    output_hessian = hessian(loss_of_outputs)(outputs.reshape(-1).detach())
    return jacobian.T @ output_hessian @ jacobian


def snapshot(model: nn.Module) -> dict[str, Tensor]:
    return {name: value.clone() for name, value in model.state_dict().items()}


@pytest.mark.parametrize("chunking", CHUNKINGS)
@pytest.mark.parametrize("name", CASES)
def test_hessian_operator_equals_dense_hessian(name: str, chunking: str) -> None:
    case = CASES[name]()
    model, loss_fn, inputs, targets, _ = case
    before = snapshot(model)
    chunk_size, retain = CHUNKINGS[chunking]
    operator = HessianOperator(
        model, loss_fn, inputs, targets, chunk_size=chunk_size, retain_graphs=retain
    )
    dense = operator.to_dense()
    exact = dense_hessian(case)
    assert (dense - exact).abs().max().item() < EXACT
    assert operator.matvecs == operator.size
    chunks = -(-EXAMPLES // chunk_size)
    expected_builds = chunks if retain or chunks == 1 else chunks * operator.size
    assert operator.graph_builds == expected_builds
    after = model.state_dict()
    assert all(torch.equal(after[key], value) for key, value in before.items())
    assert all(p.grad is None for p in model.parameters())


def test_retained_and_rebuilt_chunks_give_the_same_products() -> None:
    model, loss_fn, inputs, targets, _ = classifier()
    generator = torch.Generator().manual_seed(4)
    retained = HessianOperator(model, loss_fn, inputs, targets, chunk_size=7, retain_graphs=True)
    rebuilt = HessianOperator(model, loss_fn, inputs, targets, chunk_size=7, retain_graphs=False)
    for _ in range(3):  # the retained graphs survive repeated products
        vector = torch.randn(retained.size, generator=generator, dtype=torch.float64)
        assert (retained.matvec(vector) - rebuilt.matvec(vector)).abs().max().item() < EXACT
    assert retained.graph_builds == 3 and rebuilt.graph_builds == 9


def test_hessian_at_other_parameters_leaves_the_model_alone() -> None:
    case = classifier()
    model, loss_fn, inputs, targets, _ = case
    generator = torch.Generator().manual_seed(5)
    point = {
        name: t + 0.3 * torch.randn(t.shape, generator=generator, dtype=t.dtype)
        for name, t in detached_parameters(model).items()
    }
    before = snapshot(model)
    operator = HessianOperator(model, loss_fn, inputs, targets, chunk_size=8, params=point)
    exact = dense_hessian(case, point)
    assert (operator.to_dense() - exact).abs().max().item() < EXACT
    assert (exact - dense_hessian(case)).abs().max().item() > 1e-3  # really another point
    after = model.state_dict()
    assert all(torch.equal(after[key], value) for key, value in before.items())


@pytest.mark.parametrize("chunking", CHUNKINGS)
@pytest.mark.parametrize("name", CASES)
def test_ggn_operator_equals_dense_gauss_newton(name: str, chunking: str) -> None:
    case = CASES[name]()
    model, _, inputs, _, loss = case
    chunk_size, retain = CHUNKINGS[chunking]
    operator = GGNOperator(model, inputs, loss=loss, chunk_size=chunk_size, retain_graphs=retain)
    dense = operator.to_dense()
    exact = dense_ggn(case)
    assert (dense - exact).abs().max().item() < EXACT
    assert torch.linalg.eigvalsh(exact).min().item() > -EXACT  # convex losses: PSD


def test_ggn_equals_hessian_for_a_linear_model_with_squared_error() -> None:
    torch.manual_seed(6)
    model = nn.Linear(3, 2).double()
    generator = torch.Generator().manual_seed(7)
    inputs = torch.randn(EXAMPLES, 3, generator=generator, dtype=torch.float64)
    targets = torch.randn(EXAMPLES, 2, generator=generator, dtype=torch.float64)
    ggn = GGNOperator(model, inputs, loss="mean_squared_error", chunk_size=8).to_dense()
    hvp = HessianOperator(model, mean_squared_error, inputs, targets, chunk_size=8).to_dense()
    assert (ggn - hvp).abs().max().item() < EXACT


def test_diagonal_preconditioning_has_the_eigenvalues_of_the_preconditioned_hessian() -> None:
    model, loss_fn, inputs, targets, _ = classifier()
    operator = HessianOperator(model, loss_fn, inputs, targets, chunk_size=EXAMPLES)
    generator = torch.Generator().manual_seed(8)
    diagonal = 0.1 + torch.rand(operator.size, generator=generator, dtype=torch.float64)
    preconditioned = DiagonalPreconditioned(operator, diagonal).to_dense()
    hessian_matrix = dense_hessian(classifier())
    scale = diagonal.rsqrt()
    assert (preconditioned - scale[:, None] * hessian_matrix * scale).abs().max() < EXACT
    similar = torch.linalg.eigvals(torch.diag(1 / diagonal) @ hessian_matrix).real.sort().values
    assert (torch.linalg.eigvalsh(preconditioned) - similar).abs().max() < 1e-8
    with pytest.raises(ValueError, match="positive"):
        DiagonalPreconditioned(operator, -diagonal)


def test_operators_count_products_and_check_vectors() -> None:
    matrix = torch.tensor([[2.0, 1.0], [1.0, 3.0]], dtype=torch.float64)
    operator = DenseSymmetricOperator(matrix)
    assert operator.shape == (2, 2) and operator.matvecs == 0
    vector = torch.tensor([1.0, -1.0], dtype=torch.float64)
    assert torch.equal(operator.matvec(vector), matrix @ vector)
    assert torch.equal(operator @ vector, matrix @ vector)
    assert operator.matvecs == 2
    block = torch.ones(2, 3, dtype=torch.float64)
    assert torch.equal(operator.matmat(block), matrix @ block)
    assert operator.matvecs == 5
    assert torch.equal(operator.to_dense(), matrix)
    assert operator.matvecs == 7
    assert operator.matmat(torch.ones(2, 0, dtype=torch.float64)).shape == (2, 0)
    assert operator.matvecs == 7
    with pytest.raises(ValueError, match="shape"):
        operator.matvec(torch.ones(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="float64"):
        operator.matvec(torch.ones(2, dtype=torch.float32))
    with pytest.raises(ValueError, match="float64"):
        operator.matmat(torch.ones(2, 2, dtype=torch.float32))
    with pytest.raises(ValueError, match="shape"):
        operator.matmat(torch.ones(3, 2, dtype=torch.float64))
    with pytest.raises(NotImplementedError):
        SymmetricOperator(2, torch.float64, "cpu").matvec(vector)


def test_block_products_equal_products_column_by_column() -> None:
    """Operators with a native block product (dense, preconditioned) and those without (the
    Hessian by double backward) give the column-by-column products, counted per column."""
    model, loss_fn, inputs, targets, _ = classifier()
    double_backward = HessianOperator(model, loss_fn, inputs, targets, chunk_size=EXAMPLES)
    generator = torch.Generator().manual_seed(9)
    diagonal = 0.5 + torch.rand(double_backward.size, generator=generator, dtype=torch.float64)
    matrix = dense_hessian(classifier())
    operators: list[SymmetricOperator] = [
        double_backward,
        DenseSymmetricOperator(matrix),
        DiagonalPreconditioned(DenseSymmetricOperator(matrix), diagonal),
        DiagonalPreconditioned(double_backward, diagonal),
    ]
    assert [o.block_products for o in operators] == [False, True, True, False]
    block = torch.randn(double_backward.size, 4, generator=generator, dtype=torch.float64)
    for operator in operators:
        before = operator.matvecs
        columns = torch.stack([operator.matvec(c) for c in block.unbind(1)], dim=1)
        assert (operator.matmat(block) - columns).abs().max().item() < EXACT
        assert operator.matvecs - before == 8


def test_flatten_and_unflatten_follow_the_parameter_order() -> None:
    model, loss_fn, inputs, targets, _ = classifier()
    operator = HessianOperator(model, loss_fn, inputs, targets, chunk_size=EXAMPLES)
    params = detached_parameters(model)
    flat = operator.flatten(params)
    assert torch.equal(flat, flat_parameters(params))
    pieces = operator.unflatten(flat)
    assert list(pieces) == list(params)
    assert all(torch.equal(pieces[name], params[name]) for name in params)


def test_frozen_parameters_are_left_out() -> None:
    case = classifier()
    model, loss_fn, inputs, targets, _ = case
    model[0].weight.requires_grad_(False)
    operator = HessianOperator(model, loss_fn, inputs, targets, chunk_size=EXAMPLES)
    params = detached_parameters(model)
    assert "0.weight" not in params
    assert operator.size == sum(t.numel() for t in params.values())
    assert (operator.to_dense() - dense_hessian(case, params)).abs().max().item() < EXACT


# ------------------------------------------------------------- linearized (forward-over-reverse)


def convolutional() -> Case:
    """Convolutions, batch norm (eval mode, non-trivial running statistics), ReLU, max- and
    average pooling, GELU and a linear head on 2×6×6 images, mean cross-entropy."""
    torch.manual_seed(10)
    model = nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1),
        nn.BatchNorm2d(3),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(3, 4, 3, padding=1),
        nn.GELU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 3),
    ).double()
    generator = torch.Generator().manual_seed(11)
    norm = model[1]
    assert isinstance(norm, nn.BatchNorm2d)
    norm.running_mean = 0.1 * torch.randn(3, generator=generator, dtype=torch.float64)
    norm.running_var = 0.5 + torch.rand(3, generator=generator, dtype=torch.float64)
    model.eval()
    inputs = torch.randn(8, 2, 6, 6, generator=generator, dtype=torch.float64)
    targets = torch.randint(0, 3, (8,), generator=generator)
    return model, F.cross_entropy, inputs, targets, "cross_entropy"


def attention() -> Case:
    """The registry's decoder-only transformer (embeddings, causal attention, layer norm,
    GELU), tiny, on random token sequences, mean cross-entropy."""
    torch.manual_seed(12)
    model = DecoderTransformer(
        vocab_size=5, seq_len=4, num_outputs=3, d_model=4, n_heads=2, n_layers=1, d_ff=8,
        dropout=0.0,
    ).double()  # fmt: skip
    model.eval()
    generator = torch.Generator().manual_seed(13)
    inputs = torch.randint(0, 5, (6, 4), generator=generator)
    targets = torch.randint(0, 3, (6,), generator=generator)
    return model, F.cross_entropy, inputs, targets, "cross_entropy"


LINEARIZED_CASES = CASES | {"convolutional": convolutional, "attention": attention}


@pytest.mark.parametrize("name", LINEARIZED_CASES)
def test_linearized_hessian_equals_the_double_backward_hessian(name: str) -> None:
    """Forward-over-reverse products, one by one and as a block by vmap, against the Hessian
    by double backward (itself checked against torch.func.hessian above), in float64, on the
    operations of the registry's models; the model is left as it was."""
    model, loss_fn, inputs, targets, _ = LINEARIZED_CASES[name]()
    model.eval()
    before = snapshot(model)
    reference = HessianOperator(model, loss_fn, inputs, targets, chunk_size=len(inputs))
    operator = LinearizedHessianOperator(
        model, loss_fn, inputs, targets, chunk_size=len(inputs), block_products=True
    )
    generator = torch.Generator().manual_seed(14)
    block = torch.randn(operator.size, 5, generator=generator, dtype=torch.float64)
    exact = reference.matmat(block)
    scale = max(1.0, exact.abs().max().item())
    assert operator.block_products
    assert (operator.matmat(block) - exact).abs().max().item() < EXACT * scale
    assert operator.block_products  # vmap worked: no fallback
    assert (operator.matvec(block[:, 0]) - exact[:, 0]).abs().max().item() < EXACT * scale
    assert operator.matvecs == 6 and operator.graph_builds == 1
    after = model.state_dict()
    assert all(torch.equal(after[key], value) for key, value in before.items())
    assert all(p.grad is None for p in model.parameters())


def test_linearized_hessian_equals_the_dense_hessian() -> None:
    case = classifier()
    model, loss_fn, inputs, targets, _ = case
    model.eval()
    operator = LinearizedHessianOperator(model, loss_fn, inputs, targets, chunk_size=EXAMPLES)
    assert (operator.to_dense() - dense_hessian(case)).abs().max().item() < EXACT


@pytest.mark.parametrize("chunking", CHUNKINGS)
def test_linearized_hessian_in_chunks(chunking: str) -> None:
    case = classifier()
    model, loss_fn, inputs, targets, _ = case
    model.eval()
    chunk_size, retain = CHUNKINGS[chunking]
    if chunking == "single-examples":
        chunk_size = 5  # a trace per chunk and product: keep the count small
    operator = LinearizedHessianOperator(
        model,
        loss_fn,
        inputs,
        targets,
        chunk_size=chunk_size,
        retain_graphs=retain,
        block_products=True,
    )
    generator = torch.Generator().manual_seed(15)
    block = torch.randn(operator.size, 3, generator=generator, dtype=torch.float64)
    exact = dense_hessian(case)
    assert (operator.matmat(block) - exact @ block).abs().max().item() < EXACT
    assert (operator.matvec(block[:, 0]) - exact @ block[:, 0]).abs().max().item() < EXACT
    chunks = -(-EXAMPLES // chunk_size)
    assert operator.graph_builds == (chunks if retain or chunks == 1 else 2 * chunks)


class _NoBlockProducts(LinearizedHessianOperator):
    """A linearized gradient that vmap cannot batch (``.item()`` on a batched tensor)."""

    def _build(self, index: int):  # type: ignore[no-untyped-def]
        product = super()._build(index)

        def unbatchable(tangents: dict[str, Tensor]) -> dict[str, Tensor]:
            next(iter(tangents.values())).sum().item()
            return product(tangents)

        return unbatchable


def test_block_products_fall_back_to_columns_where_vmap_fails() -> None:
    case = classifier()
    model, loss_fn, inputs, targets, _ = case
    model.eval()
    operator = _NoBlockProducts(
        model, loss_fn, inputs, targets, chunk_size=EXAMPLES, block_products=True
    )
    block = torch.randn(operator.size, 3, generator=torch.Generator().manual_seed(16)).double()
    assert (operator.matmat(block) - dense_hessian(case) @ block).abs().max().item() < EXACT
    assert not operator.block_products and operator.matvecs == 3
    assert operator.graph_builds == 1


def test_linearized_hessian_needs_eval_mode() -> None:
    model, loss_fn, inputs, targets, _ = classifier()
    model.train()
    with pytest.raises(ValueError, match="eval mode"):
        LinearizedHessianOperator(model, loss_fn, inputs, targets, chunk_size=EXAMPLES)


def test_channels_last_images_give_the_same_hessian() -> None:
    case = convolutional()
    model, loss_fn, inputs, targets, _ = case
    images = inputs.contiguous(memory_format=torch.channels_last)
    operator = HessianOperator(model, loss_fn, images, targets, chunk_size=8)
    assert (operator.to_dense() - dense_hessian(case)).abs().max().item() < EXACT


@pytest.mark.parametrize("channels_last", [False, True])
def test_operators_of_a_convolutional_model_equal_the_dense_matrices(channels_last: bool) -> None:
    """The Hessian and the GGN of a model with convolutions, eval-mode batch norm, ReLU,
    max-pooling, GELU and average pooling (the operators with second-order forms and others)
    against ``torch.func``'s dense matrices, which never see those forms."""
    case = convolutional()
    model, loss_fn, inputs, targets, loss = case
    images = inputs.contiguous(memory_format=torch.channels_last) if channels_last else inputs
    hessian_product = HessianOperator(model, loss_fn, images, targets, chunk_size=3)
    assert (hessian_product.to_dense() - dense_hessian(case)).abs().max().item() < EXACT
    ggn_product = GGNOperator(model, images, loss=loss, chunk_size=3)
    assert (ggn_product.to_dense() - dense_ggn(case)).abs().max().item() < EXACT
