// What the charts of one run share: reading series and spectra from the context, the
// reasons a chart is empty, per-layer styles, and the density resampling.
import { ACTIVE } from "./format.js";
import { SERIES, stepMarker } from "./plotting.js";

export function series(ctx, key) {
  const s = ctx.metrics?.[key];
  return s && s.steps.length ? s : null;
}

export function keysWith(ctx, prefix) {
  return Object.keys(ctx.metrics ?? {}).filter((key) => key.startsWith(prefix) && ctx.metrics[key].steps.length).sort();
}

export function line(s, name, style = {}, extra = {}) {
  const sparse = s.steps.length <= 60;
  return {
    type: "scatter", mode: sparse ? "lines+markers" : "lines", x: s.steps, y: s.values, name,
    line: { width: 1.6, ...style }, marker: { size: 4, color: style.color }, ...extra,
  };
}

export const probes = (ctx) => ctx.run.spec?.probes ?? {};
export const yType = (log) => (log ? "log" : "linear");

/** The optimizers with Adam's diagonal preconditioner: the curvature probe measures their
 * preconditioned sharpness (worker/curvature_probe.py). */
export const ADAM_FAMILY = new Set(["adam", "adamw"]);

/** How a run that stopped early stopped: "failed at step 12", "diverged at step 40". */
function stopped(run) {
  if (run.status === "diverged") return `diverged at step ${run.diverged_step ?? run.step}`;
  if (run.status === "cancelled") return `was cancelled at step ${run.step}`;
  return `${run.status} at step ${run.step}`;
}

/**
 * Why a run (``ctx``: {run, metrics, unavailable?}) has nothing for a chart of ``probe``
 * (null: any run records it): {text: a sentence for the run's page, brief: a few words for
 * the compare page, which groups runs by them}. In order: the chart is for Adam-family
 * optimizers only (``adam``), it is accuracy and the task is regression (``accuracy``), the
 * probe or its ``option`` was off, this server cannot serve it, the run has not measured it
 * yet (``atEnd``: it is measured when the run ends), the run stopped before measuring it.
 */
export function whyEmpty(ctx, probe, { atEnd = false, option = null, adam = false, accuracy = false } = {}) {
  const { run } = ctx;
  const spec = run.spec?.probes ?? {};
  const optimizer = run.spec?.optimizer?.name ?? "?";
  if (adam && !ADAM_FAMILY.has(optimizer)) {
    return {
      text: `Not measured: the preconditioned sharpness is for Adam and AdamW; this run used ${optimizer}.`,
      brief: "not an Adam-family optimizer",
    };
  }
  if (accuracy && series(ctx, "train/loss")) return { text: "No accuracy: this run's task is regression.", brief: "regression task" };
  if (probe && probe !== "norms" && (spec[probe] === null || spec[probe] === undefined)) {
    return {
      text: `Not measured: the ${probe.replace("_", " ")} probe was not enabled for this run (probes.${probe}).`,
      brief: `probes.${probe} off`,
    };
  }
  if (probe === "norms" && spec.norms === false) return { text: "Not measured: probes.norms was off for this run.", brief: "probes.norms off" };
  if (option && spec[probe] && spec[probe][option] === false) {
    return { text: `Not measured: probes.${probe}.${option} was off for this run.`, brief: `probes.${probe}.${option} off` };
  }
  if (ctx.unavailable?.[probe]) return { text: ctx.unavailable[probe], brief: "not available on this server" };
  if (ACTIVE.has(run.status)) {
    const state = run.status === "queued" ? "queued" : "still running";
    return atEnd
      ? { text: "Computed at the end of the run; waiting for the run to finish.", brief: `${state}; measured when it ends` }
      : { text: "No measurement yet; waiting for the first probe step.", brief: state };
  }
  if (run.status === "completed") {
    return { text: "Nothing was recorded for this chart, although the run completed.", brief: "nothing recorded" };
  }
  return {
    text: `Nothing was recorded for this chart: the run ${stopped(run)}, before measuring it${run.error ? " (see its error above)" : ""}.`,
    brief: `${run.status} before it was measured`,
  };
}

/** Why a chart of ``probe`` is empty on a run's page (see ``whyEmpty``). */
export function emptyReason(ctx, probe, options = {}) {
  return whyEmpty(ctx, probe, options).text;
}

const HESSIAN = { name: "Hessian", symbol: "H", what: "the loss Hessian", products: "Hessian-vector products" };
const GGN = { name: "GGN", symbol: "G", what: "the generalised Gauss–Newton matrix G (GGN) of the loss", products: "GGN-vector products" };

