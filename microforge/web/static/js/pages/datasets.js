// Datasets: upload (drag and drop or a file picker; one image, three perpendicular images
// or a 3D TIFF), the list, one dataset's detected type, phases, shapes and preview.

import { api, listAll, upload } from "../api.js";
import { h, link, notice, replace, table, facts, button, busy, errorText } from "../dom.js";
import { bytes, when, percent, shape, num, UNIT_LABEL, unitOptions } from "../format.js";

const ACCEPT = ".png,.jpg,.jpeg,.tif,.tiff,image/png,image/jpeg,image/tiff";
const AXES = ["x", "y", "z"];

export async function renderList(main, { ctx }) {
  const listBox = h("section", { "aria-labelledby": "ds-list-h" }, h("p", { class: "loading" }, "Loading…"));
  replace(main,
    h("div", { class: "page-head" }, h("h1", {}, "Datasets"),
      h("p", { class: "lead" }, "Your training images. Upload one, then train a generator on it.")),
    uploadPanel(ctx),
    h("h2", { id: "ds-list-h" }, "Your datasets"),
    listBox);
  await fillList(listBox);
}

async function fillList(box) {
  let rows;
  try {
    rows = await listAll("/v1/datasets");
  } catch (error) {
    replace(box, notice("error", errorText(error)));
    return;
  }
  const status = h("div", { "aria-live": "polite" });
  replace(box, status, table([
    { label: "Name", cell: (d) => link(`/datasets/${d.id}`, d.name, { class: "name" }) },
    { label: "Type", cell: (d) => `${d.image_type}, ${d.layout}` },
    { label: "Phases", cell: (d) => phaseSummary(d) },
    { label: "Image sizes", cell: (d) => d.shapes.map(shape).join(", ") },
    { label: "Size", cell: (d) => bytes(d.size_bytes), class: "num" },
    { label: "Uploaded", cell: (d) => when(d.created_at) },
    { label: "Actions", cell: (d) => h("div", { class: "actions" },
      link(`/train?dataset=${d.id}`, "Train", { class: "button small" }),
      deleteButton(`/v1/datasets/${d.id}`, d.name, status, () => fillList(box))) },
  ], rows, { caption: "Datasets", empty: "No datasets yet: upload a micrograph above to start." }));
}

function phaseSummary(d) {
  if (d.image_type !== "nphase") return "—";
  return d.phases.map((p) => `${num(p.value)}: ${percent(p.fraction, 0)}`).join(", ");
}

/** A delete button that asks first and shows the API's refusal (e.g. in use) in words. */
export function deleteButton(path, name, status, after) {
  const btn = button("Delete", () => {
    if (!window.confirm(`Delete ${name}? This cannot be undone.`)) return;
    busy(btn, async () => {
      await api(path, { method: "DELETE" });
      replace(status, notice("ok", `Deleted ${name}.`));
      await after();
    }, status);
  }, { class: "small danger", "aria-label": `Delete ${name}` });
  return btn;
}

