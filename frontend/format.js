// Formatting of numbers, times and run specs, and the status badge and progress bar.
import { h } from "./dom.js";

export const STATUSES = ["queued", "running", "completed", "failed", "diverged", "cancelled"];
export const ACTIVE = new Set(["queued", "running"]);

/** A number in at most 4 significant digits ("—" for null). */
export function num(value) {
  if (value === null || value === undefined || Number.isNaN(value)) return "—";
  if (typeof value !== "number") return String(value);
  if (value === 0) return "0";
  const magnitude = Math.abs(value);
  if (magnitude >= 1e5 || magnitude < 1e-3) return value.toExponential(2);
  return String(Number(value.toPrecision(4)));
}

export function percent(value) {
  return value === null || value === undefined ? "—" : `${(100 * value).toFixed(1)}%`;
}

/** "850 ms", "12.3 s", "4 min 05 s", "2 h 03 min". */
export function duration(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
  if (seconds < 60) return `${seconds.toFixed(1)} s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes} min ${String(Math.round(seconds % 60)).padStart(2, "0")} s`;
  return `${Math.floor(minutes / 60)} h ${String(minutes % 60).padStart(2, "0")} min`;
}

/** When ``iso`` was, briefly: the time for today, else the date and time ("Mar 7, 09:30";
 * the year too when it is not this year's). */
export function when(iso) {
  if (!iso) return "—";
  const date = new Date(iso);
  const now = new Date();
  const time = { hour: "2-digit", minute: "2-digit" };
  if (now.toDateString() === date.toDateString()) return date.toLocaleTimeString([], time);
  const year = date.getFullYear() === now.getFullYear() ? undefined : "numeric";
  return date.toLocaleString([], { day: "numeric", month: "short", year, ...time });
}

/** ``text`` as a sentence of its own: capitalised, ending in a full stop. */
export function sentence(text) {
  const trimmed = String(text ?? "").trim();
  if (!trimmed) return "";
  const capitalised = trimmed[0].toUpperCase() + trimmed.slice(1);
  return /[.!?]$/.test(capitalised) ? capitalised : `${capitalised}.`;
}

export function statusBadge(run) {
  const text = run.status === "diverged" && run.diverged_step !== null
    ? `diverged @ ${run.diverged_step}`
    : run.cancel_requested && run.status === "running" ? "cancelling" : run.status;
  return h("span", { class: `status status-${run.status}`, dataset: { status: run.status } }, text);
}

export function progressBar(run) {
  return h("span", { class: "progress" },
    h("progress", { max: run.steps || 1, value: run.step, "aria-label": `step ${run.step} of ${run.steps}` }),
    h("span", {}, `${run.step.toLocaleString()} / ${run.steps.toLocaleString()}`));
}

/** "#12 name" (or "#12" for unnamed runs). */
export function runLabel(run) {
  return run.name ? `#${run.id} ${run.name}` : `#${run.id}`;
}

/** Optimizers whose every step uses the whole training set: their data.batch_size is unused. */
const FULL_BATCH = new Set(["gd"]);

/** The hyperparameters that say what a run is, in a few words per part. */
export function keyHyperparameters(spec) {
  const model = spec.model ?? {};
  const data = spec.data ?? {};
  const optimizer = spec.optimizer ?? {};
  const shape = model.widths ?? model.channels;
  const modelText = [
    model.name,
    shape ? shape.join("-") : model.width ? `w${model.width}` : model.d_model ? `d${model.d_model}` : "",
    model.activation ?? "",
  ].filter(Boolean).join(" ");
  const optimizerText = [
    optimizer.name,
    `lr ${num(optimizer.lr)}`,
    optimizer.momentum ? `β ${optimizer.momentum}` : "",
    optimizer.weight_decay ? `wd ${num(optimizer.weight_decay)}` : "",
    optimizer.schedule && optimizer.schedule.name !== "constant" ? optimizer.schedule.name : "",
  ].filter(Boolean).join(" ");
  const batch = FULL_BATCH.has(optimizer.name) ? "full batch" : `bs ${data.batch_size ?? "?"}`;
  return {
    model: modelText,
    data: `${data.name ?? "?"} · ${batch}`,
    optimizer: optimizerText,
    seed: spec.seed,
  };
}

