// Small SVG line charts drawn here (no plotting library to ship): a few series of (x, y)
// points, axes with round ticks, a legend, optional marked points. The SVG scales with its
// container (viewBox), and every chart has a text title for screen readers.

import { h } from "./dom.js";
import { num } from "./format.js";

const W = 560;
const H = 240;
const M = { left: 56, right: 14, top: 14, bottom: 40 };

/** Round tick values covering [lo, hi]. */
export function ticks(lo, hi, count = 5) {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) || raw;
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Number(v.toPrecision(12)));
  return out;
}

/**
 * series: [{name, points: [[x, y], ...], cls}] (cls picks the colour: s0..s3)
 * marks: [{x, y, label}] drawn as rings with a label
 */
export function lineChart({ title, series, xLabel = "iteration", yLabel = "", marks = [], yMin = null }) {
  const all = series.flatMap((s) => s.points).filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y));
  const svg = h("svg", {
    viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img", "aria-label": title,
  }, h("title", {}, title));
  if (!all.length) {
    svg.append(h("text", { x: W / 2, y: H / 2, class: "chart-empty", "text-anchor": "middle" }, "No points yet"));
    return svg;
  }
  let [x0, x1] = [Math.min(...all.map((p) => p[0])), Math.max(...all.map((p) => p[0]))];
  let [y0, y1] = [Math.min(...all.map((p) => p[1])), Math.max(...all.map((p) => p[1]))];
  if (yMin !== null) y0 = Math.min(y0, yMin);
  if (x1 === x0) x1 = x0 + 1;
  if (y1 === y0) { y0 -= 0.5; y1 += 0.5; }
  const pad = (y1 - y0) * 0.05;
  y0 -= yMin !== null && y0 === yMin ? 0 : pad;
  y1 += pad;
  const sx = (x) => M.left + ((x - x0) / (x1 - x0)) * (W - M.left - M.right);
  const sy = (y) => H - M.bottom - ((y - y0) / (y1 - y0)) * (H - M.top - M.bottom);

  const grid = h("g", { class: "grid" });
  for (const t of ticks(y0, y1)) {
    grid.append(h("line", { x1: M.left, x2: W - M.right, y1: sy(t), y2: sy(t) }));
    grid.append(h("text", { x: M.left - 6, y: sy(t) + 4, "text-anchor": "end" }, num(t, 3)));
  }
  for (const t of ticks(x0, x1, 6)) {
    grid.append(h("line", { x1: sx(t), x2: sx(t), y1: M.top, y2: H - M.bottom, class: "vertical" }));
    grid.append(h("text", { x: sx(t), y: H - M.bottom + 16, "text-anchor": "middle" }, num(t, 2)));
  }
  grid.append(h("text", { x: (M.left + W - M.right) / 2, y: H - 6, "text-anchor": "middle", class: "axis-label" }, xLabel));
  if (yLabel) {
    grid.append(h("text", { x: 12, y: M.top + (H - M.top - M.bottom) / 2, "text-anchor": "middle", class: "axis-label",
      transform: `rotate(-90 12 ${M.top + (H - M.top - M.bottom) / 2})` }, yLabel));
  }
  svg.append(grid);

  series.forEach((s, i) => {
    const pts = s.points.filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y));
    if (!pts.length) return;
    const cls = s.cls || `s${i}`;
    svg.append(h("polyline", {
      class: `line ${cls}${s.dashed ? " dashed" : ""}`,
      points: pts.map(([x, y]) => `${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join(" "),
    }));
    if (pts.length <= 40) {
      for (const [x, y] of pts) svg.append(h("circle", { cx: sx(x), cy: sy(y), r: 2.5, class: `dot ${cls}` }));
    }
  });
  for (const m of marks) {
    if (!Number.isFinite(m.x) || !Number.isFinite(m.y)) continue;
    svg.append(h("circle", { cx: sx(m.x), cy: sy(m.y), r: 7, class: "mark" }, h("title", {}, m.label)));
    // keep the label inside the plot at either end
    const anchor = sx(m.x) > W - M.right - 40 ? "end" : sx(m.x) < M.left + 40 ? "start" : "middle";
    svg.append(h("text", { x: sx(m.x), y: sy(m.y) - 11, "text-anchor": anchor, class: "mark-label" }, m.label));
  }
  return svg;
}

/** A chart with its legend, as one figure. */
export function figure(caption, options) {
  const legend = h("ul", { class: "legend" },
    options.series.map((s, i) => h("li", {}, h("span", { class: `swatch ${s.cls || `s${i}`}${s.dashed ? " dashed" : ""}`, "aria-hidden": "true" }), s.name)));
  return h("figure", { class: "chart-figure" }, h("figcaption", {}, caption), lineChart({ title: caption, ...options }), legend);
}
