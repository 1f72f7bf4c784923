"""The probes on an accelerator against the same probes on the CPU, in float64.

Each CPU result is tested against a dense or closed-form reference in the other test modules,
so agreement to rounding here carries those tests over to the device. Random vectors are drawn
on the host from the same seeded generators either way, so the two runs take the same path.

The device is CUDA unless ``DYNASCOPE_TEST_DEVICE`` names another; the tests are skipped where
it is not available (as on CI). ``DYNASCOPE_TEST_DEVICE=cpu`` runs them on the CPU against
itself: a dry run of the tests' own logic, for machines without a GPU.
"""

from __future__ import annotations

import copy
import os

import pytest
import torch
from torch import Tensor, nn

from dynascope.worker.probes.curvature import (
    GGNOperator,
    HessianOperator,
    LinearizedHessianOperator,
)
from dynascope.worker.probes.density import slq_nodes
from dynascope.worker.probes.grid_evaluation import losses_at_combinations
from dynascope.worker.probes.jacobian import empirical_ntk, input_output_jacobians
from dynascope.worker.probes.lanczos import lanczos_top_eigenpairs
from dynascope.worker.probes.landscape import random_plane
from dynascope.worker.probes.memory_format import prefers_channels_last
from dynascope.worker.probes.params import detached_parameters
from dynascope.worker.probes.spectral import spectral_norms, spectral_norms_exact
from dynascope.worker.probes.trace import hutch_plus_plus_trace
from dynascope.worker.probes.training_jacobian import training_jacobian
from dynascope.worker.probes.trajectory import trajectory_pca
from tests.worker.probes.test_curvature import Case, classifier, convolutional

DEVICE = torch.device(os.environ.get("DYNASCOPE_TEST_DEVICE", "cuda"))
pytestmark = [
    pytest.mark.skipif(
        DEVICE.type == "cuda" and not torch.cuda.is_available(), reason="no CUDA device here"
    ),
    pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning"),
]

CLOSE = 1e-9  # float64 on two devices: the same sums in another order
CASES = {"mlp": classifier, "convolutional": convolutional}


def on_device(case: Case) -> Case:
    """A copy of the case (model, loss, inputs, targets, loss name) on ``DEVICE``."""
    model, loss_fn, inputs, targets, name = case
    return copy.deepcopy(model).to(DEVICE), loss_fn, inputs.to(DEVICE), targets.to(DEVICE), name


def assert_close(device: Tensor, host: Tensor, tolerance: float = CLOSE) -> None:
    """``device`` (moved to the host) equals ``host`` to ``tolerance`` relative to its size."""
    scale = max(host.abs().max().item(), 1.0)
    assert (device.cpu() - host).abs().max().item() <= tolerance * scale


@pytest.mark.parametrize("name", CASES)
def test_curvature_operators_give_the_cpu_matrices(name: str) -> None:
    case = CASES[name]()
    model, loss_fn, inputs, targets, loss = case
    there = on_device(case)
    hessian = HessianOperator(there[0], loss_fn, there[2], there[3], chunk_size=7)
    assert hessian.device.type == DEVICE.type
    host = HessianOperator(model, loss_fn, inputs, targets, chunk_size=7).to_dense()
    assert_close(hessian.to_dense(), host)
    ggn = GGNOperator(there[0], there[2], loss=loss, chunk_size=7).to_dense()
    assert_close(ggn, GGNOperator(model, inputs, loss=loss, chunk_size=7).to_dense())
    if name == "convolutional":  # eval mode: what the linearized operator needs
        linearized = LinearizedHessianOperator(
            there[0], loss_fn, there[2], there[3], chunk_size=len(inputs)
        )
        assert_close(linearized.to_dense(), host)


def test_lanczos_trace_and_density_follow_the_cpu() -> None:
    case = classifier()
    model, loss_fn, inputs, targets, _ = case
    there = on_device(case)
    operators = {
        "device": HessianOperator(there[0], loss_fn, there[2], there[3], chunk_size=20),
        "host": HessianOperator(model, loss_fn, inputs, targets, chunk_size=20),
    }
    results = {}
    for where, operator in operators.items():
        top = lanczos_top_eigenpairs(operator, 3, generator=torch.Generator().manual_seed(0))
        trace = hutch_plus_plus_trace(
            operator, matvecs=12, generator=torch.Generator().manual_seed(1)
        )
        nodes = slq_nodes(
            operator, lanczos_steps=8, probes=3, generator=torch.Generator().manual_seed(2)
        )
        results[where] = (top, trace, nodes)
    (top, trace, nodes), (host_top, host_trace, host_nodes) = results["device"], results["host"]
    assert top.eigenvectors.device.type == DEVICE.type
    assert_close(top.eigenvalues, host_top.eigenvalues)
    assert top.iterations == host_top.iterations
    assert trace.estimate == pytest.approx(host_trace.estimate, rel=CLOSE)
    assert trace.standard_error == pytest.approx(host_trace.standard_error, rel=1e-6, abs=CLOSE)
    assert_close(nodes.values, host_nodes.values)
    assert_close(nodes.weights, host_nodes.weights)


def test_jacobians_and_kernel_follow_the_cpu() -> None:
    model, _, inputs, _, _ = convolutional()
    there = copy.deepcopy(model).to(DEVICE)
    jacobians = input_output_jacobians(there, inputs.to(DEVICE), chunk_size=3)
    assert_close(jacobians, input_output_jacobians(model, inputs, chunk_size=3))
    kernel = empirical_ntk(there, inputs.to(DEVICE), chunk_size=3)
    assert_close(kernel, empirical_ntk(model, inputs, chunk_size=3))


