// The training form, built from the server's own TrainConfig schema (/openapi.json), so
// that its fields, limits, defaults and help are those the API validates with. Before
// submitting it says which device the worker has (/v1/health) and what the run will
// take, and warns when a large network is about to train on a CPU.

import { api, health, listAll, idempotencyKey } from "../api.js";
import { h, link, notice, replace, busy } from "../dom.js";
import { duration, num } from "../format.js";

/** Shown first; everything else is folded under "Advanced". */
const MAIN_FIELDS = ["arch", "iterations", "seed", "quality_every", "early_stop_checks"];
const SKIP = new Set(["network"]);
const LABELS = {
  arch: "Network",
  iterations: "Iterations",
  seed: "Seed",
  quality_every: "Fidelity check every (iterations)",
  early_stop_checks: "Early stop after checks without improvement",
  critic_batch: "Critic batch",
  generator_batch: "Generator batch",
  lr_generator: "Generator learning rate",
  lr_critic: "Critic learning rate",
  gp_lambda: "Gradient penalty weight",
  critic_steps: "Critic steps per generator step",
  scale_factor: "Scale factor",
  image_type: "Image type",
  ema_decay: "Weight average decay (EMA)",
};
const HELP = {
  arch: "tiny: 32-voxel crops, minutes on a CPU, fine-grained structures. paper: Table 1 of the SliceGAN paper (64-voxel crops), needs a GPU. reference: the public SliceGAN code's defaults, needs a GPU.",
  iterations: "One iteration = one critic update on x, y and z slices (a generator update every 5th).",
  seed: "Empty: a random seed (recorded with the job).",
  quality_every: "A cheap fidelity score and the diversity of generated volumes; the best check's generator is kept. 0 = off.",
  early_stop_checks: "0 = train all the iterations.",
  scale_factor: "Resize the training images first (0.5 = half size): coarse structures then fit the crop.",
};

/** Rough seconds per iteration at critic batch 8, measured (docs/benchmarks.md): used
 * only until this server has timed a job of that network itself. */
const SECONDS_PER_ITERATION = {
  cpu: { tiny: 0.1, paper: 30, reference: 40 },
  cuda: { tiny: 0.01, paper: 0.03, reference: 0.031 },
};

export async function render(main, { params }) {
  const [openapi, datasets, healthData, recent] = await Promise.all([
    api("/openapi.json"),
    listAll("/v1/datasets", 100),
    health(true),
    api("/v1/jobs?kind=train&limit=50").then((p) => p.items).catch(() => []),
  ]);
  const schema = openapi.components.schemas.TrainConfig;
  if (!datasets.length) {
    replace(main, h("h1", {}, "Train a generator"),
      h("p", { class: "empty" }, "There is nothing to train on yet: ", link("/datasets", "upload a micrograph"), " first."));
    return;
  }
  const chosen = params.get("dataset") || datasets[0].id;
  const datasetSelect = h("select", { id: "dataset", name: "dataset" },
    datasets.map((d) => h("option", { value: d.id, selected: d.id === chosen }, `${d.name} (${d.image_type}, ${d.layout})`)));

  const devices = healthData.worker_devices || [];
  const onGpu = devices.some((d) => d.kind === "cuda");
  const device = onGpu ? "cuda" : devices.length ? "cpu" : null;

  const inputs = {};
  const mainBox = h("div", { class: "fields" });
  const advancedBox = h("div", { class: "fields" });
  for (const [name, prop] of Object.entries(schema.properties)) {
    if (SKIP.has(name)) continue;
    const field = buildField(name, prop, inputs);
    (MAIN_FIELDS.includes(name) ? mainBox : advancedBox).append(field);
  }
  if (device === "cpu" && !params.get("arch")) inputs.arch.input.value = "tiny";
  if (params.get("arch")) inputs.arch.input.value = params.get("arch");
  if (device === "cpu" && inputs.arch.input.value === "tiny" && !params.get("iterations")) {
    inputs.iterations.input.value = "2000";
  }

  const estimate = h("div", { class: "estimate", "aria-live": "polite" });
  const status = h("div", { "aria-live": "polite" });
  const submit = h("button", { type: "submit", class: "primary" }, "Start training");

  function refreshEstimate() {
    const config = readConfig(inputs);
    const arch = config.arch || schema.properties.arch.default;
    const iterations = config.iterations ?? schema.properties.iterations.default;
    const batch = config.critic_batch ?? schema.properties.critic_batch.default;
    const measured = recent.find((j) => j.spec?.config?.arch === arch && j.metrics?.seconds_per_iteration
      && (j.spec.config.critic_batch || 8) === batch);
    let perIt = null;
    let source = "";
    if (measured) {
      perIt = measured.metrics.seconds_per_iteration;
      source = "as your last job with this network and batch ran on this server";
    } else if (device) {
      perIt = SECONDS_PER_ITERATION[device][arch] * (batch / 8);
      source = device === "cpu" ? "a rough figure for a 2-core CPU" : "a rough figure for a recent data-centre GPU";
    }
    const parts = [];
    const where = device === "cuda"
      ? `a GPU${devices[0].name ? ` (${devices[0].name})` : ""}`
      : device === "cpu" ? "the CPU (no GPU on the worker)" : null;
    parts.push(h("p", {}, where ? ["The worker will run this on ", h("strong", {}, where), "."]
      : (healthData.workers && healthData.workers.ok
        ? "The worker did not say which device it has."
        : "No worker is running: the job will wait until one starts (`microforge up` starts one).")));
    if (perIt) {
      parts.push(h("p", {}, "Estimated time: ", h("strong", {}, `about ${duration(perIt * iterations)}`),
        ` for ${iterations.toLocaleString()} iterations (${num(perIt, 3)} s per iteration, ${source}). `,
        "The job page shows the real ETA after the first iterations."));
    }
    if (device === "cpu" && arch !== "tiny") {
      parts.push(notice("warn", h("strong", {}, `The ${arch} network on a CPU is very slow`),
        `: about ${duration(perIt * iterations)} for this run. Choose the tiny network, or run a worker on a GPU machine.`));
    }
    replace(estimate, parts);
  }

  const form = h("form", { class: "card train", novalidate: true },
    h("div", { class: "field" }, h("label", { for: "dataset" }, "Dataset"), datasetSelect),
    mainBox,
    h("details", { class: "advanced" }, h("summary", {}, "Advanced settings"),
      h("p", { class: "help" }, "Empty fields use the default shown."), advancedBox),
    estimate,
    h("div", { class: "row" }, submit),
    status);
  form.addEventListener("input", refreshEstimate);
  form.addEventListener("change", refreshEstimate);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    if (!form.checkValidity()) {
      const bad = form.querySelector(":invalid");
      replace(status, notice("error", `${labelOf(bad)}: ${bad.validationMessage}`));
      bad.focus();
      return;
    }
    busy(submit, async () => {
      const job = await api("/v1/jobs", {
        method: "POST",
        json: { kind: "train", dataset_id: datasetSelect.value, config: readConfig(inputs) },
        extraHeaders: { "Idempotency-Key": idempotencyKey() },
      });
      location.hash = `#/jobs/${job.id}`;
    }, status);
  });
  replace(main,
    h("div", { class: "page-head" }, h("h1", {}, "Train a generator"),
      h("p", { class: "lead" }, "SliceGAN learns a 3D generator from 2D slices. Defaults follow the paper and the public code.")),
    form);
  refreshEstimate();
}

