"""Training throughput with and without the probes of issue 2 (losses and accuracies, weight
and spectral norms, gradient norm, distance from init, update ratios), through the real
runner on the embedded store (metrics written to SQLite as in a real run).

    python benchmarks/bench_training.py [--steps 2000] [--repeats 3]

The fixed run: MLP 64-128-128-10 (tanh) on digits, SGD lr 0.1, minibatch 128 — the example
of DESIGN.md. Target (issue 2): probes every 10 steps add at most 20% to the wall time.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import torch
from scratch_store import run_in_process, use_store


def _spec(steps: int, every: int, probe_batch: int, norms: bool) -> dict:
    return {
        "name": "bench",
        "model": {"name": "mlp", "widths": [128, 128], "activation": "tanh"},
        "data": {"name": "digits", "batch_size": 128},
        "optimizer": {"name": "sgd", "lr": 0.1},
        "steps": steps,
        "probes": {"every": every, "batch_size": probe_batch, "norms": norms},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    use_store(home=Path(tempfile.mkdtemp(prefix="dynascope-bench-")))

    def run(spec: dict) -> float:
        return run_in_process(spec)[0]

    steps = args.steps
    configs = {
        "no probes": _spec(steps, steps, 128, norms=False),
        "probes every 10, probe batch 128": _spec(steps, 10, 128, norms=True),
        "  of which losses only (norms off)": _spec(steps, 10, 128, norms=False),
        "probes every 10, probe batch 512": _spec(steps, 10, 512, norms=True),
    }
    run(_spec(50, 10, 128, norms=True))  # warm-up: imports, dataset, first allocations
    times: dict[str, list[float]] = {name: [] for name in configs}
    for _ in range(args.repeats):
        for name, spec in configs.items():
            times[name].append(run(spec))
    print(f"{steps} steps, torch threads: {torch.get_num_threads()}, median of {args.repeats}")
    base = statistics.median(times["no probes"])
    for name, values in times.items():
        wall = statistics.median(values)
        print(
            f"{name:<34} {wall:6.2f} s  {steps / wall:7.0f} steps/s  "
            f"overhead {100 * (wall / base - 1):+5.1f}%"
        )


if __name__ == "__main__":
    main()
