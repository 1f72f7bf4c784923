// Compare: the runs in the URL (#/compare?ids=1,2,3) overlaid on every chart they share,
// one colour per run everywhere, a legend naming the hyperparameters that differ, x-axis by
// step or wall time, smoothing, log/linear axes, and a "differences only" table of specs.
import { api, follow } from "./api.js";
import { mountChart } from "./chart_mount.js";
import { COMPARE_CHARTS } from "./compare_charts.js";
import { debounce, h, replace } from "./dom.js";
import {
  ACTIVE, differingKeys, flattenSpec, legendKeys, orderSpecKeys, runLabel, specSetting, statusBadge,
} from "./format.js";
import { loadPlotly, pointsFor, preferPlotly, runStyle } from "./plotting.js";
import { setQuery } from "./router.js";

const MAX_RUNS = 40;
/** The charts' keys in a few requests per run, in page order: the first charts draw while
 * the server still reads the series of the later ones. */
const KEY_GROUPS = (() => {
  const keyed = COMPARE_CHARTS.filter((def) => def.keys?.length);
  const groups = [[], [], []];
  keyed.forEach((def, i) => groups[Math.floor((i * groups.length) / keyed.length)].push(...def.keys));
  groups[0].push("time/elapsed"); // the worker's clock, for the wall-time axis
  return groups.map((keys) => [...new Set(keys)]);
})();
const groupOf = (def) => {
  const keyed = COMPARE_CHARTS.filter((d) => d.keys?.length);
  return Math.floor((keyed.indexOf(def) * KEY_GROUPS.length) / keyed.length);
};
const REFRESH_MS = 3000;

/** ``fn`` at most once per ``ms`` (the last call within a window runs at its end). */
function throttle(fn, ms) {
  let timer = null;
  return () => {
    timer ??= setTimeout(() => { timer = null; fn(); }, ms);
  };
}

function parseIds(text) {
  const ids = (text ?? "").split(/[\s,]+/).map(Number).filter((n) => Number.isInteger(n) && n > 0);
  return [...new Set(ids)].slice(0, MAX_RUNS);
}

function go(ids, params) {
  const query = new URLSearchParams(params);
  query.set("ids", ids.join(","));
  location.hash = `#/compare?${query.toString().replaceAll("%2C", ",")}`;
}

/** The parameter tensors with norms recorded, weight matrices first. */
function layerNames(series) {
  const names = Object.keys(series).filter((key) => key.startsWith("weight_norm/")).map((key) => key.slice("weight_norm/".length));
  return [...names.filter((n) => n.endsWith("weight")), ...names.filter((n) => !n.endsWith("weight"))];
}

