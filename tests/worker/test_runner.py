"""The runner in this process against the embedded store: determinism, idempotence, the
recorded keys, divergence and failures (the Celery path is covered by tests/integration)."""

from __future__ import annotations

import pytest
import torch

from dynascope.server.db.session import session_scope
from dynascope.server.schemas.run_spec import RunSpec
from dynascope.server.services.metrics import metric_keys, read_series
from dynascope.server.services.runs import create_run, get_run
from dynascope.worker.runner import execute_run

BASE = {
    "model": {"name": "mlp", "widths": [16, 16], "activation": "tanh", "batch_norm": True,
              "dropout": 0.1},
    "data": {"name": "digits", "batch_size": 32},
    "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
    "steps": 30,
    "probes": {"every": 10, "batch_size": 128},
}  # fmt: skip


def _submit(**changes) -> int:
    spec = RunSpec.model_validate(BASE | changes)
    with session_scope() as session:
        return create_run(session, spec=spec, enqueue=lambda _run_id: None).id


def _all_metrics(run_id: int) -> dict[str, tuple[list[int], list[float]]]:
    with session_scope() as session:
        series = read_series(session, run_id, metric_keys(session, run_id))
    return {
        key: (s.steps.tolist(), s.values.tolist())
        for key, s in series.items()
        if not key.startswith(("cost/", "time/"))  # wall times differ between runs, by nature
    }


def test_same_spec_and_seed_give_identical_metrics(embedded_home):
    first, second, other = _submit(), _submit(), _submit(seed=1)
    for run_id in (first, second, other):
        assert execute_run(run_id) == "completed"
    a, b = _all_metrics(first), _all_metrics(second)
    assert a.keys() == b.keys() and len(a) > 10
    for key in a:
        assert a[key] == b[key], key  # bit for bit
    assert _all_metrics(other)["train/batch_loss"] != a["train/batch_loss"]


def test_a_convolutional_run_reads_channels_last_images_and_stays_deterministic(embedded_home):
    from pathlib import Path

    from dynascope.server.schemas.data_specs import RandomImagesSpec
    from dynascope.server.schemas.model_specs import CNNSpec
    from dynascope.worker.probes.memory_format import is_channels_last
    from dynascope.worker.registry import build_model, images_in_preferred_format, load_dataset

    data = load_dataset(RandomImagesSpec(n_samples=64, size=8), data_dir=Path("/nonexistent"))
    model = build_model(CNNSpec(channels=[16, 16], batch_norm=True), data)
    converted = images_in_preferred_format(data, model)
    assert is_channels_last(converted.x_train) and is_channels_last(converted.x_test)
    assert torch.equal(converted.x_train, data.x_train)
    assert torch.equal(converted.x_test, data.x_test)

    cnn = {
        "model": {"name": "cnn", "channels": [16, 16], "batch_norm": True},
        "data": {"name": "random_images", "n_samples": 64, "size": 8, "batch_size": 16},
        "probes": {"every": 5, "batch_size": 16, "hessian": {"top_k": 2, "density": True},
                   "jacobian": {"n_inputs": 4}},
        "steps": 10,
    }  # fmt: skip
    first, second = _submit(**cnn), _submit(**cnn)
    for run_id in (first, second):
        assert execute_run(run_id) == "completed"
    a, b = _all_metrics(first), _all_metrics(second)
    assert {"hessian/top_2", "ntk/velocity"} <= a.keys() and a.keys() == b.keys()
    for key in a:
        assert a[key] == b[key], key  # bit for bit


def test_a_run_is_trained_once(embedded_home):
    run_id = _submit()
    assert execute_run(run_id) == "completed"
    assert execute_run(run_id) == "skipped"  # e.g. a redelivered message


