// Generators: the final and best generator of each training job with their quality
// figures, download, import, delete; and the form that generates a volume from one.

import { api, download, listAll, upload, idempotencyKey } from "../api.js";
import { h, link, notice, replace, table, button, busy } from "../dom.js";
import { bytes, when, num, shortId, unitOptions } from "../format.js";
import { deleteButton } from "./datasets.js";

export async function renderList(main, { params }) {
  const highlight = params.get("highlight");
  const box = h("section", {});
  const status = h("div", { "aria-live": "polite" });
  replace(main,
    h("div", { class: "page-head" }, h("h1", {}, "Generators"),
      h("p", { class: "lead" }, "Trained networks. Each training job keeps its final weights and, when fidelity checks ran, the best check's.")),
    status, box, importForm((id) => fill(box, status, id)));
  await fill(box, status, highlight);
}

export function generatorTitle(g) {
  const c = g.config || {};
  const weights = c.weights === "best" ? "best check" : c.weights === "latest" ? "final"
    : c.source === "slicegan" ? "SliceGAN import" : "imported";
  return [c.arch || "custom", weights, c.iteration != null ? `iteration ${c.iteration.toLocaleString()}` : null]
    .filter(Boolean).join(" · ");
}

function qualityCell(g) {
  const q = g.config?.quality;
  if (!q) return h("span", { class: "muted" }, "no check");
  return h("span", {}, `score ${num(q.score, 3)}, diversity ${num(q.diversity, 2)}`,
    q.collapsed ? h("span", { class: "badge state-failed" }, "collapsed") : null);
}

/** What a generator is to the job that made it: final weights, best check, or both. */
function roleOf(g, job) {
  const c = g.config || {};
  const result = job?.result || {};
  const isBest = c.weights === "best" || result.best_generator_id === g.id;
  if (c.weights === "latest" && isBest) return ["final weights, also the best check", 0];
  if (c.weights === "latest") return ["final weights", 0];
  if (isBest && result.generator_id === g.id) return ["best check (the job's result: early stop)", 0];
  if (isBest) return ["best fidelity check", 1];
  return [c.source === "slicegan" ? "SliceGAN import" : "imported file", 2];
}

/** Generators in groups: one per training job (final and best together), then imports. */
export function groupByJob(generators) {
  const groups = new Map();
  for (const g of generators) {
    const key = g.source_job_id || "";
    if (!groups.has(key)) groups.set(key, []);
    groups.get(key).push(g);
  }
  const imported = groups.get("") || [];
  groups.delete("");
  return { jobs: [...groups.entries()], imported };
}

async function fill(box, status, highlight) {
  const [rows, jobs] = await Promise.all([
    listAll("/v1/generators"),
    listAll("/v1/jobs?kind=train").catch(() => []),
  ]);
  const jobById = new Map(jobs.map((j) => [j.id, j]));
  const refill = () => fill(box, status, highlight);
  const columns = (job) => [
    { label: "Weights", cell: (g) => h("div", { class: g.id === highlight ? "highlight" : "" },
      h("strong", {}, roleOf(g, job)[0]),
      g.config?.iteration != null ? ` · iteration ${g.config.iteration.toLocaleString()}` : null, h("br"),
      h("code", { class: "muted", title: g.id }, shortId(g.id)),
      g.config?.imported_from ? h("span", { class: "muted file-name" }, ` from ${g.config.imported_from}`) : null) },
    { label: "Quality", cell: qualityCell },
    { label: "Phases", cell: (g) => (g.image_type === "nphase" ? g.phases.join(", ") : g.image_type) },
    { label: "Size", cell: (g) => bytes(g.size_bytes), class: "num" },
    { label: "Created", cell: (g) => when(g.created_at) },
    { label: "Actions", cell: (g) => h("div", { class: "actions" },
      link(`/generate?generator=${g.id}`, "Generate", { class: "button small primary" }),
      button("Download", (e) => busy(e.currentTarget, () => download(g.links.file, `${g.id}.safetensors`), status), { class: "small", "aria-label": `Download ${g.id}` }),
      deleteButton(`/v1/generators/${g.id}`, `generator ${shortId(g.id)}`, status, refill)) },
  ];
  const { jobs: groups, imported } = groupByJob(rows);
  if (!rows.length) {
    replace(box, h("p", { class: "empty" }, "No generators yet: they appear when a training job finishes, or import one below."));
    return;
  }
  const sections = groups.map(([jobId, gens]) => {
    const job = jobById.get(jobId);
    const cfg = job?.spec?.config || {};
    const about = job
      ? `${cfg.arch || "paper"}, ${(cfg.iterations ?? 10000).toLocaleString()} iterations${job.spec?.continued_from ? `, continued from ${shortId(job.spec.continued_from)}` : ""}`
      : "the job was deleted";
    const ordered = [...gens].sort((a, b) => roleOf(a, job)[1] - roleOf(b, job)[1]);
    return h("section", { class: "gen-group", "aria-label": `Generators of training job ${jobId}` },
      h("h2", { class: "group-head" }, "Training job ", link(`/jobs/${jobId}`, shortId(jobId), { title: jobId }),
        h("span", { class: "muted group-about" }, ` · ${about}`)),
      table(columns(job), ordered, { caption: `Generators of training job ${jobId}` }));
  });
  if (imported.length) {
    sections.push(h("section", { class: "gen-group", "aria-label": "Imported generators" },
      h("h2", { class: "group-head" }, "Imported"),
      table(columns(null), imported, { caption: "Imported generators" })));
  }
  replace(box, sections);
}