function uploadPanel(ctx) {
  let files = [];
  const fileInput = h("input", { type: "file", id: "files", multiple: true, accept: ACCEPT, class: "sr-only" });
  const chosen = h("div", { class: "chosen" });
  const nameInput = h("input", { id: "ds-name", type: "text", maxlength: 200, placeholder: "default: the first file name" });
  const pixelInput = h("input", { id: "ds-pixel", type: "number", min: "0", step: "any", inputmode: "decimal", placeholder: "optional" });
  const unitSelect = h("select", { id: "ds-unit" }, unitOptions().map((o) => h("option", { value: o.value, selected: o.selected }, o.label)));
  const typeSelect = h("select", { id: "ds-type" },
    h("option", { value: "" }, "detect it"),
    h("option", { value: "nphase" }, "segmented (n-phase labels)"),
    h("option", { value: "grayscale" }, "greyscale"),
    h("option", { value: "colour" }, "colour"));
  const submit = h("button", { type: "submit", class: "primary", disabled: true }, "Upload");
  const progress = h("progress", { max: 1, value: 0, hidden: true, "aria-label": "Upload progress" });
  const status = h("div", { "aria-live": "polite" });

  const drop = h("label", { class: "dropzone", for: "files", tabindex: "-1" },
    h("strong", {}, "Drop micrographs here"),
    h("span", {}, " or "),
    h("span", { class: "button small" }, "choose files…"),
    h("span", { class: "help block" },
      "One 2D image (isotropic material), three 2D images perpendicular to x, y and z (anisotropic), or one 3D TIFF stack. PNG, JPEG or TIFF."));

  function setFiles(list) {
    files = [...list].map((file, i) => ({ file, axis: AXES[i] || "x" }));
    showChosen();
  }

  function showChosen() {
    submit.disabled = !(files.length === 1 || files.length === 3);
    const parts = [];
    if (files.length === 0) {
      replace(chosen);
      return;
    }
    if (files.length === 1) {
      parts.push(h("p", {}, "One image: trained as an isotropic material (a 3D TIFF trains on slices along its three axes). ",
        h("span", { class: "file-name" }, files[0].file.name), ` (${bytes(files[0].file.size)})`));
    } else if (files.length === 3) {
      parts.push(h("div", { class: "aniso" },
        h("div", {},
          h("p", {}, "Three images: an anisotropic material. Say which plane each one shows:"),
          h("ul", { class: "axis-list" }, files.map((entry, i) => {
            const id = `axis-${i}`;
            const select = h("select", { id, onchange: (e) => { entry.axis = e.target.value; } },
              AXES.map((a) => h("option", { value: a, selected: entry.axis === a }, `perpendicular to ${a}`)));
            return h("li", {}, h("label", { for: id }, h("span", { class: "file-name" }, entry.file.name)), " ", select);
          }))),
        axesDiagram()));
    } else {
      parts.push(notice("error", `${files.length} files chosen: choose one image, three perpendicular images, or one 3D TIFF.`));
    }
    replace(chosen, parts);
  }

  fileInput.addEventListener("change", () => setFiles(fileInput.files));
  for (const type of ["dragenter", "dragover"]) {
    drop.addEventListener(type, (e) => { e.preventDefault(); drop.classList.add("over"); });
  }
  for (const type of ["dragleave", "drop"]) {
    drop.addEventListener(type, (e) => { e.preventDefault(); drop.classList.remove("over"); });
  }
  drop.addEventListener("drop", (e) => setFiles(e.dataTransfer.files));
  drop.addEventListener("keydown", (e) => {
    if (e.key === "Enter" || e.key === " ") { e.preventDefault(); fileInput.click(); }
  });

  const form = h("form", { class: "card upload", novalidate: true },
    h("h2", {}, "Upload training images"),
    fileInput, drop, chosen,
    h("div", { class: "row" },
      h("div", { class: "field" }, h("label", { for: "ds-name" }, "Name"), nameInput),
      h("div", { class: "field" }, h("label", { for: "ds-type" }, "Image type"), typeSelect),
      h("div", { class: "field" }, h("label", { for: "ds-pixel" }, "Pixel size"), pixelInput),
      h("div", { class: "field narrow" }, h("label", { for: "ds-unit" }, "Unit"), unitSelect)),
    h("p", { class: "help" }, "With a pixel size, statistics and generated volumes are in physical units."),
    h("div", { class: "row" }, submit, progress),
    status);

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (files.length === 3) {
      const axes = new Set(files.map((f) => f.axis));
      if (axes.size !== 3) {
        replace(status, notice("error", "Each of the three images must show a different plane (x, y and z)."));
        return;
      }
    }
    const ordered = files.length === 3 ? AXES.map((a) => files.find((f) => f.axis === a).file) : files.map((f) => f.file);
    const data = new FormData();
    for (const file of ordered) data.append("files", file, file.name);
    if (nameInput.value.trim()) data.append("name", nameInput.value.trim());
    if (typeSelect.value) data.append("image_type", typeSelect.value);
    if (pixelInput.value) {
      data.append("pixel_size", pixelInput.value);
      data.append("unit", unitSelect.value);
    }
    progress.hidden = false;
    progress.value = 0;
    replace(status, notice("info", "Uploading and checking the images…"));
    await busy(submit, async () => {
      const dataset = await upload("/v1/datasets", data, (f) => { progress.value = f; });
      location.hash = `#/datasets/${dataset.id}?new=1`;
    }, status);
    progress.hidden = true;
  });
  ctx.onLeave(() => { files = []; });
  return form;
}

