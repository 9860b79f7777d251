// How values, units, qualities and times are shown. Pure functions, no DOM.

import { locale, t } from "./i18n.js";

// OPC UA status codes: the two top bits are the severity (00 good, 01 uncertain, 1x bad).
export const QUALITY = Object.freeze({ GOOD: "good", UNCERTAIN: "uncertain", BAD: "bad" });

/** Severity of an OPC UA status code; a missing code counts as good. */
export function qualityOf(code) {
  if (code === null || code === undefined) return QUALITY.GOOD;
  const severity = (Number(code) >>> 30) & 0b11;
  if (severity === 0) return QUALITY.GOOD;
  if (severity === 1) return QUALITY.UNCERTAIN;
  return QUALITY.BAD;
}

export function qualityHex(code) {
  return (Number(code) >>> 0).toString(16).toUpperCase().padStart(8, "0");
}

// Machine states by the value of a tag named `state`; labels come from the tag's `states`.
export const STATE_KEYS = Object.freeze({ 1: "running", 2: "idle", 3: "setup", 4: "down" });

export function stateKey(value) {
  return STATE_KEYS[Math.round(Number(value))] || "unknown";
}

export function stateLabel(meta, value) {
  if (value === null || value === undefined || Number.isNaN(Number(value))) {
    return t("state.unknown");
  }
  const label = meta?.states?.[String(Math.round(Number(value)))];
  return label || t("state.unknown");
}

// Engineering unit codes as people write them.
const UNIT_LABELS = {
  degC: "°C",
  degF: "°F",
  K: "K",
  pct: "%",
  percent: "%",
  m3: "m³",
  "m3/h": "m³/h",
  "m^3/h": "m³/h",
  um: "µm",
  us: "µs",
  "mm/s2": "mm/s²",
  "m/s2": "m/s²",
};

export function unitLabel(unit) {
  if (!unit) return "";
  return UNIT_LABELS[unit] ?? unit;
}

const numberFormats = new Map();

function numberFormat(decimals) {
  const key = `${locale()}:${decimals}`;
  let fmt = numberFormats.get(key);
  if (!fmt) {
    fmt = new Intl.NumberFormat(locale(), {
      minimumFractionDigits: decimals,
      maximumFractionDigits: decimals,
    });
    numberFormats.set(key, fmt);
  }
  return fmt;
}

/** Decimals that suit a tag: from its engineering span when known, else from the value. */
export function decimalsFor(meta, value) {
  if (meta?.data_type === "int" || meta?.data_type === "bool") return 0;
  const span =
    meta && meta.eng_low !== null && meta.eng_high !== null && meta.eng_low !== undefined
      ? Math.abs(meta.eng_high - meta.eng_low)
      : Math.abs(Number(value));
  if (!Number.isFinite(span)) return 1;
  if (span >= 1000) return 0;
  if (span >= 100) return 1;
  if (span >= 1) return 2;
  return 3;
}

/** The text shown for a point of tag `meta`. */
export function formatValue(meta, point) {
  if (!point) return t("value.none");
  if (meta?.data_type === "string") return point.text ?? t("value.none");
  const value = point.value;
  if (value === null || value === undefined || Number.isNaN(Number(value))) {
    return point.text ?? t("value.none");
  }
  if (meta?.states && Object.keys(meta.states).length) return stateLabel(meta, value);
  if (meta?.data_type === "bool") return Number(value) ? t("value.on") : t("value.off");
  return numberFormat(decimalsFor(meta, value)).format(Number(value));
}

/** Position of a value within the tag's engineering range, 0..1, or null when unknown. */
export function rangeFraction(meta, value) {
  if (!meta || meta.eng_low === null || meta.eng_high === null) return null;
  if (meta.eng_low === undefined || meta.eng_high === undefined) return null;
  const span = meta.eng_high - meta.eng_low;
  if (!(span > 0) || value === null || value === undefined) return null;
  const f = (Number(value) - meta.eng_low) / span;
  if (!Number.isFinite(f)) return null;
  return Math.min(1, Math.max(0, f));
}