/** The multipart fields of POST /v1/generators (microforge/api/routes/generators.py). */
export const IMPORT_FIELDS = {
  file: "file", weights: "weights", params: "params",
  imageType: "image_type", phases: "phases", pixelSize: "pixel_size", unit: "unit",
};

/** Import a MicroForge .safetensors file, or the public SliceGAN code's two files with what
 * they cannot record (image type, label values, pixel size). Refusals show the API's words. */
function importForm(after) {
  const status = h("div", { "aria-live": "polite" });
  const choice = (value, text, checked) => h("label", { class: "check" },
    h("input", { type: "radio", name: "gen-kind", value, checked, id: `gen-kind-${value}` }), text);
  const file = h("input", { type: "file", id: "gen-file", accept: ".safetensors" });
  const weights = h("input", { type: "file", id: "gen-weights", accept: ".pt,.pth" });
  const params = h("input", { type: "file", id: "gen-params", accept: ".data" });
  const imageType = h("select", { id: "gen-type" },
    h("option", { value: "" }, "from the channels (1 = grey levels, 2 or 4+ = phases)"),
    h("option", { value: "nphase" }, "n-phase (segmented labels)"),
    h("option", { value: "grayscale" }, "grey levels"),
    h("option", { value: "colour" }, "colour (RGB)"));
  const phases = h("input", { type: "text", id: "gen-phases", placeholder: "e.g. 0,128,255 (default 0, 1, 2, …)", autocomplete: "off", spellcheck: "false" });
  const pixel = h("input", { type: "number", id: "gen-pixel", min: "0", step: "any", inputmode: "decimal", placeholder: "optional" });
  const unit = h("select", { id: "gen-unit" }, unitOptions().map((o) => h("option", { value: o.value, selected: o.selected }, o.label)));
  const mine = h("div", { class: "import-part", id: "gen-part-file" },
    h("div", { class: "field" }, h("label", { for: "gen-file" }, "Generator file (.safetensors)"), file),
    h("p", { class: "help" }, "Downloaded from a MicroForge server or written by `microforge train`."));
  const theirs = h("div", { class: "import-part", id: "gen-part-slicegan", hidden: true },
    h("p", { class: "help" }, "A run of the public SliceGAN code leaves NAME_Gen.pt (the weights) and NAME_params.data (the layers) in its folder. They do not record what the channels are, the label values or the pixel size: say them here."),
    h("div", { class: "fields" },
      h("div", { class: "field" }, h("label", { for: "gen-weights" }, "Weights (NAME_Gen.pt)"), weights),
      h("div", { class: "field" }, h("label", { for: "gen-params" }, "Layers (NAME_params.data)"), params),
      h("div", { class: "field" }, h("label", { for: "gen-type" }, "Image type"), imageType,
        h("span", { class: "help" }, "Needed for 3 channels: colour or three phases.")),
      h("div", { class: "field" }, h("label", { for: "gen-phases" }, "Phase values"), phases,
        h("span", { class: "help" }, "The label values of the training image, in channel order."))),
    h("div", { class: "row" },
      h("div", { class: "field" }, h("label", { for: "gen-pixel" }, "Pixel size"), pixel),
      h("div", { class: "field narrow" }, h("label", { for: "gen-unit" }, "Unit"), unit)));
  const submit = h("button", { type: "submit", class: "primary" }, "Import");
  const form = h("form", { class: "card import-form" },
    h("h2", {}, "Import a generator"),
    h("fieldset", { class: "kinds" }, h("legend", {}, "What you have"),
      choice("file", "a MicroForge generator file", true),
      choice("slicegan", "the two files of the public SliceGAN code", false)),
    mine, theirs,
    h("div", { class: "row" }, submit),
    status);
  const kind = () => form.querySelector("input[name=gen-kind]:checked").value;
  form.addEventListener("change", (e) => {
    if (e.target.name !== "gen-kind") return;
    mine.hidden = kind() !== "file";
    theirs.hidden = kind() !== "slicegan";
    replace(status);
  });
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const data = new FormData();
    const f = IMPORT_FIELDS;
    if (kind() === "file") {
      if (!file.files.length) return replace(status, notice("error", "Choose a .safetensors generator file first."));
      data.append(f.file, file.files[0], file.files[0].name);
    } else {
      if (!weights.files.length || !params.files.length) {
        return replace(status, notice("error", "Choose both files: NAME_Gen.pt and NAME_params.data."));
      }
      data.append(f.weights, weights.files[0], weights.files[0].name);
      data.append(f.params, params.files[0], params.files[0].name);
      if (imageType.value) data.append(f.imageType, imageType.value);
      if (phases.value.trim()) data.append(f.phases, phases.value.trim());
      if (pixel.value !== "") {
        data.append(f.pixelSize, pixel.value);
        data.append(f.unit, unit.value);
      }
    }
    busy(submit, async () => {
      replace(status, h("p", { class: "loading" }, "Uploading…"));
      const g = await upload("/v1/generators", data);
      replace(status, notice("ok", `Imported: ${generatorTitle(g)} (${shortId(g.id)}).`));
      form.reset();
      mine.hidden = false;
      theirs.hidden = true;
      await after(g.id);
    }, status);
  });
  return form;
}