/** The curvature matrix that runs with these specs measured (probes.hessian.matrix):
 * {name: "Hessian", "GGN" or, when they differ, "Hessian or GGN"; symbol ("H", "G", "H or
 * G"); symbols: each one's; what: in words; products: its matrix-vector products; mixed:
 * whether they differ}. */
export function curvatureMatrix(specs) {
  const used = new Set(specs.map((spec) => spec?.probes?.hessian?.matrix).filter(Boolean));
  if (used.size > 1) {
    return {
      name: "Hessian or GGN", symbol: "H or G", symbols: ["H", "G"], mixed: true, products: "Hessian- or GGN-vector products",
      what: "the loss Hessian (for the GGN runs, the generalised Gauss–Newton matrix G)",
    };
  }
  const matrix = used.has("ggn") ? GGN : HESSIAN;
  return { ...matrix, symbols: [matrix.symbol], mixed: false };
}

/** Title, caption and source of a chart about the curvature matrix, worded by
 * ``words(matrix)`` → {title?, caption?, source?}: for the Hessian until the runs are known
 * (``specsOf(ctx)``), then for the matrix they used (``heading``, see chart_mount.js).
 * Spread into the chart's definition. */
export function curvatureWording(words, specsOf) {
  return { ...words(curvatureMatrix([])), heading: (ctx) => words(curvatureMatrix(specsOf(ctx))) };
}

export function divergedMarker(ctx) {
  const step = ctx.run.diverged_step;
  return step === null || step === undefined ? {} : stepMarker(step, `diverged at ${step}`);
}

export function layerName(key) {
  return key.split("/").slice(1).join("/").replace(/\.weight$/, ".W").replace(/\.bias$/, ".b");
}

/** Colours of the per-layer charts: category10 (SERIES), then ten more from colorcet's
 * glasbey_category10 (Glasbey et al. 2007: maximally distinct from those before), leaving out
 * its light ones, which vanish on white. */
const LAYER_COLOURS = [...SERIES, "#3a0183", "#004301", "#b80080", "#004e53", "#6b6500",
  "#7d0200", "#6126ff", "#028268", "#ad8944", "#5e0040"];
/** Once the colours are used up, the next round of tensors dashes; never dotted: in the
 * weight-norm chart dotted is a weight matrix's spectral norm. */
const LAYER_DASHES = ["solid", "dash", "dashdot", "longdash"];

/** One style per parameter tensor, {color, dash}, the same in every per-layer chart: the
 * first 20 tensors each a colour of its own, solid; the next 20 the same colours dashed, and
 * so on. */
export function layerStyles(ctx) {
  const layers = keysWith(ctx, "weight_norm/").map((key) => key.slice("weight_norm/".length));
  return (key) => {
    const index = Math.max(0, layers.indexOf(key.split("/").slice(1).join("/")));
    const round = Math.floor(index / LAYER_COLOURS.length);
    return { color: LAYER_COLOURS[index % LAYER_COLOURS.length], dash: LAYER_DASHES[round % LAYER_DASHES.length] };
  };
}

export function curvaturePrefix(ctx) {
  if (keysWith(ctx, "hessian/top_").length) return "hessian";
  if (keysWith(ctx, "ggn/top_").length) return "ggn";
  return probes(ctx).hessian?.matrix ?? "hessian";
}

/** Whether a run's model has batch norm (``model.batch_norm``: stored specs carry every
 * default, and the resnet's is true). */
export const hasBatchNorm = (spec) => spec?.model?.batch_norm === true;

/**
 * Why a batch-normed model's sharpness may sit above its stability threshold in a stable
 * run: the probes evaluate in eval mode (running statistics), so they measure the curvature
 * of the eval-mode loss, not of the batch-statistics loss that training steps on. ``runs``:
 * the runs it is about ("#5"), or none for the run of the page; ``threshold``: whether the
 * chart draws one.
 */
export function batchNormNote({ runs = [], threshold = true } = {}) {
  const [who, verb, them, their, line] = !runs.length ? ["This model", "has", "it", "its", "the dashed threshold"]
    : runs.length === 1 ? [runs[0], "has", "it", "its", "its dashed threshold"]
      : [runs.join(", "), "have", "them", "their", "their dashed thresholds"];
  const measured = `${who} ${verb} batch norm, and the probes evaluate ${them} in eval mode (running statistics): ${their} sharpness here is that of the eval-mode loss, not of the batch-statistics loss that training steps on`;
  return threshold ? `${measured}, so it can sit above ${line} in a stable run.` : `${measured}.`;
}