/** Three planes of a cube, labelled: which image is perpendicular to which axis. */
export function axesDiagram() {
  return h("svg", { viewBox: "0 0 180 150", class: "axes-diagram", role: "img",
    "aria-label": "Axes: the x image is the side face (rows z, columns y), the y image the front face (rows z, columns x), the z image the top face (rows y, columns x)" },
  h("title", {}, "Which face of the volume each image shows"),
  h("polygon", { points: "40,60 120,60 120,140 40,140", class: "face face-y" }),
  h("polygon", { points: "40,60 70,30 150,30 120,60", class: "face face-z" }),
  h("polygon", { points: "120,60 150,30 150,110 120,140", class: "face face-x" }),
  h("text", { x: 80, y: 105, "text-anchor": "middle" }, "y image"),
  h("text", { x: 95, y: 50, "text-anchor": "middle" }, "z image"),
  h("text", { x: 136, y: 90, "text-anchor": "middle", class: "small" }, "x"),
  h("line", { x1: 12, y1: 140, x2: 40, y2: 140, class: "axis" }),
  h("text", { x: 10, y: 135 }, "x →"),
  h("line", { x1: 20, y1: 140, x2: 20, y2: 70, class: "axis" }),
  h("text", { x: 2, y: 66 }, "z ↑"),
  h("line", { x1: 20, y1: 140, x2: 38, y2: 122, class: "axis" }),
  h("text", { x: 22, y: 118 }, "y"));
}

export async function renderOne(main, { ctx, args, params }) {
  const [id] = args;
  const d = await api(`/v1/datasets/${id}`);
  const status = h("div", { "aria-live": "polite" });
  if (params.get("new")) status.append(notice("ok", "Uploaded and checked. This is what was detected: train when it looks right."));
  const phases = d.image_type === "nphase"
    ? table([
      { label: "Label value", cell: (p) => num(p.value), class: "num" },
      { label: "Fraction", cell: (p) => h("span", { class: "fraction" },
        h("meter", { min: 0, max: 1, value: p.fraction, "aria-label": `fraction of ${p.value}` }), ` ${percent(p.fraction)}`) },
    ], d.phases, { caption: "Phases" })
    : h("p", {}, `A ${d.image_type} image: no phases.`);
  const stats = (d.statistics || []).filter(Boolean);
  replace(main,
    h("div", { class: "page-head" },
      h("p", { class: "crumbs" }, link("/datasets", "Datasets"), " / "),
      h("h1", { class: "name" }, d.name),
      h("div", { class: "actions" },
        link(`/train?dataset=${d.id}`, "Train a generator", { class: "button primary" }),
        deleteButton(`/v1/datasets/${d.id}`, d.name, status, () => { location.hash = "#/datasets"; }))),
    status,
    h("div", { class: "grid-2" },
      h("section", { class: "card" },
        h("h2", {}, "What was detected"),
        facts([
          ["Type", `${d.image_type}${d.detected ? " (detected)" : " (as given)"}`],
          ["Layout", layoutWords(d.layout)],
          ["Image sizes", d.shapes.map(shape).join(", ")],
          ["Pixel size", d.pixel_size ? `${num(d.pixel_size)} ${UNIT_LABEL[d.unit] || d.unit}` : "not given (voxel units)"],
          ["Stored", bytes(d.size_bytes)],
          ["Uploaded", when(d.created_at)],
          ["Id", h("code", {}, d.id)],
        ]),
        h("h3", {}, "Phases"), phases),
      h("section", { class: "card" },
        h("h2", {}, "Preview"),
        ctx.image(d.links.preview, `Preview of ${d.name}`, { cls: "preview pixelated", fallback: "No preview for this dataset." }))),
    stats.length ? h("section", { class: "card" }, h("h2", {}, "Statistics per image"), statsTable(stats)) : null);
}

function layoutWords(layout) {
  return {
    isotropic: "one image: isotropic material",
    anisotropic: "three perpendicular images: anisotropic material",
    volume: "a 3D stack (trains on slices along its three axes)",
  }[layout] || layout;
}

function statsTable(stats) {
  const rows = [];
  for (const s of stats) {
    for (const [value, p] of Object.entries(s.phases || {})) {
      rows.push({ file: s.file_name, value, ...p, unit: s.length_unit });
    }
  }
  return table([
    { label: "Image", cell: (r) => h("span", { class: "file-name" }, r.file) },
    { label: "Phase", cell: (r) => r.value, class: "num" },
    { label: "Fraction", cell: (r) => percent(r.volume_fraction), class: "num" },
    { label: "Surface per area", cell: (r) => `${num(r.specific_surface_area)} /${r.unit === "voxel" ? "px" : r.unit}`, class: "num" },
  ], rows, { caption: "Statistics per image", empty: "No statistics for these images." });
}
