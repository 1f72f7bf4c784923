"""Curvature matrices of the loss as matrix-free symmetric operators
(:class:`~.operators.SymmetricOperator`: each implements only its products; the eigensolvers,
trace estimators and spectral densities take any such operator and never see a model).

Two curvature matrices of the mean loss over a probe batch, both at a fixed point of parameter
space and flattened in the order of the parameter dictionary:

* :class:`HessianOperator`: the Hessian, by Hessian-vector products (HVPs) that reuse the
  gradient's graph (Pearlmutter 1994, "Fast exact multiplication by the Hessian"): the gradient
  ``g`` is computed once with ``create_graph=True``, and each product is the gradient of
  ``⟨g, v⟩``, a single extra backward pass through the retained graph.
* :class:`LinearizedHessianOperator`: the same Hessian by forward-over-reverse products with
  the forward and backward passes at the point evaluated once (``torch.func.linearize``),
  at the price of tracing the gradient first. Its products were the cheaper on
  convolutional models until the double backward took the forms of :mod:`.second_order`;
  now they cost as much or more on every CPU model measured, so the probes use
  :class:`HessianOperator`, and this one stays as the forward-over-reverse alternative
  (the benchmarks time it; on GPUs it is unmeasured).
* :class:`GGNOperator`: the generalised Gauss-Newton matrix ``Jᵀ H_out J`` (Schraudolph 2002,
  "Fast curvature matrix-vector products for second-order gradient descent"), positive
  semi-definite for a convex loss.

The batch is processed in chunks of ``chunk_size`` examples, each chunk's product weighted by
its share of the batch, so the product is the one of the mean loss over the whole batch.
Memory: with one chunk its graph is kept while the operator lives; with several, their graphs
are kept too when ``retain_graphs=True`` (memory grows with the batch, each product costs one
extra backward pass per chunk), or rebuilt for every product otherwise (memory bounded by one
chunk, each product costs a forward and a backward more per chunk). Both give the same matrix.

The model is evaluated through ``functional_call`` in whatever mode the caller set (the runner
uses eval mode; see :mod:`.params`); nothing is written to ``.grad`` and the model is not
modified. The operator holds the parameter tensors it was given, without copying them: it is
the curvature at that point only while they are unchanged, so build it, use it and drop it
within one probe (a retained graph raises autograd's in-place error if they were updated).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Generic, Literal, TypeVar

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, linearize, vmap

from dynascope.worker.probes.operators import SymmetricOperator
from dynascope.worker.probes.params import LossFunction, buffers_of, detached_parameters
from dynascope.worker.probes.second_order import second_order_forms

OutputLoss = Literal["cross_entropy", "mean_squared_error"]
Graph = TypeVar("Graph")
HessianGraph = tuple[list[Tensor], list[Tensor | None]]
GGNGraph = tuple[list[Tensor], Tensor, Tensor, list[Tensor | None]]
LinearizedGradient = Callable[[dict[str, Tensor]], dict[str, Tensor]]


class CurvatureOperator(SymmetricOperator, Generic[Graph]):
    """A curvature matrix of the mean loss over a batch, processed in chunks (see the module's
    docstring). Subclasses build one chunk's graph (``_build``) and take one chunk's product
    with it (``_product``); this class weights the chunks and decides which graphs to keep."""

    def __init__(
        self,
        model: nn.Module,
        inputs: Tensor,
        targets: Tensor | None,
        *,
        chunk_size: int,
        params: dict[str, Tensor] | None,
        retain_graphs: bool,
    ) -> None:
        point = detached_parameters(model) if params is None else dict(params)
        if not point:
            raise ValueError("no trainable parameters: the curvature matrix is empty")
        dtypes = {tensor.dtype for tensor in point.values()}
        if len(dtypes) != 1:
            raise ValueError(f"all parameters must share one dtype, got {sorted(map(str, dtypes))}")
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
        count = inputs.shape[0]
        if count == 0:
            raise ValueError("the batch is empty")
        if targets is not None and targets.shape[0] != count:
            raise ValueError(f"{count} inputs but {targets.shape[0]} targets; they must match")
        first = next(iter(point.values()))
        super().__init__(sum(t.numel() for t in point.values()), first.dtype, first.device)
        self.model = model
        self.inputs = inputs
        self.point = point
        self.chunks = [
            (start, min(start + chunk_size, count)) for start in range(0, count, chunk_size)
        ]
        self.weights = [(stop - start) / count for start, stop in self.chunks]
        self.retain_graphs = retain_graphs or len(self.chunks) == 1
        self.graph_builds = 0
        """Forward-and-backward passes that built a chunk's graph (cost accounting)."""
        self._graphs: dict[int, Graph] = {}

    def flatten(self, tensors: dict[str, Tensor]) -> Tensor:
        """One flat vector from tensors shaped like the parameters, in the operator's order."""
        return torch.cat([tensors[name].reshape(-1) for name in self.point])

    def unflatten(self, vector: Tensor) -> dict[str, Tensor]:
        """Views of a flat vector shaped like the parameters, by name."""
        pieces = vector.split([t.numel() for t in self.point.values()])
        return {
            name: piece.view_as(tensor)
            for (name, tensor), piece in zip(self.point.items(), pieces, strict=True)
        }

    def _leaves_and_outputs(self, index: int) -> tuple[list[Tensor], Tensor]:
        """Fresh leaf tensors at the point (sharing its storage) and the chunk's outputs, with
        ReLU and max-pooling in their forms for graphs differentiated twice (same values and
        first derivatives; no zero second derivatives materialised, see :mod:`.second_order`)."""
        start, stop = self.chunks[index]
        leaves = {name: tensor.detach().requires_grad_() for name, tensor in self.point.items()}
        buffers = buffers_of(self.model, copy=self.model.training)
        with second_order_forms():
            outputs = functional_call(self.model, (leaves, buffers), (self.inputs[start:stop],))
        return list(leaves.values()), outputs

    def _build(self, index: int) -> Graph:
        raise NotImplementedError

    def _product(self, graph: Graph, pieces: list[Tensor], retain: bool) -> list[Tensor | None]:
        raise NotImplementedError

    def _product_block(
        self, graph: Graph, blocks: list[Tensor], retain: bool
    ) -> list[Tensor | None] | None:
        """One chunk's products with ``j`` vectors at once (``blocks[i]`` shaped ``(j, *p_i)``
        for parameter ``p_i``, and so are the results); None where the subclass has no native
        block product, or it failed, and the columns are multiplied one by one."""
        return None

    def _graph(self, index: int) -> Graph:
        if index in self._graphs:
            return self._graphs[index]
        with torch.enable_grad():
            graph = self._build(index)
        self.graph_builds += 1
        if self.retain_graphs:
            self._graphs[index] = graph
        return graph

    def _matvec(self, vector: Tensor) -> Tensor:
        pieces = list(self.unflatten(vector).values())
        if len(self.chunks) == 1:  # weight 1: the product as it comes
            with torch.enable_grad():
                product = self._product(self._graph(0), pieces, self.retain_graphs)
            return torch.cat(
                [
                    torch.zeros_like(piece).reshape(-1) if part is None else part.reshape(-1)
                    for piece, part in zip(pieces, product, strict=True)
                ]
            )
        total = torch.zeros_like(vector)
        for index, weight in enumerate(self.weights):
            graph = self._graph(index)
            with torch.enable_grad():
                product = self._product(graph, pieces, self.retain_graphs)
            for piece, part in zip(total.split([p.numel() for p in pieces]), product, strict=True):
                if part is not None:
                    piece.add_(part.reshape(-1), alpha=weight)
        return total

    def _matmat(self, block: Tensor) -> Tensor:
        if not self.block_products:
            return super()._matmat(block)
        count = block.shape[1]
        rows = block.T  # j × n: vector i is row i
        sizes = [t.numel() for t in self.point.values()]
        blocks = [
            piece.reshape(count, *tensor.shape)
            for piece, tensor in zip(rows.split(sizes, dim=1), self.point.values(), strict=True)
        ]
        total = torch.zeros_like(rows, memory_format=torch.contiguous_format)
        for index, weight in enumerate(self.weights):
            graph = self._graph(index)
            with torch.enable_grad():
                product = self._product_block(graph, blocks, self.retain_graphs)
            if product is None:  # no block product after all: one column at a time
                return super()._matmat(block)
            for piece, part in zip(total.split(sizes, dim=1), product, strict=True):
                if part is not None:
                    piece.add_(part.reshape(count, -1), alpha=weight)
        return total.T  # n × j, each column contiguous


