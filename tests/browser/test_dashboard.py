"""The dashboard in a real browser against a real instance: submit a run through the form
and watch it complete live, every enabled chart of a run drawn with data, two runs compared,
a 422 shown next to the field it names, keyboard-only use."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

try:
    from playwright.sync_api import expect
except ImportError:  # the browser fixture skips (or fails) every test, saying why
    expect = None

from tests.browser.conftest import submit
from tests.integration.processes import small_spec, wait_for_run

pytestmark = pytest.mark.integration

PROBES = {
    "every": 10,
    "batch_size": 128,
    "hessian": {"top_k": 2, "min_eigenvalue": True, "trace": True, "density": True},
    "jacobian": {"n_inputs": 16, "top_k": 10},
}
DRAWN_WITH_HESSIAN_AND_JACOBIAN = {
    "loss", "accuracy", "weight_norms", "update_ratios", "grad_norm", "distance",
    "sharpness", "min_eigenvalue", "trace", "density", "jacobian_io", "ntk", "ntk_velocity",
    "cost_time", "cost_totals",
}  # fmt: skip
# which Plotly.js bundles the page loaded (server/api/routes/vendor.py)
PLOTLY_BUNDLES = """() => performance.getEntriesByType("resource")
  .map((r) => new URL(r.name).pathname).filter((p) => p.startsWith("/vendor/plotly"))"""

END_OF_RUN = {"training_jacobian", "landscape_contour", "landscape_surface",
              "landscape_slices", "trajectory", "explained_variance"}  # fmt: skip

CHART_STATES = """() => Object.fromEntries([...document.querySelectorAll("[data-chart]")]
  .map((el) => {
  const traces = el.querySelector(".plot").data ?? [];
  const points = traces.reduce(
    (n, t) => n + (t.z ? t.z.flat().length : (t.y ?? t.x ?? []).length), 0);
  return [el.dataset.chart, {
    state: el.dataset.state, traces: traces.length, points,
    names: traces.map((t) => t.name ?? ""), colors: traces.map((t) => t.line?.color ?? null),
    message: el.querySelector(".state-message").textContent,
  }];
}))"""


def field(page: Any, path: str) -> Any:
    """The input (or select) of the form field named ``path`` ("model.widths")."""
    return page.locator(f'[data-field="{path}"]').locator("input, select").first


@pytest.fixture(scope="module")
def probed_run(dashboard) -> int:
    """A finished run with the curvature and Jacobian probes."""
    spec = small_spec(name="probed", model={"name": "mlp", "widths": [16]}, probes=PROBES)
    run_id = submit(dashboard, spec)
    assert wait_for_run(dashboard, run_id)["status"] == "completed"
    return run_id


@pytest.fixture(scope="module")
def two_runs(dashboard) -> tuple[int, int]:
    """Two finished runs that differ only in their learning rate."""
    ids = tuple(
        submit(dashboard, small_spec(name="pair", optimizer={"name": "sgd", "lr": lr}, steps=80))
        for lr in (0.05, 0.2)
    )
    for run_id in ids:
        assert wait_for_run(dashboard, run_id)["status"] == "completed"
    return ids  # type: ignore[return-value]


def test_submit_through_the_form_and_watch_it_complete_live(page, screenshots):
    page.goto("/#/new")
    field(page, "name").fill("from-the-form")
    field(page, "steps").fill("200")
    field(page, "model.widths").fill("16")
    field(page, "data.batch_size").fill("64")
    field(page, "probes.every").fill("20")
    field(page, "probes.batch_size").fill("128")
    page.locator('[data-field="probes.hessian"] > legend input').check()
    field(page, "probes.hessian.top_k").fill("2")
    field(page, "probes.hessian.trace").check()
    page.screenshot(path=screenshots / "form.png", full_page=True)
    # The document stays (hash routes): note every status each table row shows, from the
    # moment it appears, to see the row change without a reload.
    page.evaluate(
        """() => {
          window.notReloaded = true;
          window.seen = {};
          new MutationObserver(() => {
            for (const row of document.querySelectorAll("#runs-table tr[data-run-id]")) {
              const seen = (window.seen[row.dataset.runId] ??= []);
              if (seen.at(-1) !== row.dataset.status) seen.push(row.dataset.status);
            }
          }).observe(document.body, { subtree: true, childList: true, attributes: true });
        }"""
    )
    page.get_by_role("button", name="Start run").click()

    page.wait_for_url("**/#/runs")
    row = page.locator("#runs-table tr[data-run-id]", has_text="from-the-form")
    expect(row).to_have_count(1)
    expect(page.get_by_role("status").filter(has_text="submitted")).to_be_visible()
    expect(row.locator(".status")).to_have_text("completed", timeout=180_000)
    expect(row.locator("progress")).to_have_attribute("value", "200")
    run_id = int(row.get_attribute("data-run-id"))
    seen = page.evaluate(f"window.seen['{run_id}']")
    assert len(seen) >= 2 and seen[0] in {"queued", "running"} and seen[-1] == "completed", seen
    assert page.evaluate("window.notReloaded") is True  # updated live, not reloaded
    assert any(url.endswith("/api/v1/events") for url in page.requests)  # server-sent events
    # its worker is alive: the page read /health, and says nothing about workers
    expect(page.locator("#no-worker")).to_have_attribute("data-workers-alive", "1")
    expect(page.locator("#no-worker")).to_be_hidden()
    page.screenshot(path=screenshots / "runs.png", full_page=True)

    created = page.evaluate(f"fetch('/api/v1/runs/{run_id}').then((r) => r.json())")
    assert created["spec"]["model"]["widths"] == [16] and created["steps"] == 200
    assert created["spec"]["probes"]["hessian"]["trace"] is True
    assert created["spec"]["probes"]["jacobian"] is None  # left off in the form


def test_detail_draws_every_enabled_chart(page, probed_run, screenshots):
    page.goto(f"/#/runs/{probed_run}")
    page.wait_for_selector("html[data-charts-drawn]", timeout=30_000)
    charts = page.evaluate(CHART_STATES)
    page.screenshot(path=screenshots / "detail.png", full_page=True)
    for name in DRAWN_WITH_HESSIAN_AND_JACOBIAN:
        chart = charts[name]
        assert chart["state"] == "drawn" and chart["traces"] > 0 and chart["points"] > 0, (
            name,
            chart,
        )
    for name in END_OF_RUN:  # those probes were not enabled: the chart says so
        assert charts[name]["state"] == "empty", (name, charts[name])
        assert "not enabled" in charts[name]["message"], (name, charts[name])
    # the loss has its minibatch series at every step (60 steps + the last)
    assert charts["loss"]["points"] >= 60
    # spectra are asked for thinned, as the charts draw them (a long run costs a short one's)
    assert any("/spectra?max_entries=" in url for url in page.requests)
    # sharpness is drawn against its stability threshold
    assert any("lr" in name for name in charts["sharpness"]["names"])
    # each chart says what it shows and where the method comes from
    captions = page.locator("[data-chart] .caption .source")
    assert captions.count() == len(charts)


def test_detail_follows_a_running_run_live(page, dashboard):
    run_id = submit(
        dashboard, small_spec(name="live", steps=3000, probes={"every": 100, "batch_size": 128})
    )
    page.goto(f"/#/runs/{run_id}")
    page.evaluate("window.notReloaded = true")
    expect(page.locator(".run-head .status")).to_have_text("completed", timeout=120_000)
    # the charts were redrawn up to the last step, from the stream's final event
    page.wait_for_function(
        "() => document.querySelector('[data-chart=loss] .plot').data?.[0].x.at(-1) === 2999",
        timeout=30_000,
    )
    expect(page.locator(".run-head progress")).to_have_attribute("value", "3000")
    assert page.evaluate("window.notReloaded") is True
    assert any(url.endswith(f"/api/v1/runs/{run_id}/events") for url in page.requests)


@pytest.fixture(scope="module")
def diverged_run(dashboard) -> dict[str, Any]:
    """A run that diverged (its ``error`` says why), with the curvature probe on."""
    spec = small_spec(
        name="diverging",
        model={"name": "mlp", "widths": [32], "activation": "relu"},
        data={"name": "teacher_student", "n_samples": 500, "dim": 8, "batch_size": 64},
        optimizer={"name": "sgd", "lr": 3.0},
        steps=200,
        probes={"every": 10, "batch_size": 128, "hessian": {"top_k": 1}},
    )
    run = wait_for_run(dashboard, submit(dashboard, spec))
    assert run["status"] == "diverged" and run["error"], run
    return run


@pytest.fixture(scope="module")
def curvature_runs(dashboard) -> dict[str, int]:
    """Finished runs with the curvature probe and only its top eigenvalue (SGD, Adam, Adam on
    the Gauss-Newton matrix), and one (SGD) on the Gauss-Newton matrix with its trace and
    density."""
    probes = {"every": 10, "batch_size": 128}
    specs = {
        "sgd": small_spec(name="sgd-hessian", steps=30, probes=probes | {"hessian": {}}),
        "adam": small_spec(
            name="adam-hessian",
            steps=30,
            optimizer={"name": "adam", "lr": 0.003},
            probes=probes | {"hessian": {}},
        ),
        "ggn": small_spec(
            name="ggn",
            steps=30,
            probes=probes | {"hessian": {"matrix": "ggn", "trace": True, "density": True}},
        ),
        "adam_ggn": small_spec(
            name="adam-ggn",
            steps=30,
            optimizer={"name": "adam", "lr": 0.003},
            probes=probes | {"hessian": {"matrix": "ggn"}},
        ),
    }
    ids = {name: submit(dashboard, spec) for name, spec in specs.items()}
    for run_id in ids.values():
        assert wait_for_run(dashboard, run_id)["status"] == "completed"
    return ids


@pytest.fixture(scope="module")
def resnet_run(dashboard) -> int:
    """A finished tiny ResNet (batch norm by default, 29 parameter tensors) with the
    curvature probe."""
    spec = small_spec(
        name="resnet",
        model={"name": "resnet", "width": 4, "depth": 1},
        steps=10,
        probes={"every": 5, "batch_size": 64, "hessian": {}},
    )
    run_id = submit(dashboard, spec)
    assert wait_for_run(dashboard, run_id)["status"] == "completed"
    return run_id


def test_failed_or_diverged_run_shows_its_error_and_step(page, diverged_run):
    run = diverged_run
    page.goto(f"/#/runs/{run['id']}")
    banner = page.locator("#run-error")
    expect(banner).to_contain_text(f"Diverged at step {run['diverged_step']}")
    expect(banner).to_contain_text("non-finite")
    # the server's message is a sentence of its own: capitalised, with its full stop
    expect(banner).to_contain_text(re.compile(r"\. The loss became non-finite at step \d+\. Every"))
    page.wait_for_selector("html[data-charts-drawn]", timeout=30_000)
    loss = page.evaluate(
        "() => document.querySelector('[data-chart=loss] .plot').layout.shapes.map((s) => s.x0)"
    )
    assert loss == [run["diverged_step"]]  # the charts mark the step


def test_compare_two_runs(page, two_runs, screenshots):
    low, high = two_runs
    page.goto(f"/#/compare?ids={low},{high}")
    page.wait_for_selector("html[data-charts-drawn]", timeout=30_000)
    legend = page.locator(".legend li")
    expect(legend).to_have_count(2)
    expect(legend.nth(0)).to_contain_text("lr=0.05")
    expect(legend.nth(1)).to_contain_text("lr=0.2")
    charts = page.evaluate(CHART_STATES)
    page.screenshot(path=screenshots / "compare.png", full_page=True)
    for name in ("batch_loss", "train_loss", "test_loss", "test_accuracy", "grad_norm"):
        assert charts[name]["state"] == "drawn" and charts[name]["traces"] == 2, charts[name]
    # one colour per run, the same on every chart
    colours = charts["train_loss"]["colors"]
    assert len(set(colours)) == 2 and charts["grad_norm"]["colors"] == colours
    assert charts["sharpness"]["state"] == "empty"  # neither run measured it: said so
    # all 2-D: the cartesian bundle only (a third of the full one's JavaScript)
    assert set(page.evaluate(PLOTLY_BUNDLES)) == {"/vendor/plotly-cartesian.min.js"}
    # the spec table shows only what differs
    rows = page.locator("#spec-table tbody tr").evaluate_all(
        "(rows) => rows.map((r) => r.dataset.field)"
    )
    assert set(rows) == {"optimizer.lr"}
    page.locator("#compare-all").check()
    assert page.locator("#spec-table tbody tr").count() > 10

    # x-axis by wall time, smoothing, log axes: all in the URL, so the view can be shared
    page.select_option("#compare-x", "wall")
    page.locator("#compare-smooth").evaluate(
        "(el) => { el.value = '0.8'; el.dispatchEvent(new Event('input')); }"
    )
    page.locator("#compare-log").click()
    page.wait_for_function(
        "() => document.querySelector('[data-chart=batch_loss] .plot').data.length === 4"
    )
    assert "x=wall" in page.url and "smooth=0.8" in page.url
    layout = page.evaluate(
        "() => { const p = document.querySelector('[data-chart=batch_loss] .plot');"
        " return {type: p.layout.yaxis.type, title: p.layout.xaxis.title.text,"
        " lastX: p.data[1].x.at(-1)}; }"
    )
    assert layout["type"] == "log" and layout["title"].startswith("wall time")
    assert 0 < layout["lastX"] < 120  # seconds, not steps
    page.reload()
    page.wait_for_selector("html[data-charts-drawn]", timeout=30_000)
    assert page.locator("#compare-x").input_value() == "wall"
    assert page.locator("#compare-smooth").input_value() == "0.8"


def test_compare_legend_names_the_settings_researchers_vary(
    page, two_runs, diverged_run, curvature_runs, screenshots
):
    """The legend and the curves' names: at most three settings, the optimizer's, the
    model's, the seed and the dataset before the rest, each with its section
    ("optimizer.lr=0.05"), and none that only says another optimizer's or dataset's own
    parameter is absent ("data.dim=—")."""
    low, bad = two_runs[0], diverged_run["id"]
    _goto_charts(page, f"/#/compare?ids={low},{bad}")
    page.locator(".legend").screenshot(path=screenshots / "compare-legend.png")
    legend = page.locator(".legend li")
    expect(legend.nth(0)).to_contain_text(
        "optimizer.lr=0.05, data.name=digits, model.activation=tanh"
    )
    expect(legend.nth(1)).to_contain_text(
        "optimizer.lr=3, data.name=teacher_student, model.activation=relu"
    )
    expect(legend.nth(0)).to_contain_text(re.compile(r"\+\d+ more in Specs"))
    expect(legend.nth(0)).not_to_contain_text("=—")
    names = _chart(page, "batch_loss")["names"]
    assert names == [
        f"#{low} optimizer.lr=0.05, data.name=digits, model.activation=tanh",
        f"#{bad} optimizer.lr=3, data.name=teacher_student, model.activation=relu",
    ], names
    # the spec table lists what differs, the settings researchers vary first
    rows = page.locator("#spec-table tbody tr").evaluate_all(
        "(rows) => rows.map((r) => r.dataset.field)"
    )
    assert rows[:2] == ["optimizer.lr", "data.name"], rows

    # SGD against Adam: the optimizer's name and lr; not SGD's momentum, absent for Adam
    sgd, adam = curvature_runs["sgd"], curvature_runs["adam"]
    _goto_charts(page, f"/#/compare?ids={sgd},{adam}")
    expect(legend.nth(0)).to_contain_text("optimizer.name=sgd, optimizer.lr=0.1")
    expect(legend.nth(1)).to_contain_text("optimizer.name=adam, optimizer.lr=0.003")
    expect(page.locator(".legend")).not_to_contain_text("momentum")


def _chart(page: Any, chart: str) -> dict[str, Any]:
    """A chart's title, note, state and message, and what its plot holds."""
    return page.evaluate(
        """(chart) => {
          const el = document.querySelector(`[data-chart="${chart}"]`);
          const plot = el.querySelector(".plot");
          return {
            title: el.querySelector("h3").textContent,
            caption: el.querySelector(".caption").textContent,
            note: el.querySelector(".note").hidden ? "" : el.querySelector(".note").textContent,
            state: el.dataset.state, message: el.querySelector(".state-message").textContent,
            names: (plot.data ?? []).map((t) => t.name ?? ""),
            lastX: (plot.data ?? []).map((t) => t.x.at(-1)),
            yTitle: plot.layout?.yaxis?.title?.text ?? null,
            yRange: plot._fullLayout?.yaxis?.range ?? null,
            yType: plot._fullLayout?.yaxis?.type ?? null,
            tickformat: plot.layout?.yaxis?.tickformat ?? null,
          };
        }""",
        chart,
    )


