// The loss-landscape charts of one run (GET /runs/{id}/landscapes): each landscape has its
// step, plane (pca, random, line), dims, axes, grids (entry [i][j] at (axes[0][i],
// axes[1][j])) and, for the PCA plane, the optimiser's projected path.
import { emptyReason, yType } from "./chart_data.js";
import { SERIES, webglAvailable } from "./plotting.js";

const METRICS = [["train_loss", "train loss"], ["test_loss", "held-out loss"], ["train_accuracy", "train accuracy"], ["test_accuracy", "held-out accuracy"]];

function planes(ctx, dims) {
  return (ctx.landscapes ?? []).map((l, index) => ({ ...l, index })).filter((l) => l.dims === dims);
}

function planeLabel(l) {
  const names = { pca: "PCA plane", random: l.dims === 1 ? "random direction" : "random plane", line: "init → final", interpolation: "init → final" };
  return `${names[l.plane] ?? l.plane} at step ${l.step}`;
}

/** The grid as Plotly wants it: z[row = axis 1][column = axis 0] (values[i][j] is at
 * (axes[0][i], axes[1][j])). */
function gridZ(values, log) {
  const rows = values[0].length;
  return Array.from({ length: rows }, (_, j) => values.map((column) => {
    const v = column[j];
    return log ? (v === null || v <= 0 ? null : Math.log10(v)) : v;
  }));
}

function pickLandscape(ctx, s) {
  const options = planes(ctx, 2);
  if (!options.length) return null;
  const chosen = options.find((l) => String(l.index) === String(s.landscape)) ?? options[0];
  const metric = chosen[s.metric] ? s.metric : "train_loss";
  return { chosen, metric, log: s.logZ && metric.endsWith("loss") };
}

function landscapeEmpty(ctx) {
  if ((ctx.landscapes ?? []).length) return "This run's landscapes have no 2-D plane (only 1-D slices, below).";
  return emptyReason(ctx, "landscape", { atEnd: true });
}

const landscapeSelects = [
  { key: "landscape", label: "plane", choices: (ctx) => planes(ctx, 2).map((l) => [l.index, planeLabel(l)]) },
  { key: "metric", label: "value", choices: (ctx) => METRICS.filter(([key]) => planes(ctx, 2).some((l) => l[key])) },
];