const compact = new Map();

/** 1234567 → "1.23 M" (locale-aware), for totals in the header. */
export function formatCount(n) {
  if (n === null || n === undefined || !Number.isFinite(Number(n))) return "–";
  let fmt = compact.get(locale());
  if (!fmt) {
    fmt = new Intl.NumberFormat(locale(), { notation: "compact", maximumFractionDigits: 2 });
    compact.set(locale(), fmt);
  }
  return fmt.format(Number(n));
}

export function formatRate(n) {
  if (n === null || n === undefined || !Number.isFinite(Number(n))) return "–";
  return numberFormat(Number(n) >= 100 ? 0 : 1).format(Number(n));
}

/** A duration given in milliseconds, to a sensible precision: "0.06 ms", "12.5 ms", "1.4 s". */
export function formatMs(ms) {
  if (ms === null || ms === undefined) return "–";
  const n = Number(ms);
  if (!Number.isFinite(n) || n < 0) return "–";
  if (n >= 1000) return t("unit.seconds", { n: numberFormat(n >= 10000 ? 0 : 1).format(n / 1000) });
  if (n > 0 && n < 0.01) return t("unit.millis", { n: `< ${numberFormat(2).format(0.01)}` });
  const decimals = n >= 100 ? 0 : n >= 10 ? 1 : 2;
  return t("unit.millis", { n: numberFormat(decimals).format(n) });
}

export function formatTime(ms) {
  if (!Number.isFinite(ms)) return "";
  return new Date(ms).toLocaleTimeString(locale(), { hour12: false });
}

export function formatDateTime(ms) {
  if (!Number.isFinite(ms)) return "";
  return new Date(ms).toLocaleString(locale(), { hour12: false });
}

/** ECharts' own locale (its built-in texts, month and weekday names on time axes). */
export function chartLocale() {
  return locale().toLowerCase().startsWith("zh") ? "ZH" : "EN";
}

/** A value axis tick in the page's locale, compact when large ("12K", "1.2M"; "1.2万"). */
export function formatAxisNumber(v) {
  const n = Number(v);
  if (!Number.isFinite(n)) return "";
  if (Math.abs(n) >= 1e4) return formatCount(n);
  return numberFormat(Number.isInteger(n) ? 0 : Math.min(3, decimalsOf(n))).format(n);
}

/** Decimals an axis tick needs (0.25 → 2), at most 3. */
function decimalsOf(n) {
  const text = String(Number(n.toFixed(3)));
  const dot = text.indexOf(".");
  return dot < 0 ? 0 : text.length - dot - 1;
}

/** A number with exactly `decimals` decimals, grouped for the page's locale. */
export function formatFixed(value, decimals) {
  if (value === null || value === undefined || !Number.isFinite(Number(value))) {
    return t("value.none");
  }
  return numberFormat(decimals).format(Number(value));
}

/** "spindle_temp" → "spindle temp": tag and asset names read better with spaces. */
export function humanize(name) {
  return String(name).replace(/[_]+/g, " ");
}

/** A process value as reported (up to 3 decimals, locale grouping); "—" when there is none. */
export function formatNumber(value) {
  if (value === null || value === undefined || !Number.isFinite(Number(value))) {
    return t("value.none");
  }
  const n = Number(value);
  const decimals = Number.isInteger(n) ? 0 : Math.abs(n) >= 100 ? 1 : Math.abs(n) >= 1 ? 2 : 3;
  return numberFormat(decimals).format(n);
}

/** A share 0..1 as a percentage ("12.5 %" in the page's locale). */
export function formatShare(share) {
  if (share === null || share === undefined || !Number.isFinite(Number(share))) return "–";
  return new Intl.NumberFormat(locale(), { style: "percent", maximumFractionDigits: 1 }).format(
    Number(share),
  );
}

/** A time of day, with the date in front when it is not today. */
export function formatWhen(ms) {
  if (!Number.isFinite(ms)) return "";
  const today = new Date().toDateString() === new Date(ms).toDateString();
  return today ? formatTime(ms) : formatDateTime(ms);
}
