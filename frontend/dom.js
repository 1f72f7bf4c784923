// Tiny DOM helpers: build elements without innerHTML (no data is ever parsed as HTML).

/**
 * h("a", {href: "#/runs", class: "x", onclick: fn}, "text", child) → the element.
 * Props: class, text, dataset ({...}), on<event> (listener), boolean true → empty attribute,
 * value/checked/disabled/hidden set as properties; null, undefined and false are skipped.
 */
export function h(tag, props = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(props ?? {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") element.className = value;
    else if (name === "text") element.textContent = value;
    else if (name === "dataset") Object.assign(element.dataset, value);
    else if (name.startsWith("on") && typeof value === "function") {
      element.addEventListener(name.slice(2), value);
    } else if (["value", "checked", "disabled", "hidden", "selected", "indeterminate"].includes(name)) {
      element[name] = value;
    } else element.setAttribute(name, value === true ? "" : String(value));
  }
  append(element, children);
  return element;
}

function append(element, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : String(child));
  }
}

/** Replace everything inside ``element`` with ``children``. */
export function replace(element, ...children) {
  element.replaceChildren();
  append(element, children);
  return element;
}

/** ``fn`` called at most once per ``ms`` after the last call (trailing edge). */
export function debounce(fn, ms) {
  let timer = null;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
}
