"""The training loop of one run, with the probes on their cadence.

Step ``s`` names the parameters after ``s`` updates. At every step the loop records the
loss of the minibatch it is about to train on (``train/batch_loss``, at the current
parameters); at step 0, every ``probes.every`` steps and at the last step it runs the probes
on the fixed probe batch (the first ``probes.batch_size`` training examples) and the fixed
held-out batch (the first ``probes.batch_size`` test examples), in eval mode (BatchNorm on
running statistics, dropout off), through ``torch.func`` without touching the model. Images
for a convolutional model on the CPU are held channels-last when that pays and a trial pass
agrees (:mod:`.probes.memory_format`): training and probes then run 1.2 to 1.6 times as fast.

The flattened parameters at step 0 and at the end of a completed run are stored as
snapshots (float32, compressed), and with ``probes.trajectory`` every ``snapshot_every``
steps too, as long as the run's snapshots stay within the ``max_snapshot_bytes`` limit
(uncompressed size; specs are refused beyond it when the model's size is known from the spec,
otherwise the cadence is thinned here to fit). After the last step of a completed run come the
end-of-run analyses (``worker/analyses.py``): the training Jacobian, the trajectory's PCA and
the loss landscapes. Diverged, cancelled and stopped runs skip them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor, nn

from dynascope.server.errors import InvalidSpecError
from dynascope.server.schemas.data_specs import ExampleShape
from dynascope.server.schemas.run_spec import (
    RunSpec,
    check_batch_sizes,
    check_training_jacobian_size,
    smallest_fitting_cadence,
    snapshot_count,
)
from dynascope.server.settings import Limits
from dynascope.worker.analyses import measure_training_jacobian
from dynascope.worker.batches import minibatch_indices
from dynascope.worker.curvature_probe import CurvatureProber, ProbeMeasurement
from dynascope.worker.geometry_probe import measure_landscapes, measure_trajectory
from dynascope.worker.jacobian_probe import JacobianProber
from dynascope.worker.probes import (
    correct_predictions,
    detached_parameters,
    evaluation_sums,
    loss_and_gradient,
    measure_norms,
)
from dynascope.worker.recorder import RunRecorder
from dynascope.worker.registry import (
    Dataset,
    build_model,
    build_optimizer,
    count_parameters,
    images_in_preferred_format,
    is_full_batch,
    load_dataset,
    loss_function,
)

Outcome = Literal["completed", "diverged", "stopped"]

PROBE_MODES = {
    "hessian": "eval",
    "jacobian": "eval",
    "landscape": "eval",
    "training_jacobian": "train",
}
"""The mode each probe evaluates the model in, stored as ``meta["mode"]`` with its arrays:
eval for the curvature, Jacobian and landscape probes (running statistics, no dropout:
deterministic); train for the training Jacobian, which replays the training steps as they
ran (batch statistics). Trajectory PCA evaluates nothing."""


@dataclass
class TrainingResult:
    """How the loop ended, at which step, and where its time went (seconds)."""

    outcome: Outcome
    step: int
    diverged_step: int | None = None
    timings: dict[str, float] = field(default_factory=dict)


@dataclass
class _ProbeState:
    initial: dict[str, Tensor]
    before_update: dict[str, Tensor] | None = None
    spectral_vectors: dict[str, Tensor] | None = None


class _Prober:
    """Runs the probes of one run and records them; keeps the state they carry across steps
    (initial parameters, the warm start of the spectral norms)."""

    def __init__(
        self,
        spec: RunSpec,
        model: nn.Module,
        data: Dataset,
        device: torch.device,
        optimizer: torch.optim.Optimizer,
    ):
        self.spec = spec
        self.model = model
        self.task = data.task
        self.loss_fn = loss_function(data.task)
        size = spec.probes.batch_size
        self.x_probe = data.x_train[:size].to(device)
        self.y_probe = data.y_train[:size].to(device)
        self.x_held = data.x_test[:size].to(device)
        self.y_held = data.y_test[:size].to(device)
        # Views of the model's parameters (updated in place by the optimizer, so always
        # current), and a buffer that keeps them before an update, both made once.
        self.params = detached_parameters(model)
        self.state = _ProbeState(initial=_copy(self.params))
        self._before_update = _copy(self.params) if spec.probes.norms else {}
        self.modes = _ModeSwitch(model)
        self.seconds: dict[str, float] = {"loss": 0.0, "norms": 0.0}
        self.optimizer = optimizer
        self.started = time.perf_counter()  # the run's clock: time/elapsed at each probe
        self.snapshots: list[tuple[int, Tensor]] = []
        self.snapshot_every = spec.steps or 1
        self.checkpoints: dict[int, dict[str, Tensor]] = {}
        self.curvature = (
            CurvatureProber(spec, model, self.loss_fn, data.task) if spec.probes.hessian else None
        )
        if self.curvature is not None:
            self.seconds["hessian"] = 0.0
        jacobian = spec.probes.jacobian
        self.jacobian = JacobianProber(jacobian, model, self.x_probe) if jacobian else None
        if self.jacobian is not None:
            self.seconds["jacobian"] = 0.0

    def probe(self, step: int, recorder: RunRecorder, lr: float) -> float:
        """Measure everything enabled at the current parameters; returns the probe-batch loss."""
        was_training = self.modes.set(False)
        try:
            start = time.perf_counter()
            values = {"lr": lr, "time/elapsed": start - self.started}
            params = self.params
            losses, grads = self._losses()
            values |= losses
            elapsed = time.perf_counter() - start
            self.seconds["loss"] += elapsed
            values["cost/loss/seconds"] = elapsed
            if self.spec.probes.norms and math.isfinite(values["train/loss"]):
                values |= self._norms(params, grads)
            if self.curvature is not None and math.isfinite(values["train/loss"]):
                values |= self._curvature(step, recorder, lr)
            if self.jacobian is not None and math.isfinite(values["train/loss"]):
                values |= self._jacobian(step, recorder)
            recorder.record(step, values)
            return values["train/loss"]
        finally:
            self.modes.set(was_training)

    def _losses(self) -> tuple[dict[str, float], dict[str, Tensor]]:
        """Loss (and accuracy) on the probe batch and on the held-out batch, brought to the
        host in one transfer, and the probe batch's gradient (for the norms)."""
        loss, outputs, gradient = loss_and_gradient(
            self.model, self.loss_fn, self.x_probe, self.y_probe
        )
        held_loss, held_correct = evaluation_sums(
            self.model, self.loss_fn, self.x_held, self.y_held, task=self.task
        )
        if held_correct is None:
            train, test = torch.stack([loss.double(), held_loss.double()]).tolist()
            return {"train/loss": train, "test/loss": test}, gradient
        correct = correct_predictions(outputs, self.y_probe)
        scalars = [loss.double(), held_loss.double(), correct.double(), held_correct.double()]
        train, test, train_correct, test_correct = torch.stack(scalars).tolist()
        return {
            "train/loss": train,
            "test/loss": test,
            "train/accuracy": train_correct / len(self.y_probe),
            "test/accuracy": test_correct / len(self.y_held),
        }, gradient

    def _norms(self, params: dict[str, Tensor], grads: dict[str, Tensor]) -> dict[str, float]:
        start = time.perf_counter()
        result = measure_norms(
            params,
            gradient=grads,
            initial=self.state.initial,
            previous=self.state.before_update,
            spectral_state=self.state.spectral_vectors,
        )
        self.state.before_update = None
        if result.spectral is not None:
            self.state.spectral_vectors = result.spectral.vectors
        elapsed = time.perf_counter() - start
        self.seconds["norms"] += elapsed
        return result.metrics() | {"cost/norms/seconds": elapsed}

    def _curvature(self, step: int, recorder: RunRecorder, lr: float) -> dict[str, float]:
        assert self.curvature is not None
        curvature = self.curvature
        return self._measured(
            "hessian",
            lambda: curvature.measure(step, self.x_probe, self.y_probe, lr, self.optimizer),
            step,
            recorder,
        )

    def _jacobian(self, step: int, recorder: RunRecorder) -> dict[str, float]:
        assert self.jacobian is not None
        return self._measured("jacobian", self.jacobian.measure, step, recorder)

    def _measured(
        self,
        name: str,
        measure: Callable[[], ProbeMeasurement],
        step: int,
        recorder: RunRecorder,
    ) -> dict[str, float]:
        """Run one probe, hand its arrays to the recorder, account its time; its metrics."""
        started = time.perf_counter()
        measured = measure()
        self._record(recorder, step, measured, name, started, metrics=False)
        return measured.metrics

    def snapshot(self, step: int, recorder: RunRecorder) -> None:
        """Hand the flattened parameters at ``step`` to the recorder (finite ones only), and
        keep them for the trajectory's PCA when it is enabled."""
        flat = torch.cat([p.detach().reshape(-1) for p in self.model.parameters()])
        if bool(torch.isfinite(flat).all()):
            host = flat.to("cpu", torch.float32)
            recorder.snapshot(step, host.numpy())
            if self.spec.probes.trajectory is not None:
                self.snapshots.append((step, host))

    def analyse(
        self, recorder: RunRecorder, x_train: Tensor, y_train: Tensor, *, lr: float, limits: Limits
    ) -> None:
        """The end-of-run analyses of a completed run, recorded at its last step."""
        step = self.spec.steps
        values: dict[str, float] = {}
        options = self.spec.probes.training_jacobian
        if options is not None:
            initial, final = self.state.initial, _copy(detached_parameters(self.model))

            def jacobian() -> ProbeMeasurement:
                return measure_training_jacobian(
                    options,
                    self.model,
                    self.loss_fn,
                    x_train,
                    y_train,
                    initial=initial,
                    final=final,
                    lr=lr,
                    steps=step,
                    max_parameters=limits.max_training_jacobian_parameters,
                )

            values |= self._measured("training_jacobian", jacobian, step, recorder)
        if values:
            recorder.record(step, values)
        self._geometry(recorder)

    def _geometry(self, recorder: RunRecorder) -> None:
        """Trajectory PCA and loss landscapes (eval mode), recorded at their steps."""
        trajectory, landscape = self.spec.probes.trajectory, self.spec.probes.landscape
        if trajectory is None and landscape is None:
            return
        last = self.spec.steps
        steps = [step for step, _ in self.snapshots]
        stacked = torch.stack([flat for _, flat in self.snapshots]) if self.snapshots else None
        pca = None
        if trajectory is not None and stacked is not None:
            started = time.perf_counter()
            measured, pca = measure_trajectory(
                trajectory, steps, stacked, snapshot_every=self.snapshot_every
            )
            self._record(recorder, last, measured, "trajectory", started)
        if landscape is None:
            return
        was_training = self.model.training
        self.model.eval()
        try:
            started = time.perf_counter()
            final = _copy(detached_parameters(self.model))
            device_snapshots = None if stacked is None else stacked.to(self.x_probe.device)
            measured_list = measure_landscapes(
                landscape, self.model, self.loss_fn, self.task,
                (self.x_probe, self.y_probe), (self.x_held, self.y_held),
                checkpoints=self.checkpoints | (
                    {last: final} if last in (landscape.checkpoints or [last]) else {}
                ),
                initial=self.state.initial, final=final, last_step=last,
                snapshots=device_snapshots, snapshot_steps=steps, pca=pca,
            )  # fmt: skip
            for step, measured in measured_list:
                self._record(recorder, step, measured, "landscape", started)
                started = time.perf_counter()
        finally:
            self.model.train(was_training)

    def _record(
        self,
        recorder: RunRecorder,
        step: int,
        measured: ProbeMeasurement,
        name: str,
        started: float,
        *,
        metrics: bool = True,
    ) -> None:
        """Hand a measurement's arrays (and its metrics, unless the caller records them with
        others) to the recorder; account the time since ``started`` to probe ``name``."""
        if metrics and measured.metrics:
            recorder.record(step, measured.metrics)
        mode = {"mode": PROBE_MODES[name]} if name in PROBE_MODES else {}
        for kind, values, meta in measured.arrays:
            recorder.record_array(step, kind, values, meta | mode)
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started

    def keep_checkpoint(self, step: int) -> None:
        """Keep the parameters at ``step`` if a landscape is centred there (the last step's
        are taken at the end)."""
        landscape = self.spec.probes.landscape
        wanted = () if landscape is None else landscape.checkpoints or ()
        if step in wanted and step != self.spec.steps:
            self.checkpoints[step] = _copy(detached_parameters(self.model))

    def remember_before_update(self) -> None:
        """Keep the parameters before the coming update (for the update/weight ratio)."""
        if self.spec.probes.norms:
            kept = list(self._before_update.values())
            torch._foreach_copy_(kept, list(self.params.values()))
            self.state.before_update = self._before_update


