// One run: header (status, progress, error), its spec, and every chart (charts.js). A run
// that is queued or running follows GET /api/v1/runs/{id}/events and redraws as it trains; a
// queued one says so when no worker is running.
import { api, follow } from "./api.js";
import { mountChart } from "./chart_mount.js";
import { CHARTS, GROUPS } from "./charts.js";
import { h, replace } from "./dom.js";
import { ACTIVE, duration, keyHyperparameters, progressBar, sentence, statusBadge, when } from "./format.js";
import { loadPlotly, pointsFor, preferPlotly, webglAvailable } from "./plotting.js";
import { workerNotice } from "./worker_notice.js";

const REDRAW_EVERY_MS = 2500;
// Spectra are drawn as columns over steps (heatmaps, lines per index): the server keeps at most
// this many entries per kind, evenly spread, so a long run's page loads as fast as a short one's.
const SPECTRA_ENTRIES = 400;

function probeEnabled(run, name) {
  const value = run.spec?.probes?.[name];
  return value !== null && value !== undefined;
}

/** Everything the charts draw from; each source settles on its own. */
async function loadSources(run, maxPoints, onSettled) {
  const id = run.id;
  const wanted = {
    metrics: () => api.get(`/runs/${id}/metrics?max_points=${maxPoints}`).then((body) => body.series),
    spectra: () => (["hessian", "jacobian", "training_jacobian"].some((p) => probeEnabled(run, p))
      ? api.get(`/runs/${id}/spectra?max_entries=${SPECTRA_ENTRIES}`).then((body) => body.spectra) : Promise.resolve({})),
    landscapes: () => (probeEnabled(run, "landscape")
      ? api.get(`/runs/${id}/landscapes`).then((body) => body.landscapes ?? []) : Promise.resolve(null)),
    trajectory: () => (probeEnabled(run, "trajectory")
      ? api.get(`/runs/${id}/trajectory`).then((body) => body.trajectory ?? null) : Promise.resolve(null)),
  };
  await Promise.all(Object.entries(wanted).map(async ([source, fetcher]) => {
    try {
      onSettled(source, await fetcher(), null);
    } catch (error) {
      onSettled(source, null, error);
    }
  }));
}