def _goto_charts(page: Any, url: str) -> None:
    """Open ``url`` (maybe only a new hash) and wait until its charts are drawn."""
    page.evaluate("delete document.documentElement.dataset.chartsDrawn")
    page.goto(url)
    page.wait_for_selector("html[data-charts-drawn]", timeout=30_000)


def test_compare_shows_diverged_runs_and_names_only_missing_ids(
    page, diverged_run, two_runs, screenshots
):
    """A run whose ``error`` field holds its divergence message is a run, not a failed
    request: it is compared with its data up to where it stopped."""
    bad, (low, _), missing = diverged_run["id"], two_runs, 999_999
    _goto_charts(page, f"/#/compare?ids={bad},{low},{missing}")
    status = page.locator("#view > [role=status]")
    expect(status).to_have_text(f"Not found: #{missing}. Showing 2 runs.")
    legend = page.locator(".legend li")
    expect(legend).to_have_count(2)
    expect(legend.filter(has=page.locator(f'a[href="#/runs/{bad}"]'))).to_contain_text("diverged")
    page.screenshot(path=screenshots / "compare-diverged.png", full_page=True)
    loss = _chart(page, "batch_loss")
    assert loss["state"] == "drawn" and len(loss["names"]) == 2, loss
    stopped = dict(zip(loss["names"], loss["lastX"], strict=True))
    assert [x for name, x in stopped.items() if name.startswith(f"#{bad}")] == [
        diverged_run["diverged_step"]
    ], stopped
    sharpness = _chart(page, "sharpness")  # measured at step 0, before it diverged
    assert any(name.startswith(f"#{bad}") for name in sharpness["names"]), sharpness
    assert sharpness["note"] == f"Not recorded by #{low} (probes.hessian off).", sharpness

    # one run alone: drawn, and the spec box says there is nothing to compare it with
    _goto_charts(page, f"/#/compare?ids={bad}")
    expect(legend).to_have_count(1)
    expect(status).to_have_text("1 run; add runs above to compare it with.")
    assert _chart(page, "batch_loss")["state"] == "drawn"
    spec = page.locator("details.spec")
    expect(spec).to_contain_text("Only one run: nothing to compare its spec with.")
    expect(spec).not_to_contain_text("apart from")

    # only missing ids: said so, and no chart waits forever
    page.goto("/#/compare?ids=999998,999999")
    expect(status).to_have_text("Not found: #999998, #999999. No runs to compare.")
    expect(page.locator("[data-chart]:visible")).to_have_count(0)
    expect(page.locator("details.spec")).to_be_hidden()