class _ModeSwitch:
    """Switches a model between train and eval mode every few steps. ``Module.train`` walks
    the module tree in Python; when no module overrides it, setting every module's
    ``training`` flag from a list made once is the same, for less."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.modules = list(model.modules())
        self.plain = all(type(module).train is nn.Module.train for module in self.modules)

    def set(self, training: bool) -> bool:
        """Put the model in train (``True``) or eval mode; returns the mode it was in."""
        was = self.model.training
        if not self.plain:
            self.model.train(training)
            return was
        for module in self.modules:
            module.training = training
        return was


def _copy(params: dict[str, Tensor]) -> dict[str, Tensor]:
    return {name: tensor.clone() for name, tensor in params.items()}


def train(
    spec: RunSpec,
    *,
    recorder: RunRecorder,
    data_dir: Path,
    device: torch.device,
    limits: Limits,
    should_stop: Callable[[], bool],
) -> TrainingResult:
    """Train ``spec`` from scratch, recording into ``recorder``; deterministic on CPU for a
    given spec. Stops early (outcome "stopped") as soon as ``should_stop()`` is true, and
    ends as "diverged" at the first non-finite loss, with everything before it recorded."""
    started = time.perf_counter()
    torch.manual_seed(spec.seed)
    data = load_dataset(spec.data, data_dir=data_dir)
    shape = ExampleShape(data.input_shape, data.num_outputs, data.input_kind, data.vocab_size)
    check_batch_sizes(spec, len(data.x_train), located=False, shape=shape)  # files: known now
    model = build_model(spec.model, data).to(device)
    data = images_in_preferred_format(data, model)
    n_params = count_parameters(model)
    if n_params > limits.max_parameters:
        raise InvalidSpecError(
            f"the model has {n_params} parameters, above the configured limit of "
            f"{limits.max_parameters}"
        )
    if spec.probes.training_jacobian is not None:
        check_training_jacobian_size(n_params, spec.steps, limits, located=False)
    snapshot_every = _snapshot_cadence(spec, n_params, limits)
    optimizer, scheduler = build_optimizer(spec.optimizer, model.parameters(), steps=spec.steps)
    loss_fn = loss_function(data.task)
    batch_size = len(data.x_train) if is_full_batch(spec.optimizer) else spec.data.batch_size
    batches = minibatch_indices(
        len(data.x_train), batch_size, generator=torch.Generator().manual_seed(spec.seed)
    )
    x_train, y_train = data.x_train.to(device), data.y_train.to(device)
    prober = _Prober(spec, model, data, device, optimizer)
    prober.started = started
    prober.snapshot_every = snapshot_every
    every = spec.probes.every
    setup_s = time.perf_counter() - started
    model.train()
    for step in range(spec.steps + 1):
        if step % snapshot_every == 0 or step == spec.steps:
            prober.snapshot(step, recorder)
        prober.keep_checkpoint(step)
        if step % every == 0 or step == spec.steps:
            probe_loss = prober.probe(step, recorder, scheduler.get_last_lr()[0])
            if not math.isfinite(probe_loss):
                return _ended("diverged", step, started, setup_s, prober, diverged_step=step)
        if step == spec.steps:
            break
        if should_stop():
            return _ended("stopped", step, started, setup_s, prober)
        indices = next(batches).to(device)
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(x_train[indices]), y_train[indices])
        loss_value = loss.item()
        recorder.record(step, {"train/batch_loss": loss_value})
        if not math.isfinite(loss_value):
            return _ended("diverged", step, started, setup_s, prober, diverged_step=step)
        loss.backward()
        if (step + 1) % every == 0 or step + 1 == spec.steps:
            prober.remember_before_update()
        optimizer.step()
        scheduler.step()
        recorder.progress(step + 1)
    prober.analyse(recorder, x_train, y_train, lr=spec.optimizer.lr, limits=limits)
    return _ended("completed", spec.steps, started, setup_s, prober)


def _snapshot_cadence(spec: RunSpec, n_params: int, limits: Limits) -> int:
    """Snapshot every this many steps: ``probes.trajectory.snapshot_every`` thinned to the
    smallest multiple that fits the snapshot limits (the spec's check refuses a cadence that
    does not fit when it can count the parameters; here the data has told us); without a
    trajectory, only the first and last steps."""
    trajectory = spec.probes.trajectory
    if trajectory is None:
        return spec.steps or 1
    every = trajectory.snapshot_every
    if snapshot_count(spec.steps, every) * 4 * n_params <= limits.max_snapshot_bytes and (
        snapshot_count(spec.steps, every) <= limits.max_snapshots
    ):
        return every
    fitting = smallest_fitting_cadence(n_params, spec.steps, every, limits)
    if fitting is None:
        raise InvalidSpecError(
            f"even two snapshots of {n_params} parameters exceed max_snapshot_bytes "
            f"({limits.max_snapshot_bytes} bytes): probes.trajectory cannot be recorded"
        )
    if snapshot_count(spec.steps, fitting) < 3:  # the PCA needs three (the spec checks this
        raise InvalidSpecError(  # for the cadence asked; thinning can go below)
            f"the snapshot limits (max_snapshot_bytes {limits.max_snapshot_bytes}, max_snapshots"
            f" {limits.max_snapshots}) allow snapshots of the model's {n_params} parameters only"
            f" every {fitting} of {spec.steps} steps: fewer than the 3 the trajectory's PCA"
            " needs; train for fewer parameters or raise the limits"
        )
    return fitting


def _ended(
    outcome: Outcome,
    step: int,
    started: float,
    setup_s: float,
    prober: _Prober,
    diverged_step: int | None = None,
) -> TrainingResult:
    total = time.perf_counter() - started
    probes = dict(prober.seconds)
    timings = {
        "total_s": total,
        "setup_s": setup_s,
        "train_s": total - setup_s - sum(probes.values()),
    } | {f"probe_{name}_s": seconds for name, seconds in probes.items()}
    return TrainingResult(outcome, step, diverged_step, timings)
