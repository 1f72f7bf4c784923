// The loss-landscape charts of one run (GET /runs/{id}/landscapes): each landscape has its
// step, plane (pca, random, line), dims, axes, grids (entry [i][j] at (axes[0][i],
// axes[1][j])) and, for the PCA plane, the optimiser's projected path.
import { emptyReason, yType } from "./chart_data.js";
import { SERIES, interpolate, webglAvailable } from "./plotting.js";

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

/** The kinds of 1-D slice, each drawn on an x axis of its own (their coordinates mean
 * different things), with dotted lines at the points it is measured from. */
const SLICE_AXES = [
  { planes: ["random"], title: "α along the random direction (0 = checkpoint)", marks: [[0, "checkpoint"]] },
  { planes: ["line", "interpolation"], title: "a from initialisation (0) to final (1)", marks: [[0, "init"], [1, "final"]] },
];

/** Side-by-side plots, one per entry of ``axes`` ({title, marks: [[x, label]], slices}), each
 * with its own x and y axes; a slice's loss at each mark is a point on its curve. */
function sideBySide(axes, logY) {
  const gap = axes.length > 1 ? 0.09 : 0;
  const width = (1 - gap * (axes.length - 1)) / axes.length;
  const traces = [];
  const layout = { shapes: [], annotations: [] };
  let colour = 0;
  axes.forEach((axis, i) => {
    const [x, y] = i === 0 ? ["x", "y"] : [`x${i + 1}`, `y${i + 1}`];
    const left = i * (width + gap);
    layout[i === 0 ? "xaxis" : `xaxis${i + 1}`] = { domain: [left, left + width], anchor: y, title: { text: axis.title }, automargin: true, zeroline: false, gridcolor: "#eceef3" };
    layout[i === 0 ? "yaxis" : `yaxis${i + 1}`] = { anchor: x, type: yType(logY), title: { text: "loss" }, automargin: true, zeroline: false, gridcolor: "#eceef3", exponentformat: "power" };
    for (const l of axis.slices) {
      const color = SERIES[colour++ % SERIES.length];
      const along = Array.isArray(l.axes[0]) ? l.axes[0] : l.axes;
      const group = `${l.index}`;
      traces.push({ type: "scatter", mode: "lines", xaxis: x, yaxis: y, x: along, y: l.train_loss, name: planeLabel(l), line: { color, width: 2 }, legendgroup: group });
      if (l.test_loss) traces.push({ type: "scatter", mode: "lines", xaxis: x, yaxis: y, x: along, y: l.test_loss, name: `${planeLabel(l)}, held-out`, showlegend: false, line: { color, dash: "dash", width: 1.5 }, legendgroup: group });
      const marks = axis.marks.filter(([at]) => at >= along[0] && at <= along.at(-1))
        .map(([at, label]) => [at, label, interpolate(along, l.train_loss, at)]).filter(([, , loss]) => Number.isFinite(loss));
      if (marks.length) {
        traces.push({
          type: "scatter", mode: "markers", xaxis: x, yaxis: y, x: marks.map(([at]) => at), y: marks.map(([, , loss]) => loss), showlegend: false, legendgroup: group,
          text: marks.map(([at, label]) => `${label} (${at})`), hovertemplate: `%{text}: train loss %{y:.4g}<extra>${planeLabel(l)}</extra>`,
          marker: { color, size: 8, symbol: "diamond", line: { color: "#1d2330", width: 1 } },
        });
      }
    }
    for (const [at, label] of axis.marks) {
      layout.shapes.push({ type: "line", xref: x, x0: at, x1: at, yref: `${y} domain`, y0: 0, y1: 1, line: { color: "#7f8798", dash: "dot", width: 1 } });
      layout.annotations.push({ xref: x, x: at, yref: `${y} domain`, y: 1, yanchor: "top", xanchor: "left", xshift: 3, text: label, showarrow: false, font: { size: 10, color: "#5a6275" } });
    }
  });
  return { traces, layout };
}

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
      id: "landscape_slices", group: "Loss landscape", title: "1-D loss slices", needs: ["landscapes"], settings: { logY: false }, wide: true,
      caption: "Loss along one line, each kind on an axis of its own: left, a filter-normalised random direction through the parameters at each checkpoint (α = 0 is the checkpoint); right, the straight line from initialisation (a = 0) to the final parameters (a = 1), extended past both ends; dashed: held-out.",
      source: "Li et al. 2018; linear interpolation, Goodfellow et al. 2015.",
      build(ctx, s) {
        const slices = planes(ctx, 1);
        if (!slices.length) {
          return { empty: (ctx.landscapes ?? []).length ? "No 1-D slices were recorded (probes.landscape.slices was off)." : emptyReason(ctx, "landscape", { atEnd: true }) };
        }
        const known = new Set(SLICE_AXES.flatMap((axis) => axis.planes));
        const axes = [...SLICE_AXES, { planes: [], title: "coordinate along the direction", marks: [] }]
          .map((axis) => ({ ...axis, slices: slices.filter((l) => (axis.planes.length ? axis.planes.includes(l.plane) : !known.has(l.plane))) }))
          .filter((axis) => axis.slices.length);
        return sideBySide(axes, s.logY);
      },
    },
  ];
}
