// Usage: what this key keeps on the server, and where to delete it.

import { api } from "../api.js";
import { h, link, replace, table } from "../dom.js";
import { bytes } from "../format.js";

const KINDS = [
  ["datasets", "Datasets", "/datasets", "training images and their previews"],
  ["generators", "Generators", "/generators", "trained networks"],
  ["volumes", "Volumes", "/volumes", "TIFF stacks and their reports"],
  ["checkpoints", "Checkpoints", "/jobs", "kept by ended training jobs so they can be continued; deleting a job frees its checkpoint"],
];

export async function render(main) {
  const usage = await api("/v1/usage");
  const total = usage.total_bytes || 1;
  replace(main,
    h("div", { class: "page-head" }, h("h1", {}, "Usage"),
      h("p", { class: "lead" }, "What this key keeps on the server. Delete what you no longer need from each list.")),
    table([
      { label: "Kind", cell: ([, label, route]) => link(route, label) },
      { label: "Count", cell: ([k]) => usage[k].count.toLocaleString(), class: "num" },
      { label: "Size", cell: ([k]) => bytes(usage[k].bytes), class: "num" },
      { label: "Share", cell: ([k]) => h("meter", { min: 0, max: 1, value: usage[k].bytes / total, "aria-label": `share of ${k}` }) },
      { label: "What it is", cell: ([, , , what]) => what },
    ], KINDS, { caption: "Usage per kind" }),
    h("p", { class: "total" }, "Total: ", h("strong", {}, bytes(usage.total_bytes))));
}
