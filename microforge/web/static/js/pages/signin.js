// Sign in: the key is checked against the API (GET /v1/usage needs one) and then kept in
// this tab's sessionStorage only.

import { api, auth, ApiError } from "../api.js";
import { h, notice, replace, errorText } from "../dom.js";

export async function render(main, { params }) {
  const status = h("div", { "aria-live": "polite" });
  if (params.get("expired")) status.append(notice("warn", "The server did not accept the key any more (revoked, or a different server). Sign in again."));
  if (params.get("bye")) status.append(notice("info", "Signed out: this tab has forgotten the key."));
  const input = h("input", {
    id: "key", name: "key", type: "password", required: true, autocomplete: "off",
    spellcheck: "false", placeholder: "mf_…", "aria-describedby": "key-help",
  });
  const submit = h("button", { type: "submit", class: "primary" }, "Sign in");
  const form = h("form", { class: "card signin", novalidate: true },
    h("h1", {}, "Sign in to MicroForge"),
    h("p", { class: "lead" }, "Train SliceGAN on your micrographs and generate 3D microstructures."),
    h("label", { for: "key" }, "API key"),
    input,
    h("p", { id: "key-help", class: "help" },
      "`microforge up` prints a first key when it starts on a new data folder; make more with ",
      h("code", {}, "microforge keys create NAME"),
      ". The key stays in this browser tab only: it is forgotten when you sign out or close the tab."),
    submit,
    status);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const key = input.value.trim();
    if (!key) {
      replace(status, notice("error", "Paste your API key first."));
      input.focus();
      return;
    }
    submit.disabled = true;
    auth.set(key);
    try {
      await api("/v1/usage");
      const next = params.get("next");
      location.hash = next && next.startsWith("/") && next !== "/signin" ? `#${next}` : "#/datasets";
    } catch (error) {
      auth.clear();
      const text = error instanceof ApiError && error.status === 401
        ? "This key was not accepted: check that you copied all of it, and that it belongs to this server."
        : errorText(error);
      replace(status, notice("error", text));
      input.focus();
    } finally {
      submit.disabled = false;
    }
  });
  replace(main, form);
  main.dataset.focus = "keep";
  input.focus();
}