def test_compare_says_why_each_run_lacks_a_curve(
    page, curvature_runs, two_runs, diverged_run, screenshots
):
    """Each run missing from a chart is named with its own reason, runs grouped by reason."""
    sgd, adam, ggn = curvature_runs["sgd"], curvature_runs["adam"], curvature_runs["ggn"]
    low, bad = two_runs[0], diverged_run["id"]

    def before_its_first_probe(route):  # as if it had diverged before measuring curvature
        body = route.fetch().json()
        body["series"] = {k: v for k, v in body["series"].items() if not k.startswith("hessian/")}
        route.fulfill(json=body)

    page.route(f"**/api/v1/runs/{bad}/metrics?*", before_its_first_probe)
    _goto_charts(page, f"/#/compare?ids={sgd},{adam},{ggn},{low},{bad}")
    page.screenshot(path=screenshots / "compare-reasons.png", full_page=True)
    names = ("min_eigenvalue", "trace", "preconditioned", "sharpness")
    charts = {name: _chart(page, name) for name in names}
    assert charts["min_eigenvalue"]["state"] == "empty", charts["min_eigenvalue"]
    assert charts["min_eigenvalue"]["message"] == (
        f"None of the selected runs recorded this: #{sgd}, #{adam}, #{ggn}, #{bad}"
        f" (probes.hessian.min_eigenvalue off); #{low} (probes.hessian off)."
    )
    assert charts["trace"]["state"] == "drawn"  # the GGN run's
    assert charts["trace"]["note"] == (
        f"Not recorded by #{sgd}, #{adam}, #{bad} (probes.hessian.trace off);"
        f" #{low} (probes.hessian off)."
    )
    assert charts["preconditioned"]["state"] == "drawn"  # the Adam run's
    assert charts["preconditioned"]["note"] == (
        f"Not recorded by #{sgd}, #{ggn}, #{low}, #{bad} (not an Adam-family optimizer)."
    )
    assert charts["sharpness"]["note"] == (
        f"Not recorded by #{low} (probes.hessian off); #{bad} (diverged before it was measured)."
    )
    # accuracy in percent, as on the run pages
    assert _chart(page, "test_accuracy")["tickformat"] == ".0%"