export function render(container, { id }) {
  let disposed = false;
  let stop = null;
  let timer = null;
  let lastDraw = 0;
  let drawing = null;
  let again = false;
  const status = h("p", { class: "state-message", role: "status" }, `Loading run #${id}…`);
  replace(container, status);

  const charts = CHARTS.map((def) => mountChart(def, { onRetry: () => refresh() }));
  const head = h("div");
  const ctx = { run: null, metrics: null, spectra: null, landscapes: null, trajectory: null, errors: {}, unavailable: {}, loading: new Set() };
  const notice = workerNotice({
    queuedRuns: () => (ctx.run?.status === "queued" ? 1 : 0),
    waiting: () => "this run waits in the queue",
  });

  function renderHead(run) {
    const hyper = keyHyperparameters(run.spec);
    const actions = h("div", { class: "actions" },
      h("a", { class: "button", href: `#/new?clone=${run.id}` }, "Clone this run"),
      h("a", { class: "button", href: `#/compare?ids=${run.id}` }, "Compare…"),
      ACTIVE.has(run.status) && !run.cancel_requested
        ? h("button", { class: "danger", onclick: async (event) => {
          event.target.disabled = true;
          try { renderHead(await api.post(`/runs/${run.id}/cancel`)); } catch (error) { alert(error.message); }
        } }, "Cancel run") : null,
      run.status !== "running" ? h("button", { class: "danger", onclick: async () => {
        if (!confirm(`Delete run #${run.id} and everything it recorded?`)) return;
        try { await api.delete(`/runs/${run.id}`); location.hash = "#/runs"; } catch (error) { alert(error.message); }
      } }, "Delete") : null);
    let problem = null;
    if (run.status === "diverged") {
      problem = h("div", { class: "banner error", role: "alert", id: "run-error" },
        h("strong", {}, `Diverged at step ${run.diverged_step ?? run.step}. `), run.error ? `${sentence(run.error)} ` : "",
        "Everything before that step is kept; the charts mark the step.");
    } else if (run.status === "failed") {
      problem = h("div", { class: "banner error", role: "alert", id: "run-error" },
        h("strong", {}, `Failed at step ${run.step} of ${run.steps}. `), sentence(run.error ?? "no error message was recorded"));
    } else if (run.status === "cancelled") {
      problem = h("div", { class: "banner", role: "status" }, `Cancelled at step ${run.step} of ${run.steps}.`);
    }
    replace(head,
      h("div", { class: "run-head" }, h("h1", {}, run.name || `Run #${run.id}`), statusBadge(run), progressBar(run), actions),
      notice.element,
      h("ul", { class: "facts" },
        h("li", {}, "run ", h("b", {}, `#${run.id}`)),
        h("li", {}, "model ", h("b", {}, hyper.model)),
        h("li", {}, "data ", h("b", {}, hyper.data)),
        h("li", {}, "optimizer ", h("b", {}, hyper.optimizer)),
        h("li", {}, "seed ", h("b", {}, String(hyper.seed))),
        h("li", {}, "probes every ", h("b", {}, String(run.spec?.probes?.every ?? "—")), " steps"),
        h("li", {}, "created ", h("b", { title: run.created_at }, when(run.created_at))),
        h("li", {}, "duration ", h("b", {}, duration(run.duration_s))),
        run.worker ? h("li", {}, "worker ", h("b", {}, run.worker)) : null),
      problem,
      h("details", { class: "spec" }, h("summary", {}, "Spec (JSON)"), h("pre", {}, JSON.stringify(run.spec, null, 2))));
  }

  function renderBody() {
    const nav = h("nav", { class: "sections", "aria-label": "Chart groups" }, "Jump to:",
      GROUPS.map((group) => h("button", { type: "button", class: "linkish", onclick: () => {
        const target = container.querySelector(`[data-group="${group}"]`);
        target?.scrollIntoView({ behavior: "smooth" });
        target?.querySelector("h2")?.focus();
      } }, group)));
    const groups = GROUPS.map((group) => h("section", { class: "chart-group", dataset: { group } },
      h("h2", { tabindex: "-1" }, group),
      h("div", { class: "chart-grid" }, charts.filter((c) => c.def.group === group).map((c) => c.panel.element))));
    replace(container, head, nav, groups);
  }

  async function drawAll() {
    lastDraw = performance.now();
    await Promise.all(charts.map((chart) => chart.draw(ctx)));
    document.documentElement.dataset.chartsDrawn = String(performance.now());
  }

  async function refresh() {
    if (drawing) {
      again = true; // new data arrived while drawing: read once more afterwards
      return drawing;
    }
    drawing = (async () => {
      const plot = container.querySelector(".plot");
      const maxPoints = pointsFor(plot?.clientWidth || container.clientWidth / 2);
      const first = ctx.metrics === null;
      if (first) ["metrics", "spectra", "landscapes", "trajectory"].forEach((s) => ctx.loading.add(s));
      const loaded = loadSources(ctx.run, maxPoints, (source, value, error) => {
        if (disposed) return;
        ctx.loading.delete(source);
        if (error && error.status === 404 && (source === "landscapes" || source === "trajectory")) {
          const probe = source === "landscapes" ? "landscape" : "trajectory";
          ctx.unavailable[probe] = `Not available: this server has no ${source} endpoint (GET /api/v1/runs/{id}/${source}).`;
          ctx[source] = null;
          delete ctx.errors[source];
        } else if (error) {
          ctx.errors[source] = error.message;
        } else {
          ctx[source] = value;
          delete ctx.errors[source];
        }
        if (first) {
          for (const chart of charts) if ((chart.def.needs ?? []).includes(source)) chart.draw(ctx);
        }
      });
      loadPlotly().catch(() => {}); // after the data requests: starting it blocks the page
      await loaded;
      if (!disposed) await drawAll();
    })();
    try {
      await drawing;
    } finally {
      drawing = null;
      if (again && !disposed) {
        again = false;
        refresh();
      }
    }
  }

  function onRun(run) {
    if (disposed) return;
    const moved = run.status !== ctx.run.status;
    const advanced = moved || run.step !== ctx.run.step;
    ctx.run = run;
    if (moved) notice.check();
    renderHead(run);
    if (!advanced) return;
    const wait = Math.max(0, REDRAW_EVERY_MS - (performance.now() - lastDraw));
    clearTimeout(timer);
    timer = setTimeout(refresh, wait);
  }

  (async () => {
    try {
      ctx.run = await api.get(`/runs/${id}`);
    } catch (error) {
      if (disposed) return;
      status.classList.add("error");
      status.textContent = error.status === 404 ? `Run #${id} does not exist.` : `Could not load run #${id}: ${error.message}`;
      return;
    }
    if (disposed) return;
    // one Plotly.js bundle for the page: the full one only if it will draw a 3-D surface
    preferPlotly(probeEnabled(ctx.run, "landscape") && webglAvailable() ? "full" : "cartesian");
    renderHead(ctx.run);
    renderBody();
    for (const chart of charts.filter((c) => !(c.def.needs ?? []).length)) chart.draw(ctx);
    if (ACTIVE.has(ctx.run.status)) {
      stop = follow(`/runs/${id}/events`, {
        open: () => notice.check(), // and again at each reconnection, every few seconds
        run: onRun,
        end: (run) => { onRun(run); clearTimeout(timer); refresh(); },
        deleted: () => { if (!disposed) replace(container, h("p", { class: "banner" }, `Run #${id} was deleted.`)); },
      });
    }
    await refresh();
  })();

  return () => {
    disposed = true;
    clearTimeout(timer);
    stop?.();
  };
}
