// What the analysis pages (/oee, /trends) share: an API client that builds links, the
// page's query kept in the URL (so a view can be shared), and locale-aware durations.

import "./strings/analysis.js";
import { ApiClient } from "./api.js";
import { locale, t } from "./i18n.js";

export class AnalysisApi extends ApiClient {
  /** The absolute URL of an API path with query parameters (for links and downloads). */
  url(path, params) {
    const url = new URL(this.base + path, location.origin);
    for (const [key, value] of Object.entries(params || {})) {
      if (value === null || value === undefined || value === "") continue;
      for (const one of Array.isArray(value) ? value : [value]) url.searchParams.append(key, one);
    }
    return url.toString();
  }
}

/** The page's query string as a URLSearchParams. */
export function readQuery() {
  return new URLSearchParams(location.search);
}

/**
 * Replace the page's query string by `values` (arrays repeat the key), keeping `lang`, so
 * the address bar always holds the current view.
 */
export function writeQuery(values) {
  const params = new URLSearchParams();
  const lang = new URLSearchParams(location.search).get("lang");
  if (lang) params.set("lang", lang);
  for (const [key, value] of Object.entries(values)) {
    if (value === null || value === undefined || value === "") continue;
    for (const one of Array.isArray(value) ? value : [value]) params.append(key, one);
  }
  const query = params.toString();
  history.replaceState(null, "", query ? `?${query}` : location.pathname);
}

/** A `datetime-local` input's value (local wall time) as an ISO instant, or null. */
export function localInputToIso(value) {
  if (!value) return null;
  const ms = new Date(value).getTime();
  return Number.isFinite(ms) ? new Date(ms).toISOString() : null;
}

/** An instant (ms) as a `datetime-local` value in the browser's zone. */
export function msToLocalInput(ms) {
  const d = new Date(ms);
  const pad = (n) => String(n).padStart(2, "0");
  return (
    `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}` +
    `T${pad(d.getHours())}:${pad(d.getMinutes())}`
  );
}

/** Seconds as "3 h 12 min", "4 min 5 s" or "12 s", in the page's language. */
export function formatDuration(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(Number(seconds))) return "–";
  const total = Math.round(Number(seconds));
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = total % 60;
  const n = (v) => new Intl.NumberFormat(locale()).format(v);
  if (h) return t("duration.hm", { h: n(h), m: n(m) });
  if (m) return t("duration.ms", { m: n(m), s: n(s) });
  return t("duration.s", { s: n(s) });
}

/** A share 0..1 as a percentage with one decimal ("75.2%", "75.2%" in zh-CN). */
export function formatPercent(share) {
  if (share === null || share === undefined || !Number.isFinite(Number(share))) return "–";
  return new Intl.NumberFormat(locale(), {
    style: "percent",
    minimumFractionDigits: 1,
    maximumFractionDigits: 1,
  }).format(Number(share));
}

/** A count in the page's locale ("1,234"). */
export function formatInteger(n) {
  if (n === null || n === undefined || !Number.isFinite(Number(n))) return "–";
  return new Intl.NumberFormat(locale(), { maximumFractionDigits: 0 }).format(Number(n));
}

/** A date and time in the page's locale, 24-hour, without seconds. */
export function formatInstant(value) {
  const ms = typeof value === "number" ? value : Date.parse(value);
  if (!Number.isFinite(ms)) return "";
  return new Date(ms).toLocaleString(locale(), {
    hour12: false,
    year: "numeric",
    month: "2-digit",
    day: "2-digit",
    hour: "2-digit",
    minute: "2-digit",
  });
}

export function cell(text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

/** The chart colours and fonts from the stylesheet's variables. */
export function chartTheme() {
  const css = getComputedStyle(document.documentElement);
  const color = (name) => css.getPropertyValue(name).trim();
  return {
    color,
    font: css.getPropertyValue("--font-ui"),
    axisText: { color: color("--text-muted"), fontSize: 11 },
    splitLine: { lineStyle: { color: color("--chart-grid") } },
    tooltip: {
      className: "chart-tip",
      backgroundColor: color("--panel-raised"),
      borderColor: color("--border-strong"),
      textStyle: { color: color("--text"), fontSize: 12 },
    },
  };
}

export function escapeHtml(s) {
  return String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}