def test_ggn_runs_are_labelled_by_their_matrix(page, curvature_runs, screenshots):
    sgd, ggn = curvature_runs["sgd"], curvature_runs["ggn"]
    _goto_charts(page, f"/#/runs/{ggn}")
    page.locator('[data-group="Curvature"]').screenshot(path=screenshots / "ggn-curvature.png")
    names = ("sharpness", "min_eigenvalue", "trace", "density")
    charts = {name: _chart(page, name) for name in names}
    for name, chart in charts.items():
        assert "GGN" in chart["title"] and "Hessian" not in chart["title"], (name, chart)
        assert "Gauss–Newton" in chart["caption"], (name, chart)
    assert charts["trace"]["state"] == charts["density"]["state"] == "drawn"
    assert charts["trace"]["yTitle"] == "tr G"

    _goto_charts(page, f"/#/compare?ids={ggn}")
    assert _chart(page, "trace")["title"] == "GGN trace"
    assert _chart(page, "min_eigenvalue")["title"] == "Smallest GGN eigenvalue"
    _goto_charts(page, f"/#/compare?ids={sgd},{ggn}")
    assert _chart(page, "trace")["title"] == "Hessian or GGN trace"
    assert _chart(page, "min_eigenvalue")["title"] == "Smallest Hessian or GGN eigenvalue"
    _goto_charts(page, f"/#/runs/{sgd}")
    assert _chart(page, "trace")["title"] == "Hessian trace"