def test_spectral_norms_follow_the_exact_ones() -> None:
    generator = torch.Generator().manual_seed(4)
    params = {
        "wide": torch.randn(40, 300, generator=generator, dtype=torch.float64),
        "square": torch.randn(64, 64, generator=generator, dtype=torch.float64),
        "kernel": torch.randn(8, 3, 3, 3, generator=generator, dtype=torch.float64),
        "bias": torch.randn(8, generator=generator, dtype=torch.float64),
    }
    exact = spectral_norms_exact(params)
    result = spectral_norms({name: t.to(DEVICE) for name, t in params.items()}, tolerance=1e-8)
    for name, value in exact.items():
        assert result.values[name] == pytest.approx(value, rel=1e-7)
        assert result.vectors[name].device.type == DEVICE.type


def test_landscape_grid_follows_the_cpu() -> None:
    model, loss_fn, inputs, targets, _ = classifier()
    model.eval()
    there = copy.deepcopy(model).to(DEVICE)
    batch = (inputs.to(DEVICE), targets.to(DEVICE))
    landscapes = [
        random_plane(
            net, loss_fn, data, generator=torch.Generator().manual_seed(5),
            task="classification", grid=5,
        )
        for net, data in ((there, batch), (model, (inputs, targets)))
    ]  # fmt: skip
    assert_close(landscapes[0].train_loss, landscapes[1].train_loss)
    assert torch.equal(landscapes[0].train_accuracy, landscapes[1].train_accuracy)
    centre = detached_parameters(model)
    weights = torch.tensor([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]], dtype=torch.float64)
    doubled = {name: 2 * t for name, t in centre.items()}
    values = {
        vectorize: losses_at_combinations(
            there, loss_fn, *batch, weights=weights, vectorize=vectorize,
            basis=[{n: t.to(DEVICE) for n, t in b.items()} for b in (centre, doubled)],
        ).losses
        for vectorize in (False, True)
    }  # fmt: skip
    host = losses_at_combinations(
        model, loss_fn, inputs, targets, basis=[centre, doubled], weights=weights
    ).losses
    for losses in values.values():
        assert_close(losses, host)


def test_trajectory_pca_and_training_jacobian_follow_the_cpu() -> None:
    generator = torch.Generator().manual_seed(6)
    walk = torch.randn(30, 500, generator=generator, dtype=torch.float64).cumsum(dim=0)
    pca, host = trajectory_pca(walk.to(DEVICE), components=4), trajectory_pca(walk, components=4)
    assert_close(pca.explained_variance_ratio, host.explained_variance_ratio)
    assert_close(pca.coordinates.abs(), host.coordinates.abs())  # signs are arbitrary

    torch.manual_seed(7)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    inputs = torch.randn(8, 3, generator=generator, dtype=torch.float64)
    targets = torch.randn(8, 2, generator=generator, dtype=torch.float64)

    def loss_fn(outputs: Tensor, wanted: Tensor) -> Tensor:
        return 0.5 * (outputs - wanted).square().sum(dim=1).mean()

    options = {"lr": 0.1, "steps": 5, "chunk_size": 7}
    there = training_jacobian(
        copy.deepcopy(model).to(DEVICE), loss_fn, inputs.to(DEVICE), targets.to(DEVICE), **options
    )
    here = training_jacobian(model, loss_fn, inputs, targets, **options)
    assert_close(there.jacobian, here.jacobian)
    assert_close(there.end, here.end)


def test_images_stay_as_they_are_off_the_cpu() -> None:
    model, _, inputs, _, _ = convolutional()
    if DEVICE.type == "cpu":
        pytest.skip("the CPU is where channels-last is chosen")
    assert not prefers_channels_last(copy.deepcopy(model).to(DEVICE), inputs.to(DEVICE))


def test_a_run_with_every_probe_trains_on_the_device(embedded_home, monkeypatch) -> None:
    """A whole run through the runner with the worker's device setting, every probe on, against
    the same run on the CPU: float32 on two devices, so close, not equal."""
    from dynascope.server.db.session import session_scope
    from dynascope.server.schemas.run_spec import RunSpec
    from dynascope.server.services.metrics import metric_keys, read_series
    from dynascope.server.services.runs import create_run
    from dynascope.server.settings import get_settings
    from dynascope.worker.runner import execute_run

    spec = RunSpec.model_validate({
        "model": {"name": "mlp", "widths": [16], "activation": "tanh"},
        "data": {"name": "digits", "batch_size": 64},
        "optimizer": {"name": "sgd", "lr": 0.1},
        "steps": 20,
        "probes": {
            "every": 10, "batch_size": 64,
            "hessian": {"top_k": 2, "min_eigenvalue": True, "trace": True, "density": True},
            "jacobian": {"n_inputs": 8}, "trajectory": {"snapshot_every": 5},
            "landscape": {"grid": 5, "plane": "random"},
        },
    })  # fmt: skip
    series = {}
    for device in (str(DEVICE), "cpu"):
        monkeypatch.setenv("DYNASCOPE_DEVICE", device)
        get_settings.cache_clear()
        with session_scope() as session:
            run_id = create_run(session, spec=spec, enqueue=lambda _id: None).id
        assert execute_run(run_id) == "completed"
        with session_scope() as session:
            series[device] = read_series(session, run_id, metric_keys(session, run_id))
    there, here = series[str(DEVICE)], series["cpu"]
    assert there.keys() == here.keys()
    for key in ("train/loss", "test/loss", "grad_norm", "hessian/top_1", "hessian/trace"):
        assert there[key].steps.tolist() == here[key].steps.tolist() == [0, 10, 20], key
        torch.testing.assert_close(
            torch.as_tensor(there[key].values), torch.as_tensor(here[key].values),
            rtol=1e-3, atol=1e-6, msg=key,
        )  # fmt: skip