def test_the_torch_threads_setting_is_applied(embedded_home, monkeypatch):
    from dynascope.server.settings import get_settings

    before = torch.get_num_threads()
    monkeypatch.setenv("DYNASCOPE_TORCH_THREADS", "1")
    get_settings.cache_clear()
    try:
        torch.set_num_threads(2)
        assert execute_run(_submit()) == "completed"
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_recorded_keys_cover_the_probes(embedded_home):
    run_id = _submit()
    execute_run(run_id)
    keys = set(_all_metrics(run_id))
    layers = {"layer1.linear.weight", "layer1.linear.bias", "layer2.norm.weight", "head.weight"}
    for layer in layers:
        assert f"weight_norm/{layer}" in keys
        assert f"update_ratio/{layer}" in keys
    assert "spectral_norm/layer1.linear.weight" in keys
    assert "spectral_norm/layer1.linear.bias" not in keys  # vectors have no spectral norm
    for key in (
        "train/loss",
        "train/accuracy",
        "test/loss",
        "test/accuracy",
        "grad_norm",
        "distance_from_init",
        "lr",
    ):
        assert key in keys  # fmt: skip
    with session_scope() as session:
        run = get_run(session, run_id=run_id)
        assert run.summary["test/accuracy"] is not None and run.step == 30
        clock = read_series(session, run_id, ["time/elapsed"])["time/elapsed"]
    assert clock.steps.tolist() == [0, 10, 20, 30]
    assert 0 < clock.values[0] and (clock.values[1:] > clock.values[:-1]).all()
    assert clock.values[-1] < run.timings["total_s"]


def test_probes_can_be_switched_off(embedded_home):
    run_id = _submit(probes={"every": 10, "batch_size": 128, "norms": False})
    execute_run(run_id)
    keys = set(_all_metrics(run_id))
    assert "grad_norm" not in keys and "test/loss" in keys


def test_regression_and_full_batch_gd(embedded_home):
    run_id = _submit(
        model={"name": "mlp", "widths": [8]},
        data={"name": "teacher_student", "n_samples": 200, "dim": 4},
        optimizer={"name": "gd", "lr": 0.05},
        probes={"every": 10, "batch_size": 64},
    )
    assert execute_run(run_id) == "completed"
    metrics = _all_metrics(run_id)
    assert "train/accuracy" not in metrics
    losses = metrics["train/loss"][1]
    assert losses[-1] < losses[0]


def test_divergence_keeps_data(embedded_home):
    run_id = _submit(
        model={"name": "mlp", "widths": [32], "activation": "relu"},
        data={"name": "teacher_student", "n_samples": 500, "dim": 8, "batch_size": 64},
        optimizer={"name": "sgd", "lr": 3.0},
        steps=200,
    )
    assert execute_run(run_id) == "diverged"
    with session_scope() as session:
        run = get_run(session, run_id=run_id)
        assert run.diverged_step is not None and "non-finite" in run.error
    steps, values = _all_metrics(run_id)["train/batch_loss"]
    assert steps[-1] == run.diverged_step


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"data": {"name": "cifar10", "batch_size": 32}}, "cifar-10-batches-py"),
    ],
)
def test_failures_are_recorded_with_a_reason(embedded_home, changes, message):
    run_id = _submit(**changes, model={"name": "mlp", "widths": [8]})
    assert execute_run(run_id) == "failed"
    with session_scope() as session:
        run = get_run(session, run_id=run_id)
        assert run.status == "failed" and message in run.error


def _small_npz(home) -> None:
    """``small.npz`` in the data directory: 20 training and 6 held-out examples of 3
    features, two classes."""
    import numpy as np

    (home / "data").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    np.savez(
        home / "data" / "small.npz",
        x_train=rng.standard_normal((20, 3)).astype(np.float32),
        y_train=np.arange(20) % 2,
        x_test=rng.standard_normal((6, 3)).astype(np.float32),
        y_test=np.arange(6) % 2,
    )


