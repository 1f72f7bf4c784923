"""Contiguous against channels-last images for the registry's convolutional models on the CPU:
the wall time of one gradient (forward and backward pass on 128 images), in train and in eval
mode, medians of 5 after a warm-up, both formats measured back to back.

    python benchmarks/bench_memory_format.py [--repeats 3]

The runner holds a convolutional model's images channels-last when it has no batch norm over
fewer than 16 channels and a trial pass agrees (``worker/probes/memory_format.py``); this
shows what that choice gains, where channels-last would lose, and (last column) what the
runner picks. Then a whole run through the real runner (metrics written to SQLite): a CNN
16-32 on 2000 random 3×32×32 images, minibatch 128, 200 steps, the default probes every 10
steps on 256 examples, as the runner picks (channels-last) and with contiguous images forced,
interleaved, medians of ``--repeats``. Torch uses its default thread count (printed).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from scratch_store import run_in_process, use_store

from dynascope.server.schemas.data_specs import RandomImagesSpec
from dynascope.server.schemas.model_specs import CNNSpec, ResNetSpec
from dynascope.worker.probes.memory_format import prefers_channels_last
from dynascope.worker.probes.params import loss_and_gradient
from dynascope.worker.registry import build_model, load_dataset, loss_function

LOSS = loss_function("classification")
NO_FILES = Path("/nonexistent")  # random images are generated: no files read
BATCH = 128

CASES: list[tuple[str, CNNSpec | ResNetSpec, int]] = [
    ("cnn 16-32 (default), 32x32", CNNSpec(), 32),
    ("cnn 16-32, batch norm, 32x32", CNNSpec(batch_norm=True), 32),
    ("cnn 16-32, 16x16", CNNSpec(), 16),
    ("cnn 4-8-16-32-64, 32x32", CNNSpec(channels=[4, 8, 16, 32, 64]), 32),
    ("cnn 4-8-16-32-64, batch norm, 32x32", CNNSpec(channels=[4, 8, 16, 32, 64], batch_norm=True),
     32),
    ("cnn 8-8, batch norm, 32x32", CNNSpec(channels=[8, 8], batch_norm=True), 32),
    ("resnet width 8, 16x16", ResNetSpec(width=8), 16),
    ("resnet width 8, 32x32", ResNetSpec(width=8), 32),
    ("resnet width 16 (default), 32x32", ResNetSpec(), 32),
    ("resnet width 16, no batch norm, 32x32", ResNetSpec(batch_norm=False), 32),
    ("resnet width 8, no batch norm, 16x16", ResNetSpec(width=8, batch_norm=False), 16),
]  # fmt: skip


def gradient_ms(model: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> float:
    """Median milliseconds of one gradient on ``inputs`` over 5 runs after a warm-up."""
    loss_and_gradient(model, LOSS, inputs, targets)
    times = []
    for _ in range(5):
        started = time.perf_counter()
        loss_and_gradient(model, LOSS, inputs, targets)
        times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times)


RUN = {
    "name": "memory format",
    "model": {"name": "cnn", "channels": [16, 32]},
    "data": {"name": "random_images", "n_samples": 2000, "batch_size": 128},
    "optimizer": {"name": "sgd", "lr": 0.05},
    "steps": 200,
    "probes": {"every": 10, "batch_size": 256},
}


def compare_runs(repeats: int) -> None:
    """The whole run of ``RUN`` as the runner picks, and with contiguous images forced (the
    runner's choice patched out), interleaved."""
    import dynascope.worker.registry.datasets as datasets

    use_store(home=Path(tempfile.mkdtemp(prefix="dynascope-bench-")))
    picks = datasets.prefers_channels_last
    forced = {"as the runner picks (channels-last)": picks, "contiguous forced": None}
    results: dict[str, list[tuple[float, dict[str, float]]]] = {name: [] for name in forced}
    run_in_process(RUN | {"steps": 20})  # warm-up: imports, dataset, first allocations
    for _ in range(repeats):
        for name, choice in forced.items():
            datasets.prefers_channels_last = choice or (lambda *_args, **_kwargs: False)
            results[name].append(run_in_process(RUN))
    datasets.prefers_channels_last = picks
    print(f"\na CNN 16-32 run of 200 steps through the runner, medians of {repeats}:")
    for name, runs in results.items():
        wall = statistics.median(seconds for seconds, _ in runs)
        parts = {
            key: statistics.median(timings[key] for _, timings in runs)
            for key in ("train_s", "probe_loss_s", "probe_norms_s")
        }
        print(f"  {name:<38} {wall:6.2f} s  (" + ", ".join(
            f"{key} {value:.2f}" for key, value in parts.items()) + ")")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; one gradient on "
          f"{BATCH} images, medians of 5 (ms), contiguous / channels-last = speed-up")  # fmt: skip
    for name, spec, size in CASES:
        data = load_dataset(RandomImagesSpec(n_samples=2 * BATCH, size=size), data_dir=NO_FILES)
        torch.manual_seed(0)
        model = build_model(spec, data)
        x, y = data.x_train[:BATCH], data.y_train[:BATCH]
        images = x.contiguous(memory_format=torch.channels_last)
        cells = []
        for training in (True, False):
            model.train(training)
            plain, last = gradient_ms(model, x, y), gradient_ms(model, images, y)
            mode = "train" if training else "eval"
            cells.append(f"{mode}: {plain:6.1f} / {last:6.1f} = {plain / last:4.2f}x")
        chosen = "channels-last" if prefers_channels_last(model, x) else "contiguous"
        print(f"  {name:<40} " + " | ".join(cells) + f"  runner: {chosen}")
    compare_runs(args.repeats)


if __name__ == "__main__":
    main()
