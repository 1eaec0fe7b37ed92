// Jobs: the list, and one job watched live. The job page polls GET /v1/jobs/{id} every
// 2 s while something changes, backs off to 15 s while nothing does, pauses while the tab
// is hidden and stops when the job has ended; the metrics are fetched incrementally
// (?after=the last iteration seen) and the preview image only when it may have changed.

import { api, listAll, idempotencyKey } from "../api.js";
import { h, link, notice, replace, table, facts, button, busy, errorText, stateBadge } from "../dom.js";
import { duration, when, num, percent, shortId } from "../format.js";
import { figure } from "../charts.js";

const ACTIVE = new Set(["queued", "running"]);
const MIN_POLL = 2000;
const MAX_POLL = 15000;

export async function renderList(main, { params }) {
  const kind = params.get("kind") || "";
  const state = params.get("state") || "";
  const query = new URLSearchParams();
  if (kind) query.set("kind", kind);
  if (state) query.set("state", state);
  const rows = await listAll(`/v1/jobs?${query}`, 200);
  const filter = (name, value, options) => h("select", {
    id: `f-${name}`, onchange: (e) => {
      const q = new URLSearchParams({ kind, state, [name]: e.target.value });
      for (const [k, v] of [...q]) if (!v) q.delete(k);
      location.hash = `#/jobs?${q}`;
    },
  }, options.map(([v, label]) => h("option", { value: v, selected: v === value }, label)));
  replace(main,
    h("div", { class: "page-head" }, h("h1", {}, "Jobs"),
      h("div", { class: "actions" }, link("/train", "Train a generator", { class: "button primary" }))),
    h("div", { class: "row filters" },
      h("label", { for: "f-kind" }, "Kind"),
      filter("kind", kind, [["", "all"], ["train", "training"], ["generate", "generation"]]),
      h("label", { for: "f-state" }, "State"),
      filter("state", state, [["", "all"], ["queued", "queued"], ["running", "running"], ["succeeded", "succeeded"], ["failed", "failed"], ["cancelled", "cancelled"]])),
    table([
      { label: "Job", cell: (j) => link(`/jobs/${j.id}`, `${j.kind === "train" ? "Training" : "Generation"} ${shortId(j.id)}`, { title: j.id }) },
      { label: "State", cell: (j) => stateBadge(j.state) },
      { label: "Progress", cell: (j) => progressWords(j) },
      { label: "What", cell: (j) => (j.kind === "train" ? `${j.spec.config?.arch || "paper"}, ${(j.spec.config?.iterations ?? 10000).toLocaleString()} iterations` : `${j.spec.shape?.join(" × ")} voxels`) },
      { label: "Created", cell: (j) => when(j.created_at) },
    ], rows, { caption: "Jobs", empty: kind || state ? "No jobs match these filters." : "No jobs yet: train a generator on a dataset to start one." }));
}

function progressWords(job) {
  const p = job.progress || {};
  if (job.kind === "train" && p.total) return `${(p.iteration || 0).toLocaleString()} / ${p.total.toLocaleString()} iterations`;
  if (p.chunks_total) return `${p.chunks_done || 0} / ${p.chunks_total} chunks`;
  return percent(p.fraction || 0, 0);
}

