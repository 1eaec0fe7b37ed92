// Volumes: the list, and one volume: an orthogonal slice viewer (GET .../slice.png per
// plane), the quality report drawn as numbers and S2 plots, download and share links.

import { api, download, listAll } from "../api.js";
import { h, link, notice, replace, table, facts, button, busy } from "../dom.js";
import { bytes, when, num, percent, shortId, duration } from "../format.js";
import { figure } from "../charts.js";
import { deleteButton } from "./datasets.js";

/** Past this, a browser download through memory is a poor idea: offer a share link. */
const BLOB_DOWNLOAD_LIMIT = 1e9;

function verdictBadge(report) {
  if (!report) return h("span", { class: "badge" }, "report pending");
  if (report.error) return h("span", { class: "badge" }, "no report");
  if (!report.verdict) return h("span", { class: "badge" }, "no comparison");
  return h("span", { class: `badge verdict-${report.verdict}` }, report.verdict);
}

export async function renderList(main) {
  const box = h("section", {});
  const status = h("div", { "aria-live": "polite" });
  replace(main, h("div", { class: "page-head" }, h("h1", {}, "Volumes"),
    h("p", { class: "lead" }, "Generated 3D microstructures, as TIFF stacks or OME-Zarr stores.")), status, box);
  const fill = async () => {
    const rows = await listAll("/v1/volumes");
    replace(box, table([
      { label: "Volume", cell: (v) => link(`/volumes/${v.id}`, shortId(v.id), { title: v.id }) },
      { label: "Shape (z × y × x)", cell: (v) => v.shape.join(" × ") },
      { label: "Quality", cell: (v) => verdictBadge(v.report) },
      { label: "Seed", cell: (v) => v.seed ?? "—", class: "num" },
      { label: "Size", cell: (v) => bytes(v.size_bytes), class: "num" },
      { label: "Created", cell: (v) => when(v.created_at) },
      { label: "Actions", cell: (v) => h("div", { class: "actions" },
        link(`/volumes/${v.id}`, "Open", { class: "button small" }),
        deleteButton(`/v1/volumes/${v.id}`, `volume ${shortId(v.id)}`, status, fill)) },
    ], rows, { caption: "Volumes", empty: "No volumes yet: generate one from a generator." }));
  };
  await fill();
}

export async function renderOne(main, { ctx, args }) {
  const [id] = args;
  const v = await api(`/v1/volumes/${id}`);
  const status = h("div", { "aria-live": "polite" });
  const reportBox = h("section", { class: "card" }, h("h2", {}, "Quality report"), h("p", { class: "loading" }, "Loading the report…"));
  const zarr = v.format === "ome-zarr";
  const dl = button(zarr ? "Download OME-Zarr (zip)" : "Download TIFF", () => busy(dl, async () => {
    if (v.size_bytes > BLOB_DOWNLOAD_LIMIT) {
      replace(status, notice("info", "This volume is large: make a share link below and open it, or use `microforge remote download`."));
      return;
    }
    await download(v.links.file, zarr ? `${v.id}.ome.zarr.zip` : `${v.id}.tif`);
  }, status), { class: "primary" });
  replace(main,
    h("div", { class: "page-head" },
      h("p", { class: "crumbs" }, link("/volumes", "Volumes"), " / "),
      h("h1", {}, "Volume ", h("code", {}, shortId(v.id)), " ", verdictBadge(v.report)),
      h("div", { class: "actions" }, dl,
        deleteButton(`/v1/volumes/${v.id}`, `volume ${shortId(v.id)}`, status, () => { location.hash = "#/volumes"; }))),
    status,
    h("div", { class: "grid-2" },
      h("section", { class: "card" }, h("h2", {}, "About"), facts([
        ["Shape (z × y × x)", `${v.shape.join(" × ")} voxels`],
        ["Type", `${v.image_type}, ${v.dtype}`],
        ["Phases", v.image_type === "nphase" ? v.phases.join(", ") : "—"],
        ["File", `${zarr ? "OME-Zarr store" : "TIFF"}, ${bytes(v.size_bytes)}`],
        ["Seed", v.seed ?? "—"],
        ["Generated in", duration(v.seconds)],
        ["From", v.generator_id ? link(`/generators?highlight=${v.generator_id}`, shortId(v.generator_id)) : "—"],
        ["Job", v.job_id ? link(`/jobs/${v.job_id}`, shortId(v.job_id)) : "—"],
        ["Created", when(v.created_at)],
      ])),
      shareCard(v)),
    viewer(ctx, v),
    zarr ? zarrCard(v) : null,
    reportBox);
  fillReport(ctx, v, reportBox);
}

