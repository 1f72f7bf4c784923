// What the charts of one run share: reading series and spectra from the context, the
// reasons a chart is empty, per-layer colours, and the density resampling.
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

/** Why a chart of ``probe`` is empty: not enabled, not yet measured, or nothing recorded. */
export function emptyReason(ctx, probe, { atEnd = false, option = null } = {}) {
  const spec = probes(ctx);
  if (probe && probe !== "norms" && (spec[probe] === null || spec[probe] === undefined)) {
    return `Not measured: the ${probe.replace("_", " ")} probe was not enabled for this run (probes.${probe}).`;
  }
  if (probe === "norms" && spec.norms === false) return "Not measured: probes.norms was off for this run.";
  if (option && spec[probe] && spec[probe][option] === false) {
    return `Not measured: probes.${probe}.${option} was off for this run.`;
  }
  if (ctx.unavailable?.[probe]) return ctx.unavailable[probe];
  if (ACTIVE.has(ctx.run.status)) {
    return atEnd ? "Computed at the end of the run; waiting for the run to finish." : "No measurement yet; waiting for the first probe step.";
  }
  return `Nothing was recorded for this chart (the run is ${ctx.run.status}${ctx.run.error ? ": see its error above" : ""}).`;
}

export function divergedMarker(ctx) {
  const step = ctx.run.diverged_step;
  return step === null || step === undefined ? {} : stepMarker(step, `diverged at ${step}`);
}

export function layerName(key) {
  return key.split("/").slice(1).join("/").replace(/\.weight$/, ".W").replace(/\.bias$/, ".b");
}

/** One colour per layer, the same in every per-layer chart. */
export function layerColours(ctx) {
  const layers = keysWith(ctx, "weight_norm/").map((key) => key.slice("weight_norm/".length));
  return (key) => {
    const index = layers.indexOf(key.split("/").slice(1).join("/"));
    return SERIES[(index < 0 ? 0 : index) % SERIES.length];
  };
}

export function curvaturePrefix(ctx) {
  if (keysWith(ctx, "hessian/top_").length) return "hessian";
  if (keysWith(ctx, "ggn/top_").length) return "ggn";
  return probes(ctx).hessian?.matrix ?? "hessian";
}

export function thresholdLabel(spec) {
  const optimizer = spec.optimizer ?? {};
  if (optimizer.momentum) return `(2+2β)/lr, β = ${optimizer.momentum}`;
  return "2/lr";
}

export const perLayer = (ctx, prefix, dash = "solid", width = 1.3) => {
  const colour = layerColours(ctx);
  return keysWith(ctx, prefix).map((key) => line(series(ctx, key), layerName(key), { color: colour(key), dash, width }, { legendgroup: layerName(key) }));
};

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