function labelOf(input) {
  const label = input && document.querySelector(`label[for="${input.id}"]`);
  return label ? label.textContent.replace(/\s*\(.*$/, "") : "A field";
}

/** One input for one schema property, with its default and limits. */
function buildField(name, prop, inputs) {
  const spec = prop.anyOf ? { ...prop.anyOf.find((p) => p.type !== "null"), nullable: true } : prop;
  const id = `cfg-${name}`;
  const def = prop.default;
  const label = LABELS[name] || prop.title || name;
  const help = HELP[name] || prop.description;
  let input;
  if (spec.enum) {
    input = h("select", { id, name },
      spec.nullable || def === undefined ? h("option", { value: "" }, name === "image_type" ? "as the dataset" : "default") : null,
      spec.enum.map((v) => h("option", { value: v, selected: v === def }, v)));
  } else if (spec.type === "boolean") {
    input = h("input", { id, name, type: "checkbox", checked: Boolean(def) });
  } else {
    const attrs = { id, name, type: "number", inputmode: spec.type === "integer" ? "numeric" : "decimal",
      step: spec.type === "integer" ? "1" : "any" };
    if (spec.minimum !== undefined) attrs.min = spec.minimum;
    if (spec.maximum !== undefined) attrs.max = spec.maximum;
    if (def !== undefined && def !== null) attrs.value = def;
    else attrs.placeholder = name === "seed" ? "random" : "default";
    input = h("input", attrs);
  }
  inputs[name] = { input, spec, def };
  const defaultText = def === undefined || def === null ? "" : ` (default ${def})`;
  return h("div", { class: `field${spec.type === "boolean" ? " check" : ""}` },
    h("label", { for: id }, label, h("span", { class: "default" }, defaultText)),
    input,
    help ? h("p", { class: "help" }, help) : null);
}

/** Only what differs from the defaults goes in the request (the job's spec shows all). */
function readConfig(inputs) {
  const config = {};
  for (const [name, { input, spec, def }] of Object.entries(inputs)) {
    let value;
    if (spec.type === "boolean") value = input.checked;
    else if (input.value === "") continue;
    else if (spec.enum) value = input.value;
    else value = spec.type === "integer" ? parseInt(input.value, 10) : parseFloat(input.value);
    if (typeof value === "number" && !Number.isFinite(value)) continue;
    if (value !== def) config[name] = value;
  }
  return config;
}