function shareCard(v) {
  const hours = h("select", { id: "share-hours" },
    [[1, "1 hour"], [24, "1 day"], [168, "1 week"], [720, "30 days"]].map(([n, l]) => h("option", { value: n, selected: n === 24 }, l)));
  const out = h("div", { "aria-live": "polite" });
  const make = h("button", { type: "submit" }, "Create share link");
  const form = h("form", { class: "card" },
    h("h2", {}, "Share"),
    h("p", { class: "help" }, `A download link for this volume's ${v.format === "ome-zarr" ? "OME-Zarr store (zip, and its files for viewers)" : "TIFF"} that needs no key, for a colleague or a batch job. It stops working when it expires or the volume is deleted.`),
    h("div", { class: "row" }, h("label", { for: "share-hours" }, "Valid for"), hours, make),
    out);
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    busy(make, async () => {
      const share = await api(`/v1/volumes/${v.id}/share`, { method: "POST", json: { expires_in: Number(hours.value) * 3600 } });
      const field = h("input", { id: "share-url", type: "text", readonly: true, value: share.url, "aria-label": "Share link" });
      const copy = button("Copy", async () => {
        try {
          await navigator.clipboard.writeText(share.url);
          copy.textContent = "Copied";
        } catch {
          field.select();
          copy.textContent = "Press Ctrl+C";
        }
      });
      replace(out, h("div", { class: "row share-row" }, field, copy),
        h("p", { class: "muted" }, `Valid until ${when(share.expires_at)}.`));
      field.select();
    }, out);
  });
  return form;
}

/** The colour class of a phase value: its place in the volume's phases (the training
 * data's), the same colour the API's slice.png?colour=phases and the report PNG give it. */
export function phaseClass(v, value) {
  const index = (v.phases || []).findIndex((p) => String(p) === String(value) || Number(p) === Number(value));
  return index < 0 ? null : `p${index % 10}`;
}

function phaseSwatch(v, value) {
  const cls = phaseClass(v, value);
  return cls ? h("span", { class: `phase-swatch ${cls}`, "aria-hidden": "true" }) : null;
}

/** An OME-Zarr volume's slices are drawn above like a TIFF's; say where a viewer that
 * streams the store (all levels, in 3D) reads it. */
function zarrCard(v) {
  return h("section", { class: "card" }, h("h2", {}, "OME-Zarr store"),
    h("p", {}, "Open the store in a viewer that streams OME-Zarr (napari with napari-ome-zarr, "
      + "neuroglancer) at ", h("code", {}, v.links.zarr),
    " (with your key), or make a share link and give the viewer the link followed by ", h("code", {}, "/zarr/"), "."));
}

/** Fit, then 2, 4 and 8 times that (the plane's box scrolls past the fit). */
const ZOOMS = [[1, "Fit"], [2, "2×"], [4, "4×"], [8, "8×"]];
/** A plane never takes more than this share of the window's height at "Fit". */
const MAX_HEIGHT_SHARE = 0.6;

/** Three orthogonal planes through one point, each with its slider; zoom by a factor.
 * Each plane is drawn at the size that fits its column with the voxels square (its box is
 * the image's size, so no bars), and a zoomed plane scrolls inside that box. */
