// The charts of the compare page: the selected runs overlaid, one colour per run on every
// chart. build(ctx, s) like charts.js, with
// ctx: {runs: [{run, color, dash, label, metrics, spectra, trajectory}], x: "step" | "wall",
//       smoothing: 0..0.99, layers: [...], layerSeries: {runId: {key: series}}}
// A chart says which runs lack its data and why (the reasons of the run page, chart_data.js).
import { ADAM_FAMILY, batchNormNote, curvatureMatrix, curvatureWording, hasBatchNorm, whyEmpty } from "./chart_data.js";
import { baseLayout, interpolate, smooth } from "./plotting.js";

/** x values of a run's steps: the steps, or seconds since the run started — from the
 * worker's clock (``time/elapsed``, recorded at every probe step, linear in between), or for
 * runs recorded before that metric existed, estimated by spreading the run's duration evenly
 * over its steps. */
function xOf(ctx, entry, steps) {
  if (ctx.x !== "wall") return steps;
  const clock = entry.metrics?.["time/elapsed"];
  if (clock?.steps?.length >= 2) return steps.map((s) => interpolate(clock.steps, clock.values, s));
  const { duration_s: seconds, step } = entry.run;
  const perStep = seconds && step ? seconds / step : null;
  return perStep === null ? steps.map(() => null) : steps.map((s) => s * perStep);
}

export function xTitle(ctx) {
  return ctx.x === "wall" ? "wall time since start, s" : "step";
}

function pick(entry, keys) {
  for (const key of keys) {
    const s = entry.metrics?.[key];
    if (s?.steps?.length) return { key, series: s };
  }
  return null;
}

/** One trace per run for the first of ``keys`` it recorded (and its ``companion`` dashed);
 * ``tag(entry)``: words to add to a run's trace name (or null), ``yFormat``: of the hover. */
export function overlay(ctx, keys, { companion = null, companionName = "", smoothing = true, tag = null, yFormat = ".4g" } = {}) {
  const traces = [];
  const missing = [];
  for (const entry of ctx.runs) {
    const found = pick(entry, keys);
    if (!found) {
      missing.push(entry);
      continue;
    }
    const { series } = found;
    const tagged = tag?.(entry);
    const name = tagged ? `${entry.label} (${tagged})` : entry.label;
    const who = tagged ? `#${entry.run.id} ${tagged}` : `#${entry.run.id}`;
    const x = xOf(ctx, entry, series.steps);
    const weight = smoothing ? ctx.smoothing : 0;
    const mode = series.steps.length <= 40 ? "lines+markers" : "lines";
    if (weight) {
      traces.push({ type: "scatter", mode: "lines", x, y: series.values, line: { color: entry.color, width: 1 }, opacity: 0.22, hoverinfo: "skip", showlegend: false });
    }
    traces.push({
      type: "scatter", mode, x, y: smooth(series.values, weight), name,
      line: { color: entry.color, dash: entry.dash, width: 1.8 }, marker: { size: 4, color: entry.color },
      hovertemplate: `${who}: %{y:${yFormat}}<extra></extra>`,
    });
    const other = companion ? pick(entry, [companion(found.key)]) : null;
    if (other) {
      traces.push({
        type: "scatter", mode: "lines", x: xOf(ctx, entry, other.series.steps), y: other.series.values,
        name: `${name} ${companionName}`, line: { color: entry.color, dash: "dash", width: 1.2 },
        hovertemplate: `${who} ${companionName}: %{y:${yFormat}}<extra></extra>`,
      });
    }
  }
  return { traces, missing };
}

/** "#3, #4 (probes.hessian.trace off); #7 (probes.hessian off)": ``entries`` grouped by
 * ``why(entry)``, the brief reason each lacks a chart's data. */
function byReason(entries, why) {
  const groups = new Map();
  for (const entry of entries) {
    const reason = why(entry);
    groups.set(reason, [...(groups.get(reason) ?? []), `#${entry.run.id}`]);
  }
  return [...groups].map(([reason, ids]) => `${ids.join(", ")}${reason ? ` (${reason})` : ""}`).join("; ");
}

function missingNote(missing, why) {
  return missing.length ? `Not recorded by ${byReason(missing, why)}.` : "";
}

function noneRecorded(ctx, why) {
  return `None of the selected runs recorded this: ${byReason(ctx.runs, why)}.`;
}

/** why(entry) for a chart of ``probe``: the brief reason of whyEmpty (same ``options``). */
const reason = (probe, options = {}) => (entry) => whyEmpty(entry, probe, options).brief;

const specsOf = (ctx) => (ctx.runs ?? []).map((entry) => entry.run.spec);