@pytest.mark.parametrize(
    ("optimizer", "batch_sizes", "error"),
    [
        (
            {"name": "sgd", "lr": 0.1},
            (32, 8),
            "data.batch_size (32) is larger than the training set (20 ",
        ),
        ({"name": "gd", "lr": 0.1}, (32, 8), None),
        (
            {"name": "gd", "lr": 0.1},
            (8, 32),
            "probes.batch_size (32) is larger than the training set (20 ",
        ),
    ],
)
def test_batches_larger_than_a_data_file_fail_the_run(embedded_home, optimizer, batch_sizes, error):
    """Only the file tells the size of an npz training set: the worker refuses a larger
    minibatch or probe batch (rather than silently training on the full batch, or probing
    fewer examples than asked); gradient descent takes the whole set whatever the minibatch
    size says."""
    _small_npz(embedded_home)
    minibatch, probe_batch = batch_sizes
    run_id = _submit(
        model={"name": "mlp", "widths": [4]},
        data={"name": "npz", "file": "small.npz", "batch_size": minibatch},
        optimizer=optimizer,
        steps=5,
        probes={"every": 5, "batch_size": probe_batch},
    )
    assert execute_run(run_id) == ("completed" if error is None else "failed")
    with session_scope() as session:
        recorded = get_run(session, run_id=run_id).error
    assert recorded == error if error is None else recorded.startswith(error)


def test_parameter_limit_fails_the_run(embedded_home, monkeypatch):
    from dynascope.server.settings import get_settings

    run_id = _submit()
    monkeypatch.setenv("DYNASCOPE_LIMIT_MAX_PARAMETERS", "100")
    get_settings.cache_clear()
    assert execute_run(run_id) == "failed"
    with session_scope() as session:
        assert "limit of 100" in get_run(session, run_id=run_id).error


def test_initial_and_final_parameters_are_snapshotted(embedded_home):
    import numpy as np
    import torch

    from dynascope.server.services.snapshots import read_snapshot, snapshot_steps
    from dynascope.worker.registry import build_model, load_dataset

    run_id = _submit()
    execute_run(run_id)
    spec = RunSpec.model_validate(BASE)
    torch.manual_seed(spec.seed)
    model = build_model(spec.model, load_dataset(spec.data, data_dir=embedded_home))
    initial = torch.cat([p.detach().reshape(-1) for p in model.parameters()]).numpy()
    with session_scope() as session:
        assert snapshot_steps(session, run_id) == [0, 30]
        assert np.array_equal(read_snapshot(session, run_id, 0), initial)
        final = read_snapshot(session, run_id, 30)
    assert final.shape == initial.shape and not np.array_equal(final, initial)


def test_snapshots_respect_the_size_limit(embedded_home, monkeypatch):
    from dynascope.server.services.snapshots import snapshot_steps
    from dynascope.server.settings import get_settings

    monkeypatch.setenv("DYNASCOPE_LIMIT_MAX_SNAPSHOT_BYTES", "1000")
    get_settings.cache_clear()
    run_id = _submit()
    assert execute_run(run_id) == "completed"
    with session_scope() as session:
        assert snapshot_steps(session, run_id) == []


def test_a_trajectory_thinned_below_three_snapshots_fails_before_training(
    embedded_home, monkeypatch
):
    """npz: the spec cannot count the parameters, so the worker thins the snapshot cadence
    to the size limit once it has the data; a cadence that leaves fewer than the three
    snapshots the PCA needs fails the run before training, saying so, instead of completing
    with no trajectory."""
    from dynascope.server.settings import get_settings

    _small_npz(embedded_home)
    # an MLP 3-4-2: 26 parameters, 104 bytes a snapshot; room for two
    monkeypatch.setenv("DYNASCOPE_LIMIT_MAX_SNAPSHOT_BYTES", "250")
    get_settings.cache_clear()
    run_id = _submit(
        model={"name": "mlp", "widths": [4]},
        data={"name": "npz", "file": "small.npz", "batch_size": 10},
        steps=6,
        probes={"every": 3, "batch_size": 10, "trajectory": {"snapshot_every": 1}},
    )
    assert execute_run(run_id) == "failed"
    with session_scope() as session:
        run = get_run(session, run_id=run_id)
    assert "every 6 of 6 steps: fewer than the 3 the trajectory's PCA needs" in run.error
    assert run.step == 0