/** Why a batch-normed model's probe-batch and held-out losses can differ from its minibatch
 * loss: the probes evaluate in eval mode (running statistics), training with the minibatch's
 * own statistics. */
export const BATCH_NORM_LOSS_NOTE = "This model has batch norm: the probe-batch and held-out losses are evaluated with its running statistics (eval mode), the minibatch loss (grey) with the minibatch's own, as training steps on it, so the two can differ.";

export function thresholdLabel(spec) {
  const optimizer = spec.optimizer ?? {};
  if (optimizer.momentum) return `(2+2β)/lr, β = ${optimizer.momentum}`;
  return "2/lr";
}

/** One line per parameter tensor of the series under ``prefix``, each in its tensor's style
 * (``layerStyles``); ``dash`` overrides the style's dash for every line. */
export const perLayer = (ctx, prefix, { dash, width = 1.3 } = {}) => {
  const style = layerStyles(ctx);
  return keysWith(ctx, prefix).map((key) => line(series(ctx, key), layerName(key),
    { ...style(key), ...(dash ? { dash } : {}), width }, { legendgroup: layerName(key) }));
};

/** Legend entries that fit above a plot in about two rows; more go to its right. */
const LEGEND_ABOVE_AT_MOST = 8;

/** The legend of a chart with one trace per parameter tensor: above the plot (as every chart
 * has it) for a few tensors; for deeper models (a ResNet has dozens) in a column to the right
 * that scrolls within the plot's height, so that the plot keeps its height. */
export function layerLegend(traces) {
  const entries = traces.filter((t) => t.showlegend !== false).length;
  if (entries <= LEGEND_ABOVE_AT_MOST) return {};
  return { legend: { orientation: "v", x: 1.01, xanchor: "left", y: 1, yanchor: "top", yref: "paper", maxheight: 1, tracegroupgap: 0, font: { size: 9 }, itemwidth: 30 } };
}

export function entriesOf(ctx, kinds) {
  for (const kind of kinds) if (ctx.spectra?.[kind]?.length) return { kind, entries: ctx.spectra[kind] };
  return null;
}

/** Spectrum entries over steps → one line per index (the first ``count``). */
export function indexLines(entries, pick, count, name) {
  const n = Math.min(count, ...entries.map((e) => pick(e).length));
  return Array.from({ length: n }, (_, i) => ({
    type: "scatter", mode: entries.length <= 60 ? "lines+markers" : "lines", name: name(i),
    x: entries.map((e) => e.step), y: entries.map((e) => pick(e)[i]),
    line: { width: i === 0 ? 2 : 1.2, color: SERIES[i % SERIES.length] }, marker: { size: 3 },
  }));
}

/** Density entries (each with its own grid in meta) on one common grid, steps as columns. */
export function densityHeatmap(entries, log, rows = 160, columns = 400) {
  const stride = Math.max(1, Math.ceil(entries.length / columns));
  const picked = entries.filter((_, i) => i % stride === 0 || i === entries.length - 1);
  const grids = picked.map((e) => {
    const n = e.values.length;
    const start = e.meta?.grid_start ?? 0;
    const stop = e.meta?.grid_stop ?? 1;
    return { start, step: n > 1 ? (stop - start) / (n - 1) : 1, values: e.values };
  });
  const low = Math.min(...grids.map((g) => g.start));
  const high = Math.max(...grids.map((g) => g.start + g.step * (g.values.length - 1)));
  const grid = Array.from({ length: rows }, (_, i) => low + ((high - low) * i) / (rows - 1));
  const peak = Math.max(...grids.flatMap((g) => g.values.filter((v) => v !== null)));
  const floor = peak * 1e-8;
  const z = grid.map((y) => grids.map((g) => {
    const at = (y - g.start) / g.step;
    if (at < 0 || at > g.values.length - 1) return log ? Math.log10(floor) : 0;
    const i = Math.floor(at);
    const frac = at - i;
    const value = (g.values[i] ?? 0) * (1 - frac) + (g.values[Math.min(i + 1, g.values.length - 1)] ?? 0) * frac;
    return log ? Math.log10(Math.max(value, floor)) : value;
  }));
  return { steps: picked.map((e) => e.step), grid, z };
}
