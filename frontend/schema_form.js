// Form controls generated from JSON Schemas (the pydantic schemas served by /registry).
// Every control has a dotted ``path`` ("optimizer.schedule.warmup_steps") on its element's
// data-field, so an error the server names by field lands next to that field.
//
// A control: {path, element, read() → value (undefined: leave out, the server's default),
// set(value), validate() → [{field, msg}] (and shows them)}.
import { h, replace } from "./dom.js";

let nextId = 0;
const uid = (path) => `f-${path.replace(/[^A-Za-z0-9_-]/g, "-")}-${nextId++}`;

/** The schema behind a "$ref" in ``defs``. */
export function resolve(schema, defs) {
  if (schema?.$ref) return defs?.[schema.$ref.split("/").at(-1)] ?? {};
  return schema ?? {};
}

/** {inner, nullable}: "anyOf: [X, null]" is an optional X. */
function unwrapNullable(schema, defs) {
  const options = schema.anyOf ?? schema.oneOf;
  if (options) {
    const other = options.filter((s) => s.type !== "null");
    if (other.length === 1) return { inner: resolve(other[0], defs), nullable: other.length < options.length };
  }
  return { inner: resolve(schema, defs), nullable: false };
}

function title(key) {
  return key.replaceAll("_", " ");
}

function bounds(schema) {
  const parts = [];
  if (schema.minimum !== undefined) parts.push(`≥ ${schema.minimum}`);
  if (schema.exclusiveMinimum !== undefined) parts.push(`> ${schema.exclusiveMinimum}`);
  if (schema.maximum !== undefined) parts.push(`≤ ${schema.maximum}`);
  if (schema.exclusiveMaximum !== undefined) parts.push(`< ${schema.exclusiveMaximum}`);
  return parts.join(", ");
}

function checkBounds(value, schema, limit) {
  if (schema.minimum !== undefined && value < schema.minimum) return `must be at least ${schema.minimum}`;
  if (schema.exclusiveMinimum !== undefined && value <= schema.exclusiveMinimum) return `must be greater than ${schema.exclusiveMinimum}`;
  if (schema.maximum !== undefined && value > schema.maximum) return `must be at most ${schema.maximum}`;
  if (schema.exclusiveMaximum !== undefined && value >= schema.exclusiveMaximum) return `must be less than ${schema.exclusiveMaximum}`;
  if (limit !== undefined && value > limit) return `must be at most ${limit} (the server's limit)`;
  return null;
}

function parseNumber(text, integer) {
  const value = Number(text);
  if (text.trim() === "" || Number.isNaN(value)) return { error: "must be a number" };
  if (integer && !Number.isInteger(value)) return { error: "must be a whole number" };
  return { value };
}

/** The frame of one field: label, input, hint, error; ``check`` says what is wrong. */
function fieldFrame(path, labelText, input, hintText, { checkbox = false } = {}) {
  const id = uid(path);
  input.id = id;
  const hint = hintText ? h("p", { class: "hint", id: `${id}-hint` }, hintText) : null;
  const error = h("p", { class: "field-error", id: `${id}-error`, role: "alert" });
  input.setAttribute("aria-describedby", [hint ? `${id}-hint` : "", `${id}-error`].filter(Boolean).join(" "));
  const label = checkbox
    ? h("label", { for: id }, input, labelText)
    : h("label", { for: id }, labelText);
  const element = h("div", { class: `field${checkbox ? " checkbox" : ""}`, dataset: { field: path } },
    label, checkbox ? null : input, hint, error);
  return { element, error, input };
}

/** Show ``message`` (or clear it) on a control's element. */
export function showError(element, message) {
  const slot = element.querySelector(":scope > .field-error");
  if (slot) slot.textContent = message ?? "";
  element.classList.toggle("invalid", Boolean(message));
  element.querySelector(":scope > input, :scope > select, :scope > label > input")
    ?.setAttribute("aria-invalid", message ? "true" : "false");
}

/**
 * A control for one property ``key`` of an object at ``path``: number, integer, boolean,
 * enum, string, list of numbers, optional (nullable) variants, nested objects.
 * ``options``: {defs, required, limits: {max, itemMax, countMax}, onChange}.
 */
export function control(path, key, schema, options) {
  const { inner, nullable } = unwrapNullable(schema, options.defs);
  const merged = {
    ...inner, description: schema.description ?? inner.description, default: schema.default ?? inner.default,
    about: inner.description,
  };
  if (inner.type === "object" || inner.properties) {
    return nullable
      ? optionalGroup(path, key, merged, options)
      : objectGroup(path, key, merged, options);
  }
  return leaf(path, key, merged, { ...options, optional: nullable || !options.required });
}