export async function renderOne(main, { ctx, args }) {
  const [id] = args;
  let job = await api(`/v1/jobs/${id}`);
  const view = {
    head: h("div", { class: "page-head" }),
    status: h("div", { class: "job-status", "aria-live": "polite" }),
    actions: h("div", { class: "actions" }),
    message: h("div", { "aria-live": "polite" }),
    results: h("section", { class: "results" }),
    charts: h("section", { class: "charts" }),
    preview: h("section", { class: "card preview-card" }),
    spec: h("section", { class: "card" }),
  };
  const metrics = { points: [], last: null, best: null };
  let previewAt = 0;
  let previewIteration = -1;
  let previewImg = null;
  let previewWait = null;
  replace(main, view.head, view.status, view.actions, view.message, view.results,
    job.kind === "train" ? [view.charts, view.preview] : null, view.spec);

  async function refreshMetrics() {
    if (job.kind !== "train") return false;
    const after = metrics.last === null ? "" : `?after=${metrics.last}`;
    const data = await api(`${job.links.metrics}${after}`);
    if (!data.points.length) return false;
    metrics.points.push(...data.points);
    metrics.last = metrics.points[metrics.points.length - 1].iteration;
    return true;
  }

  async function refreshPreview(force) {
    if (job.kind !== "train" || !job.links.preview) return;
    const it = job.progress.iteration || 0;
    const every = job.spec.config?.preview_every || 250;
    const due = Math.floor(it / every) !== Math.floor(previewIteration / every) || Date.now() - previewAt > 30_000;
    if (!force && !due) return;
    previewAt = Date.now();
    previewIteration = it;
    if (!previewImg) {
      previewImg = h("img", { alt: "Latest training preview: generated slices along x, y and z", class: "preview", hidden: true });
      previewWait = h("p", { class: "empty" }, "No preview yet: one appears once training has run a little.");
      replace(view.preview, h("h2", {}, "Latest preview"),
        h("p", { class: "help" }, "Slices of a generated volume along x, y and z, beside the training image."),
        previewWait, previewImg);
    }
    if (await ctx.loadInto(previewImg, `${job.links.preview}?at=${it}`, null)) {
      previewImg.hidden = false;
      previewWait.hidden = true;
    }
  }

  async function bestIteration() {
    if (job.result.best_generator_id && metrics.bestFrom !== job.result.best_generator_id) {
      try {
        const gen = await api(`/v1/generators/${job.result.best_generator_id}`);
        metrics.best = gen.config?.quality?.iteration ?? null;
        metrics.bestFrom = gen.id;
      } catch { /* deleted: fall back to the lowest score */ }
    }
  }

  function draw() {
    drawHead(view, job);
    drawActions(view, job, ctx, (fresh) => { job = fresh; draw(); schedule(MIN_POLL); });
    drawResults(view, job);
    if (job.kind === "train") drawCharts(view.charts, metrics);
    drawSpec(view.spec, job);
  }

  let delay = MIN_POLL;
  let timer = null;
  function schedule(ms) {
    clearTimeout(timer);
    if (!ctx.alive) return;
    timer = setTimeout(poll, ms);
  }
  ctx.onLeave(() => clearTimeout(timer));

  async function poll() {
    if (!ctx.alive) return;
    if (document.hidden) return schedule(delay);
    try {
      const before = JSON.stringify([job.state, job.progress, job.cancel_requested]);
      job = await api(`/v1/jobs/${id}`);
      const changed = before !== JSON.stringify([job.state, job.progress, job.cancel_requested]);
      const ended = !ACTIVE.has(job.state);
      const newPoints = changed || ended ? await refreshMetrics() : false;
      if (ended) await bestIteration();
      if (!ctx.alive) return;
      replace(view.message);
      draw();
      refreshPreview(ended);
      if (ended) return; // the job will not change any more: stop polling
      delay = changed || newPoints ? MIN_POLL : Math.min(MAX_POLL, delay * 1.5);
    } catch (error) {
      if (!ctx.alive) return;
      replace(view.message, notice("warn", `Could not refresh: ${errorText(error)} Trying again shortly.`));
      delay = Math.min(MAX_POLL, delay * 2);
    }
    schedule(delay);
  }
  const onVisible = () => { if (!document.hidden && ACTIVE.has(job.state)) { delay = MIN_POLL; schedule(0); } };
  document.addEventListener("visibilitychange", onVisible);
  ctx.onLeave(() => document.removeEventListener("visibilitychange", onVisible));

  await refreshMetrics();
  if (!ACTIVE.has(job.state)) await bestIteration();
  draw();
  refreshPreview(true);
  if (ACTIVE.has(job.state)) schedule(MIN_POLL);
}

