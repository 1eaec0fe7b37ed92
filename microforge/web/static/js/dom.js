// Building the page safely: every piece of text goes in through textContent or a text
// node, never parsed as markup, so a dataset called "<img src=x onerror=...>" is shown as
// those characters and nothing else. Attributes are set one by one; "style" and "on..."
// strings are refused (the Content-Security-Policy would block them anyway).

/** h("button", {class: "primary", onclick: fn}, "Save") -> an element. */
export function h(tag, attrs = {}, ...children) {
  const svg = SVG_TAGS.has(tag);
  const el = svg
    ? document.createElementNS("http://www.w3.org/2000/svg", tag)
    : document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2), value);
    } else if (key === "class") {
      el.setAttribute("class", Array.isArray(value) ? value.filter(Boolean).join(" ") : value);
    } else if (key === "text") {
      el.textContent = String(value);
    } else if (key === "value" && !svg) {
      el.value = value;
    } else if (key === "checked" || key === "selected") {
      // the default too, so that form.reset() comes back to what the page showed
      el[key] = Boolean(value);
      el[key === "checked" ? "defaultChecked" : "defaultSelected"] = Boolean(value);
    } else if (key === "disabled") {
      el[key] = Boolean(value);
    } else if (key === "style" || key.startsWith("on") || key === "innerHTML") {
      throw new Error(`refusing to set ${key} from data`);
    } else {
      el.setAttribute(key, value === true ? "" : String(value));
    }
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** Replace everything inside ``el``. */
export function replace(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

const SVG_TAGS = new Set([
  "svg", "g", "path", "line", "polyline", "circle", "rect", "text", "title", "defs",
  "marker", "polygon",
]);

/** A short message box: kind = "error" | "warn" | "info" | "ok". */
export function notice(kind, ...children) {
  return h("div", { class: `notice ${kind}`, role: kind === "error" ? "alert" : "status" },
    ...children);
}

/** A definition list from [label, value] pairs; values may be nodes. */
export function facts(pairs) {
  return h("dl", { class: "facts" },
    pairs.filter(Boolean).map(([k, v]) => [h("dt", {}, k), h("dd", {}, v ?? "—")]));
}

/** A table: columns = [{label, cell(row) -> node|string, class?}]. */
export function table(columns, rows, { caption, empty } = {}) {
  if (!rows.length && empty) return h("p", { class: "empty" }, empty);
  return h("div", { class: "table-wrap" },
    h("table", {},
      caption ? h("caption", { class: "sr-only" }, caption) : null,
      h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col", class: c.class }, c.label)))),
      h("tbody", {}, rows.map((row) =>
        h("tr", {}, columns.map((c) => h("td", { class: c.class, "data-label": c.label }, c.cell(row))))))));
}

/** A link inside the single page. */
export function link(route, text, attrs = {}) {
  return h("a", { href: `#${route}`, ...attrs }, text);
}

export function button(text, onclick, attrs = {}) {
  return h("button", { type: "button", onclick, ...attrs }, text);
}

/** Run an async action from a button: disable it meanwhile, show failures in ``status``. */
export async function busy(btn, action, status) {
  btn.disabled = true;
  btn.setAttribute("aria-busy", "true");
  try {
    return await action();
  } catch (error) {
    if (status) replace(status, notice("error", errorText(error)));
    else throw error;
  } finally {
    btn.disabled = false;
    btn.removeAttribute("aria-busy");
  }
}

/** The words to show for an error: the API's own message, never a stack or a JSON dump. */
export function errorText(error) {
  if (error && error.detail) {
    const fields = (error.errors || []).map((e) => `${e.field.replace(/^body\./, "")}: ${e.message}`);
    return fields.length ? `${error.detail} (${fields.join("; ")})` : error.detail;
  }
  return (error && error.message) || "Something went wrong.";
}

export function stateBadge(state) {
  return h("span", { class: `badge state-${state}` }, state);
}