function leaf(path, key, schema, options) {
  const limits = options.limits ?? {};
  const hintParts = [schema.description, bounds(schema)];
  if (limits.max !== undefined) hintParts.push(`server limit ${limits.max}`);
  if (schema.default !== undefined && schema.default !== null && schema.default !== "" && schema.type !== "boolean") {
    hintParts.push(`default ${Array.isArray(schema.default) ? schema.default.join(", ") : schema.default}`);
  }
  const changed = () => options.onChange?.();
  let input;
  let read;
  let set;
  const label = title(key, schema);

  if (schema.enum) {
    input = h("select", { onchange: changed }, schema.enum.map((value, i) => h("option", { value: String(i) }, String(value))));
    read = () => ({ value: schema.enum[Number(input.value)] });
    set = (value) => {
      const index = schema.enum.findIndex((v) => v === value);
      input.value = String(index >= 0 ? index : 0);
    };
  } else if (schema.type === "boolean") {
    input = h("input", { type: "checkbox", onchange: changed });
    read = () => ({ value: input.checked });
    set = (value) => { input.checked = Boolean(value); };
  } else if (schema.type === "integer" || schema.type === "number") {
    const integer = schema.type === "integer";
    input = h("input", { type: "number", step: integer ? "1" : "any", inputmode: integer ? "numeric" : "decimal", oninput: changed });
    if (schema.minimum !== undefined) input.min = schema.minimum;
    if (schema.maximum !== undefined) input.max = schema.maximum;
    else if (limits.max !== undefined) input.max = limits.max;
    read = () => {
      if (input.value.trim() === "") {
        // A half-typed number reads as "" in a number input: badInput tells them apart.
        if (input.validity?.badInput) return { error: "must be a number" };
        return options.optional ? { value: undefined } : { error: "is required" };
      }
      const parsed = parseNumber(input.value, integer);
      if (parsed.error) return parsed;
      const error = checkBounds(parsed.value, schema, limits.max);
      return error ? { error } : parsed;
    };
    set = (value) => { input.value = value === null || value === undefined ? "" : String(value); };
  } else if (schema.type === "array") {
    const item = resolve(schema.items, options.defs);
    const integer = item.type === "integer";
    input = h("input", { type: "text", placeholder: "e.g. 128, 128", oninput: changed, spellcheck: "false" });
    hintParts.splice(1, 1, "comma-separated", bounds(item) && `each ${bounds(item)}`);
    if (limits.itemMax !== undefined) hintParts.push(`each ≤ ${limits.itemMax}`);
    if (limits.countMax !== undefined) hintParts.push(`at most ${limits.countMax} entries`);
    read = () => {
      const parts = input.value.split(/[\s,]+/).filter(Boolean);
      if (parts.length === 0) return options.optional ? { value: undefined } : { value: [] };
      const values = [];
      for (const [i, part] of parts.entries()) {
        const parsed = parseNumber(part, integer);
        const error = parsed.error ?? checkBounds(parsed.value, item, limits.itemMax);
        if (error) return { error: `entry ${i + 1} (${part}) ${error}` };
        values.push(parsed.value);
      }
      const most = Math.min(schema.maxItems ?? Infinity, limits.countMax ?? Infinity);
      if (values.length > most) return { error: `at most ${most} entries` };
      if (schema.minItems !== undefined && values.length < schema.minItems) return { error: `at least ${schema.minItems} entries` };
      return { value: values };
    };
    set = (value) => { input.value = Array.isArray(value) ? value.join(", ") : ""; };
  } else {
    input = h("input", { type: "text", oninput: changed, spellcheck: "false" });
    if (schema.maxLength !== undefined) input.maxLength = schema.maxLength;
    if (schema.pattern) hintParts.push(`pattern ${schema.pattern}`);
    read = () => {
      const text = input.value;
      if (text === "") return options.optional ? { value: undefined } : { error: "is required" };
      if (schema.pattern) {
        try {
          if (!new RegExp(schema.pattern).test(text)) return { error: `must match ${schema.pattern}` };
        } catch { /* a pattern JavaScript cannot read: the server checks it */ }
      }
      return { value: text };
    };
    set = (value) => { input.value = value ?? ""; };
  }

  const hint = hintParts.filter(Boolean).join(" · ");
  const frame = fieldFrame(path, label, input, hint, { checkbox: schema.type === "boolean" });
  if (schema.default !== undefined && schema.default !== null) set(schema.default);
  const validate = () => {
    const result = read();
    showError(frame.element, result.error ? `${label} ${result.error}` : null);
    return result.error ? [{ field: path, msg: result.error }] : [];
  };
  input.addEventListener("blur", validate);
  input.addEventListener("change", validate);
  return {
    path, element: frame.element, input, set, validate,
    read: () => read().value,
  };
}