function drawHead(view, job) {
  const title = job.kind === "train" ? "Training job" : "Generation job";
  replace(view.head,
    h("p", { class: "crumbs" }, link("/jobs", "Jobs"), " / "),
    h("h1", {}, title, " ", stateBadge(job.state)),
    h("p", { class: "muted" }, h("code", {}, job.id), ` · created ${when(job.created_at)}`));
  const p = job.progress || {};
  const bar = h("progress", { max: 1, value: p.fraction || 0, "aria-label": "Job progress" });
  const lines = [];
  if (job.kind === "train" && p.total) {
    lines.push(h("span", { class: "big", id: "iteration" }, `${(p.iteration || 0).toLocaleString()} / ${p.total.toLocaleString()}`), " iterations");
  } else if (p.chunks_total) {
    lines.push(h("span", { class: "big" }, `${p.chunks_done || 0} / ${p.chunks_total}`), " chunks");
  } else {
    lines.push(h("span", { class: "big" }, percent(p.fraction || 0, 0)));
  }
  const extra = [];
  if (job.state === "running" && p.eta_seconds !== undefined && p.eta_seconds !== null) extra.push(`about ${duration(p.eta_seconds)} left`);
  if (job.state === "queued") extra.push("waiting for a worker");
  if (job.cancel_requested && ACTIVE.has(job.state)) extra.push("cancelling: it stops at its next check");
  if (job.started_at && job.finished_at) extra.push(`took ${duration((new Date(job.finished_at) - new Date(job.started_at)) / 1000)}`);
  const m = job.metrics || {};
  if (job.kind === "train" && m.seconds_per_iteration) extra.push(`${num(m.seconds_per_iteration, 3)} s per iteration`);
  replace(view.status, h("div", { class: "card progress-card" },
    h("p", { class: "progress-line" }, lines), bar,
    extra.length ? h("p", { class: "muted" }, extra.join(" · ")) : null,
    job.error ? notice(job.state === "cancelled" ? "info" : "error", h("strong", {}, job.state === "cancelled" ? "Cancelled" : "Failed"), `: ${job.error.message}`) : null,
    job.state === "cancelled" && !job.error ? notice("info", cancelledWords(job)) : null));
}

function cancelledWords(job) {
  const it = job.progress?.iteration;
  const where = job.kind === "train" && it !== undefined ? ` at iteration ${it.toLocaleString()}` : "";
  const next = job.links.continue ? " Its checkpoint is kept: continue it below, or delete the job to free the disk." : "";
  return `Cancelled${where}.${next}`;
}

function drawActions(view, job, ctx, update) {
  const status = view.message;
  const parts = [];
  if (ACTIVE.has(job.state) && !job.cancel_requested) {
    const cancel = button("Cancel job", () => {
      if (!window.confirm("Cancel this job? A training job keeps its last checkpoint and can be continued.")) return;
      busy(cancel, async () => update(await api(job.links.cancel, { method: "POST" })), status);
    }, { class: "danger" });
    parts.push(cancel);
  }
  if (job.links.continue) {
    const total = job.progress.total || job.spec.config?.iterations || 1000;
    const input = h("input", { type: "number", id: "continue-to", min: total + 1, step: 1, value: total * 2, inputmode: "numeric" });
    const go = h("button", { type: "submit" }, "Continue training");
    const form = h("form", { class: "inline-form" },
      h("label", { for: "continue-to" }, "Train on to"), input, h("span", {}, "iterations"), go);
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      busy(go, async () => {
        const next = await api(job.links.continue, { method: "POST", json: { iterations: parseInt(input.value, 10) },
          extraHeaders: { "Idempotency-Key": idempotencyKey() } });
        location.hash = `#/jobs/${next.id}`;
      }, status);
    });
    parts.push(form);
  }
  if (job.spec.continued_from) parts.push(h("p", { class: "muted" }, "Continues ", link(`/jobs/${job.spec.continued_from}`, shortId(job.spec.continued_from))));
  if (!ACTIVE.has(job.state)) {
    const del = button("Delete job", () => {
      if (!window.confirm("Delete this job's record, metrics and checkpoint? Generators and volumes it made stay.")) return;
      busy(del, async () => { await api(job.links.self, { method: "DELETE" }); location.hash = "#/jobs"; }, status);
    }, { class: "danger ghost" });
    parts.push(del);
  }
  replace(view.actions, parts);
  void ctx;
}