/** The contour, the surface and the 1-D slices of a run's loss landscapes. */
export function landscapeCharts() {
  return [
    {
      id: "landscape_contour", group: "Loss landscape", title: "Loss landscape (2-D, contour)", needs: ["landscapes"], tall: true,
      settings: { landscape: null, metric: "train_loss", logZ: true }, selects: landscapeSelects,
      caption: "Loss on a plane through the parameters (top-2 PCA directions of the trajectory, or filter-normalised random directions), with the optimiser's path projected on it (start ○, end ■).",
      source: "Li et al. 2018, filter normalisation; grid evaluated with torch.func.functional_call.",
      build(ctx, s) {
        const picked = pickLandscape(ctx, s);
        if (!picked) return { empty: landscapeEmpty(ctx) };
        const { chosen, metric, log } = picked;
        const traces = [{
          type: "contour", x: chosen.axes[0], y: chosen.axes[1], z: gridZ(chosen[metric], log), colorscale: "Viridis", ncontours: 24,
          contours: { coloring: "heatmap" }, line: { width: 0.5, color: "rgba(255,255,255,0.5)" },
          colorbar: { title: { text: log ? `log₁₀ ${metric.replace("_", " ")}` : metric.replace("_", " ") }, thickness: 12 },
        }];
        const path = chosen.path;
        if (path?.coordinates?.length) {
          traces.push({
            type: "scatter", mode: "lines+markers", name: "optimiser path", x: path.coordinates.map((c) => c[0]), y: path.coordinates.map((c) => c[1]),
            text: path.steps.map((step, i) => `step ${step}<br>loss ${path.loss?.[i]?.toPrecision?.(4) ?? "?"}<br>off-plane ${path.residual?.[i]?.toPrecision?.(3) ?? "?"}`),
            hovertemplate: "%{text}<extra></extra>", line: { color: "#ffffff", width: 2 }, marker: { size: 5, color: "#ff6f3c" },
          });
          const ends = [path.coordinates[0], path.coordinates.at(-1)];
          traces.push({
            type: "scatter", mode: "markers", name: "start, end", cliponaxis: false, x: ends.map((c) => c[0]), y: ends.map((c) => c[1]),
            text: [`start (step ${path.steps[0]})`, `end (step ${path.steps.at(-1)})`], hovertemplate: "%{text}<extra></extra>",
            marker: { symbol: ["circle-open", "square"], size: [13, 10], color: "#ffffff", line: { width: 2, color: "#ffffff" } },
          });
        }
        return { traces, layout: { xaxis: { title: { text: "direction 1" } }, yaxis: { title: { text: "direction 2" } }, showlegend: false } };
      },
    },
    {
      id: "landscape_surface", group: "Loss landscape", title: "Loss landscape (3-D surface)", needs: ["landscapes"], tall: true,
      settings: { landscape: null, metric: "train_loss", logZ: true }, selects: landscapeSelects,
      caption: "The same plane as a surface, with the optimiser's path drawn at its loss on the plane (drag to turn).",
      source: "Li et al. 2018.",
      build(ctx, s) {
        const picked = pickLandscape(ctx, s);
        if (!picked) return { empty: landscapeEmpty(ctx) };
        if (!webglAvailable()) return { empty: "The 3-D surface needs WebGL, which this browser does not offer; the contour shows the same data." };
        const { chosen, metric, log } = picked;
        const surface = gridZ(chosen[metric], log);
        const traces = [{ type: "surface", x: chosen.axes[0], y: chosen.axes[1], z: surface, colorscale: "Viridis", showscale: false, opacity: 0.9 }];
        const path = chosen.path;
        if (path?.coordinates?.length && metric === "train_loss") {
          // drawn just above the surface, so that the surface does not hide it
          const finite = surface.flat().filter((v) => v !== null && Number.isFinite(v));
          const lift = 0.02 * (Math.max(...finite) - Math.min(...finite));
          const z = (path.plane_loss ?? path.loss).map((v) => (log ? Math.log10(Math.max(v, 1e-12)) : v) + lift);
          traces.push({
            type: "scatter3d", mode: "lines+markers", name: "optimiser path",
            x: path.coordinates.map((c) => c[0]), y: path.coordinates.map((c) => c[1]), z,
            line: { color: "#ff6f3c", width: 5 }, marker: { size: 2.5, color: "#ff6f3c" },
          });
        }
        return {
          traces,
          layout: {
            margin: { l: 0, r: 0, t: 0, b: 0 }, showlegend: false,
            scene: {
              aspectmode: "manual", aspectratio: { x: 1, y: 1, z: 0.7 },
              xaxis: { title: { text: "dir 1" } }, yaxis: { title: { text: "dir 2" } }, zaxis: { title: { text: log ? "log₁₀ loss" : metric.replace("_", " ") } },
            },
          },
        };
      },
    },
    {
      id: "landscape_slices", group: "Loss landscape", title: "1-D loss slices", needs: ["landscapes"], settings: { logY: false },
      caption: "Loss along one line: a filter-normalised random direction through the final parameters, and the straight line from initialisation (0) to the final parameters (1); dashed: held-out.",
      source: "Li et al. 2018; linear interpolation, Goodfellow et al. 2015.",
      build(ctx, s) {
        const slices = planes(ctx, 1);
        if (!slices.length) {
          return { empty: (ctx.landscapes ?? []).length ? "No 1-D slices were recorded (probes.landscape.slices was off)." : emptyReason(ctx, "landscape", { atEnd: true }) };
        }
        const traces = slices.flatMap((l, i) => {
          const color = SERIES[i % SERIES.length];
          const x = Array.isArray(l.axes[0]) ? l.axes[0] : l.axes;
          const out = [{ type: "scatter", mode: "lines", x, y: l.train_loss, name: `${planeLabel(l)}`, line: { color, width: 2 }, legendgroup: String(i) }];
          if (l.test_loss) out.push({ type: "scatter", mode: "lines", x, y: l.test_loss, name: "held-out", showlegend: false, line: { color, dash: "dash", width: 1.5 }, legendgroup: String(i) });
          return out;
        });
        return { traces, layout: { xaxis: { title: { text: "coordinate along the direction" } }, yaxis: { type: yType(s.logY), title: { text: "loss" } } } };
      },
    },
  ];
}