/** A fieldset of an object's properties (``skip``: keys the caller handles, e.g. "name"). */
export function objectGroup(path, key, schema, options, { skip = [], legend = true } = {}) {
  const defs = { ...(options.defs ?? {}), ...(schema.$defs ?? {}) };
  const required = new Set(schema.required ?? []);
  const children = [];
  const simple = [];
  const nested = [];
  for (const [name, sub] of Object.entries(schema.properties ?? {})) {
    if (skip.includes(name) || sub.const !== undefined) continue;
    const childPath = path ? `${path}.${name}` : name;
    const child = control(childPath, name, sub, {
      ...options, defs, required: required.has(name), limits: options.limitsFor?.(childPath),
    });
    children.push([name, child]);
    (child.group ? nested : simple).push(child.element);
  }
  const description = schema.description && legend ? h("p", { class: "description" }, schema.description) : null;
  const error = h("p", { class: "field-error", role: "alert" });
  const body = [error, description, simple.length ? h("div", { class: "fields" }, simple) : null, nested];
  const element = legend
    ? h("fieldset", { dataset: { field: path } }, h("legend", {}, title(key, schema)), body)
    : h("div", { dataset: { field: path } }, body);
  return {
    path, element, group: true,
    read: () => {
      const value = {};
      for (const [name, child] of children) {
        const v = child.read();
        if (v !== undefined) value[name] = v;
      }
      return value;
    },
    set: (value) => {
      for (const [name, child] of children) if (value && name in value) child.set(value[name]);
    },
    validate: () => children.flatMap(([, child]) => child.validate()),
    values: () => Object.fromEntries(children.map(([name, child]) => [name, child.read()])),
  };
}

/** An object that may be absent (a probe that is off): a checkbox, then its fields. */
function optionalGroup(path, key, schema, options) {
  const inner = objectGroup(path, key, schema, options, { legend: false });
  const id = uid(`${path}-enabled`);
  const toggle = h("input", { type: "checkbox", id, onchange: () => { sync(); options.onChange?.(); } });
  const sync = () => {
    inner.element.hidden = !toggle.checked;
    for (const about of element.querySelectorAll(":scope > .about")) about.hidden = !toggle.checked;
  };
  const element = h("fieldset", { dataset: { field: path }, class: "optional" },
    h("legend", {}, h("label", { class: "optional-toggle", for: id }, toggle, `${title(key, schema)}`)),
    h("p", { class: "field-error", role: "alert" }),
    h("p", { class: "description" }, schema.description ?? ""),
    schema.about && schema.about !== schema.description ? h("p", { class: "description about" }, schema.about) : null,
    inner.element);
  sync();
  return {
    path, element, group: true, toggle,
    read: () => (toggle.checked ? inner.read() : undefined),
    set: (value) => {
      toggle.checked = value !== null && value !== undefined;
      if (toggle.checked) inner.set(value);
      sync();
    },
    validate: () => (toggle.checked ? inner.validate() : []),
  };
}

/**
 * A choice among registry entries ({name: {description, schema}}) at ``path`` (model, data,
 * optimizer): a select for the name, then the chosen entry's fields. Switching entries keeps
 * the values the user changed in the fields they share.
 */
export function unionGroup(path, label, entries, options, describe = () => "") {
  const names = Object.keys(entries);
  const id = uid(`${path}-name`);
  const select = h("select", { id, "aria-describedby": `${id}-error` },
    names.map((name) => h("option", { value: name }, name)));
  const nameError = h("p", { class: "field-error", id: `${id}-error`, role: "alert" });
  const nameField = h("div", { class: "field", dataset: { field: `${path}.name` } },
    h("label", { for: id }, "name"), select, nameError);
  const about = h("p", { class: "description" });
  const slot = h("div");
  let current = null;
  let previous = names[0];

  const build = (carry = {}) => {
    const entry = entries[select.value];
    current = objectGroup(path, label, entry.schema, options, { skip: ["name"], legend: false });
    current.set(carry);
    replace(about, entry.description, describe(entry) ? ` (${describe(entry)})` : "");
    replace(slot, current.element);
  };
  select.addEventListener("change", () => {
    // Keep what the user changed (values that differ from the old entry's defaults).
    const defaults = entries[previous].schema.properties ?? {};
    const carry = Object.fromEntries(Object.entries(current.values()).filter(
      ([name, v]) => v !== undefined && JSON.stringify(v) !== JSON.stringify(defaults[name]?.default)));
    previous = select.value;
    build(carry);
    options.onChange?.();
  });
  build();
  const element = h("fieldset", { dataset: { field: path } }, h("legend", {}, label),
    h("p", { class: "field-error", role: "alert" }), nameField, about, slot);
  return {
    path, element, group: true,
    read: () => ({ name: select.value, ...current.read() }),
    set: (value) => {
      if (!value) return;
      if (value.name in entries) select.value = value.name;
      previous = select.value;
      build();
      current.set(value);
    },
    validate: () => current.validate(),
  };
}
