// The runs table: filters (status and name on the server, hyperparameters here), selection
// for comparison, live updates from the server-sent event stream GET /api/v1/events, and a
// notice when runs are queued and no worker is running.
import { api, follow } from "./api.js";
import { debounce, h, replace } from "./dom.js";
import {
  ACTIVE, STATUSES, at, duration, flattenSpec, keyHyperparameters, num, percent, progressBar,
  statusBadge, when,
} from "./format.js";
import { setQuery, takeFlash } from "./router.js";
import { workerNotice } from "./worker_notice.js";

const PAGE = 100;
const HP_HINT = "key=value, key<value, key~text, key=[a,b]; all must hold";
/** Runs picked for comparison; kept while the dashboard is open. */
export const selected = new Set();

const OPERATORS = ["<=", ">=", "!=", "=", "<", ">", "~"];
const ORDERING = new Set(["<", ">", "<=", ">="]);

/**
 * Parse a hyperparameter filter: terms ``key op value`` separated by spaces or commas (op one
 * of = != < > <= >= ~ for "contains"); a list in brackets keeps its commas and matches a
 * list-valued leaf with those elements ("widths=[64,64]", = and != only). A key matches a
 * spec leaf by its full dotted path or its last parts ("lr" matches "optimizer.lr"). A bare
 * word matches anywhere in the spec.
 * Returns {test(spec) → bool, error: what is wrong with the text (null: nothing; then every
 * spec passes), keys: the keys the terms name}.
 */
export function parseHyperFilter(text) {
  const { terms, error: unclosed } = splitTerms(text);
  if (unclosed) return rejected(unclosed);
  const tests = [];
  const keys = [];
  for (const term of terms) {
    const found = findOperator(term);
    if (!found) {
      const word = term.toLowerCase();
      tests.push((flat) => Object.values(flat).some((v) => String(v).toLowerCase().includes(word)));
      continue;
    }
    const { op, at: index } = found;
    const [key, value] = [term.slice(0, index), term.slice(index + op.length)];
    if (!key || value === "") return rejected(`"${term}" needs a key and a value`);
    if (value.startsWith("[") && !value.endsWith("]")) return rejected(`"${term}": a list ends at its "]"`);
    const list = value.startsWith("[") ? value.slice(1, -1).split(/[\s,]+/).filter(Boolean) : null;
    if (list && op !== "=" && op !== "!=") return rejected(`"${term}": ${op} cannot compare a list; use = or !=`);
    if (ORDERING.has(op) && !isNumber(value)) return rejected(`"${term}": ${op} needs a number`);
    keys.push(key);
    tests.push((flat, spec) => leavesNamed(Object.keys(flat), key).some((path) => (list
      ? (op === "=") === sameList(at(spec, path), list)
      : compare(flat[path], op, value))));
  }
  return { test: (spec) => tests.every((t) => t(flattenSpec(spec), spec)), error: null, keys };
}

/** The keys of ``filter``'s terms that name no leaf of any of ``specs``. */
export function unknownKeys(filter, specs) {
  const paths = [...new Set(specs.flatMap((spec) => Object.keys(flattenSpec(spec))))];
  return [...new Set(filter.keys)].filter((key) => leavesNamed(paths, key).length === 0);
}

const rejected = (error) => ({ test: () => true, error, keys: [] });
const isNumber = (text) => text.trim() !== "" && !Number.isNaN(Number(text));
const leavesNamed = (paths, key) => paths.filter((path) => path === key || path.endsWith(`.${key}`));

/** ``text`` split at spaces and commas outside brackets; {terms, error} (an unclosed "["). */
function splitTerms(text) {
  const terms = [];
  let term = "";
  let depth = 0;
  for (const char of text) {
    if (char === "[") depth += 1;
    else if (char === "]") depth = Math.max(0, depth - 1);
    if (depth === 0 && /[\s,]/.test(char)) {
      if (term) terms.push(term);
      term = "";
    } else term += char;
  }
  if (depth > 0) return { terms: [], error: `"${term}" needs a closing "]"` };
  if (term) terms.push(term);
  return { terms, error: null };
}

/** The first operator in ``term`` (the longest of those starting there): {op, at} or null. */
function findOperator(term) {
  let found = null;
  for (const op of OPERATORS) {
    const index = term.indexOf(op);
    if (index >= 0 && (!found || index < found.at || (index === found.at && op.length > found.op.length))) {
      found = { op, at: index };
    }
  }
  return found;
}

/** Whether the leaf ``actual`` is a list with the elements ``wanted`` (strings, compared as
 * ``compare``'s = does). */
function sameList(actual, wanted) {
  return Array.isArray(actual) && actual.length === wanted.length
    && actual.every((element, i) => compare(element, "=", wanted[i]));
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
      renderRows();
    }, 200) });
  const hpHint = h("span", { id: "filter-hp-hint", class: "hint", "aria-live": "polite" }, HP_HINT);
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
  // every queued run counts, whatever the filters show
  const notice = workerNotice({
    queuedRuns: () => api.get("/runs?status=queued&limit=1").then((body) => body.count),
    waiting: (n) => (n === 1 ? "1 queued run waits" : `${n} queued runs wait`),
  });

  replace(container,
    h("div", { class: "run-head" }, h("h1", {}, "Runs"),
      h("div", { class: "actions" }, h("a", { class: "button", href: "#/new" }, "New run"))),
    flash?.runId ? h("p", { class: "banner ok", role: "status" }, `Run #${flash.runId} submitted; it updates live below. `,
      h("a", { href: `#/runs/${flash.runId}` }, "Open it")) : null,
    notice.element,
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

  /** Under the hyperparameter field: what is wrong with the filter, or the keys no loaded
   * run has (its terms then match nothing), or how to write one. */
  function showFilterHint() {
    const unknown = state.runs.size ? unknownKeys(filter, [...state.runs.values()].map((run) => run.spec)) : [];
    const problem = filter.error
      ?? (unknown.length ? `no run has a setting named ${unknown.map((key) => `"${key}"`).join(" or ")}` : null);
    hpHint.textContent = problem ?? HP_HINT;
    hpHint.classList.toggle("error", Boolean(problem));
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
    showFilterHint();
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

  // Each active run's last status the stream sent, whatever the filters: a run queued, or
  // leaving the queue, has the worker notice read /health again (as does each reconnection,
  // every few seconds), so it appears for a run queued with no worker and goes once one starts.
  const streamed = new Map();
  const stop = follow("/events", {
    run: (run) => {
      const before = streamed.get(run.id);
      if (ACTIVE.has(run.status)) streamed.set(run.id, run.status);
      else streamed.delete(run.id);
      if (run.status !== before && (run.status === "queued" || before === "queued")) notice.check();
      upsert(run);
    },
    deleted: ({ id }) => {
      if (streamed.get(id) === "queued") notice.check();
      streamed.delete(id);
      if (state.runs.delete(id)) { state.count -= 1; renderRows(); }
    },
    open: (reconnected) => {
      notice.check();
      // Runs that finished while the stream was reconnecting: read the page again.
      if (reconnected && [...state.runs.values()].some((run) => ACTIVE.has(run.status))) load();
    },
  });
  load();
  return () => { disposed = true; stop(); };
}
