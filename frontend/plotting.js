// Plotly.js (served by the API, loaded on first use: see server/api/routes/vendor.py), the chart
// panel with its explicit states, and what every chart shares: layout, colours, smoothing.
import { h, replace } from "./dom.js";

// Two bundles of the same Plotly.js version: the cartesian one (1.5 MB: scatter, bar, heatmap,
// contour, ...) for pages whose charts are all 2-D, and the full one (4.8 MB, 3-D included).
// Compiling a bundle blocks the page for a few hundred milliseconds, three times longer for the
// full one, so a page loads the full one only when it draws a 3-D chart (see preferPlotly).
const BUNDLES = { cartesian: "/vendor/plotly-cartesian.min.js", full: "/vendor/plotly.min.js" };
const THREE_D = new Set(["surface", "scatter3d", "mesh3d", "cone", "volume", "isosurface", "streamtube"]);
const loading = {}; // bundle → Promise of its Plotly
const instances = {}; // bundle → its Plotly, once loaded
let preferred = "cartesian";
const prefetched = new Set();

/** Start downloading a Plotly.js bundle without running it (running it blocks the page:
 * better after the page has sent its data requests). */
export function prefetchPlotly(bundle) {
  if (prefetched.has(bundle) || loading.full || loading[bundle]) return;
  prefetched.add(bundle);
  document.head.append(h("link", { rel: "preload", as: "script", href: BUNDLES[bundle] }));
}

/** Which bundle 2-D charts should use from now on: "full" on a page that will also draw 3-D
 * charts, so that it compiles one bundle, not two. */
export function preferPlotly(bundle) {
  preferred = bundle;
}

/** Plotly.js for ``traces`` (the full bundle if any of them is 3-D, else the preferred one; a
 * full bundle already loaded serves 2-D charts too), each bundle loaded once. */
export function loadPlotly(traces = []) {
  const bundle = traces.some((t) => THREE_D.has(t.type)) || loading.full ? "full" : preferred;
  loading[bundle] ??= new Promise((resolve, reject) => {
    const script = h("script", { src: BUNDLES[bundle] });
    script.onload = () => {
      instances[bundle] = window.Plotly;
      window.Plotly = instances.full ?? instances.cartesian; // the full one, once there is one
      resolve(instances[bundle]);
    };
    script.onerror = () => {
      delete loading[bundle];
      reject(new Error(`Plotly.js could not be loaded from ${BUNDLES[bundle]}`));
    };
    document.head.append(script);
  });
  return loading[bundle];
}

let webgl = null;
/** Whether this browser can draw WebGL (3-D surfaces need it). */
export function webglAvailable() {
  if (webgl === null) {
    try {
      const canvas = document.createElement("canvas");
      webgl = Boolean(canvas.getContext("webgl2") || canvas.getContext("webgl"));
    } catch {
      webgl = false;
    }
  }
  return webgl;
}

/** One colour per run (Tableau 10), then dashes for runs 11–40. */
export const PALETTE = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948",
  "#b07aa1", "#ff9da7", "#9c755f", "#6b6b6b"];
const DASHES = ["solid", "dash", "dot", "dashdot"];
export function runStyle(index) {
  return { color: PALETTE[index % PALETTE.length], dash: DASHES[Math.floor(index / PALETTE.length) % DASHES.length] };
}
/** Colours for the series inside one run's chart (layers, eigenvalue indices). */
export const SERIES = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
  "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];

export const CONFIG = {
  displaylogo: false,
  responsive: true,
  modeBarButtonsToRemove: ["lasso2d", "select2d", "autoScale2d"],
  toImageButtonOptions: { format: "png", scale: 2 },
};

function isObject(value) {
  return value !== null && typeof value === "object" && !Array.isArray(value);
}

/** ``base`` with ``extra`` merged in, objects recursively. */
export function merge(base, extra) {
  const out = { ...base };
  for (const [key, value] of Object.entries(extra ?? {})) {
    out[key] = isObject(value) && isObject(base[key]) ? merge(base[key], value) : value;
  }
  return out;
}

export function baseLayout(extra = {}) {
  return merge({
    margin: { l: 58, r: 14, t: 6, b: 40 },
    font: { size: 11, family: "system-ui, sans-serif", color: "#1d2330" },
    xaxis: { title: { text: "step", standoff: 4 }, automargin: true, zeroline: false, gridcolor: "#eceef3" },
    yaxis: { automargin: true, zeroline: false, gridcolor: "#eceef3", exponentformat: "power" },
    legend: { orientation: "h", x: 0, y: 1.0, yanchor: "bottom", font: { size: 10 }, traceorder: "normal" },
    hovermode: "closest",
    paper_bgcolor: "#fff",
    plot_bgcolor: "#fff",
    uirevision: "keep",
  }, extra);
}

/**
 * Exponential moving average as TensorBoard draws it (debiased, so the start is not pulled
 * towards zero); nulls are kept as gaps. ``weight`` in [0, 1): 0 is no smoothing.
 */
export function smooth(values, weight) {
  if (!weight) return values;
  let last = 0;
  let count = 0;
  return values.map((value) => {
    if (value === null || !Number.isFinite(value)) return null;
    last = last * weight + (1 - weight) * value;
    count += 1;
    return last / (1 - weight ** count);
  });
}