/** {"model.widths": "128, 128", "optimizer.lr": 0.1, ...}: every leaf of a spec. */
export function flattenSpec(spec, prefix = "", out = {}) {
  for (const [key, value] of Object.entries(spec ?? {})) {
    const path = prefix ? `${prefix}.${key}` : key;
    if (value !== null && typeof value === "object" && !Array.isArray(value)) {
      flattenSpec(value, path, out);
    } else {
      out[path] = Array.isArray(value) ? value.join(", ") : value;
    }
  }
  return out;
}

/** The leaves whose values differ between the specs (a leaf missing in one counts). */
export function differingKeys(specs, ignore = ["name"]) {
  const flat = specs.map((spec) => flattenSpec(spec));
  const keys = new Set(flat.flatMap((f) => Object.keys(f)));
  return [...keys].filter((key) => !ignore.includes(key)
    && new Set(flat.map((f) => JSON.stringify(f[key] ?? null))).size > 1).sort();
}

/** The spec keys a researcher varies, in the order a reader looks for them: the optimizer,
 * the model's architecture and size, the seed, the dataset. */
const KEY_PRIORITY = [
  "optimizer.name", "optimizer.lr", "optimizer.momentum", "optimizer.weight_decay", "optimizer.schedule.name",
  "model.name", "model.widths", "model.width", "model.channels", "model.d_model", "model.depth", "model.n_layers",
  "seed", "data.name",
];
/** The other keys by section, alphabetically within each; the probes' last. */
const SECTIONS = ["optimizer", "model", "seed", "data", "steps"];

function keyRank(key) {
  const priority = KEY_PRIORITY.indexOf(key);
  if (priority >= 0) return [0, priority];
  const section = key.split(".")[0];
  const index = SECTIONS.indexOf(section);
  return [1, index >= 0 ? index : section === "probes" ? SECTIONS.length + 1 : SECTIONS.length];
}

/** ``keys`` (dotted spec paths) in KEY_PRIORITY's order, then by section and name. */
export function orderSpecKeys(keys) {
  return [...keys].sort((a, b) => {
    const [ra, rb] = [keyRank(a), keyRank(b)];
    return ra[0] - rb[0] || ra[1] - rb[1] || (a < b ? -1 : a > b ? 1 : 0);
  });
}

/**
 * The (at most ``max``) differing spec keys that tell these runs apart best, in
 * ``orderSpecKeys``' order of preference. A key is taken when it tells apart runs the keys
 * taken before it do not; keys that only say whether a setting exists (another optimizer's
 * or model's own parameters, which its ``name`` already says: "momentum=—") come last.
 * Slots left once every run is told apart go to the other keys whose values differ.
 */
export function legendKeys(specs, max = 3) {
  const flat = specs.map((spec) => flattenSpec(spec));
  const valued = (key) => new Set(flat.map((f) => f[key]).filter((v) => v !== undefined && v !== null).map((v) => JSON.stringify(v))).size > 1;
  const keys = orderSpecKeys(differingKeys(specs));
  const chosen = [];
  const groups = (taken) => new Set(flat.map((f) => JSON.stringify(taken.map((key) => f[key] ?? null)))).size;
  for (const key of [...keys.filter(valued), ...keys.filter((k) => !valued(k))]) {
    if (chosen.length < max && groups([...chosen, key]) > groups(chosen)) chosen.push(key);
  }
  for (const key of keys.filter(valued)) {
    if (chosen.length < max && !chosen.includes(key)) chosen.push(key);
  }
  return orderSpecKeys(chosen);
}

/** "optimizer.lr=0.05", "model.widths=[16, 16]", "data.channels=—" (absent from ``spec``). */
export function specSetting(spec, key) {
  const value = at(spec, key);
  const text = value === null || value === undefined ? "—" : Array.isArray(value) ? `[${value.join(", ")}]` : String(value);
  return `${key}=${text}`;
}

/** ``spec`` at a dotted ``path`` (undefined when absent). */
export function at(spec, path) {
  return path.split(".").reduce((node, part) => (node == null ? undefined : node[part]), spec);
}
