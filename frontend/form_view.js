// New run: a form generated from GET /api/v1/registry (models, datasets, optimizers, probes
// with their schemas and limits). Client-side hints and checks; the server's 422 errors are
// shown next to the field they name. ``#/new?clone=ID`` starts from a copy of run ID's spec.
import { ApiError, api } from "./api.js";
import { h, replace } from "./dom.js";
import { setFlash } from "./router.js";
import { control, objectGroup, showError, unionGroup } from "./schema_form.js";

/** Where a new form starts (the DESIGN.md example, without its costlier probes). */
const STARTER = {
  name: "",
  seed: 0,
  model: { name: "mlp", widths: [128, 128], activation: "tanh" },
  data: { name: "digits", batch_size: 128 },
  optimizer: { name: "sgd", lr: 0.1, momentum: 0.0 },
  steps: 2000,
  probes: { every: 50, batch_size: 512 },
};

/** The server's limits that bound a field (shown as hints, checked before sending). */
function limitsFor(limits) {
  const table = {
    steps: { max: limits.max_steps },
    "data.batch_size": { max: limits.max_batch_size },
    "probes.batch_size": { max: limits.max_probe_batch_size },
    "model.widths": { itemMax: limits.max_width, countMax: limits.max_layers },
  };
  return (path) => table[path];
}

export function render(container, { params }) {
  let disposed = false;
  const cloneId = params.get("clone");
  const status = h("p", { class: "state-message", role: "status" }, "Loading the registry…");
  replace(container, h("h1", {}, cloneId ? `New run: a copy of run #${cloneId}` : "New run"), status);

  (async () => {
    let registry;
    let source = null;
    try {
      [registry, source] = await Promise.all([
        api.get("/registry"),
        cloneId ? api.get(`/runs/${encodeURIComponent(cloneId)}`) : Promise.resolve(null),
      ]);
    } catch (error) {
      if (disposed) return;
      status.classList.add("error");
      status.textContent = cloneId && error.status === 404
        ? `Run #${cloneId} does not exist, so there is nothing to copy.`
        : `Could not load the registry: ${error.message}`;
      return;
    }
    if (disposed) return;
    status.remove();
    const spec = source ? { ...source.spec, name: source.spec.name ? `${source.spec.name} (copy)`.slice(0, 200) : "" } : STARTER;
    container.append(buildForm(registry, spec, source));
  })();
  return () => { disposed = true; };
}

function buildForm(registry, initial, source) {
  const options = { limitsFor: limitsFor(registry.limits ?? {}), onChange: () => updatePreview() };
  const runSchema = registry.run_spec;
  const defs = runSchema.$defs ?? {};
  const top = ["name", "seed", "steps"].map((key) => control(key, key, runSchema.properties[key], {
    ...options, defs, required: (runSchema.required ?? []).includes(key), limits: options.limitsFor(key),
  }));
  const model = unionGroup("model", "Model", registry.models, options,
    (entry) => `takes ${entry.accepts.join(" or ")} inputs`);
  const data = unionGroup("data", "Data", registry.datasets, options,
    (entry) => `${entry.input_kind} inputs, ${entry.task}`);
  const optimizer = unionGroup("optimizer", "Optimizer", registry.optimizers, options);
  const probes = objectGroup("probes", "Probes", registry.probes, options);
  const parts = { model, data, optimizer, probes };

  for (const field of top) field.set(initial[field.path]);
  for (const [key, part] of Object.entries(parts)) part.set(initial[key]);

  const summary = h("div", { class: "banner error error-summary", role: "alert", tabindex: "-1", hidden: true });
  const preview = h("pre");
  const submit = h("button", { type: "submit", class: "primary" }, "Start run");
  const form = h("form", { class: "run-form", novalidate: true },
    summary,
    h("fieldset", { dataset: { field: "" } }, h("legend", {}, "Run"),
      h("p", { class: "field-error", role: "alert" }),
      h("div", { class: "fields" }, top.map((f) => f.element))),
    model.element, data.element, optimizer.element, probes.element,
    h("details", { class: "spec" }, h("summary", {}, "The spec that will be sent (JSON)"), preview),
    h("div", { class: "form-actions" }, submit, h("a", { href: "#/runs" }, "Cancel"),
      source ? h("span", { class: "hint" }, `Copied from run #${source.id}; change anything, then start.`) : null));

  function read() {
    const spec = {};
    for (const field of top) {
      const value = field.read();
      if (value !== undefined) spec[field.path] = value;
    }
    for (const [key, part] of Object.entries(parts)) spec[key] = part.read();
    return spec;
  }

  function updatePreview() {
    preview.textContent = JSON.stringify(read(), null, 2);
  }

  function clearErrors() {
    for (const element of form.querySelectorAll("[data-field]")) showError(element, null);
    summary.hidden = true;
  }

  /** Put each error next to its field (or the nearest enclosing one that is shown). */
  function showErrors(errors) {
    const items = [];
    for (const { field, msg } of errors) {
      const parts = String(field ?? "").split(".");
      let element = null;
      let index = null;
      while (parts.length && !element) {
        const candidate = form.querySelector(`[data-field="${CSS.escape(parts.join("."))}"]`);
        if (candidate && candidate.offsetParent !== null) element = candidate;
        else index = parts.pop();
      }
      element ??= form.querySelector('[data-field=""]');
      const where = /^\d+$/.test(index ?? "") ? `entry ${Number(index) + 1}: ` : "";
      const message = `${where}${msg}`;
      const slot = element.querySelector(":scope > .field-error");
      const previous = slot?.textContent ? `${slot.textContent} ` : "";
      showError(element, `${previous}${message}`);
      items.push(h("li", {}, h("a", { href: "#", onclick: (event) => {
        event.preventDefault();
        (element.querySelector("input, select") ?? element).focus();
      } }, field || "spec"), `: ${message}`));
    }
    replace(summary, h("strong", {}, `The run was not started: ${errors.length} problem${errors.length > 1 ? "s" : ""}.`),
      h("ul", {}, items));
    summary.hidden = false;
    const first = form.querySelector(".field.invalid input, .field.invalid select, fieldset .field-error:not(:empty)");
    (first?.matches("input, select") ? first : summary).focus();
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors();
    const problems = [...top.flatMap((f) => f.validate()), ...Object.values(parts).flatMap((p) => p.validate())];
    if (problems.length) {
      clearErrors();
      showErrors(problems);
      return;
    }
    submit.disabled = true;
    submit.textContent = "Starting…";
    try {
      const created = await api.post("/runs", read());
      setFlash({ runId: created.id });
      location.hash = "#/runs";
    } catch (error) {
      if (error instanceof ApiError && error.status === 422 && Array.isArray(error.detail)) {
        showErrors(error.detail);
      } else {
        showErrors([{ field: "", msg: error.message }]);
      }
    } finally {
      submit.disabled = false;
      submit.textContent = "Start run";
    }
  });
  updatePreview();
  return form;
}