class LossCurvatureOperator(CurvatureOperator[Graph]):
    """A curvature matrix of ``loss_fn(model(inputs), targets)``, the mean loss over the batch
    (the Hessian's two forms below; the Gauss-Newton matrix takes a named output loss)."""

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFunction,
        inputs: Tensor,
        targets: Tensor,
        *,
        chunk_size: int,
        params: dict[str, Tensor] | None = None,
        retain_graphs: bool = False,
    ) -> None:
        super().__init__(
            model,
            inputs,
            targets,
            chunk_size=chunk_size,
            params=params,
            retain_graphs=retain_graphs,
        )
        self.loss_fn = loss_fn
        self.targets = targets


class HessianOperator(LossCurvatureOperator[HessianGraph]):
    """The Hessian of the mean loss over a batch at ``params`` (default: the model's current
    trainable parameters), as Hessian-vector products (Pearlmutter 1994).

    Per chunk the gradient is computed once with ``create_graph=True`` at leaf copies of the
    parameters, and each product is ``torch.autograd.grad(g, leaves, grad_outputs=v)``, the
    gradient of ``⟨g, v⟩``, through the retained graph; the graph takes ReLU, max-pooling and
    a first convolution of the images in the forms of :mod:`.second_order`, whose double backward
    skips work PyTorch's would do for nothing (same products). Measured on an MLP
    64-128-128-10, batch 1024, float32 CPU (one thread, medians): a product costs 1.4-1.5
    gradient evaluations with tanh and 1.5-1.6 with ReLU, against 3.5-3.9 for a
    forward-over-reverse ``jvp(grad)`` each time; building the graph costs about 1.3
    gradients, once. ``graph_builds`` counts the gradient
    evaluations that built graphs. See the module's docstring for ``chunk_size`` and
    ``retain_graphs``.
    """

    def _build(self, index: int) -> HessianGraph:
        start, stop = self.chunks[index]
        leaves, outputs = self._leaves_and_outputs(index)
        loss = self.loss_fn(outputs, self.targets[start:stop])
        gradient = torch.autograd.grad(loss, leaves, create_graph=True, allow_unused=True)
        # A gradient that is constant in the parameters has a zero Hessian row: leave it out.
        return leaves, [g if g is not None and g.requires_grad else None for g in gradient]

    def _product(
        self, graph: HessianGraph, pieces: list[Tensor], retain: bool
    ) -> list[Tensor | None]:
        leaves, gradient = graph
        used = [i for i, g in enumerate(gradient) if g is not None]
        if not used:
            return [None] * len(leaves)
        return list(
            torch.autograd.grad(
                [gradient[i] for i in used],
                leaves,
                grad_outputs=[pieces[i] for i in used],
                retain_graph=retain,
                allow_unused=True,
            )
        )


