// The runs table: filters (status and name on the server, hyperparameters here), selection
// for comparison, live updates from the server-sent event stream GET /api/v1/events.
import { api, follow } from "./api.js";
import { debounce, h, replace } from "./dom.js";
import {
  ACTIVE, STATUSES, duration, flattenSpec, keyHyperparameters, num, percent, progressBar,
  statusBadge, when,
} from "./format.js";
import { setQuery, takeFlash } from "./router.js";

const PAGE = 100;
/** Runs picked for comparison; kept while the dashboard is open. */
export const selected = new Set();

const OPERATORS = ["<=", ">=", "!=", "=", "<", ">", "~"];

/**
 * Parse a hyperparameter filter: space- or comma-separated terms ``key op value`` (op one
 * of = != < > <= >= ~ for "contains"); a key matches a spec leaf by its full dotted path or
 * its last parts ("lr" matches "optimizer.lr"). A bare word matches anywhere in the spec.
 * Returns {test(spec) → bool, error}.
 */
export function parseHyperFilter(text) {
  const terms = text.split(/[\s,]+/).filter(Boolean);
  const tests = [];
  for (const term of terms) {
    const op = OPERATORS.find((candidate) => term.includes(candidate));
    if (!op) {
      const word = term.toLowerCase();
      tests.push((flat) => Object.values(flat).some((v) => String(v).toLowerCase().includes(word)));
      continue;
    }
    const [key, value] = [term.slice(0, term.indexOf(op)), term.slice(term.indexOf(op) + op.length)];
    if (!key || value === "") return { test: () => true, error: `"${term}" needs a key and a value` };
    tests.push((flat) => {
      const leaves = Object.keys(flat).filter((path) => path === key || path.endsWith(`.${key}`));
      return leaves.some((path) => compare(flat[path], op, value));
    });
  }
  return { test: (spec) => tests.every((t) => t(flattenSpec(spec))), error: null };
}

function compare(actual, op, wanted) {
  const a = Number(actual);
  const b = Number(wanted);
  const numeric = actual !== null && actual !== "" && typeof actual !== "boolean"
    && !Number.isNaN(a) && !Number.isNaN(b);
  const text = String(actual).toLowerCase();
  const target = wanted.toLowerCase();
  switch (op) {
    case "=": return numeric ? a === b : text === target;
    case "!=": return numeric ? a !== b : text !== target;
    case "~": return text.includes(target);
    case "<": return numeric && a < b;
    case ">": return numeric && a > b;
    case "<=": return numeric && a <= b;
    case ">=": return numeric && a >= b;
    default: return false;
  }
}

const COLUMNS = [
  ["", ""], ["#", "num"], ["Name", ""], ["Status", ""], ["Progress", ""], ["Model", ""],
  ["Data", ""], ["Optimizer", ""], ["Seed", "num"], ["Train loss", "num"], ["Test loss", "num"],
  ["Test acc.", "num"], ["Created", ""], ["Duration", "num"],
];