def test_adam_sharpness_and_preconditioned_sharpness_each_on_their_own_axis(
    page, curvature_runs, screenshots
):
    _goto_charts(page, f"/#/runs/{curvature_runs['adam']}")
    page.locator('[data-group="Curvature"]').screenshot(path=screenshots / "adam-curvature.png")
    raw, pre = _chart(page, "sharpness"), _chart(page, "preconditioned")
    assert raw["state"] == pre["state"] == "drawn", (raw, pre)
    assert raw["names"] == ["λ1"], raw  # Adam has no threshold on the raw sharpness
    assert "preconditioned" in raw["note"], raw
    assert pre["names"] == ["λ₁(P⁻¹H)", "(2+2β₁)/((1−β₁)·lr)"], pre
    # each on an axis of its own: raw λ₁ is a few units; the preconditioned one, hundreds,
    # and its threshold, thousands, on a log axis
    assert raw["yType"] == "linear" and raw["yRange"][1] < 100, raw
    assert pre["yType"] == "log" and 10 ** pre["yRange"][1] > 1000, pre
    _goto_charts(page, f"/#/runs/{curvature_runs['sgd']}")
    pre = _chart(page, "preconditioned")
    assert pre["state"] == "empty" and "Adam" in pre["message"], pre


def test_adam_on_the_ggn_draws_its_preconditioned_sharpness(page, curvature_runs, screenshots):
    """GGN runs keep the preconditioned sharpness and its threshold under ggn/: the run page
    and the compare page read them there."""
    adam, adam_ggn = curvature_runs["adam"], curvature_runs["adam_ggn"]
    _goto_charts(page, f"/#/runs/{adam_ggn}")
    page.locator('[data-group="Curvature"]').screenshot(path=screenshots / "adam-ggn.png")
    pre = _chart(page, "preconditioned")
    assert pre["state"] == "drawn", pre
    assert pre["names"] == ["λ₁(P⁻¹G)", "(2+2β₁)/((1−β₁)·lr)"], pre
    assert "Gauss–Newton" in pre["caption"], pre

    _goto_charts(page, f"/#/compare?ids={adam},{adam_ggn}")
    pre = _chart(page, "preconditioned")
    assert pre["state"] == "drawn" and pre["note"] == "", pre  # both runs recorded it
    for run_id in (adam, adam_ggn):  # each run's value and its threshold
        assert len([name for name in pre["names"] if name.startswith(f"#{run_id} ")]) == 2, pre


def test_batch_norm_runs_say_their_sharpness_is_the_eval_mode_one(
    page, resnet_run, curvature_runs, screenshots
):
    """The probes evaluate in eval mode: a batch-normed model's sharpness is the eval-mode
    loss's, and may sit above 2/lr in a stable run. Said under its sharpness chart, and in
    the compare page's caption when a compared run has batch norm (the ResNet's default)."""
    sgd = curvature_runs["sgd"]
    _goto_charts(page, f"/#/runs/{resnet_run}")
    page.locator('[data-chart="sharpness"]').screenshot(path=screenshots / "resnet-sharpness.png")
    sharpness = _chart(page, "sharpness")
    assert sharpness["state"] == "drawn", sharpness
    assert "batch norm" in sharpness["note"] and "eval mode" in sharpness["note"], sharpness
    assert "above the dashed threshold" in sharpness["note"], sharpness
    _goto_charts(page, f"/#/runs/{sgd}")
    assert "batch norm" not in _chart(page, "sharpness")["note"]

    _goto_charts(page, f"/#/compare?ids={resnet_run},{sgd}")
    caption = _chart(page, "sharpness")["caption"]
    assert f"#{resnet_run} has batch norm" in caption and "eval mode" in caption, caption
    _goto_charts(page, f"/#/compare?ids={sgd},{curvature_runs['ggn']}")
    assert "batch norm" not in _chart(page, "sharpness")["caption"]


def test_batch_norm_runs_say_their_probe_losses_are_the_eval_mode_ones(
    page, resnet_run, two_runs, screenshots
):
    """The probes evaluate in eval mode (running statistics): for a batch-normed model the
    probe-batch loss can differ from the minibatch loss training sees. Said under the loss
    chart of a batch-normed run (the ResNet's default), and not under another's."""
    _goto_charts(page, f"/#/runs/{resnet_run}")
    page.locator('[data-chart="loss"]').screenshot(path=screenshots / "resnet-loss.png")
    loss = _chart(page, "loss")
    assert loss["state"] == "drawn", loss
    assert "batch norm" in loss["note"] and "eval mode" in loss["note"], loss
    assert "minibatch" in loss["note"], loss
    _goto_charts(page, f"/#/runs/{two_runs[0]}")
    loss = _chart(page, "loss")
    assert loss["state"] == "drawn" and loss["note"] == "", loss


def test_per_layer_charts_keep_their_plot_height_for_deep_models(page, resnet_run, screenshots):
    """One legend entry per parameter tensor (29 for the tiny ResNet) no longer squeezes the
    plot: the plot area keeps most of the panel's height."""
    _goto_charts(page, f"/#/runs/{resnet_run}")
    group = page.locator('[data-group="Weights and gradients"]')
    group.screenshot(path=screenshots / "resnet-per-layer.png")
    for name in ("weight_norms", "update_ratios", "grad_norm"):
        shape = page.evaluate(
            """(chart) => {
              const plot = document.querySelector(`[data-chart="${chart}"] .plot`);
              return {entries: plot.data.filter((t) => t.showlegend !== false).length,
                      height: plot._fullLayout._size.h, width: plot._fullLayout._size.w};
            }""",
            name,
        )
        assert shape["entries"] >= 20, (name, shape)
        assert shape["height"] >= 200 and shape["width"] >= 300, (name, shape)


LAYER_STYLES = """(charts) => Object.fromEntries(charts.map((chart) => {
  const plot = document.querySelector(`[data-chart="${chart}"] .plot`);
  return [chart, plot._fullData.filter((t) => t.showlegend !== false)
    .map((t) => [t.name, t.line.color, t.line.dash])];
}))"""