function viewer(ctx, v) {
  const [nz, ny, nx] = v.shape;
  const axes = [
    { axis: "z", label: "Plane perpendicular to z (rows y, columns x)", size: nz, rows: ny, cols: nx },
    { axis: "y", label: "Plane perpendicular to y (rows z, columns x)", size: ny, rows: nz, cols: nx },
    { axis: "x", label: "Plane perpendicular to x (rows z, columns y)", size: nx, rows: nz, cols: ny },
  ];
  const labels = v.image_type === "nphase" && (v.phases || []).length > 0;
  const zoom = h("select", { id: "zoom" }, ZOOMS.map(([z, text]) => h("option", { value: z, selected: z === 1 }, text)));
  const colour = labels
    ? h("select", { id: "slice-colour" },
      h("option", { value: "phases", selected: true }, "phase colours"),
      h("option", { value: "grey" }, "greys"))
    : null;
  const loaders = [];
  const sizers = [];
  const planes = axes.map(({ axis, label, size, rows, cols }) => {
    const img = h("img", { alt: `${label}, slice ${Math.floor(size / 2)}`, class: "slice", width: cols, height: rows });
    const box = h("div", { class: "slice-box", tabindex: 0, "aria-label": `${label} (scrolls when zoomed)` }, img);
    const value = h("output", { for: `slice-${axis}` }, `${Math.floor(size / 2)} / ${size - 1}`);
    const slider = h("input", { type: "range", id: `slice-${axis}`, min: 0, max: size - 1, step: 1, value: Math.floor(size / 2),
      "aria-label": `Slice along ${axis}` });
    const plane = h("figure", { class: "plane" },
      box,
      h("figcaption", {}, h("label", { for: `slice-${axis}` }, `${axis} slice `), value),
      slider,
      h("p", { class: "help" }, label));
    let timer = null;
    const load = () => {
      const index = Number(slider.value);
      value.textContent = `${index} / ${size - 1}`;
      img.alt = `${label}, slice ${index}`;
      const query = new URLSearchParams({ axis, index: String(index) });
      if (colour) query.set("colour", colour.value);
      ctx.loadInto(img, `/v1/volumes/${v.id}/slice.png?${query}`, null);
    };
    slider.addEventListener("input", () => {
      value.textContent = `${slider.value} / ${size - 1}`;
      clearTimeout(timer);
      timer = setTimeout(load, 120); // a dragged slider asks for the slice it stops at
    });
    ctx.onLeave(() => clearTimeout(timer));
    // Sizes in CSS pixels, set through the CSSOM (allowed by the page's policy).
    const resize = (recentre) => {
      const width = plane.clientWidth;
      if (!width) return;
      const maxHeight = Math.max(160, window.innerHeight * MAX_HEIGHT_SHARE);
      const fit = Math.min(width / cols, maxHeight / rows);
      const factor = Number(zoom.value);
      const [w, hgt] = [cols * fit * factor, rows * fit * factor];
      img.style.width = `${w}px`;
      img.style.height = `${hgt}px`;
      box.style.width = `${Math.min(w, cols * fit)}px`;
      box.style.height = `${Math.min(hgt, rows * fit)}px`;
      if (recentre) {
        box.scrollLeft = (box.scrollWidth - box.clientWidth) / 2;
        box.scrollTop = (box.scrollHeight - box.clientHeight) / 2;
      }
    };
    loaders.push(load);
    sizers.push(resize);
    load();
    return plane;
  });
  const resizeAll = (recentre = false) => sizers.forEach((fn) => fn(recentre));
  zoom.addEventListener("change", () => resizeAll(true));
  if (colour) colour.addEventListener("change", () => loaders.forEach((fn) => fn()));
  const observer = new ResizeObserver(() => resizeAll(false));
  planes.forEach((plane) => observer.observe(plane));
  ctx.onLeave(() => observer.disconnect());
  const legend = labels
    ? h("ul", { class: "legend phase-legend", "aria-label": "Phase colours" },
      v.phases.map((value) => h("li", {}, phaseSwatch(v, value), `phase ${value}`)))
    : null;
  return h("section", { class: "card viewer" },
    h("div", { class: "row between" }, h("h2", {}, "Slices"),
      h("div", { class: "row" },
        colour ? [h("label", { for: "slice-colour" }, "Colours"), colour] : null,
        h("label", { for: "zoom" }, "Zoom"), zoom)),
    legend,
    h("div", { class: "planes" }, planes));
}

