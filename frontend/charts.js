// The charts of one run. Each: id, group, title, a one-line caption (what it shows) and
// source (where the method comes from), the data it needs, its settings, and build(ctx, s)
// → {traces, layout, note?} or {empty: "why there is nothing to draw"}; the curvature charts
// also a heading(ctx) that words them for the run's matrix (Hessian or GGN).
//
// ctx: {run, metrics: {key: {steps, values}}, spectra: {kind: [{step, values, meta}]},
//       landscapes: [...] | null, trajectory: {...} | null, unavailable: {source: reason}}
import {
  ADAM_FAMILY, BATCH_NORM_LOSS_NOTE, batchNormNote, curvatureMatrix, curvaturePrefix, curvatureWording, densityHeatmap,
  divergedMarker, emptyReason, entriesOf, hasBatchNorm, indexLines, keysWith, layerLegend, line,
  perLayer, series, thresholdLabel, yType,
} from "./chart_data.js";
import { ACTIVE } from "./format.js";
import { landscapeCharts } from "./landscape_charts.js";
import { SERIES } from "./plotting.js";

/** The run's spec, for the curvature charts' wording (none before the run is read). */
const specsOf = (ctx) => (ctx.run ? [ctx.run.spec] : []);

export const GROUPS = [
  "Loss and accuracy", "Weights and gradients", "Curvature", "Jacobian and NTK",
  "Training Jacobian", "Loss landscape", "Trajectory", "Cost of observation",
];