/** Output voxels per latent voxel (the product of the strides; resize-conv doubles). */
export function networkPeriod(network) {
  if (!network) return null;
  const n = network.generator_strides.length;
  let period = 1;
  network.generator_strides.forEach((s, i) => {
    period *= i === n - 1 && network.last_layer === "resize_conv" ? 2 : s;
  });
  return period;
}

export async function renderGenerate(main, { params }) {
  const generators = await listAll("/v1/generators", 100);
  if (!generators.length) {
    replace(main, h("h1", {}, "Generate a volume"),
      h("p", { class: "empty" }, "No generator yet: ", link("/train", "train one"), " or import a file on the ", link("/generators", "generators page"), "."));
    return;
  }
  const chosen = params.get("generator") || generators[0].id;
  const select = h("select", { id: "generator" }, generators.map((g) =>
    h("option", { value: g.id, selected: g.id === chosen }, `${generatorTitle(g)} (${shortId(g.id)})`)));
  const axes = ["z", "y", "x"];
  const sizes = axes.map((a) => h("input", { id: `shape-${a}`, type: "number", min: 1, step: 1, value: 128, required: true, inputmode: "numeric" }));
  const periodic = axes.map((a) => h("input", { id: `periodic-${a}`, type: "checkbox" }));
  const seed = h("input", { id: "seed", type: "number", min: 0, step: 1, placeholder: "random", inputmode: "numeric" });
  const compression = h("select", { id: "compression" },
    h("option", { value: "" }, "none"), h("option", { value: "zlib" }, "zlib (lossless)"), h("option", { value: "lzw" }, "LZW (lossless)"));
  const voxel = h("input", { id: "voxel", type: "number", min: 0, step: "any", placeholder: "the generator's", inputmode: "decimal" });
  const unit = h("select", { id: "unit" }, unitOptions().map((o) => h("option", { value: o.value, selected: o.selected }, o.label)));
  const info = h("div", { class: "estimate", "aria-live": "polite" });
  const status = h("div", { "aria-live": "polite" });
  const submit = h("button", { type: "submit", class: "primary" }, "Generate");

  function current() { return generators.find((g) => g.id === select.value); }

  function refresh() {
    const g = current();
    const dims = sizes.map((s) => parseInt(s.value, 10) || 0);
    const voxels = dims.reduce((a, b) => a * b, 1);
    const channels = g.image_type === "colour" ? 3 : 1;
    const period = networkPeriod(g.config?.network);
    const parts = [h("p", {}, h("strong", {}, `${voxels.toLocaleString()} voxels`),
      `: a TIFF of about ${bytes(voxels * channels)} uncompressed${compression.value ? " (compressed: usually much less for labels)" : ""}.`)];
    if (period) {
      const problems = axes.flatMap((a, i) => {
        if (!periodic[i].checked || dims[i] % period === 0) return [];
        const below = Math.max(period, dims[i] - (dims[i] % period));
        return [`${a}: ${dims[i]} is not a multiple of ${period}, use ${below} or ${below + period}`];
      });
      parts.push(h("p", { class: "help" }, `Periodic axes must be a multiple of ${period} voxels for this network (the product of its strides).`));
      if (problems.length) parts.push(notice("warn", problems.join("; ")));
    }
    const vs = g.config?.voxel_size;
    if (vs) voxel.placeholder = `${num(vs)} (the generator's)`;
    replace(info, parts);
  }

  const form = h("form", { class: "card", novalidate: true },
    h("div", { class: "field" }, h("label", { for: "generator" }, "Generator"), select),
    h("fieldset", {}, h("legend", {}, "Shape in voxels (z × y × x) and periodic axes"),
      h("div", { class: "row shape-row" }, axes.map((a, i) => h("div", { class: "field narrow" },
        h("label", { for: `shape-${a}` }, a), sizes[i],
        h("label", { class: "check" }, periodic[i], ` periodic along ${a}`))))),
    info,
    h("div", { class: "row" },
      h("div", { class: "field" }, h("label", { for: "seed" }, "Seed"), seed),
      h("div", { class: "field" }, h("label", { for: "compression" }, "Compression"), compression),
      h("div", { class: "field" }, h("label", { for: "voxel" }, "Voxel size"), voxel),
      h("div", { class: "field narrow" }, h("label", { for: "unit" }, "Unit"), unit)),
    h("div", { class: "row" }, submit),
    status);
  form.addEventListener("input", refresh);
  form.addEventListener("change", refresh);
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const dims = sizes.map((s) => parseInt(s.value, 10));
    if (dims.some((d) => !(d >= 1))) return replace(status, notice("error", "Each size must be a whole number of voxels, 1 or more."));
    const body = { kind: "generate", generator_id: select.value, shape: dims, periodic: periodic.map((p) => p.checked) };
    if (seed.value !== "") body.seed = parseInt(seed.value, 10);
    if (compression.value) body.compression = compression.value;
    if (voxel.value !== "") { body.voxel_size = parseFloat(voxel.value); body.unit = unit.value; }
    busy(submit, async () => {
      const job = await api("/v1/jobs", { method: "POST", json: body, extraHeaders: { "Idempotency-Key": idempotencyKey() } });
      location.hash = `#/jobs/${job.id}`;
    }, status);
  });
  replace(main,
    h("div", { class: "page-head" }, h("h1", {}, "Generate a volume"),
      h("p", { class: "lead" }, "Any size: large volumes are generated chunk by chunk and streamed to a TIFF stack.")),
    form);
  refresh();
}