export function render(container, { params }) {
  const state = {
    status: params.get("status") ?? "",
    name: params.get("name") ?? "",
    hp: params.get("hp") ?? "",
    limit: PAGE,
    runs: new Map(),
    count: 0,
    loaded: false,
  };
  let disposed = false;
  let filter = parseHyperFilter(state.hp);
  const rows = new Map();
  const flash = takeFlash();

  const statusSelect = h("select", { id: "filter-status", onchange: () => {
    state.status = statusSelect.value;
    setQuery({ status: state.status });
    load();
  } }, h("option", { value: "" }, "any"), STATUSES.map((s) => h("option", { value: s, selected: s === state.status }, s)));
  const nameInput = h("input", { id: "filter-name", type: "search", value: state.name, placeholder: "part of the name",
    oninput: debounce(() => { state.name = nameInput.value.trim(); setQuery({ name: state.name }); load(); }, 250) });
  const hpInput = h("input", { id: "filter-hp", type: "search", value: state.hp, size: 32,
    placeholder: "lr<0.05 model.name=mlp seed=1", "aria-describedby": "filter-hp-hint",
    oninput: debounce(() => {
      state.hp = hpInput.value.trim();
      filter = parseHyperFilter(state.hp);
      setQuery({ hp: state.hp });
      hpHint.textContent = filter.error ?? "key=value, key<value, key~text; all must hold";
      hpHint.classList.toggle("error", Boolean(filter.error));
      renderRows();
    }, 200) });
  const hpHint = h("span", { id: "filter-hp-hint", class: "hint" }, "key=value, key<value, key~text; all must hold");
  const compareButton = h("button", { class: "primary", id: "compare-selected", onclick: () => {
    location.hash = `#/compare?ids=${[...selected].sort((a, b) => a - b).join(",")}`;
  } });
  const clearButton = h("button", { onclick: () => { selected.clear(); renderRows(); } }, "Clear selection");
  const message = h("p", { class: "state-message", role: "status", "aria-live": "polite" }, "Loading runs…");
  const selectAll = h("input", { type: "checkbox", "aria-label": "Select all shown runs", onchange: () => {
    for (const run of visibleRuns()) {
      if (selectAll.checked) selected.add(run.id);
      else selected.delete(run.id);
    }
    renderRows();
  } });
  const tbody = h("tbody");
  const table = h("table", { id: "runs-table" },
    h("caption", { class: "visually-hidden" }, "Runs, newest first"),
    h("thead", {}, h("tr", {}, COLUMNS.map(([label, cls], i) => h("th", { class: cls, scope: "col" }, i === 0 ? selectAll : label)))),
    tbody);
  const more = h("button", { hidden: true, onclick: () => { state.limit += PAGE; load(); } }, "Show more runs");

  replace(container,
    h("div", { class: "run-head" }, h("h1", {}, "Runs"),
      h("div", { class: "actions" }, h("a", { class: "button", href: "#/new" }, "New run"))),
    flash?.runId ? h("p", { class: "banner ok", role: "status" }, `Run #${flash.runId} submitted; it updates live below. `,
      h("a", { href: `#/runs/${flash.runId}` }, "Open it")) : null,
    h("div", { class: "toolbar", role: "search" },
      h("label", {}, "Status", statusSelect),
      h("label", {}, "Name", nameInput),
      h("label", { class: "grow" }, "Hyperparameters", hpInput, hpHint),
      h("div", { class: "push" }, clearButton, " ", compareButton)),
    message,
    h("div", { class: "table-wrap" }, table),
    more);

  function visibleRuns() {
    return [...state.runs.values()].filter((run) => filter.test(run.spec)).sort((a, b) => b.id - a.id);
  }

  function matchesServerFilters(run) {
    return (!state.status || run.status === state.status)
      && (!state.name || run.name.toLowerCase().includes(state.name.toLowerCase()));
  }

  function updateSelectionUi() {
    compareButton.textContent = `Compare selected (${selected.size})`;
    compareButton.disabled = selected.size < 1;
    clearButton.disabled = selected.size === 0;
    const shown = visibleRuns();
    selectAll.checked = shown.length > 0 && shown.every((run) => selected.has(run.id));
    selectAll.indeterminate = !selectAll.checked && shown.some((run) => selected.has(run.id));
  }

  function renderRows() {
    const shown = visibleRuns();
    for (const [id, tr] of rows) if (!state.runs.has(id)) { tr.remove(); rows.delete(id); }
    const ordered = shown.map((run) => rowFor(run));
    // Insert and remove rows without moving the others: a moved row loses keyboard focus.
    const wanted = new Set(ordered);
    for (const tr of [...tbody.children]) if (!wanted.has(tr)) tr.remove();
    ordered.forEach((tr, i) => {
      if (tbody.children[i] !== tr) tbody.insertBefore(tr, tbody.children[i] ?? null);
    });
    if (!state.loaded) return;
    if (state.count === 0 && !state.status && !state.name) {
      replace(message, "No runs yet. ", h("a", { href: "#/new" }, "Start one"), ".");
    } else if (shown.length === 0) {
      message.textContent = "No runs match these filters.";
    } else {
      const hidden = state.runs.size - shown.length;
      message.textContent = `${shown.length} shown of ${state.count} matching on the server`
        + (hidden ? ` (${hidden} hidden by the hyperparameter filter)` : "") + ".";
    }
    table.hidden = shown.length === 0;
    more.hidden = state.runs.size >= state.count;
    updateSelectionUi();
  }

  function rowFor(run) {
    let tr = rows.get(run.id);
    if (!tr) {
      const checkbox = h("input", { type: "checkbox", "aria-label": `Select run ${run.id}`, onchange: () => {
        if (checkbox.checked) selected.add(run.id);
        else selected.delete(run.id);
        tr.classList.toggle("selected", checkbox.checked);
        updateSelectionUi();
      } });
      tr = h("tr", { dataset: { runId: run.id } }, h("td", {}, checkbox), h("td", { class: "num" }, run.id),
        h("td", { class: "name" }, h("a", { href: `#/runs/${run.id}` }, run.name || `run ${run.id}`)),
        ...Array.from({ length: COLUMNS.length - 3 }, () => h("td")));
      if (flash?.runId === run.id) tr.classList.add("flash");
      rows.set(run.id, tr);
    }
    const checked = selected.has(run.id);
    tr.cells[0].firstChild.checked = checked;
    tr.classList.toggle("selected", checked);
    const hyper = keyHyperparameters(run.spec);
    const summary = run.summary ?? {};
    const cells = [
      statusBadge(run), progressBar(run), hyper.model, hyper.data, hyper.optimizer, String(hyper.seed ?? "—"),
      num(summary["train/loss"]), num(summary["test/loss"]),
      summary["test/accuracy"] === undefined ? "—" : percent(summary["test/accuracy"]),
      when(run.created_at), duration(run.duration_s),
    ];
    cells.forEach((content, i) => {
      const td = tr.cells[i + 3];
      if (i >= 2 && i <= 4) td.className = "hyper";
      if (i >= 5 && i !== 9) td.className = "num";
      if (i === 9) td.title = run.created_at;
      replace(td, content);
    });
    tr.dataset.status = run.status;
    return tr;
  }

  async function load() {
    const query = new URLSearchParams({ limit: String(state.limit) });
    if (state.status) query.set("status", state.status);
    if (state.name) query.set("name", state.name);
    try {
      const { data, count } = await api.get(`/runs?${query}`);
      if (disposed) return;
      state.runs = new Map(data.map((run) => [run.id, run]));
      state.count = count;
      state.loaded = true;
      message.classList.remove("error");
      renderRows();
    } catch (error) {
      if (disposed) return;
      message.classList.add("error");
      replace(message, `Could not load runs: ${error.message}. `, h("button", { onclick: load }, "Retry"));
    }
  }

  function upsert(run) {
    if (!state.loaded) return;
    const known = state.runs.has(run.id);
    if (!matchesServerFilters(run)) {
      if (known) { state.runs.delete(run.id); state.count -= 1; renderRows(); }
      return;
    }
    if (!known) {
      const newest = Math.max(0, ...state.runs.keys());
      if (run.id < newest) return; // an older run outside the loaded page
      state.count += 1;
    }
    state.runs.set(run.id, run);
    if (known && rows.has(run.id) && filter.test(run.spec)) rowFor(run);
    else renderRows();
  }

  const stop = follow("/events", {
    run: upsert,
    deleted: ({ id }) => {
      if (state.runs.delete(id)) { state.count -= 1; renderRows(); }
    },
    open: (reconnected) => {
      // Runs that finished while the stream was reconnecting: read the page again.
      if (reconnected && [...state.runs.values()].some((run) => ACTIVE.has(run.status))) load();
    },
  });
  load();
  return () => { disposed = true; stop(); };
}