function drawResults(view, job) {
  const r = job.result || {};
  const items = [];
  if (r.generator_id) {
    items.push(h("li", {}, "Final generator ", link(`/generators?highlight=${r.generator_id}`, shortId(r.generator_id), { title: r.generator_id }), " ",
      link(`/generate?generator=${r.generator_id}`, "Generate a volume", { class: "button small primary" })));
  }
  if (r.best_generator_id && r.best_generator_id !== r.generator_id) {
    items.push(h("li", {}, "Best fidelity check's generator ", link(`/generators?highlight=${r.best_generator_id}`, shortId(r.best_generator_id), { title: r.best_generator_id }), " ",
      link(`/generate?generator=${r.best_generator_id}`, "Generate from it", { class: "button small" })));
  } else if (r.best_generator_id) {
    items.push(h("li", { class: "muted" }, "The final weights were also the best fidelity check's."));
  }
  if (r.volume_id) {
    items.push(h("li", {}, "Volume ", link(`/volumes/${r.volume_id}`, shortId(r.volume_id), { title: r.volume_id }), " ",
      link(`/volumes/${r.volume_id}`, "Open the volume", { class: "button small primary" })));
  }
  if (job.kind === "train" && job.spec.dataset_id) {
    items.push(h("li", { class: "muted" }, "Trained on ", link(`/datasets/${job.spec.dataset_id}`, "its dataset")));
  }
  if (job.kind === "generate" && job.spec.generator_id) {
    items.push(h("li", { class: "muted" }, "From generator ", link(`/generators?highlight=${job.spec.generator_id}`, shortId(job.spec.generator_id))));
  }
  replace(view.results, items.length ? [h("h2", {}, "Results"), h("ul", { class: "result-list" }, items)] : []);
}

function drawCharts(box, metrics) {
  const pts = metrics.points;
  if (!pts.length) {
    replace(box, h("p", { class: "empty" }, "Curves appear after the first progress report."));
    return;
  }
  const series = (key) => pts.filter((p) => p.data[key] !== null && p.data[key] !== undefined).map((p) => [p.iteration, p.data[key]]);
  const checks = pts.filter((p) => p.data.quality && Number.isFinite(p.data.quality.score));
  const figures = [
    figure("Wasserstein estimate and gradient penalty", {
      series: [
        { name: "Wasserstein distance estimate", points: series("wasserstein") },
        { name: "Gradient penalty", points: series("gradient_penalty"), cls: "s1" },
      ],
    }),
  ];
  if (checks.length) {
    let best = checks.find((p) => p.iteration === metrics.best);
    if (!best) best = checks.reduce((a, b) => (b.data.quality.score < a.data.quality.score ? b : a));
    figures.push(figure("Fidelity score (lower is better)", {
      series: [{ name: "Fidelity score: fraction + S2 error", points: checks.map((p) => [p.iteration, p.data.quality.score]), cls: "s2" }],
      marks: [{ x: best.iteration, y: best.data.quality.score, label: `best: ${best.iteration}` }],
      yMin: 0,
    }));
    figures.push(figure("Diversity (near 0: every volume repeats one pattern)", {
      series: [{ name: "Diversity of generated volumes", points: checks.map((p) => [p.iteration, p.data.quality.diversity]), cls: "s3" }],
      marks: [{ x: best.iteration, y: best.data.quality.diversity, label: "best" }],
      yMin: 0,
    }));
  } else {
    figures.push(h("p", { class: "empty" }, "No fidelity check yet (one runs every quality_every iterations)."));
  }
  replace(box, h("h2", {}, "Training curves"), h("div", { class: "chart-grid" }, figures));
}

function drawSpec(box, job) {
  const pairs = [];
  if (job.kind === "train") {
    const c = job.spec.config || {};
    pairs.push(["Network", c.arch], ["Iterations", (c.iterations ?? "").toLocaleString()],
      ["Seed", c.seed ?? "random"], ["Critic batch", c.critic_batch], ["Scale factor", c.scale_factor],
      ["Fidelity check every", c.quality_every ? `${c.quality_every} iterations` : "off"],
      ["Early stop", c.early_stop_checks ? `after ${c.early_stop_checks} checks without improvement` : "off"]);
  } else {
    const s = job.spec;
    pairs.push(["Shape (z × y × x)", (s.shape || []).join(" × ")], ["Seed", s.seed ?? "random"],
      ["Periodic", ["z", "y", "x"].filter((_, i) => (s.periodic || [])[i]).join(", ") || "no"],
      ["Compression", s.compression || "none"], ["Voxel size", s.voxel_size ? `${s.voxel_size} ${s.unit}` : "the generator's"]);
  }
  pairs.push(["Attempts", job.attempts], ["Started", when(job.started_at)], ["Finished", when(job.finished_at)]);
  replace(box, h("h2", {}, "Settings"), facts(pairs));
}