/** The matrix of each run's trace, where the runs measured different ones. */
const matrixTag = (ctx) => (curvatureMatrix(specsOf(ctx)).mixed ? (entry) => curvatureMatrix([entry.run.spec]).name : null);

export function compareLayout(extra) {
  return baseLayout({ showlegend: false, hovermode: "x unified", ...extra });
}

/**
 * A chart of the scalar series ``keys`` (the first a run recorded), one trace per run.
 * ``title``, ``caption`` and ``source`` may be functions of the curvature matrix (chart_data.js
 * curvatureMatrix) for charts about it, as may ``options.yTitle``. Options: probe, option,
 * adam, accuracy (whyEmpty's), companion, companionName, companionKeys (a dashed line per
 * run), contextKeys (read for the reasons), logY, percent, smoothing, curvature (tag each
 * trace with its run's matrix where they differ), captionNote(ctx) (a sentence to add to the
 * caption for the runs selected, or "").
 */
function scalarChart(id, title, keys, caption, source, options = {}) {
  const { probe = null, option = null, adam = false, accuracy = false, percent = false } = options;
  const why = reason(probe, { option, adam, accuracy });
  const word = (text, matrix) => (typeof text === "function" ? text(matrix) : text);
  const wording = [title, caption, source].some((text) => typeof text === "function")
    ? curvatureWording((matrix) => ({ title: word(title, matrix), caption: word(caption, matrix), source: word(source, matrix) }), specsOf)
    : { title, caption, source };
  const { captionNote } = options;
  if (captionNote) {
    const heading = wording.heading ?? (() => ({ title, caption, source }));
    wording.heading = (ctx) => {
      const words = heading(ctx);
      const note = captionNote(ctx);
      return note ? { ...words, caption: `${words.caption} ${note}` } : words;
    };
  }
  return {
    id, ...wording, keys: [...keys, ...(options.companionKeys ?? []), ...(options.contextKeys ?? [])], needs: ["metrics"],
    settings: { logY: options.logY ?? false },
    build(ctx, s) {
      const tag = options.curvature ? matrixTag(ctx) : null;
      const { traces, missing } = overlay(ctx, keys, { ...options, tag, yFormat: percent ? ".1%" : ".4g" });
      if (!traces.length) return { empty: noneRecorded(ctx, why) };
      const yTitle = word(options.yTitle, curvatureMatrix(specsOf(ctx))) ?? keys[0];
      return {
        traces, note: missingNote(missing, why), base: compareLayout,
        layout: {
          xaxis: { title: { text: xTitle(ctx) } },
          yaxis: { type: s.logY ? "log" : "linear", title: { text: yTitle }, ...(percent ? { tickformat: ".0%", hoverformat: ".1%" } : {}) },
        },
      };
    },
  };
}

const threshold = (key) => key.replace(/top_1$/, "threshold");

/** The batch-norm note (chart_data.js) for the runs with the curvature probe whose model has
 * batch norm (``adam``: Adam-family runs only); "" when there are none. */
const batchNormCaption = ({ adam = false } = {}) => (ctx) => {
  const measured = ({ run }) => run.spec?.probes?.hessian != null && hasBatchNorm(run.spec)
    && (!adam || ADAM_FAMILY.has(run.spec?.optimizer?.name));
  const runs = (ctx.runs ?? []).filter(measured).map((entry) => `#${entry.run.id}`);
  return runs.length ? batchNormNote({ runs }) : "";
};