def test_per_layer_charts_give_every_tensor_a_style_of_its_own(page, resnet_run):
    """Past ten tensors the colours do not repeat alone: each of the ResNet's 29 tensors has a
    colour and dash of its own, the same in every per-layer chart; dotted stays the spectral
    norm's."""
    _goto_charts(page, f"/#/runs/{resnet_run}")
    charts = ("weight_norms", "update_ratios", "grad_norm")
    styles = page.evaluate(LAYER_STYLES, list(charts))
    for name in charts:
        entries = styles[name]
        pairs = [(colour, dash) for _, colour, dash in entries]
        assert len(entries) >= 20 and len(set(pairs)) == len(pairs), (name, entries)
        assert "dot" not in {dash for _, _, dash in entries}, (name, entries)
    by_tensor = {name: (colour, dash) for name, colour, dash in styles["weight_norms"]}
    for name in ("update_ratios", "grad_norm"):
        for tensor, colour, dash in styles[name]:
            assert by_tensor.get(tensor, (colour, dash)) == (colour, dash), (name, tensor)


def test_runs_table_fits_a_laptop_and_says_full_batch(page, dashboard, screenshots):
    run_id = submit(
        dashboard,
        small_spec(
            name="full-batch gradient descent with a rather long name",
            model={"name": "mlp", "widths": [64, 64, 64], "activation": "gelu"},
            data={"name": "gaussian_mixture", "n_samples": 400, "batch_size": 128},
            optimizer={"name": "gd", "lr": 0.05, "weight_decay": 0.001,
                       "schedule": {"name": "cosine"}},
            steps=20,
        ),
    )  # fmt: skip
    assert wait_for_run(dashboard, run_id)["status"] == "completed"  # no live update follows
    old = "2024-03-07T09:30:00Z"

    def created_long_ago(route):
        body = route.fetch().json()
        for run in body["data"]:
            if run["id"] == run_id:
                run["created_at"] = old
        route.fulfill(json=body)

    page.route("**/api/v1/runs?*", created_long_ago)
    page.set_viewport_size({"width": 1400, "height": 800})
    page.goto("/#/runs")
    row = page.locator(f'#runs-table tr[data-run-id="{run_id}"]')
    expect(row).to_be_visible()
    page.screenshot(path=screenshots / "runs-1400.png", full_page=True)
    widths = page.evaluate(
        "() => { const t = document.querySelector('#runs-table');"
        " return [t.scrollWidth, t.parentElement.clientWidth]; }"
    )
    assert widths[0] <= widths[1], widths  # Created and Duration are not cut off
    expect(row.locator("td:nth-child(7)")).to_have_text("gaussian_mixture · full batch")
    created = row.locator("td:nth-child(13)")
    expect(created).to_contain_text("2024")
    expect(created).to_contain_text("Mar")


def test_server_422_is_shown_next_to_the_field_it_names(page, dashboard):
    before = httpx.get(f"{dashboard}/api/v1/runs").json()["count"]
    page.goto("/#/new")
    # larger than the digits training set: only the server knows
    field(page, "probes.batch_size").fill("5000")
    page.get_by_role("button", name="Start run").click()
    error = page.locator('[data-field="probes.batch_size"] > .field-error')
    expect(error).to_contain_text("larger than the training set")
    expect(page.locator(".error-summary")).to_contain_text("probes.batch_size")
    assert field(page, "probes.batch_size").get_attribute("aria-invalid") == "true"
    assert "#/new" in page.url
    assert httpx.get(f"{dashboard}/api/v1/runs").json()["count"] == before

    # what the schema forbids is caught before anything is sent
    posts = len([url for url in page.requests if url.endswith("/api/v1/runs")])
    field(page, "probes.batch_size").fill("128")
    field(page, "model.widths").fill("16, -3")
    page.get_by_role("button", name="Start run").click()
    expect(page.locator('[data-field="model.widths"] > .field-error')).to_contain_text(
        "entry 2 (-3) must be greater than 0"
    )
    assert len([url for url in page.requests if url.endswith("/api/v1/runs")]) == posts


def test_clone_starts_from_a_copy_of_the_spec(page, two_runs):
    low, _ = two_runs
    page.goto(f"/#/runs/{low}")
    page.get_by_role("link", name="Clone this run").click()
    expect(field(page, "name")).to_have_value("pair (copy)")
    expect(field(page, "optimizer.lr")).to_have_value("0.05")
    expect(field(page, "steps")).to_have_value("80")


def test_runs_table_filters_by_status_name_and_hyperparameter(page, two_runs):
    low, high = two_runs
    page.goto("/#/runs")
    rows = page.locator("#runs-table tr[data-run-id]")
    expect(rows.first).to_be_visible()
    page.locator("#filter-hp").fill("lr=0.2")
    expect(page.locator(f'#runs-table tr[data-run-id="{high}"]')).to_be_visible()
    expect(page.locator(f'#runs-table tr[data-run-id="{low}"]')).to_have_count(0)
    assert all("lr 0.2" in text for text in rows.locator("td:nth-child(8)").all_inner_texts()), (
        rows.all_inner_texts()
    )
    page.locator("#filter-hp").fill("lr<0.1 steps>=80")
    expect(page.locator(f'#runs-table tr[data-run-id="{low}"]')).to_be_visible()
    expect(page.locator(f'#runs-table tr[data-run-id="{high}"]')).to_have_count(0)
    page.locator("#filter-name").fill("pair")
    page.select_option("#filter-status", "completed")
    expect(rows).to_have_count(1)
    expect(page).to_have_url(re.compile(r"status=completed.*name=pair|name=pair.*status=completed"))
    assert "hp=" in page.url
    page.reload()  # the filters are in the URL
    expect(rows).to_have_count(1)
    assert page.locator("#filter-hp").input_value() == "lr<0.1 steps>=80"


