// Numbers, sizes, times and ids as people read them.

// The length units the API accepts (microforge/units.py LENGTH_UNITS; a test keeps the two
// equal) and how people write them.
export const UNIT_LABEL = { nm: "nm", um: "µm", mm: "mm", cm: "cm", m: "m" };
export const UNITS = Object.keys(UNIT_LABEL);

export function unitOptions(selected = "um") {
  return UNITS.map((u) => ({ value: u, label: UNIT_LABEL[u], selected: u === selected }));
}

export function bytes(n) {
  if (n === null || n === undefined) return "—";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let value = Number(n);
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit += 1;
  }
  return `${value >= 100 || unit === 0 ? Math.round(value) : value.toFixed(1)} ${units[unit]}`;
}

export function duration(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return "—";
  if (seconds < 1) return "under 1 s";
  const s = Math.round(seconds);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60 ? `${s % 60} s` : ""}`.trim();
  if (s < 48 * 3600) return `${Math.floor(s / 3600)} h ${Math.round((s % 3600) / 60)} min`;
  return `${(s / 86400).toFixed(1)} days`;
}

export function when(iso) {
  if (!iso) return "—";
  const date = new Date(iso);
  return date.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}

export function num(value, digits = 3) {
  if (value === null || value === undefined || !Number.isFinite(Number(value))) return "—";
  const v = Number(value);
  if (v !== 0 && (Math.abs(v) < 1e-3 || Math.abs(v) >= 1e5)) return v.toExponential(2);
  return Number(v.toFixed(digits)).toString();
}

export function percent(fraction, digits = 1) {
  if (fraction === null || fraction === undefined) return "—";
  return `${(100 * fraction).toFixed(digits)} %`;
}

export function shape(dims) {
  return (dims || []).join(" × ");
}

/** An id shortened for tables; the full id stays in the title and the link. */
export function shortId(id) {
  return id && id.length > 14 ? `${id.slice(0, 12)}…` : id;
}