class LinearizedHessianOperator(LossCurvatureOperator[LinearizedGradient]):
    """The Hessian of the mean loss over a batch at ``params`` (default: the model's current
    trainable parameters), by forward-over-reverse products from ``torch.func.linearize``.

    Per chunk the gradient ``θ ↦ ∇L(θ)`` is linearised once at the point: its computation is
    traced with ``make_fx``, the parts that do not depend on the tangent (the forward and
    backward passes at the point) are evaluated then and kept as constants, and each product
    ``Hv = J_{∇L}(θ) v`` runs only the tangent part, a forward-mode pass through the forward and
    backward passes (the ``jvp`` of ``grad`` without recomputing them). With
    ``block_products=True`` several vectors are multiplied at once by ``vmap`` over that
    function (one by one where ``vmap`` fails).

    Against :class:`HessianOperator` (reverse-over-reverse through the retained graph, with the
    forms of :mod:`.second_order`), on CPU in float32 with contiguous images (2 cores, medians of
    noisy runs): a product on the benchmark's 25k-parameter CNN (3×3 convolutions, ReLU,
    max-pooling, batch 512) takes 1.0 to 1.1 times as long, on a CNN with batch norm 1.1 and
    on a small batch-normed ResNet 1.05. (Before those forms, 0.65 to 0.85: PyTorch's double
    backward of a convolution takes slow routes, fills zero second derivatives through ReLU
    and max-pooling and runs eval-mode batch norm through its batch-statistics kernels, none
    of which the linearized product does.) On MLPs and a small transformer products cost 0.9
    to 1. The trace is Python work per operation of the forward and backward passes: 0.13 s
    for the benchmark's MLP, 0.4 to 1.3 s for CNNs, 1.5 to 4 s for the ResNet and the
    transformer; with several chunks and ``retain_graphs=False`` every product traces again.
    Block products by ``vmap`` ran at 0.9 to 1.2 times the speed of products one by one on the
    MLP, CNN and transformer, and at half the speed on the ResNet, hence off by default.
    Memory: the kept constants, about what a retained graph holds.

    The model must be in eval mode: the trace would otherwise freeze one draw of dropout and
    update batch-norm statistics while tracing. The products are those at the parameters'
    values when a chunk was traced: unlike a retained graph, the kept constants raise no error
    if the parameters change afterwards, so build, use and drop the operator within one probe.
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFunction,
        inputs: Tensor,
        targets: Tensor,
        *,
        chunk_size: int,
        params: dict[str, Tensor] | None = None,
        retain_graphs: bool = False,
        block_products: bool = False,
    ) -> None:
        if model.training:
            raise ValueError(
                "linearized Hessian products need the model in eval mode; call model.eval() "
                "or use HessianOperator"
            )
        super().__init__(
            model, loss_fn, inputs, targets, chunk_size=chunk_size, params=params,
            retain_graphs=retain_graphs,
        )  # fmt: skip
        self.block_products = block_products

    def _build(self, index: int) -> LinearizedGradient:
        start, stop = self.chunks[index]
        inputs, targets = self.inputs[start:stop], self.targets[start:stop]
        buffers = buffers_of(self.model)

        def loss(params: dict[str, Tensor]) -> Tensor:
            return self.loss_fn(functional_call(self.model, (params, buffers), (inputs,)), targets)

        with warnings.catch_warnings():
            # const_fold's notice about the folded constants it attaches to its module
            warnings.filterwarnings("ignore", "Attempted to insert a get_attr Node", UserWarning)
            _, product = linearize(grad(loss), self.point)
        return product

    def _product(
        self, graph: LinearizedGradient, pieces: list[Tensor], retain: bool
    ) -> list[Tensor | None]:
        products = graph(dict(zip(self.point, pieces, strict=True)))
        return [products[name] for name in self.point]

    def _product_block(
        self, graph: LinearizedGradient, blocks: list[Tensor], retain: bool
    ) -> list[Tensor | None] | None:
        try:
            products = vmap(graph)(dict(zip(self.point, blocks, strict=True)))
        except RuntimeError:  # an operation without a batching rule: column by column
            self.block_products = False
            return None
        return [products[name] for name in self.point]


class GGNOperator(CurvatureOperator[GGNGraph]):
    """The generalised Gauss-Newton matrix ``(1/N) Σᵢ Jᵢᵀ Hᵢ Jᵢ`` of the mean loss over a batch
    (Schraudolph 2002), ``Jᵢ`` the Jacobian of example ``i``'s outputs with respect to the
    parameters and ``Hᵢ`` the Hessian of its loss with respect to its outputs:

    * ``loss="cross_entropy"`` (mean cross-entropy of logits ``(N, C)``, hard or soft labels
      summing to one): ``Hᵢ = diag(pᵢ) - pᵢpᵢᵀ`` with ``pᵢ = softmax(outputsᵢ)``;
    * ``loss="mean_squared_error"`` (mean of squared errors over all ``N·C`` elements of the
      outputs): ``Hᵢ = (2/C) I``.

    Neither depends on the targets, so none are taken. A product is ``Jᵀ(H(Jv))``: ``Jv`` by the
    double-vector-Jacobian-product trick (differentiating ``Jᵀu`` with respect to ``u``, which
    is linear), and ``Jᵀw`` by one backward pass, both through the chunk's retained graph. See
    the module's docstring for ``chunk_size`` and ``retain_graphs``.
    """

    def __init__(
        self,
        model: nn.Module,
        inputs: Tensor,
        *,
        loss: OutputLoss,
        chunk_size: int,
        params: dict[str, Tensor] | None = None,
        retain_graphs: bool = False,
    ) -> None:
        if loss not in ("cross_entropy", "mean_squared_error"):
            raise ValueError(f"loss must be 'cross_entropy' or 'mean_squared_error', got {loss!r}")
        super().__init__(
            model,
            inputs,
            None,
            chunk_size=chunk_size,
            params=params,
            retain_graphs=retain_graphs,
        )
        self.loss = loss

    def _build(self, index: int) -> GGNGraph:
        leaves, outputs = self._leaves_and_outputs(index)
        if self.loss == "cross_entropy" and outputs.ndim != 2:
            raise ValueError(f"cross-entropy GGN needs (N, C) logits, got {tuple(outputs.shape)}")
        dual = torch.zeros_like(outputs, requires_grad=True)
        transposed = torch.autograd.grad(
            outputs, leaves, grad_outputs=dual, create_graph=True, allow_unused=True
        )
        return (
            leaves,
            outputs,
            dual,
            [t if t is not None and t.requires_grad else None for t in transposed],
        )

    def _output_hessian_product(self, outputs: Tensor, tangent: Tensor) -> Tensor:
        """The Hessian of the chunk's mean loss with respect to its outputs, times ``tangent``."""
        if self.loss == "mean_squared_error":
            return tangent * (2.0 / outputs.numel())
        probabilities = torch.softmax(outputs.detach(), dim=-1)
        weighted = probabilities * tangent
        hessian_tangent = weighted - probabilities * weighted.sum(dim=-1, keepdim=True)
        return hessian_tangent / outputs.shape[0]

    def _product(
        self,
        graph: GGNGraph,
        pieces: list[Tensor],
        retain: bool,
    ) -> list[Tensor | None]:
        leaves, outputs, dual, transposed = graph
        used = [i for i, t in enumerate(transposed) if t is not None]
        if not used:
            return [None] * len(leaves)
        (tangent,) = torch.autograd.grad(
            [transposed[i] for i in used],
            dual,
            grad_outputs=[pieces[i] for i in used],
            retain_graph=True,
        )
        cotangent = self._output_hessian_product(outputs, tangent)
        return list(
            torch.autograd.grad(
                outputs, leaves, grad_outputs=cotangent, retain_graph=retain, allow_unused=True
            )
        )