def test_hyperparameter_filter_matches_lists_and_says_what_it_cannot_match(
    page, dashboard, two_runs, screenshots
):
    """A list in brackets keeps its commas and matches a list-valued setting; an ordering
    against a word, or a key no loaded run has, is said under the field instead of silently
    matching nothing; a bare word stays a free-text search."""
    deep = submit(
        dashboard,
        small_spec(name="two hidden layers", model={"name": "mlp", "widths": [64, 64]}, steps=10),
    )
    assert wait_for_run(dashboard, deep)["status"] == "completed"
    low, high = two_runs
    hp, hint = page.locator("#filter-hp"), page.locator("#filter-hp-hint")

    def row(run_id: int) -> Any:
        return page.locator(f'#runs-table tr[data-run-id="{run_id}"]')

    page.goto("/#/runs")
    expect(row(deep)).to_be_visible()
    for text in ("model.widths=[64,64]", "widths=[64, 64] lr=0.1"):
        hp.fill(text)
        expect(row(deep)).to_be_visible()
        expect(row(low)).to_have_count(0)
        expect(hint).not_to_have_class(re.compile(r"\berror\b"))
    hp.fill("widths=[64]")  # the whole list, not its start
    expect(row(deep)).to_have_count(0)
    hp.fill("widths!=[64,64]")
    expect(row(low)).to_be_visible()
    expect(row(deep)).to_have_count(0)

    hp.fill("lr<abc")
    expect(hint).to_have_text('"lr<abc": < needs a number')
    expect(hint).to_have_class(re.compile(r"\berror\b"))
    hp.fill("bogus_key=3")
    expect(hint).to_have_text('no run has a setting named "bogus_key"')
    expect(hint).to_have_class(re.compile(r"\berror\b"))
    expect(row(high)).to_have_count(0)
    page.locator(".toolbar").screenshot(path=screenshots / "runs-filter-unknown-key.png")
    hp.fill("bogus_key")  # a bare word searches the values
    expect(hint).to_contain_text("all must hold")
    expect(hint).not_to_have_class(re.compile(r"\berror\b"))
    # from the URL too, once the runs are loaded
    page.goto("/#/runs?hp=steps%3D80%20bogus_key%3D3")
    expect(hint).to_have_text('no run has a setting named "bogus_key"')


def test_keyboard_only_selection_and_compare(page, two_runs):
    page.goto("/#/runs")
    expect(page.locator("#runs-table tr[data-run-id]").first).to_be_visible()
    # the table lists the newest first
    checkboxes = [f'input[aria-label="Select run {run_id}"]' for run_id in sorted(two_runs)[::-1]]
    for target in checkboxes:
        for _ in range(80):
            page.keyboard.press("Tab")
            if page.evaluate(f"document.activeElement.matches('{target}')"):
                break
        else:
            pytest.fail(f"Tab never reached {target}")
        page.keyboard.press("Space")
    for _ in range(80):
        page.keyboard.press("Shift+Tab")
        if page.evaluate("document.activeElement.id === 'compare-selected'"):
            break
    else:
        pytest.fail("Shift+Tab never reached the compare button")
    page.keyboard.press("Enter")
    page.wait_for_url(f"**/#/compare?ids={min(two_runs)},{max(two_runs)}")
    expect(page.locator(".legend li")).to_have_count(2)


def test_trajectory_and_landscapes_of_a_real_run(page, dashboard, screenshots):
    spec = small_spec(
        name="geometry",
        model={"name": "mlp", "widths": [8]},
        probes={
            "every": 20,
            "batch_size": 128,
            "trajectory": {"snapshot_every": 10, "components": 4},
            "landscape": {"plane": "pca", "grid": 5},
        },
    )
    run = wait_for_run(dashboard, submit(dashboard, spec))
    assert run["status"] == "completed", run
    page.goto(f"/#/runs/{run['id']}")
    page.wait_for_selector("html[data-charts-drawn]", timeout=30_000)
    charts = page.evaluate(CHART_STATES)
    page.locator('[data-group="Loss landscape"]').screenshot(
        path=screenshots / "real-landscape.png"
    )
    for name in END_OF_RUN - {"training_jacobian"}:
        assert charts[name]["state"] == "drawn" and charts[name]["points"] > 0, (name, charts[name])
    assert charts["landscape_contour"]["traces"] == 3  # the plane, the path, its ends
    # a 3-D surface: the full bundle, and only it (every chart of the page drew with it)
    assert set(page.evaluate(PLOTLY_BUNDLES)) == {"/vendor/plotly.min.js"}
    assert charts["explained_variance"]["points"] == 2 * 4  # ratios and the reference


def _grid(axes: list[list[float]], offset: float = 0.0) -> list[list[float]]:
    """A bowl: entry [i][j] at (axes[0][i], axes[1][j]), as the API serves landscapes."""
    return [[offset + 0.5 + a * a + 2 * b * b for b in axes[1]] for a in axes[0]]