export const CHARTS = [
  {
    id: "loss", group: "Loss and accuracy", title: "Loss", needs: ["metrics"], settings: { logY: false },
    caption: "Minibatch loss at every step (grey), and the loss on the fixed probe batch and on the held-out batch at each probe step.",
    source: "direct evaluation; probes in eval mode.",
    build(ctx, s) {
      const traces = [];
      const batch = series(ctx, "train/batch_loss");
      if (batch) traces.push(line(batch, "minibatch", { color: "#a3acbd", width: 1 }));
      const train = series(ctx, "train/loss");
      if (train) traces.push(line(train, "train (probe batch)", { color: SERIES[0], width: 2 }));
      const test = series(ctx, "test/loss");
      if (test) traces.push(line(test, "held-out", { color: SERIES[1], width: 2 }));
      if (!traces.length) return { empty: emptyReason(ctx, null) };
      const note = hasBatchNorm(ctx.run.spec) ? BATCH_NORM_LOSS_NOTE : "";
      return { traces, note, layout: { yaxis: { type: yType(s.logY), title: { text: "loss" } }, ...divergedMarker(ctx) } };
    },
  },
  {
    id: "accuracy", group: "Loss and accuracy", title: "Accuracy", needs: ["metrics"],
    caption: "Accuracy on the fixed probe batch (train) and on the held-out batch.",
    source: "direct evaluation, eval mode.",
    build(ctx) {
      const traces = [["train/accuracy", "train (probe batch)", SERIES[0]], ["test/accuracy", "held-out", SERIES[1]]]
        .filter(([key]) => series(ctx, key)).map(([key, name, color]) => line(series(ctx, key), name, { color, width: 2 }));
      if (!traces.length) return { empty: emptyReason(ctx, null, { accuracy: true }) };
      return { traces, layout: { yaxis: { title: { text: "accuracy" }, tickformat: ".0%", hoverformat: ".1%" }, ...divergedMarker(ctx) } };
    },
  },
  {
    id: "weight_norms", group: "Weights and gradients", title: "Weight norms per layer", needs: ["metrics"], settings: { logY: false },
    caption: "L2 norm of each parameter tensor and spectral norm, the largest singular value, of each weight matrix (dotted, in its tensor's colour).",
    source: "direct; spectral norm by warm-started block Rayleigh–Ritz.",
    build(ctx, s) {
      const traces = [...perLayer(ctx, "weight_norm/"), ...perLayer(ctx, "spectral_norm/", { dash: "dot" })
        .map((t) => ({ ...t, name: `σ₁ ${t.name}`, showlegend: false }))];
      if (!traces.length) return { empty: emptyReason(ctx, "norms") };
      return { traces, layout: { yaxis: { type: yType(s.logY), title: { text: "norm" } }, ...layerLegend(traces), ...divergedMarker(ctx) } };
    },
  },
  {
    id: "update_ratios", group: "Weights and gradients", title: "Update/weight ratio per layer", needs: ["metrics"], settings: { logY: true },
    caption: "‖θₛ − θₛ₋₁‖ / ‖θₛ₋₁‖ of the update just made, per parameter tensor: how fast each layer moves.",
    source: "direct, at each probe step.",
    build(ctx, s) {
      const traces = perLayer(ctx, "update_ratio/");
      if (!traces.length) return { empty: emptyReason(ctx, "norms") };
      return { traces, layout: { yaxis: { type: yType(s.logY), title: { text: "update / weight" } }, ...layerLegend(traces), ...divergedMarker(ctx) } };
    },
  },
  {
    id: "grad_norm", group: "Weights and gradients", title: "Gradient norm", needs: ["metrics"], settings: { logY: true },
    caption: "Norm of the gradient of the probe-batch loss: all parameters (black) and per layer.",
    source: "direct.",
    build(ctx, s) {
      const total = series(ctx, "grad_norm");
      const traces = [...(total ? [line(total, "all parameters", { color: "#1d2330", width: 2.2 })] : []), ...perLayer(ctx, "grad_norm/", { width: 1 })];
      if (!traces.length) return { empty: emptyReason(ctx, "norms") };
      return { traces, layout: { yaxis: { type: yType(s.logY), title: { text: "‖∇L‖" } }, ...layerLegend(traces), ...divergedMarker(ctx) } };
    },
  },
  {
    id: "distance", group: "Weights and gradients", title: "Distance from initialisation", needs: ["metrics"], settings: { logY: false },
    caption: "‖θₛ − θ₀‖ over all parameters: how far training has moved from where it started.",
    source: "direct.",
    build(ctx, s) {
      const d = series(ctx, "distance_from_init");
      if (!d) return { empty: emptyReason(ctx, "norms") };
      return { traces: [line(d, "‖θ − θ₀‖", { color: SERIES[0], width: 2 })], layout: { showlegend: false, yaxis: { type: yType(s.logY), title: { text: "‖θ − θ₀‖" } }, ...divergedMarker(ctx) } };
    },
  },
  {
    id: "sharpness", group: "Curvature", needs: ["metrics"], settings: { logY: false },
    ...curvatureWording(({ name, what, products }) => ({
      title: `Sharpness: top ${name} eigenvalues`,
      caption: `Largest eigenvalues of ${what} on the probe batch, with the stability threshold of the optimiser dashed (Adam's is on the preconditioned sharpness, the next chart).`,
      source: `Lanczos on ${products}; Cohen et al. 2021 (edge of stability).`,
    }), specsOf),
    build(ctx, s) {
      const prefix = curvaturePrefix(ctx);
      const tops = keysWith(ctx, `${prefix}/top_`).sort((a, b) => Number(a.split("_").at(-1)) - Number(b.split("_").at(-1)));
      const traces = tops.map((key, i) => line(series(ctx, key), `λ${i + 1}${prefix === "ggn" ? " (GGN)" : ""}`, { color: SERIES[i % SERIES.length], width: i === 0 ? 2.2 : 1.2 }));
      if (!traces.length) return { empty: emptyReason(ctx, "hessian") };
      const threshold = series(ctx, `${prefix}/threshold`);
      if (threshold) traces.push(line(threshold, thresholdLabel(ctx.run.spec), { color: "#c62828", dash: "dash", width: 1.5 }, { mode: "lines" }));
      const notes = [
        !threshold && ADAM_FAMILY.has(ctx.run.spec?.optimizer?.name)
          ? "Adam has no stability threshold on this sharpness: its threshold is on the preconditioned sharpness (next chart)." : "",
        hasBatchNorm(ctx.run.spec) ? batchNormNote({ threshold: Boolean(threshold) }) : "",
      ];
      return { traces, note: notes.filter(Boolean).join(" "), layout: { yaxis: { type: yType(s.logY), title: { text: "eigenvalue" } }, ...divergedMarker(ctx) } };
    },
  },
  {
    id: "preconditioned", group: "Curvature", title: "Preconditioned sharpness (Adam)", needs: ["metrics"], settings: { logY: true },
    ...curvatureWording(({ symbol, what, products }) => ({
      caption: `λ₁ of P⁻¹${symbol}, ${what} preconditioned by Adam's P = diag(√v̂ + ε), with its stability threshold (2+2β₁)/((1−β₁)·lr) dashed.`,
      source: `Lanczos on preconditioned ${products}; Cohen et al. 2022 (adaptive gradient methods at the edge of stability).`,
    }), specsOf),
    build(ctx, s) {
      // under the run's matrix (ggn/… for GGN runs); runs recorded before GGN runs kept
      // every curvature key under ggn/ have it under hessian/
      const prefix = ["ggn", "hessian"].find((p) => series(ctx, `${p}/preconditioned_top_1`));
      if (!prefix) return { empty: emptyReason(ctx, "hessian", { adam: true }) };
      const pre = series(ctx, `${prefix}/preconditioned_top_1`);
      const { symbol } = curvatureMatrix([ctx.run.spec]);
      const traces = [line(pre, `λ₁(P⁻¹${symbol})`, { color: "#6a3d9a", width: 2 })];
      const threshold = series(ctx, `${prefix}/preconditioned_threshold`);
      if (threshold) traces.push(line(threshold, "(2+2β₁)/((1−β₁)·lr)", { color: "#c62828", dash: "dash", width: 1.5 }, { mode: "lines" }));
      const note = hasBatchNorm(ctx.run.spec) ? batchNormNote({ threshold: Boolean(threshold) }) : "";
      return { traces, note, layout: { yaxis: { type: yType(s.logY), title: { text: `λ₁(P⁻¹${symbol})` } }, ...divergedMarker(ctx) } };
    },
  },
  {
    id: "min_eigenvalue", group: "Curvature", needs: ["metrics"],
    ...curvatureWording(({ name, what, products }) => ({
      title: `Smallest ${name} eigenvalue`,
      caption: `The most negative eigenvalue of ${what} on the probe batch: the non-convexity training sees (zero dotted).`,
      source: `Lanczos on ${products}, smallest end.`,
    }), specsOf),
    build(ctx) {
      const m = series(ctx, "hessian/min");
      if (!m) return { empty: emptyReason(ctx, "hessian", { option: "min_eigenvalue" }) };
      const marker = divergedMarker(ctx);
      return {
        traces: [line(m, "λ_min", { color: SERIES[3], width: 2 })],
        layout: { showlegend: false, yaxis: { title: { text: "λ_min" }, zeroline: true, zerolinecolor: "#9aa3b5" }, ...marker },
      };
    },
  },
  {
    id: "trace", group: "Curvature", needs: ["metrics", "spectra"],
    ...curvatureWording(({ name, what }) => ({
      title: `${name} trace`,
      caption: `Estimate of the trace of ${what} on the probe batch, with a band of ±2 standard errors.`,
    }), specsOf),
    source: "Hutch++ with Rademacher probes (Meyer et al. 2021); HAWQ-V2 uses the trace as layer sensitivity.",
    build(ctx) {
      const found = entriesOf(ctx, ["hessian_trace", "ggn_trace"]);
      let steps;
      let trace;
      let se;
      if (found) {
        steps = found.entries.map((e) => e.step);
        trace = found.entries.map((e) => e.values[0]);
        se = found.entries.map((e) => e.values[1]);
      } else {
        const prefix = curvaturePrefix(ctx);
        const t = series(ctx, `${prefix}/trace`);
        if (!t) return { empty: emptyReason(ctx, "hessian", { option: "trace" }) };
        const seBy = new Map((series(ctx, `${prefix}/trace_se`)?.steps ?? []).map((step, i) => [step, ctx.metrics[`${prefix}/trace_se`].values[i]]));
        steps = t.steps;
        trace = t.values;
        se = steps.map((step) => seBy.get(step) ?? 0);
      }
      const upper = trace.map((v, i) => (v === null ? null : v + 2 * (se[i] ?? 0)));
      const lower = trace.map((v, i) => (v === null ? null : v - 2 * (se[i] ?? 0)));
      return {
        traces: [
          { type: "scatter", mode: "lines", x: steps, y: upper, line: { width: 0 }, hoverinfo: "skip", showlegend: false },
          { type: "scatter", mode: "lines", x: steps, y: lower, line: { width: 0 }, fill: "tonexty", fillcolor: "rgba(31,119,180,0.2)", name: "±2 SE", hoverinfo: "skip" },
          { type: "scatter", mode: steps.length <= 60 ? "lines+markers" : "lines", x: steps, y: trace, name: "trace", line: { color: SERIES[0], width: 2 }, marker: { size: 4 } },
        ],
        layout: { yaxis: { title: { text: `tr ${curvatureMatrix([ctx.run.spec]).symbol}` } }, ...divergedMarker(ctx) },
      };
    },
  },
  {
    id: "density", group: "Curvature", needs: ["spectra"], settings: { logZ: true }, wide: true,
    ...curvatureWording(({ name, what }) => ({
      title: `${name} spectral density over steps`,
      caption: `Eigenvalue density of ${what} (colour) at each probe step; each step's grid is resampled to one common grid.`,
    }), specsOf),
    source: "stochastic Lanczos quadrature with Gaussian broadening (Ghorbani et al. 2019).",
    build(ctx, s) {
      const found = entriesOf(ctx, ["hessian_density", "ggn_density"]);
      if (!found) return { empty: emptyReason(ctx, "hessian", { option: "density" }) };
      const heat = densityHeatmap(found.entries, s.logZ);
      return {
        traces: [{
          type: "heatmap", x: heat.steps, y: heat.grid, z: heat.z, colorscale: "Viridis", zsmooth: false,
          colorbar: { title: { text: s.logZ ? "log₁₀ density" : "density", side: "right" }, thickness: 12 },
          hovertemplate: "step %{x}<br>λ %{y:.4g}<br>%{z:.3g}<extra></extra>",
        }],
        layout: { yaxis: { title: { text: "eigenvalue λ" } }, ...divergedMarker(ctx) },
      };
    },
  },
  {
    id: "jacobian_io", group: "Jacobian and NTK", title: "Input–output Jacobian singular values", needs: ["spectra"], settings: { logY: true },
    caption: "Singular values of ∂outputs/∂inputs, averaged over the probe inputs, per index over steps; band: 10–90% quantiles of the largest.",
    source: "vmap(jacrev) per input; dynamical isometry, Pennington et al. 2017.",
    build(ctx, s) {
      const found = entriesOf(ctx, ["jacobian_input_output"]);
      if (!found) return { empty: emptyReason(ctx, "jacobian", { option: "input_output" }) };
      const rows = found.entries[0].meta?.rows ?? ["mean", "median", "quantile_10", "quantile_90"];
      const row = (name) => (e) => (Array.isArray(e.values[0]) ? e.values[Math.max(0, rows.indexOf(name))] : e.values);
      const steps = found.entries.map((e) => e.step);
      const traces = [];
      if (rows.includes("quantile_10") && rows.includes("quantile_90")) {
        traces.push({ type: "scatter", mode: "lines", x: steps, y: found.entries.map((e) => row("quantile_90")(e)[0]), line: { width: 0 }, hoverinfo: "skip", showlegend: false });
        traces.push({ type: "scatter", mode: "lines", x: steps, y: found.entries.map((e) => row("quantile_10")(e)[0]), line: { width: 0 }, fill: "tonexty", fillcolor: "rgba(31,119,180,0.18)", name: "σ₁ 10–90%", hoverinfo: "skip" });
      }
      traces.push(...indexLines(found.entries, row("mean"), 10, (i) => `σ${i + 1}`));
      return { traces, layout: { yaxis: { type: yType(s.logY), title: { text: "singular value" } }, ...divergedMarker(ctx) } };
    },
  },
  {
    id: "ntk", group: "Jacobian and NTK", title: "Empirical NTK eigenvalues", needs: ["spectra"], settings: { logY: true },
    caption: "Largest eigenvalues of the empirical neural tangent kernel J Jᵀ (outputs w.r.t. parameters) on the probe inputs, over steps.",
    source: "Jacot et al. 2018; J Jᵀ by vmap/jvp.",
    build(ctx, s) {
      const found = entriesOf(ctx, ["ntk"]);
      if (!found) return { empty: emptyReason(ctx, "jacobian", { option: "ntk" }) };
      const traces = indexLines(found.entries, (e) => e.values, 10, (i) => `λ${i + 1}`);
      return { traces, layout: { yaxis: { type: yType(s.logY), title: { text: "NTK eigenvalue" } }, ...divergedMarker(ctx) } };
    },
  },
  {
    id: "ntk_velocity", group: "Jacobian and NTK", title: "NTK velocity", needs: ["metrics"], settings: { logY: false },
    caption: "Relative change of the empirical NTK since the previous probe, ‖Θₜ − Θₜ₋₁‖/‖Θₜ₋₁‖, and its alignment distance: near zero is lazy (kernel) training, large is rich (feature learning).",
    source: "Fort et al. 2020; grokking as lazy → rich, Kumar et al. 2024.",
    build(ctx, s) {
      const traces = [["ntk/velocity", "velocity", SERIES[0]], ["ntk/alignment_distance", "alignment distance", SERIES[1]]]
        .filter(([key]) => series(ctx, key)).map(([key, name, color]) => line(series(ctx, key), name, { color, width: 2 }));
      if (!traces.length) return { empty: emptyReason(ctx, "jacobian", { option: "ntk" }) };
      return { traces, layout: { yaxis: { type: yType(s.logY), title: { text: "relative change" } }, ...divergedMarker(ctx) } };
    },
  },
  {
    id: "training_jacobian", group: "Training Jacobian", title: "Training-Jacobian spectrum", needs: ["spectra"], settings: { logY: true }, wide: true,
    caption: "Singular values of dθ_T/dθ₀ in descending order, marked by region: chaotic (σ > 1 + t, amplified), bulk (|σ − 1| ≤ t, untouched by training), stable (σ < 1 − t, forgotten).",
    source: "forward mode through the unrolled training; Belrose & Scherlis 2024.",
    build(ctx, s) {
      const found = entriesOf(ctx, ["training_jacobian"]);
      if (!found) return { empty: emptyReason(ctx, "training_jacobian", { atEnd: true }) };
      const entry = found.entries.at(-1);
      const meta = entry.meta ?? {};
      const t = meta.bulk_tolerance ?? 1e-3;
      const high = meta.chaotic_threshold ?? 1 + t;
      const low = meta.stable_threshold ?? 1 - t;
      const values = entry.values.flat();
      const regions = [
        ["chaotic", (v) => v > high, "#d62728", meta.chaotic],
        ["bulk", (v) => v >= low && v <= high, "#7f7f7f", meta.bulk],
        ["stable", (v) => v < low, "#1f77b4", meta.stable],
      ];
      const traces = regions.map(([name, test, color, count]) => {
        const x = [];
        const y = [];
        values.forEach((v, i) => { if (v !== null && test(v)) { x.push(i + 1); y.push(v); } });
        return { type: "scatter", mode: "markers", x, y, name: `${name} (${count ?? x.length})`, marker: { color, size: 4 } };
      });
      return {
        traces,
        layout: {
          xaxis: { title: { text: `index (of ${values.length} parameters), at step ${entry.step}` } },
          yaxis: { type: yType(s.logY), title: { text: "σ" } },
          shapes: [1].map((y) => ({ type: "line", xref: "paper", x0: 0, x1: 1, y0: y, y1: y, line: { color: "#7f7f7f", dash: "dot", width: 1 } })),
        },
      };
    },
  },
  ...landscapeCharts(),
  {
    id: "trajectory", group: "Trajectory", title: "Trajectory in PCA coordinates", needs: ["trajectory"],
    caption: "Parameter snapshots projected on their top two principal components, coloured by step (start ○, end ■).",
    source: "PCA of the parameter trajectory; Antognini & Sohl-Dickstein 2018.",
    build(ctx) {
      const tr = ctx.trajectory;
      if (!tr?.coordinates?.length) return { empty: emptyReason(ctx, "trajectory", { atEnd: true }) };
      const pc = (i) => tr.coordinates.map((c) => c[i] ?? 0);
      const ratio = tr.explained_variance_ratio ?? [];
      const pct = (i) => (ratio[i] === undefined ? "" : ` (${(100 * ratio[i]).toFixed(1)}% var.)`);
      const twoD = (tr.coordinates[0]?.length ?? 0) >= 2;
      const x = twoD ? pc(0) : tr.steps;
      const y = twoD ? pc(1) : pc(0);
      return {
        traces: [
          { type: "scatter", mode: "lines+markers", x, y, text: tr.steps.map((step) => `step ${step}`), name: "path",
            line: { color: "#b8bfcc", width: 1 },
            marker: { size: 6, color: tr.steps, colorscale: "Viridis", showscale: true, colorbar: { title: { text: "step" }, thickness: 12 } },
            hovertemplate: "%{text}<br>(%{x:.3g}, %{y:.3g})<extra></extra>" },
          { type: "scatter", mode: "markers", x: [x[0]], y: [y[0]], name: "start", marker: { symbol: "circle-open", size: 12, color: "#1d2330" } },
          { type: "scatter", mode: "markers", x: [x.at(-1)], y: [y.at(-1)], name: "end", marker: { symbol: "square", size: 9, color: "#1d2330" } },
        ],
        layout: {
          xaxis: { title: { text: twoD ? `PC1${pct(0)}` : "step" } },
          yaxis: { title: { text: twoD ? `PC2${pct(1)}` : `PC1${pct(0)}` } },
          showlegend: false,
        },
      };
    },
  },
  {
    id: "explained_variance", group: "Trajectory", title: "Explained variance vs random walk", needs: ["trajectory"], settings: { logY: true },
    caption: "Fraction of the trajectory's variance on each principal component, beside a random walk's (6/π²)/k²: a match means the path looks like a random walk.",
    source: "Antognini & Sohl-Dickstein 2018.",
    build(ctx, s) {
      const tr = ctx.trajectory;
      const ratio = tr?.explained_variance_ratio;
      if (!ratio?.length) return { empty: emptyReason(ctx, "trajectory", { atEnd: true }) };
      const k = ratio.map((_, i) => i + 1);
      const reference = tr.random_walk_reference?.length ? tr.random_walk_reference : k.map((j) => 6 / (Math.PI ** 2) / j ** 2);
      return {
        traces: [
          { type: "bar", x: k, y: ratio, name: "this run", marker: { color: SERIES[0] } },
          { type: "scatter", mode: "lines+markers", x: k, y: reference, name: "random walk (6/π²)/k²", line: { color: "#c62828", dash: "dash" } },
        ],
        layout: { xaxis: { title: { text: "component k" }, dtick: 1 }, yaxis: { type: yType(s.logY), title: { text: "explained variance ratio" } } },
      };
    },
  },
  {
    id: "cost_time", group: "Cost of observation", title: "Time per probe call", needs: ["metrics"], settings: { logY: true },
    caption: "Wall time of each probe at each probe step (Hessian-vector products per call in the hover).",
    source: "measured by the worker around each probe.",
    build(ctx, s) {
      const keys = keysWith(ctx, "cost/").filter((key) => key.endsWith("/seconds"));
      if (!keys.length) return { empty: emptyReason(ctx, null) };
      const traces = keys.map((key, i) => {
        const probe = key.split("/")[1];
        const hvps = series(ctx, `cost/${probe}/hvps`);
        const byStep = new Map((hvps?.steps ?? []).map((step, j) => [step, hvps.values[j]]));
        const trace = line(series(ctx, key), probe, { color: SERIES[i % SERIES.length] });
        if (hvps) trace.text = trace.x.map((step) => (byStep.has(step) ? `${byStep.get(step)} HVPs` : ""));
        trace.hovertemplate = `${probe}: %{y:.3g} s %{text}<extra></extra>`;
        return trace;
      });
      return { traces, layout: { yaxis: { type: yType(s.logY), title: { text: "seconds per call" } } } };
    },
  },
  {
    id: "cost_totals", group: "Cost of observation", title: "Where the run's time went", needs: [],
    caption: "Total seconds of setup, training and each probe over the whole run (share of the total in the bar).",
    source: "the run's timings, measured by the worker.",
    build(ctx) {
      const timings = ctx.run.timings ?? {};
      const parts = Object.entries(timings).filter(([key, value]) => key.endsWith("_s") && key !== "total_s" && typeof value === "number");
      if (!parts.length) {
        return { empty: ACTIVE.has(ctx.run.status) ? "The totals are written when the run finishes." : "This run recorded no timings." };
      }
      const total = timings.total_s ?? parts.reduce((n, [, v]) => n + v, 0);
      parts.sort((a, b) => a[1] - b[1]);
      return {
        traces: [{
          type: "bar", orientation: "h", y: parts.map(([key]) => key.replace(/_s$/, "").replace("probe_", "probe: ")),
          x: parts.map(([, v]) => v), text: parts.map(([, v]) => `${((100 * v) / total).toFixed(1)}%`), textposition: "auto",
          marker: { color: parts.map(([key]) => (key.startsWith("probe") ? SERIES[1] : SERIES[0])) },
          hovertemplate: "%{y}: %{x:.3g} s (%{text})<extra></extra>",
        }],
        layout: { xaxis: { title: { text: `seconds (total ${total.toFixed(2)} s)` } }, yaxis: { automargin: true }, showlegend: false, margin: { l: 110 } },
      };
    },
  },
];