async function fillReport(ctx, v, box) {
  let report = null;
  for (let attempt = 0; attempt < 20 && ctx.alive; attempt += 1) {
    try {
      report = await api(`/v1/volumes/${v.id}/report`);
      break;
    } catch (error) {
      if (error.code !== "report_not_ready") {
        replace(box, h("h2", {}, "Quality report"), notice("error", error.detail || error.message));
        return;
      }
      replace(box, h("h2", {}, "Quality report"), h("p", { class: "loading" }, "The report is being built (seconds after the volume)…"));
      await new Promise((r) => setTimeout(r, 3000));
    }
  }
  if (!ctx.alive) return;
  if (!report) {
    replace(box, h("h2", {}, "Quality report"), notice("info", "The report is not ready yet: reload this page in a minute."));
    return;
  }
  const parts = [h("h2", {}, "Quality report")];
  if (report.error) {
    parts.push(notice("info", report.error.message));
    replace(box, parts);
    return;
  }
  const s = report.summary || {};
  if (report.verdict) {
    parts.push(h("p", { class: "verdict-line" }, "Verdict: ", verdictBadge(report),
      ` (largest fraction error ${num(s.fraction_error, 3)}, mean S2 error ${num(s.s2_error, 3)}, Euler error ${num(s.euler_error, 2)}; good is ≤ ${num(s.thresholds?.good?.fraction_error, 3)}, ≤ ${num(s.thresholds?.good?.s2_error, 3)} and ≤ ${num(s.thresholds?.good?.euler_error, 2)}).`));
  }
  if (report.note) parts.push(notice("info", report.note));
  if (s.note) parts.push(notice("info", s.note));
  if (report.sampled) parts.push(h("p", { class: "muted" }, `Measured on the central ${report.sampled.shape.join(" × ")} voxels of ${report.sampled.of.join(" × ")}.`));
  const stats = report.statistics || {};
  const comparison = report.comparison || {};
  const unit = stats.length_unit === "voxel" || !stats.length_unit ? "voxel" : stats.length_unit;
  const phases = Object.entries(stats.phases || {});
  if (phases.length) {
    parts.push(h("h3", {}, "Phases"), table([
      { label: "Phase", cell: ([value]) => h("span", {}, phaseSwatch(v, value), value), class: "num" },
      { label: "Volume fraction", cell: ([, p]) => percent(p.volume_fraction), class: "num" },
      { label: "Training images", cell: ([value]) => trainingFraction(comparison, value), class: "num" },
      { label: `Surface area per volume (1/${unit})`, cell: ([, p]) => num(p.specific_surface_area, 4), class: "num" },
      { label: `Characteristic length x / y / z (${unit})`, cell: ([, p]) => ["x", "y", "z"].map((a) => num(p.characteristic_length?.[a], 1)).join(" / ") },
    ], phases, { caption: "Phases of the volume" }));
    parts.push(tortuosity(phases));
    if (stats.triple_phase_boundary_density !== undefined) {
      parts.push(h("p", {}, `Triple-phase boundary density: ${num(stats.triple_phase_boundary_density, 4)} per ${unit}².`));
    }
    const charts = phases.map(([value, p]) => figure(`Two-point correlation S2 of phase ${value}`, {
      xLabel: `distance (${unit === "voxel" ? "voxels" : unit})`,
      series: [
        ...["x", "y", "z"].map((a, i) => ({ name: `volume along ${a}`, points: (p.tpc?.[a] || []).map((y, x) => [x, y]), cls: `s${i}` })),
        ...referenceS2(comparison, value),
      ],
      yMin: 0,
    }));
    parts.push(h("h3", {}, "Two-point correlation"), h("div", { class: "chart-grid" }, charts));
  }
  const hasPng = Boolean(report.links?.png);
  if (hasPng) {
    const details = h("details", {}, h("summary", {}, "The report as a picture (training images beside the volume's slices)"));
    details.addEventListener("toggle", () => {
      if (details.open && !details.querySelector("img")) details.append(ctx.image(report.links.png, "Quality report image", { cls: "report-png" }));
    }, { once: false });
    parts.push(details);
  }
  replace(box, parts);
}

/** Tortuosity per phase and axis when the report has it: a GPU worker solves it
 * (MICROFORGE_REPORT_TORTUOSITY=auto); on a CPU worker it would dominate the job, so say
 * where to get it. Beside it, the share of the phase that carries no flow along the axis:
 * generators tend to join what the material leaves as dead ends, which makes a phase too
 * easy to cross, and this column is where that shows. */
function tortuosity(phases) {
  const solved = phases.filter(([, p]) => p.tortuosity);
  if (!solved.length) {
    return h("p", { class: "muted" }, "Tortuosity is solved in the automatic report on GPU workers only; `microforge stats VOLUME.tif` computes it on your machine.");
  }
  return [h("h3", {}, "Tortuosity"), table([
    { label: "Phase", cell: ([value]) => value, class: "num" },
    ...["x", "y", "z"].map((a) => ({ label: `along ${a}`, class: "num",
      cell: ([, p]) => (p.percolates?.[a] === false ? "no path" : num(p.tortuosity?.[a], 3)) })),
    // Reports made before the share was measured have none: a dash.
    { label: "Carries no flow x / y / z", class: "num",
      cell: ([, p]) => ["x", "y", "z"].map((a) => percent(p.stagnant_share?.[a])).join(" / ") },
  ], solved, { caption: "Tortuosity per phase" }),
  h("p", { class: "muted" }, "Carries no flow: the share of the phase where no face carries a tenth of a straight channel's flux (dead ends, bulges, specks). Tortuosity counts that volume in the phase's fraction but not in its paths.")];
}

function trainingFraction(comparison, value) {
  const slices = comparison.phases?.[value]?.slices || {};
  const refs = Object.values(slices).map((s) => s.area_fraction?.reference).filter((x) => Number.isFinite(x));
  if (!refs.length) return "—";
  return percent(refs.reduce((a, b) => a + b, 0) / refs.length);
}

/** The training image's S2 (one curve per distinct image), dashed, over the same range. */
function referenceS2(comparison, value) {
  const slices = comparison.phases?.[value]?.slices || {};
  const out = [];
  const seen = new Set();
  for (const [axis, s] of Object.entries(slices)) {
    for (const [dir, curves] of Object.entries(s.tpc || {})) {
      const key = JSON.stringify(curves.reference?.slice(0, 4));
      if (!curves.reference || seen.has(key)) continue;
      seen.add(key);
      const n = Math.max(curves.volume?.length || 0, 8);
      out.push({ name: `training image (${axis} plane, along ${dir})`, points: curves.reference.slice(0, n).map((y, x) => [x, y]), cls: "s3", dashed: true });
      if (out.length >= 2) return out;
    }
  }
  return out;
}