def _end_of_run_payloads(step: int) -> dict[str, Any]:
    """The end-of-run results (trajectory, landscapes, training Jacobian) in the shapes the
    API documents, for a run that did not compute them."""
    a = [-1 + 0.2 * i for i in range(11)]
    b = [-1 + 0.25 * j for j in range(9)]
    line = [-0.5 + 0.1 * i for i in range(21)]
    path_steps = list(range(0, step + 1, 10))
    path = [
        [0.8 - 0.8 * k / len(path_steps), 0.5 - 0.5 * k / len(path_steps)]
        for k in range(len(path_steps))
    ]
    losses = [0.5 + x * x + 2 * y * y for x, y in path]
    return {
        "trajectory": {
            "step": step, "steps": path_steps,
            "explained_variance_ratio": [0.82, 0.12, 0.06],
            "random_walk_reference": [0.61, 0.15, 0.07],
            "coordinates": [[x, y, 0.01 * k] for k, (x, y) in enumerate(path)], "meta": {},
        },
        "landscapes": [
            {"step": step, "kind": "landscape_pca", "plane": "pca", "dims": 2, "axes": [a, b],
             "train_loss": _grid([a, b]), "test_loss": _grid([a, b], 0.1),
             "train_accuracy": None, "test_accuracy": None,
             "path": {"steps": path_steps, "coordinates": path, "loss": losses,
                      "plane_loss": losses, "residual": [0.01] * len(path)}, "meta": {}},
            {"step": step, "kind": "landscape_random_1d", "plane": "random", "dims": 1,
             "axes": [a], "train_loss": [0.5 + x * x for x in a],
             "test_loss": [0.6 + x * x for x in a], "train_accuracy": None,
             "test_accuracy": None, "path": None, "meta": {}},
            {"step": step, "kind": "landscape_line", "plane": "line", "dims": 1, "axes": [line],
             "train_loss": [2.3 - 1.8 * t for t in line],
             "test_loss": [2.4 - 1.8 * t for t in line],
             "train_accuracy": None, "test_accuracy": None, "path": None, "meta": {}},
        ],
        "training_jacobian": {
            "step": step, "shape": [40], "values": [8.0, 3.0, 1.5] + [1.0] * 30 + [0.5] * 7,
            "meta": {"chaotic": 3, "bulk": 30, "stable": 7, "bulk_tolerance": 1e-3,
                     "chaotic_threshold": 1.001, "stable_threshold": 0.999},
        },
    }  # fmt: skip


def test_end_of_run_charts_draw_from_the_documented_shapes(page, probed_run, screenshots):
    """Trajectory PCA, 2-D landscape (contour and surface, with the path), 1-D slices and the
    training-Jacobian spectrum, drawn from responses shaped as the API documents them."""
    step = 60
    fake = _end_of_run_payloads(step)

    def run(route):
        body = route.fetch().json()
        body["spec"]["probes"] |= {"trajectory": {}, "landscape": {}, "training_jacobian": {}}
        route.fulfill(json=body)

    def spectra(route):
        body = route.fetch().json()
        body["spectra"]["training_jacobian"] = [fake["training_jacobian"]]
        route.fulfill(json=body)

    page.route(f"**/api/v1/runs/{probed_run}", run)
    page.route(f"**/api/v1/runs/{probed_run}/spectra?*", spectra)
    page.route(
        f"**/api/v1/runs/{probed_run}/trajectory",
        lambda route: route.fulfill(json={"run_id": probed_run, "trajectory": fake["trajectory"]}),
    )
    page.route(
        f"**/api/v1/runs/{probed_run}/landscapes",
        lambda route: route.fulfill(json={"run_id": probed_run, "landscapes": fake["landscapes"]}),
    )
    page.goto(f"/#/runs/{probed_run}")
    page.wait_for_selector("html[data-charts-drawn]", timeout=30_000)
    charts = page.evaluate(CHART_STATES)
    page.locator('[data-group="Loss landscape"]').screenshot(path=screenshots / "landscape.png")
    for name in END_OF_RUN:
        assert charts[name]["state"] == "drawn" and charts[name]["points"] > 0, (name, charts[name])
    assert charts["landscape_contour"]["traces"] == 3  # the grid, the path, its ends
    assert charts["landscape_surface"]["traces"] == 2
    assert charts["landscape_slices"]["names"][0].startswith("random direction")
    assert {"chaotic (3)", "bulk (30)", "stable (7)"} == set(charts["training_jacobian"]["names"])


SLICE_AXES = """() => {
  const plot = document.querySelector('[data-chart="landscape_slices"] .plot');
  const layout = plot._fullLayout;
  const axes = {};
  for (const name of ["x", "x2"]) {
    const axis = layout[name === "x" ? "xaxis" : "xaxis2"];
    const traces = plot.data.filter((t) => (t.xaxis ?? "x") === name);
    axes[name] = {
      title: axis?.title?.text ?? null, domain: axis?.domain ?? null,
      names: traces.filter((t) => t.showlegend !== false).map((t) => t.name),
      marks: layout.shapes.filter((s) => s.xref === name).map((s) => s.x0),
      points: traces.filter((t) => t.mode === "markers").flatMap((t) => t.x),
    };
  }
  return axes;
}"""


def test_1d_slices_each_on_an_axis_of_its_own(page, probed_run, screenshots):
    """The random direction (0: the checkpoint) and the line from initialisation (0) to the
    final parameters (1) measure different coordinates: each is drawn on its own x axis, side
    by side, titled with what its coordinate means and marked where it is measured from."""
    random, line = _end_of_run_payloads(60)["landscapes"][1:]
    earlier = random | {"step": 30, "train_loss": [0.7 + x * x for x in random["axes"][0]]}
    landscapes = [earlier, random, line | {"plane": "interpolation"}]  # as the worker names it

    def run(route):
        body = route.fetch().json()
        body["spec"]["probes"] |= {"landscape": {}}
        route.fulfill(json=body)

    page.route(f"**/api/v1/runs/{probed_run}", run)
    page.route(
        f"**/api/v1/runs/{probed_run}/landscapes",
        lambda route: route.fulfill(json={"run_id": probed_run, "landscapes": landscapes}),
    )
    _goto_charts(page, f"/#/runs/{probed_run}")
    page.locator('[data-chart="landscape_slices"]').screenshot(path=screenshots / "slices.png")
    axes = page.evaluate(SLICE_AXES)
    left, right = axes["x"], axes["x2"]
    assert left["title"] == "α along the random direction (0 = checkpoint)", axes
    assert right["title"] == "a from initialisation (0) to final (1)", axes
    assert left["domain"][1] < right["domain"][0], axes  # side by side, not overlaid
    assert left["names"] == ["random direction at step 30", "random direction at step 60"]
    assert right["names"] == ["init → final at step 60"], axes
    assert left["marks"] == [0] and right["marks"] == [0, 1], axes
    assert left["points"] == [0, 0] and right["points"] == [0, 1], axes  # on each curve
