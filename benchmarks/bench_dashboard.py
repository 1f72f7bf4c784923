"""Dashboard benchmark: time from navigation to every chart drawn on the compare page, in
headless Chromium, for 10 runs × 20,000 steps (and, for contrast, 10 runs × 1,000 steps),
and the payload each chart reads.

    python benchmarks/bench_dashboard.py [--repeats 5] [--runs 10] [--steps 20000]

The runs are written straight into a scratch SQLite store with the services' own writers
(MetricWriter, as a worker flushes), no training: per run, ``train/batch_loss`` at every step
and 45 probe series every 10 steps (losses, accuracies, lr, gradient norm and distance,
Hessian top-3, threshold, smallest eigenvalue, trace, NTK and Jacobian scalars, probe costs,
per-layer norms of 6 tensors). Then `dynascope api` serves them and Chromium (Debian's,
/usr/bin/chromium) opens ``#/compare?ids=...``; the page stamps ``data-charts-drawn`` with
``performance.now()`` (milliseconds since navigation start) once every chart has been drawn
by Plotly (or has said it has nothing to draw).

"cold": a fresh browser context (empty HTTP cache: Plotly.js is downloaded and compiled; the
compare page draws only 2-D charts, so it loads Plotly's cartesian bundle, 1.5 MB of
JavaScript, 0.5 MB gzipped); median of ``--repeats`` fresh contexts. "warm": the page opened
again in the same context (the browser's cache, as on a second visit). Target (issue 5): under
1.5 s on this machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
import numpy as np
from scratch_store import serving_api, use_store  # puts the repository root on sys.path

from tests.browser.conftest import CHROMIUM, CHROMIUM_ARGS

PROBE_EVERY = 10
LAYERS = [
    "layer1.linear.weight", "layer1.linear.bias", "layer2.linear.weight",
    "layer2.linear.bias", "head.weight", "head.bias",
]  # fmt: skip
FLUSH_POINTS = 50_000
TARGET_S = 1.5


def _spec(lr: float, seed: int, steps: int) -> dict[str, Any]:
    return {
        "name": f"sweep-lr{lr:g}-s{seed}",
        "seed": seed,
        "model": {"name": "mlp", "widths": [128, 128], "activation": "tanh"},
        "data": {"name": "digits", "batch_size": 128},
        "optimizer": {"name": "sgd", "lr": lr, "momentum": 0.9},
        "steps": steps,
        "probes": {
            "every": PROBE_EVERY,
            "batch_size": 512,
            "hessian": {"top_k": 3, "min_eigenvalue": True, "trace": True},
            "jacobian": {},
        },
    }


def _series(rng: np.random.Generator, steps: np.ndarray, lr: float) -> dict[str, np.ndarray]:
    """Plausible curves over ``steps`` for every probe key (shapes matter, not values)."""
    t = steps / max(1, steps[-1])
    loss = 2.3 * np.exp(-4 * lr * 10 * t) + 0.05 + 0.02 * rng.standard_normal(len(t))
    sharp = np.minimum(2 * (1 + 0.9) / lr, 5 + 200 * t) * (1 + 0.03 * rng.standard_normal(len(t)))
    out = {
        "train/loss": loss,
        "test/loss": loss * 1.1,
        "train/accuracy": 1 - loss / 2.5,
        "test/accuracy": 1 - loss / 2.3,
        "lr": np.full(len(t), lr),
        "grad_norm": 0.3 + 0.1 * rng.standard_normal(len(t)) ** 2,
        "distance_from_init": 10 * np.sqrt(t),
        "hessian/top_1": sharp,
        "hessian/top_2": 0.7 * sharp,
        "hessian/top_3": 0.5 * sharp,
        "hessian/threshold": np.full(len(t), 2 * (1 + 0.9) / lr),
        "hessian/min": -0.3 * np.exp(-t) + 0.01 * rng.standard_normal(len(t)),
        "hessian/trace": 5 * sharp,
        "hessian/trace_se": 0.3 * np.abs(rng.standard_normal(len(t))),
        "ntk/top_1": 200 + 900 * t,
        "ntk/velocity": np.abs(rng.standard_normal(len(t))) * np.exp(-3 * t),
        "jacobian/mean_largest": 0.3 + 2 * t,
        "cost/loss/seconds": 0.0005 + 0.0001 * rng.random(len(t)),
        "cost/norms/seconds": 0.0008 + 0.0001 * rng.random(len(t)),
        "cost/hessian/seconds": 0.08 + 0.01 * rng.random(len(t)),
        "cost/jacobian/seconds": 0.003 + 0.001 * rng.random(len(t)),
    }
    for i, layer in enumerate(LAYERS):
        out[f"weight_norm/{layer}"] = (3 + i) * (1 + 0.2 * t)
        out[f"spectral_norm/{layer}"] = (1 + i) * (1 + 0.3 * t)
        out[f"update_ratio/{layer}"] = 0.03 * np.exp(-t) * (1 + 0.1 * rng.random(len(t)))
        out[f"grad_norm/{layer}"] = 0.1 + 0.05 * rng.random(len(t))
    return out


def write_runs(count: int, steps: int, first_seed: int = 0) -> list[int]:
    """``count`` completed runs of ``steps`` steps with their metrics; their ids."""
    from dynascope.server.db.models import Run
    from dynascope.server.db.session import get_engine, session_scope
    from dynascope.server.schemas.run_spec import RunSpec
    from dynascope.server.services.metrics import MetricWriter

    ids = []
    rng = np.random.default_rng(first_seed)
    for index in range(count):
        lr = [0.01, 0.02, 0.05, 0.1, 0.2][index % 5]
        seed = first_seed + index // 5
        spec = RunSpec.model_validate(_spec(lr, seed, steps)).model_dump(mode="json")
        finished = datetime.now(UTC)
        started = finished - timedelta(seconds=steps / 1500)
        with session_scope() as session:
            run = Run(
                name=spec["name"], spec=spec, status="completed", step=steps, steps=steps,
                created_at=started - timedelta(seconds=1), started_at=started,
                finished_at=finished, heartbeat_at=finished, worker="bench",
                summary={"train/loss": 0.1, "test/loss": 0.12, "test/accuracy": 0.95},
                timings={"total_s": steps / 1500, "setup_s": 0.8, "train_s": steps / 2500,
                         "probe_loss_s": 0.1, "probe_norms_s": 0.2, "probe_hessian_s": 3.0},
            )  # fmt: skip
            session.add(run)
            session.flush()
            run_id = run.id
        every_step = np.arange(steps + 1)
        probe_steps = np.arange(0, steps + 1, PROBE_EVERY)
        batch = 2.3 * np.exp(-40 * lr * every_step / steps) + 0.1 * rng.random(steps + 1)
        probe_values = _series(rng, probe_steps, lr)
        points = [
            (step, key, value)
            for key, values in probe_values.items()
            for step, value in zip(probe_steps.tolist(), values.tolist(), strict=True)
        ]
        points += [
            (step, "train/batch_loss", value)
            for step, value in zip(every_step.tolist(), batch.tolist(), strict=True)
        ]
        # a worker's flushes: every key in step order across flushes, one writer per run
        points.sort(key=lambda point: point[0])
        writer = MetricWriter(run_id)
        for start in range(0, len(points), FLUSH_POINTS):
            with get_engine().begin() as connection:
                writer.write(connection, points[start : start + FLUSH_POINTS])
        ids.append(run_id)
    return ids


def measure(browser: Any, url: str, repeats: int) -> dict[str, Any]:
    """Navigation → all charts drawn (ms): ``repeats`` cold loads, each in a fresh browser
    context, and ``repeats`` warm loads (reloads in the last of those contexts)."""
    cold: list[float] = []
    warm: list[float] = []
    resources: list[dict[str, Any]] = []
    charts: dict[str, Any] = {}
    errors: list[str] = []
    for attempt in range(repeats):
        context = browser.new_context(viewport={"width": 1440, "height": 900})
        page = context.new_page()
        page.on("pageerror", lambda error: errors.append(str(error)))
        loads = repeats + 1 if attempt == repeats - 1 else 1
        for load in range(loads):
            page.goto("about:blank")
            page.goto(url)
            page.wait_for_selector("html[data-charts-drawn]", timeout=60_000)
            drawn = float(page.evaluate("document.documentElement.dataset.chartsDrawn"))
            (cold if load == 0 else warm).append(drawn)
            if attempt == 0:
                resources = page.evaluate(
                    "performance.getEntriesByType('resource').map((r) => ({url: r.name,"
                    " transfer: r.transferSize, body: r.encodedBodySize, end: r.responseEnd}))"
                )
                charts = page.evaluate(
                    "Object.fromEntries([...document.querySelectorAll('[data-chart]')]"
                    ".map((el) => [el.dataset.chart, {state: el.dataset.state, points:"
                    " Number(el.dataset.points || 0), traces: Number(el.dataset.traces || 0)}]))"
                )
        context.close()
    if errors:
        raise RuntimeError(f"the page failed: {errors}")
    return {
        "cold_ms": statistics.median(cold),
        "cold_all_ms": cold,
        "warm_ms": statistics.median(warm),
        "warm_all_ms": warm,
        "resources": resources,
        "charts": charts,
    }


def payload_per_chart(base: str, page_keys: dict[str, list[str]], ids: list[int], max_points: int):
    sizes = {}
    for chart, keys in page_keys.items():
        if not keys:
            continue
        total = 0
        for run_id in ids:
            response = httpx.get(
                f"{base}/api/v1/runs/{run_id}/metrics",
                params={"keys": ",".join(keys), "max_points": max_points},
                timeout=30,
            )
            response.raise_for_status()
            total += len(response.content)
        sizes[chart] = total
    return sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--short-steps", type=int, default=1_000, help="the contrast case")
    parser.add_argument("--repeats", type=int, default=5, help="cold and warm loads per case")
    args = parser.parse_args()
    if not CHROMIUM.exists():
        sys.exit(f"no Chromium at {CHROMIUM}: apt-get install chromium")
    from playwright.sync_api import sync_playwright

    from dynascope.server.db.session import dispose_engines

    with tempfile.TemporaryDirectory(prefix="bench-dashboard-") as tmp:
        home = Path(tmp) / "home"
        use_store(home=home)
        long_ids = write_runs(args.runs, args.steps)
        short_ids = write_runs(args.runs, args.short_steps, first_seed=100)
        dispose_engines()
        points = args.runs * (args.steps + 1 + 45 * (args.steps // PROBE_EVERY + 1))
        print(f"wrote {args.runs} runs × {args.steps} steps ({points:,} points) and "
              f"{args.runs} runs × {args.short_steps} steps")  # fmt: skip

        with serving_api(home, Path(tmp) / "api.log") as base:
            # The server gzips each Plotly.js bundle once per process: not a browser cost.
            for bundle in ("plotly.min.js", "plotly-cartesian.min.js"):
                httpx.get(f"{base}/vendor/{bundle}", headers={"accept-encoding": "gzip"})
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(
                    executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
                )
                results = {}
                for label, ids in (("long", long_ids), ("short", short_ids)):
                    url = f"{base}/#/compare?ids={','.join(map(str, ids))}"
                    results[label] = measure(browser, url, args.repeats)
                keys = _chart_keys(browser, base)
                browser.close()
            long = results["long"]
            metrics_urls = [
                r for r in long["resources"] if "/metrics?" in r["url"] and "keys=" in r["url"]
            ]
            max_points = int(parse_qs(urlparse(metrics_urls[0]["url"]).query)["max_points"][0])
            sizes = payload_per_chart(base, keys, long_ids, max_points)
            report(args, results, sizes, max_points, metrics_urls)


def _chart_keys(browser: Any, base: str) -> dict[str, list[str]]:
    """Each compare chart's metric keys, read from the dashboard's own module."""
    page = browser.new_page()
    page.goto(f"{base}/")
    keys = page.evaluate(
        "import('/compare_charts.js').then((m) => Object.fromEntries("
        "m.COMPARE_CHARTS.map((c) => [c.id, c.keys ?? []])))"
    )
    page.close()
    keys["per_layer"] = [f"weight_norm/{LAYERS[0]}"]  # the layer it shows first
    return keys


def report(args, results, sizes, max_points, metrics_urls) -> None:
    long, short = results["long"], results["short"]
    drawn = [name for name, c in long["charts"].items() if c["state"] == "drawn"]
    empty = [name for name, c in long["charts"].items() if c["state"] != "drawn"]
    warm_all = ", ".join(f"{t:.0f}" for t in long["warm_all_ms"])
    cold_all = ", ".join(f"{t:.0f}" for t in long["cold_all_ms"])
    drawn_points = sum(long["charts"][name]["points"] for name in drawn)
    plotly = [r for r in long["resources"] if "/vendor/plotly" in r["url"]]
    api = [r for r in long["resources"] if "/api/v1/" in r["url"]]

    def verdict(ms: float) -> str:
        return "met" if ms / 1000 < TARGET_S else "NOT met"

    lines = [
        f"compare page, {args.runs} runs, navigation -> all charts drawn (ms):",
        f"  {args.steps:>6} steps: cold median {long['cold_ms']:.0f} (cold loads: {cold_all}), "
        f"warm median {long['warm_ms']:.0f} (warm loads: {warm_all})",
        f"  {args.short_steps:>6} steps: cold median {short['cold_ms']:.0f}, warm median "
        f"{short['warm_ms']:.0f}",
        f"  target < {TARGET_S} s: warm {verdict(long['warm_ms'])}, "
        f"cold {verdict(long['cold_ms'])}",
        f"  charts drawn: {len(drawn)} ({drawn_points:,} points); nothing to draw (no run "
        f"recorded it): {', '.join(empty) or 'none'}",
    ]
    if plotly:
        name = plotly[0]["url"].rsplit("/", 1)[-1]
        lines.append(f"  Plotly.js: {name}, {plotly[0]['transfer'] / 1e6:.2f} MB transferred")
    lines += [
        f"  API responses, cold load: {sum(r['body'] for r in api) / 1e3:.0f} KB in "
        f"{len(api)} requests, {len(metrics_urls)} of them for series (per run: the charts' "
        "keys in 3 requests, and the per-layer chart's key)",
        "",
        f"payload per chart ({args.runs} runs x {args.steps} steps, max_points={max_points}, "
        "JSON as served):",
    ]
    for chart, size in sorted(sizes.items(), key=lambda item: -item[1]):
        points = long["charts"].get(chart, {}).get("points", 0)
        lines.append(f"  {chart:<16} {size / 1e3:8.1f} KB  ({points:,} points drawn)")
    print("\n".join(lines))
    summary = {key: long[key] for key in ("cold_ms", "warm_ms")}
    summary |= {f"short_{key}": short[key] for key in ("cold_ms", "warm_ms")}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