/** Piecewise-linear ``y(x)`` through the points (xs ascending), constant beyond the ends. */
export function interpolate(xs, ys, x) {
  if (x <= xs[0]) return ys[0];
  const last = xs.length - 1;
  if (x >= xs[last]) return ys[last];
  let low = 0;
  let high = last;
  while (high - low > 1) {
    const mid = (low + high) >> 1;
    if (xs[mid] <= x) low = mid; else high = mid;
  }
  const t = (x - xs[low]) / (xs[high] - xs[low]);
  return ys[low] + t * (ys[high] - ys[low]);
}

/**
 * A chart panel: title, one-line caption with where the method comes from, controls, and
 * one of four states (data-state): loading, empty (with the reason), error (with a retry),
 * drawn. ``data-points`` holds how many points are drawn.
 */
export class Panel {
  constructor({ id, title, caption, source, wide = false, tall = false }) {
    this.id = id;
    this.controls = h("div", { class: "controls" });
    this.plot = h("div", { class: "plot", role: "img", "aria-label": title });
    this.message = h("p", { class: "state-message", role: "status" }, "Loading…");
    this.note = h("p", { class: "caption note" });
    this.title = h("h3", { id: `chart-${id}-title` }, title);
    this.caption = h("span", {}, caption);
    this.source = h("span", { class: "source" }, source ? `Method: ${source}` : "");
    this.element = h("section", {
      class: `panel${wide ? " wide" : ""}${tall ? " tall" : ""}`,
      dataset: { chart: id, state: "loading" },
      "aria-labelledby": `chart-${id}-title`,
    },
    h("header", {}, this.title, this.controls),
    h("p", { class: "caption" }, this.caption, source ? " " : "", source ? this.source : null),
    this.note, this.plot, this.message);
  }

  /** Reword the panel for what its data turned out to be (e.g. GGN rather than Hessian). */
  setHeading({ title, caption, source } = {}) {
    const texts = [[this.title, title], [this.caption, caption], [this.source, source && `Method: ${source}`]];
    for (const [element, text] of texts) if (text && element.textContent !== text) element.textContent = text;
    this.plot.setAttribute("aria-label", this.title.textContent);
  }

  /** A second line under the caption (e.g. which runs lack this chart's data). */
  setNote(text) {
    this.note.textContent = text ?? "";
    this.note.hidden = !text;
  }

  setLoading(text = "Loading…") {
    this.element.dataset.state = "loading";
    this.message.classList.remove("error");
    replace(this.message, text);
  }

  setEmpty(text) {
    this.element.dataset.state = "empty";
    this.message.classList.remove("error");
    replace(this.message, text);
    if (window.Plotly && this.plot.data) window.Plotly.purge(this.plot);
  }

  setError(text, retry) {
    this.element.dataset.state = "error";
    this.message.classList.add("error");
    replace(this.message, text, retry ? " " : "", retry ? h("button", { onclick: retry }, "Retry") : null);
  }

  /** Draw (or redraw in place) ``traces`` with the base layout merged with ``layout``. */
  async draw(traces, layout = {}, base = baseLayout) {
    const Plotly = await loadPlotly(traces);
    this.element.dataset.state = "drawn";
    await Plotly.react(this.plot, traces, base(layout), CONFIG);
    this.element.dataset.points = String(countPoints(traces));
    this.element.dataset.traces = String(traces.length);
  }

  /** A button that toggles a boolean setting (aria-pressed shows its state). */
  toggle(label, pressed, onChange) {
    const button = h("button", { type: "button", "aria-pressed": String(pressed), onclick: () => {
      const now = button.getAttribute("aria-pressed") !== "true";
      button.setAttribute("aria-pressed", String(now));
      onChange(now);
    } }, label);
    this.controls.append(button);
    return button;
  }

  /** A labelled select; ``choices``: [[value, label]]. */
  select(label, choices, value, onChange) {
    const select = h("select", { "aria-label": `${label} (${this.id})`, onchange: () => onChange(select.value) },
      choices.map(([v, text]) => h("option", { value: String(v), selected: String(v) === String(value) }, text)));
    this.controls.append(select);
    return select;
  }
}

function countPoints(traces) {
  let total = 0;
  for (const trace of traces) {
    if (trace.z) total += trace.z.reduce((n, row) => n + (Array.isArray(row) ? row.length : 1), 0);
    else if (trace.y) total += trace.y.length;
    else if (trace.x) total += trace.x.length;
  }
  return total;
}

/** Vertical marker at a step (the step a run diverged). */
export function stepMarker(step, text) {
  return {
    shapes: [{ type: "line", x0: step, x1: step, yref: "paper", y0: 0, y1: 1, line: { color: "#c62828", dash: "dot", width: 1.5 } }],
    annotations: [{ x: step, yref: "paper", y: 1, text, showarrow: false, xanchor: "right", font: { color: "#c62828", size: 10 } }],
  };
}

/** How many points to ask the server for, for a plot this wide (min/max pairs per pixel pair). */
export function pointsFor(width) {
  return Math.max(200, Math.min(2000, Math.round(width || 600)));
}