export function render(container, { params }) {
  const ids = parseIds(params.get("ids"));
  const otherParams = Object.fromEntries([...params].filter(([key]) => key !== "ids"));
  const state = {
    x: params.get("x") === "wall" ? "wall" : "step",
    smoothing: Math.min(0.99, Math.max(0, Number(params.get("smooth")) || 0)),
    all: params.get("all") === "1",
  };
  let disposed = false;
  let stop = null;

  const addInput = h("input", { type: "text", id: "compare-add", size: 10, placeholder: "e.g. 4, 7", inputmode: "numeric" });
  const addForm = h("form", { class: "toolbar", onsubmit: (event) => {
    event.preventDefault();
    const more = parseIds(addInput.value);
    if (more.length) go([...new Set([...ids, ...more])], otherParams);
  } }, h("label", {}, "Add runs by id", addInput), h("button", { type: "submit" }, "Add"),
  h("a", { class: "button", href: "#/runs" }, "Pick on the runs page"));

  if (!ids.length) {
    replace(container, h("h1", {}, "Compare runs"),
      h("p", { class: "state-message" }, "No runs selected. Tick runs in the runs table and press “Compare selected”, or add them by id."),
      addForm);
    return () => {};
  }

  const status = h("p", { class: "state-message", role: "status", id: "compare-status" }, `Loading ${ids.length} runs…`);
  const chips = h("div", { class: "chips", "aria-label": "Compared runs" });
  const legend = h("ul", { class: "legend", "aria-label": "Legend: one colour per run" });
  const specTable = h("div", { class: "table-wrap" });
  const wallHint = h("span", { class: "hint", id: "compare-x-hint", hidden: state.x !== "wall" },
    "the worker's clock at every probe step, linear in between");
  const xSelect = h("select", { id: "compare-x", "aria-describedby": "compare-x-hint", onchange: () => {
    state.x = xSelect.value;
    wallHint.hidden = state.x !== "wall";
    setQuery({ x: state.x === "wall" ? "wall" : null });
    redraw();
  } }, h("option", { value: "step", selected: state.x === "step" }, "step"),
  h("option", { value: "wall", selected: state.x === "wall" }, "wall time"));
  const smoothOut = h("output", { for: "compare-smooth" }, state.smoothing.toFixed(2));
  const smoothInput = h("input", { type: "range", id: "compare-smooth", min: "0", max: "0.99", step: "0.01", value: String(state.smoothing),
    "aria-describedby": "compare-smooth-hint",
    oninput: () => {
      state.smoothing = Number(smoothInput.value);
      smoothOut.textContent = state.smoothing.toFixed(2);
      setQuery({ smooth: state.smoothing ? state.smoothing : null });
      redrawSoon();
    } });
  const logButton = h("button", { type: "button", id: "compare-log", "aria-pressed": "false", onclick: () => {
    const on = logButton.getAttribute("aria-pressed") !== "true";
    logButton.setAttribute("aria-pressed", String(on));
    for (const chart of charts) {
      if ("logY" in chart.settings) {
        chart.settings.logY = on;
        chart.buttons.logY?.setAttribute("aria-pressed", String(on));
      }
    }
    redraw();
  } }, "log y on every chart");
  const allBox = h("input", { type: "checkbox", id: "compare-all", checked: state.all, onchange: () => {
    state.all = allBox.checked;
    setQuery({ all: state.all ? "1" : null });
    renderSpecTable();
  } });

  const sources = ["spectra", "trajectory", ...KEY_GROUPS.map((_, g) => `metrics:${g}`)];
  const ctx = { runs: [], x: state.x, smoothing: state.smoothing, layers: [], layerSeries: {}, errors: {}, loading: new Set([...sources, "layers"]) };
  const charts = COMPARE_CHARTS.map((def) => mountChart(
    { ...def, needs: (def.needs ?? []).map((need) => (need === "metrics" ? `metrics:${groupOf(def)}` : need)) },
    { onRetry: () => load(), prepare: prepareLayer },
  ));
  const drawing = [];
  const toolbar = h("div", { class: "toolbar" },
    h("label", {}, "x-axis", xSelect, wallHint),
    h("label", {}, h("span", {}, "smoothing (EMA) ", smoothOut), smoothInput,
      h("span", { id: "compare-smooth-hint", class: "visually-hidden" }, "0 is none; raw values stay faint behind the smoothed line")),
    h("div", {}, logButton));
  const specBox = h("details", { class: "spec", open: true }, h("summary", {}, "Specs"),
    h("label", { class: "optional-toggle" }, allBox, "show every field (not only those that differ)"), specTable);
  const grid = h("div", { class: "chart-grid compare-grid" }, charts.map((c) => c.panel.element));
  const views = [toolbar, legend, specBox, grid]; // hidden when none of the ids is a run

  replace(container,
    h("div", { class: "run-head" }, h("h1", {}, "Compare runs"), chips),
    addForm, toolbar, status, legend, specBox, grid);

  const entries = [];

  function renderChips() {
    replace(chips, entries.map((entry) => h("span", { class: "chip" },
      h("span", { class: "swatch", style: `background:${entry.color}` }),
      h("a", { href: `#/runs/${entry.run.id}` }, `#${entry.run.id}`),
      h("button", { type: "button", "aria-label": `Remove run ${entry.run.id} from the comparison`,
        onclick: () => go(ids.filter((id) => id !== entry.run.id), otherParams) }, "×"))));
  }

  /** Each run with the few settings that tell it apart (legendKeys), and how many more of
   * its settings differ (all of them in the spec table below, and in the tooltip). */
  function renderLegend() {
    const specs = entries.map((e) => e.run.spec);
    const differing = orderSpecKeys(differingKeys(specs));
    const shown = legendKeys(specs);
    const rest = differing.filter((key) => !shown.includes(key));
    replace(legend, entries.map((entry) => {
      const badge = statusBadge(entry.run);
      if (entry.run.error) badge.title = entry.run.error; // why it failed or diverged
      const more = rest.length ? h("span", { class: "more", title: rest.map((key) => specSetting(entry.run.spec, key)).join("\n") },
        `+${rest.length} more in Specs`) : null;
      return h("li", { dataset: { runId: entry.run.id } },
        h("span", { class: "swatch", style: `background:${entry.color}${entry.dash !== "solid" ? "; opacity:0.6" : ""}` }),
        h("a", { href: `#/runs/${entry.run.id}` }, runLabel(entry.run)),
        shown.length ? h("span", { class: "differences" }, shown.map((key) => specSetting(entry.run.spec, key)).join(", ")) : null,
        more, badge);
    }));
  }

  function renderSpecTable() {
    const specs = entries.map((e) => e.run.spec);
    const differing = new Set(differingKeys(specs, []));
    const flats = specs.map((spec) => flattenSpec(spec));
    const keys = orderSpecKeys(new Set(flats.flatMap((f) => Object.keys(f))))
      .filter((key) => state.all || differing.has(key));
    if (!keys.length) {
      replace(specTable, h("p", { class: "state-message" }, entries.length === 1
        ? "Only one run: nothing to compare its spec with. Tick “show every field” to see all of it."
        : "The specs are identical. Tick “show every field” to see them."));
      return;
    }
    replace(specTable, h("table", { class: "spec-table", id: "spec-table" },
      h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "field"), entries.map((e) => h("th", { scope: "col" },
        h("span", { class: "swatch", style: `background:${e.color}` }), ` #${e.run.id}`)))),
      h("tbody", {}, keys.map((key) => h("tr", { dataset: { field: key } }, h("th", { scope: "row" }, key),
        flats.map((f) => h("td", { class: differing.has(key) ? "differs" : "" }, f[key] === undefined ? "—" : String(f[key]))))))));
  }

  /** The per-layer chart reads its one key on demand for every run. */
  async function prepareLayer(def, settings, context, panel) {
    if (!def.keysFor) return;
    const [key] = def.keysFor(settings, context);
    if (!key) return;
    const missing = entries.filter((e) => !context.layerSeries[e.run.id]?.[key]);
    if (!missing.length) return;
    panel.setLoading(`Loading ${key}…`);
    await Promise.all(missing.map(async (entry) => {
      const query = new URLSearchParams({ keys: key, max_points: String(maxPoints()) });
      const body = await api.get(`/runs/${entry.run.id}/metrics?${query}`);
      context.layerSeries[entry.run.id] = { ...(context.layerSeries[entry.run.id] ?? {}), ...body.series };
    }));
  }

  function maxPoints() {
    const plot = container.querySelector(".plot");
    return pointsFor((plot?.clientWidth || 600) / 2);
  }

  async function redraw() {
    ctx.x = state.x;
    ctx.smoothing = state.smoothing;
    await Promise.all(charts.map((chart) => chart.draw(ctx)));
  }
  const redrawSoon = debounce(redraw, 120);

  /** Read ``source`` for every run, then draw the charts it completes. */
  async function fetchAll(source, fetcher) {
    try {
      await Promise.all(entries.map(fetcher));
      delete ctx.errors[source];
    } catch (error) {
      ctx.errors[source] = error.message;
    }
    ctx.loading.delete(source);
    drawReady();
  }

  /** Draw every chart whose sources have all arrived and that is not drawn yet. */
  function drawReady() {
    for (const chart of charts) {
      if (chart.started || (chart.def.needs ?? []).some((need) => ctx.loading.has(need))) continue;
      chart.started = true;
      drawing.push(chart.draw(ctx));
    }
  }

  /** Group ``g``'s series of run ``id``, in one request (the per-layer chart asks for its
   * own key when it draws). */
  function fetchMetrics(id, g) {
    const query = new URLSearchParams({ keys: KEY_GROUPS[g].join(","), max_points: String(maxPoints()) });
    return api.get(`/runs/${id}/metrics?${query}`).then((body) => body.series);
  }

  async function load() {
    // The series do not depend on the runs' specs: ask for them at once, beside the runs.
    const early = new Map(ids.map((id) => [id, KEY_GROUPS.map((_, g) => fetchMetrics(id, g))]));
    for (const promise of [...early.values()].flat()) promise.catch(() => {});
    // A run object has an ``error`` field of its own (why it failed or diverged): a failed
    // request is told apart by where it lands, never by that field.
    const runsRequested = ids.map((id) => api.get(`/runs/${id}`).then((run) => ({ id, run }), (error) => ({ id, error })));
    preferPlotly("cartesian"); // every compare chart is 2-D
    loadPlotly().catch(() => {}); // now: it blocks the page while it starts
    const [requests, firstSeries] = await Promise.all([
      Promise.all(runsRequested),
      api.get(`/runs/${ids[0]}/metrics?max_points=4`).catch(() => null),
    ]);
    if (disposed) return;
    entries.length = 0;
    requests.filter((r) => r.run).forEach(({ run }, index) => entries.push({ run, index, ...runStyle(index), metrics: {}, spectra: {}, trajectory: null }));
    // the layers of the first run there is (the first id may be missing)
    const discovery = firstSeries ?? (entries.length
      ? await api.get(`/runs/${entries[0].run.id}/metrics?max_points=4`).catch(() => ({ series: {} }))
      : { series: {} });
    if (disposed) return;
    const differing = orderSpecKeys(differingKeys(entries.map((e) => e.run.spec)));
    const shown = legendKeys(entries.map((e) => e.run.spec));
    for (const entry of entries) {
      const diff = shown.map((key) => specSetting(entry.run.spec, key)).join(", ");
      entry.label = `#${entry.run.id}${diff ? ` ${diff}` : entry.run.name ? ` ${entry.run.name}` : ""}`;
    }
    ctx.runs = entries;
    ctx.layers = layerNames(discovery.series ?? {});
    ctx.loading.delete("layers");
    renderChips();
    renderLegend();
    renderSpecTable();
    status.textContent = statusText(requests.filter((r) => !r.run), differing);
    status.classList.toggle("error", entries.length < ids.length);
    for (const view of views) view.hidden = !entries.length;
    if (!entries.length) return;

    drawReady(); // what needs no series (the time totals)
    await loadData(early);
    await Promise.all(drawing);
    if (disposed) return;
    document.documentElement.dataset.chartsDrawn = String(performance.now());
    if (entries.some((e) => ACTIVE.has(e.run.status))) followLiveRuns();
  }

  /** What was compared: the ids that are no runs (``failed`` requests), else how many runs
   * and how their specs differ. */
  function statusText(failed, differing) {
    const named = (list) => list.map((r) => `#${r.id}`).join(", ");
    const notFound = failed.filter((r) => r.error.status === 404);
    const unread = failed.filter((r) => r.error.status !== 404);
    const problems = [
      notFound.length ? `Not found: ${named(notFound)}.` : "",
      unread.length ? `Could not load ${named(unread)}: ${unread[0].error.message}.` : "",
    ].filter(Boolean);
    const count = `${entries.length} run${entries.length === 1 ? "" : "s"}`;
    if (problems.length) return [...problems, entries.length ? `Showing ${count}.` : "No runs to compare."].join(" ");
    if (entries.length === 1) return `${count}; add runs above to compare it with.`;
    return `${count}${differing.length ? `; they differ in ${differing.join(", ")}` : "; their specs are identical"}.`;
  }

  /** Keep running runs live: their status in the legend, their series redrawn. */
  function followLiveRuns() {
    const refreshSoon = throttle(() => loadData(), REFRESH_MS);
    stop = follow("/events", {
      run: (run) => {
        const entry = entries.find((e) => e.run.id === run.id);
        if (!entry || disposed) return;
        entry.run = run;
        renderLegend();
        refreshSoon();
      },
    });
  }

  /** Read every run's data (``early``: requests already on their way); each chart is drawn
   * as soon as its data is in, and everything is redrawn on a later read (live runs). */
  async function loadData(early = null) {
    const enabled = (entry, probe) => entry.run.spec?.probes?.[probe] != null;
    const again = early === null;
    ctx.layerSeries = {};
    await Promise.all([
      ...KEY_GROUPS.map((_, g) => fetchAll(`metrics:${g}`, async (entry) => {
        const series = await (early?.get(entry.run.id)?.[g] ?? fetchMetrics(entry.run.id, g));
        Object.assign(entry.metrics, series);
      })),
      fetchAll("spectra", async (entry) => {
        if (enabled(entry, "training_jacobian")) {
          entry.spectra = (await api.get(`/runs/${entry.run.id}/spectra?kind=training_jacobian`)).spectra;
        }
      }),
      fetchAll("trajectory", async (entry) => {
        if (!enabled(entry, "trajectory")) return;
        try {
          entry.trajectory = (await api.get(`/runs/${entry.run.id}/trajectory`)).trajectory;
        } catch (error) {
          if (error.status !== 404) throw error;
        }
      }),
    ]);
    if (!disposed && again) await redraw();
  }

  load().catch((error) => {
    status.classList.add("error");
    status.textContent = `Could not load the comparison: ${error.message}`;
    if (!entries.length) for (const view of views) view.hidden = true; // nothing to wait for
  });
  return () => {
    disposed = true;
    stop?.();
  };
}