export const COMPARE_CHARTS = [
  scalarChart("batch_loss", "Minibatch loss", ["train/batch_loss"], "Loss of the minibatch about to be trained on, at every step.", "direct.", { yTitle: "loss" }),
  scalarChart("train_loss", "Loss on the probe batch", ["train/loss"], "Training loss on each run's fixed probe batch, at its probe steps.", "direct, eval mode.", { yTitle: "loss" }),
  scalarChart("test_loss", "Held-out loss", ["test/loss"], "Loss on the held-out batch.", "direct, eval mode.", { yTitle: "loss" }),
  scalarChart("train_accuracy", "Train accuracy", ["train/accuracy"], "Accuracy on the probe batch (classification runs).", "direct, eval mode.", { yTitle: "accuracy", percent: true, accuracy: true, contextKeys: ["train/loss"] }),
  scalarChart("test_accuracy", "Held-out accuracy", ["test/accuracy"], "Accuracy on the held-out batch (classification runs).", "direct, eval mode.", { yTitle: "accuracy", percent: true, accuracy: true, contextKeys: ["train/loss"] }),
  scalarChart("grad_norm", "Gradient norm", ["grad_norm"], "Norm of the gradient of the probe-batch loss, all parameters.", "direct.", { logY: true, yTitle: "‖∇L‖", probe: "norms" }),
  scalarChart("distance", "Distance from initialisation", ["distance_from_init"], "‖θ − θ₀‖ over all parameters.", "direct.", { yTitle: "‖θ − θ₀‖", probe: "norms" }),
  scalarChart("sharpness", "Sharpness λ₁ and its stability threshold", ["hessian/top_1", "ggn/top_1"],
    ({ what }) => `Largest eigenvalue of ${what} on the probe batch; dashed, same colour: the run's threshold 2/lr ((2+2β)/lr with momentum; Adam's is on the preconditioned sharpness).`,
    ({ products }) => `Lanczos on ${products}; Cohen et al. 2021.`,
    { companion: threshold, companionName: "threshold", companionKeys: ["hessian/threshold", "ggn/threshold"], yTitle: "λ₁", probe: "hessian", curvature: true,
      captionNote: batchNormCaption() }),
  // GGN runs keep it under ggn/ (those recorded before that change, under hessian/)
  scalarChart("preconditioned", "Preconditioned sharpness (Adam)", ["hessian/preconditioned_top_1", "ggn/preconditioned_top_1"],
    ({ symbol, what }) => `λ₁ of P⁻¹${symbol}, ${what} preconditioned by Adam's P = diag(√v̂ + ε); dashed: its threshold (2+2β₁)/((1−β₁)·lr).`,
    "Cohen et al. 2022.",
    { companion: threshold, companionName: "threshold", companionKeys: ["hessian/preconditioned_threshold", "ggn/preconditioned_threshold"],
      yTitle: ({ symbols }) => symbols.map((m) => `λ₁(P⁻¹${m})`).join(" or "), probe: "hessian", adam: true, curvature: true, logY: true,
      captionNote: batchNormCaption({ adam: true }) }),
  scalarChart("min_eigenvalue", ({ name }) => `Smallest ${name} eigenvalue`, ["hessian/min"],
    ({ what }) => `The most negative eigenvalue of ${what} on the probe batch.`, "Lanczos, smallest end.",
    { yTitle: "λ_min", probe: "hessian", option: "min_eigenvalue", curvature: true }),
  scalarChart("trace", ({ name }) => `${name} trace`, ["hessian/trace", "ggn/trace"],
    ({ what }) => `Hutch++ estimate of the trace of ${what}.`, "Hutch++ (Meyer et al. 2021).",
    { yTitle: ({ symbols }) => symbols.map((m) => `tr ${m}`).join(" or "), probe: "hessian", option: "trace", curvature: true }),
  scalarChart("ntk_top", "Largest NTK eigenvalue", ["ntk/top_1"], "Top eigenvalue of the empirical NTK on the probe inputs.", "Jacot et al. 2018.", { logY: true, yTitle: "λ₁(NTK)", probe: "jacobian", option: "ntk" }),
  scalarChart("ntk_velocity", "NTK velocity", ["ntk/velocity"], "Relative change of the empirical NTK since the previous probe: lazy (≈0) vs rich training.", "Fort et al. 2020; Kumar et al. 2024.", { yTitle: "velocity", probe: "jacobian", option: "ntk" }),
  scalarChart("jacobian_top", "Largest input–output singular value", ["jacobian/mean_largest"], "Largest singular value of ∂outputs/∂inputs, mean over the probe inputs.", "vmap(jacrev); Pennington et al. 2017.", { logY: true, yTitle: "σ₁", probe: "jacobian", option: "input_output" }),
  scalarChart("lr", "Learning rate", ["lr"], "The learning rate at each probe step (schedules, warmup).", "the optimiser's schedule.", { yTitle: "lr", smoothing: false }),
  {
    id: "per_layer", title: "Per layer", needs: ["layers"], settings: { logY: false, quantity: "weight_norm", layer: null },
    caption: "One quantity of one parameter tensor, for every run (choose both above).",
    source: "direct (norms probe).",
    selects: [
      { key: "quantity", label: "quantity", choices: () => [["weight_norm", "weight L2 norm"], ["spectral_norm", "spectral norm"], ["update_ratio", "update/weight ratio"], ["grad_norm", "gradient norm"]] },
      { key: "layer", label: "layer", choices: (ctx) => ctx.layers.map((layer) => [layer, layer]) },
    ],
    keysFor: (s, ctx) => (s.layer ?? ctx.layers[0] ? [`${s.quantity}/${s.layer ?? ctx.layers[0]}`] : []),
    build(ctx, s) {
      const layer = s.layer ?? ctx.layers[0];
      if (!layer) return { empty: noneRecorded(ctx, reason("norms")) };
      const key = `${s.quantity}/${layer}`;
      const view = { ...ctx, runs: ctx.runs.map((entry) => ({ ...entry, metrics: { ...entry.metrics, ...(ctx.layerSeries?.[entry.run.id] ?? {}) } })) };
      const { traces, missing } = overlay(view, [key]);
      if (!traces.length) return { empty: noneRecorded(ctx, reason("norms")) };
      return { traces, note: missingNote(missing, reason("norms")), base: compareLayout, layout: { xaxis: { title: { text: xTitle(ctx) } }, yaxis: { type: s.logY ? "log" : "linear", title: { text: key } } } };
    },
  },
  {
    id: "training_jacobian", title: "Training-Jacobian spectra", needs: ["spectra"], settings: { logY: true },
    caption: "Singular values of dθ_T/dθ₀, descending, per run; above 1 + t chaotic, within t of 1 bulk, below 1 − t stable.",
    source: "Belrose & Scherlis 2024.",
    build(ctx, s) {
      const traces = [];
      const missing = [];
      for (const entry of ctx.runs) {
        const last = entry.spectra?.training_jacobian?.at(-1);
        if (!last) { missing.push(entry); continue; }
        const values = last.values.flat();
        const m = last.meta ?? {};
        traces.push({ type: "scatter", mode: "lines", x: values.map((_, i) => i + 1), y: values, name: entry.label, line: { color: entry.color, dash: entry.dash, width: 1.8 },
          hovertemplate: `#${entry.run.id} σ=%{y:.4g} (chaotic ${m.chaotic ?? "?"}, bulk ${m.bulk ?? "?"}, stable ${m.stable ?? "?"})<extra></extra>` });
      }
      const why = reason("training_jacobian", { atEnd: true });
      if (!traces.length) return { empty: noneRecorded(ctx, why) };
      return { traces, note: missingNote(missing, why), base: compareLayout, layout: { hovermode: "closest", xaxis: { title: { text: "index" } }, yaxis: { type: s.logY ? "log" : "linear", title: { text: "σ" } } } };
    },
  },
  {
    id: "explained_variance", title: "Trajectory PCA: explained variance", needs: ["trajectory"], settings: { logY: true },
    caption: "Explained-variance ratio per principal component of each run's parameter trajectory; black dashed: the random-walk reference (6/π²)/k².",
    source: "Antognini & Sohl-Dickstein 2018.",
    build(ctx, s) {
      const traces = [];
      const missing = [];
      let longest = 0;
      for (const entry of ctx.runs) {
        const ratio = entry.trajectory?.explained_variance_ratio;
        if (!ratio?.length) { missing.push(entry); continue; }
        longest = Math.max(longest, ratio.length);
        traces.push({ type: "scatter", mode: "lines+markers", x: ratio.map((_, i) => i + 1), y: ratio, name: entry.label, line: { color: entry.color, dash: entry.dash }, hovertemplate: `#${entry.run.id}: %{y:.3g}<extra></extra>` });
      }
      const why = reason("trajectory", { atEnd: true });
      if (!traces.length) return { empty: noneRecorded(ctx, why) };
      const k = Array.from({ length: longest }, (_, i) => i + 1);
      traces.push({ type: "scatter", mode: "lines", x: k, y: k.map((j) => 6 / Math.PI ** 2 / j ** 2), name: "random walk", line: { color: "#1d2330", dash: "dash", width: 1 } });
      return { traces, note: missingNote(missing, why), base: compareLayout, layout: { hovermode: "closest", xaxis: { title: { text: "component k" }, dtick: 1 }, yaxis: { type: s.logY ? "log" : "linear", title: { text: "explained variance ratio" } } } };
    },
  },
  {
    id: "cost_totals", title: "Where each run's time went", needs: [],
    caption: "Seconds of setup, training and each probe over the whole run, one bar per run.",
    source: "the runs' timings.",
    build(ctx) {
      const keys = [...new Set(ctx.runs.flatMap((e) => Object.keys(e.run.timings ?? {})))]
        .filter((key) => key.endsWith("_s") && key !== "total_s").sort();
      if (!keys.length) return { empty: "No timings yet (they are written when a run finishes)." };
      const traces = ctx.runs.map((entry) => ({
        type: "bar", orientation: "h", name: entry.label, y: keys.map((key) => key.replace(/_s$/, "")),
        x: keys.map((key) => entry.run.timings?.[key] ?? null), marker: { color: entry.color },
        hovertemplate: `#${entry.run.id} %{y}: %{x:.3g} s<extra></extra>`,
      }));
      return { traces, base: compareLayout, layout: { barmode: "group", hovermode: "closest", xaxis: { title: { text: "seconds" } }, yaxis: { automargin: true }, margin: { l: 110 } } };
    },
  },
];
