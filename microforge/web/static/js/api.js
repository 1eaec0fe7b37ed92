// Talking to the /v1 API. The key lives in this tab's sessionStorage only: never in a
// URL (it would reach server logs and history) and never in a cookie (which the browser
// would send by itself). It goes out as a Bearer header on each request we make.

const KEY_NAME = "microforge.key";

export const auth = {
  get: () => sessionStorage.getItem(KEY_NAME),
  set: (key) => sessionStorage.setItem(KEY_NAME, key),
  clear: () => sessionStorage.removeItem(KEY_NAME),
};

/** A refused request, with the API's stable code and its words for people. */
export class ApiError extends Error {
  constructor(status, code, detail, errors = null) {
    super(detail);
    this.status = status;
    this.code = code;
    this.detail = detail;
    this.errors = errors;
  }
}

function headers(extra = {}) {
  const out = { ...extra };
  const key = auth.get();
  if (key) out.Authorization = `Bearer ${key}`;
  return out;
}

async function failure(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    // not JSON (a proxy's page, say): fall through to a plain sentence
  }
  if (response.status === 401 && auth.get()) {
    auth.clear();
    window.dispatchEvent(new CustomEvent("microforge:signed-out", { detail: "expired" }));
  }
  if (body && typeof body.detail === "string") {
    return new ApiError(response.status, body.code || "error", body.detail, body.errors || null);
  }
  return new ApiError(response.status, "http_error",
    `The server answered ${response.status} ${response.statusText || ""}`.trim());
}

async function send(path, init) {
  try {
    return await fetch(path, init);
  } catch {
    throw new ApiError(0, "unreachable",
      "Cannot reach the MicroForge server. Is it still running? Check the terminal of `microforge up`.");
  }
}

/** GET/POST/DELETE JSON; resolves to the parsed body (null for 204). */
export async function api(path, { method = "GET", json, body, extraHeaders, signal } = {}) {
  const init = { method, headers: headers(extraHeaders), signal };
  if (json !== undefined) {
    init.body = JSON.stringify(json);
    init.headers["Content-Type"] = "application/json";
  } else if (body !== undefined) {
    init.body = body;
  }
  const response = await send(path, init);
  if (!response.ok) throw await failure(response);
  if (response.status === 204) return null;
  const type = response.headers.get("Content-Type") || "";
  return type.includes("json") ? response.json() : response;
}

/** Fetch an image (or any file) with the key; resolves to a blob: URL the caller revokes. */
export async function blobUrl(path, { signal } = {}) {
  const response = await send(path, { headers: headers(), signal });
  if (!response.ok) throw await failure(response);
  return URL.createObjectURL(await response.blob());
}

/** Save a file the key can read under ``filename`` (through a blob, as links cannot carry
 * the Authorization header). For very large volumes a share link is the better path. */
export async function download(path, filename) {
  const url = await blobUrl(path);
  const a = document.createElement("a");
  a.href = url;
  a.download = filename;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

/** POST a multipart form with upload progress (fetch cannot report it). */
export function upload(path, form, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", path);
    for (const [k, v] of Object.entries(headers())) xhr.setRequestHeader(k, v);
    xhr.upload.onprogress = (e) => e.lengthComputable && onProgress && onProgress(e.loaded / e.total);
    xhr.onerror = () => reject(new ApiError(0, "unreachable", "The upload was interrupted: cannot reach the server."));
    xhr.onload = async () => {
      const response = new Response(xhr.response, {
        status: xhr.status,
        statusText: xhr.statusText,
        headers: { "Content-Type": xhr.getResponseHeader("Content-Type") || "" },
      });
      if (xhr.status >= 200 && xhr.status < 300) resolve(await response.json());
      else reject(await failure(response));
    };
    xhr.send(form);
  });
}

/** All items of a paginated list (bounded: the pages show the newest ``max``). */
export async function listAll(path, max = 200) {
  const items = [];
  let cursor = null;
  do {
    const sep = path.includes("?") ? "&" : "?";
    const page = await api(`${path}${sep}limit=100${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`);
    items.push(...page.items);
    cursor = page.next_cursor;
  } while (cursor && items.length < max);
  return items;
}

/** A new Idempotency-Key for one creation (a retried click returns the same job). */
export function idempotencyKey() {
  return crypto.randomUUID ? crypto.randomUUID() : `${Date.now()}-${Math.random()}`;
}

let healthAt = 0;
let healthCache = null;

/** /v1/health, at most every 30 s (the frame shows it; the train form reads it too). */
export async function health(force = false) {
  if (!force && healthCache && Date.now() - healthAt < 30_000) return healthCache;
  try {
    healthCache = await api("/v1/health");
  } catch (error) {
    healthCache = { status: "unavailable", error: error.message, workers: { ok: false }, worker_devices: [] };
  }
  healthAt = Date.now();
  return healthCache;
}
