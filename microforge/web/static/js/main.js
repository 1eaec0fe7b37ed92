// The single page: a hash router (#/datasets, #/jobs/job_..., ...), the frame around
// every page (navigation, worker status, sign out), and the page context that pages use
// for images and timers so that leaving a page stops its polling and frees its blobs.

import { auth, blobUrl, health } from "./api.js";
import { h, link, notice, replace, errorText } from "./dom.js";
import * as datasets from "./pages/datasets.js";
import * as train from "./pages/train.js";
import * as jobs from "./pages/jobs.js";
import * as generators from "./pages/generators.js";
import * as volumes from "./pages/volumes.js";
import * as usage from "./pages/usage.js";
import * as signin from "./pages/signin.js";

const ROUTES = [
  [/^\/signin$/, signin.render, null],
  [/^\/datasets$/, datasets.renderList, "datasets"],
  [/^\/datasets\/([\w-]+)$/, datasets.renderOne, "datasets"],
  [/^\/train$/, train.render, "jobs"],
  [/^\/jobs$/, jobs.renderList, "jobs"],
  [/^\/jobs\/([\w-]+)$/, jobs.renderOne, "jobs"],
  [/^\/generators$/, generators.renderList, "generators"],
  [/^\/generate$/, generators.renderGenerate, "generators"],
  [/^\/volumes$/, volumes.renderList, "volumes"],
  [/^\/volumes\/([\w-]+)$/, volumes.renderOne, "volumes"],
  [/^\/usage$/, usage.render, "usage"],
];

const NAV = [
  ["datasets", "Datasets"],
  ["jobs", "Jobs"],
  ["generators", "Generators"],
  ["volumes", "Volumes"],
  ["usage", "Usage"],
];

/** What a page gets: cleanup hooks, authenticated images, a polite timer. */
class PageContext {
  constructor() {
    this.alive = true;
    this.cleanups = [];
    this.controller = new AbortController();
  }
  onLeave(fn) { this.cleanups.push(fn); }
  leave() {
    this.alive = false;
    this.controller.abort();
    for (const fn of this.cleanups.splice(0)) {
      try { fn(); } catch { /* a cleanup never blocks navigation */ }
    }
  }
  /** An <img> filled from an authenticated URL; ``fallback`` words replace it on failure. */
  image(path, alt, { cls = "", fallback = null } = {}) {
    const img = h("img", { alt, class: cls, decoding: "async" });
    this.loadInto(img, path, fallback);
    return img;
  }
  async loadInto(img, path, fallback) {
    try {
      const url = await blobUrl(path, { signal: this.controller.signal });
      if (!this.alive) return URL.revokeObjectURL(url);
      const old = img.dataset.blob;
      img.src = url;
      img.dataset.blob = url;
      if (old) URL.revokeObjectURL(old);
      this.onLeave(() => URL.revokeObjectURL(url));
      return true;
    } catch (error) {
      if (this.alive && fallback !== null && img.isConnected) {
        img.replaceWith(h("p", { class: "empty" }, fallback || errorText(error)));
      }
      return false;
    }
  }
  /** setTimeout that dies with the page. */
  later(fn, ms) {
    const id = setTimeout(() => this.alive && fn(), ms);
    this.onLeave(() => clearTimeout(id));
  }
}

let current = null;

function parseHash() {
  const raw = location.hash.replace(/^#/, "") || "/datasets";
  const [path, query = ""] = raw.split("?");
  return { path, params: new URLSearchParams(query) };
}

async function route() {
  const { path, params } = parseHash();
  if (current) current.leave();
  current = new PageContext();
  const main = document.getElementById("main");
  if (!auth.get() && path !== "/signin") {
    location.replace(`#/signin?next=${encodeURIComponent(path)}`);
    return;
  }
  renderFrame(path);
  for (const [pattern, render, section] of ROUTES) {
    const match = path.match(pattern);
    if (!match) continue;
    markNav(section);
    delete main.dataset.focus;
    replace(main, h("p", { class: "loading" }, "Loading…"));
    try {
      await render(main, { ctx: current, params, args: match.slice(1) });
    } catch (error) {
      if (current.alive) replace(main, h("h1", {}, "This page could not be shown"), notice("error", errorText(error)));
    }
    if (main.dataset.focus !== "keep") main.focus({ preventScroll: true });
    return;
  }
  replace(main, h("h1", {}, "Page not found"),
    h("p", {}, "There is no page at this address. ", link("/datasets", "Go to your datasets"), "."));
}

function renderFrame(path) {
  const signedIn = Boolean(auth.get());
  document.body.classList.toggle("signed-out", !signedIn);
  const nav = document.getElementById("nav");
  replace(nav, signedIn ? [
    h("ul", {}, NAV.map(([id, label]) => h("li", {}, link(`/${id}`, label, { "data-section": id })))),
    h("div", { class: "nav-end" },
      h("span", { id: "health", class: "health", role: "status", "aria-live": "polite" }),
      h("a", { href: "/docs", class: "docs-link" }, "API docs"),
      h("button", { type: "button", class: "ghost", onclick: signOut }, "Sign out")),
  ] : []);
  if (signedIn && path !== "/signin") refreshHealth();
}

function markNav(section) {
  for (const a of document.querySelectorAll("#nav a[data-section]")) {
    if (a.dataset.section === section) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
}

async function refreshHealth() {
  const data = await health();
  const el = document.getElementById("health");
  if (!el) return;
  const devices = (data.worker_devices || []).map((d) => d.kind.toUpperCase());
  let text;
  let cls;
  if (data.status === "unavailable") [text, cls] = ["Server unavailable", "bad"];
  else if (!data.workers || !data.workers.ok) [text, cls] = ["No worker: jobs will wait", "warn"];
  else [text, cls] = [`Worker ready${devices.length ? ` (${[...new Set(devices)].join(", ")})` : ""}`, "ok"];
  el.className = `health ${cls}`;
  el.textContent = text;
  el.title = data.workers && data.workers.detail ? data.workers.detail : "";
}

function signOut() {
  auth.clear();
  location.hash = "#/signin?bye=1";
}

window.addEventListener("microforge:signed-out", () => {
  const { path } = parseHash();
  location.hash = `#/signin?expired=1&next=${encodeURIComponent(path)}`;
});
window.addEventListener("hashchange", route);
route();
