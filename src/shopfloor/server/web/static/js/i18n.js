// Every string the page shows. The English text lives here (the frame's strings) and in each
// page's module (static/js/strings/); the translations live in gettext catalogues
// (src/shopfloor/server/web/locale/, see docs/dashboard.md "Adding a language / a string"),
// which the server compiles to JSON and initLocale() loads before the page renders.
// A missing translation falls back to English, then to the key itself.
// State labels are not here: they come from each tag's `states` in the API.

import { storageGet, storageSet } from "./storage.js";

const STRINGS = {
  en: {
    "app.subtitle": "Live plant",
    "nav.toggle": "Show or hide the asset tree",
    "menu.label": "Pages",
    "menu.live": "Live",
    "menu.overview": "Overview",
    "menu.oee": "OEE",
    "menu.trends": "Trends",
    "menu.alarms": "Alarms",
    "menu.admin": "Admin",
    "menu.language": "Language",
    "title.live": "shopfloor · live plant",
    "title.overview": "shopfloor · plant overview",
    "title.notFound": "shopfloor · not found",
    "health.rate": "Points/s",
    "health.stored": "Stored",
    "health.tags": "Tags",
    "health.version": "shopfloor {version}",
    "health.pending": "{n} pending",
    "health.unreachable": "server unreachable",
    "conn.connecting": "Connecting…",
    "conn.live": "Live",
    "conn.reconnecting": "Reconnecting…",
    "conn.reconnectingIn": "Reconnecting in {s} s",
    "alarms.label": "Alarms",
    "alarms.title": "Standing alarms",
    "alarms.open": "Show the standing alarms",
    "alarms.close": "Close",
    "alarms.operator": "Operator",
    "alarms.summary": "{standing} standing, {waiting} to acknowledge",
    "alarms.updated": "{summary} · updated {time}",
    "alarms.stale": "Could not refresh: {error}",
    "alarms.none": "No standing alarm.",
    "alarms.needName": "Enter your name (Operator, above) first.",
    "alarms.failed": "Not done: {error}",
    "alarms.acknowledge": "Acknowledge",
    "alarms.colAlarm": "Alarm",
    "alarms.colPriority": "Priority",
    "alarms.colState": "State",
    "alarms.colSince": "Since",
    "alarms.state.unacknowledged": "Unacknowledged",
    "alarms.state.acknowledged": "Acknowledged",
    "alarms.state.returned": "Returned, unacknowledged",
    "alarms.state.shelved": "Shelved",
    "alarms.state.suppressed": "Suppressed",
    "alarms.state.outOfService": "Out of service",
    "alarms.priority.critical": "Critical",
    "alarms.priority.high": "High",
    "alarms.priority.medium": "Medium",
    "alarms.priority.low": "Low",
    "alarms.views": "Alarm views",
    "alarms.tab.standing": "Standing",
    "alarms.tab.journal": "Journal",
    "alarms.tab.kpis": "Performance",
    "alarms.colValue": "Value",
    "alarms.colActions": "Actions",
    "alarms.state.normal": "Normal",
    "alarms.shelvedUntil": "Shelved until {time}",
    "alarms.action.acknowledge": "Acknowledge",
    "alarms.action.shelve": "Shelve",
    "alarms.action.unshelve": "Unshelve",
    "alarms.action.comment": "Comment",
    "alarms.do.acknowledge": "Acknowledge: {alarm}",
    "alarms.do.shelve": "Shelve: {alarm}",
    "alarms.do.unshelve": "Unshelve: {alarm}",
    "alarms.do.comment": "Comment on: {alarm}",
    "alarms.duration": "Shelve for",
    "alarms.duration.15m": "15 minutes",
    "alarms.duration.1h": "1 hour",
    "alarms.duration.8h": "8 hours",
    "alarms.comment": "Comment",
    "alarms.commentOptional": "Comment (optional)",
    "alarms.reason": "Reason",
    "alarms.needReason": "Give a reason for shelving.",
    "alarms.needComment": "Write a comment first.",
    "alarms.cancel": "Cancel",
    "alarms.history": "Show this alarm's journal",
    "range.1h": "Last hour",
    "range.8h": "Last 8 hours",
    "range.24h": "Last 24 hours",
    "range.7d": "Last 7 days",
    "range.custom": "From … to …",
    "journal.alarm": "Alarm",
    "journal.allAlarms": "All alarms",
    "journal.range": "Time range",
    "journal.from": "From",
    "journal.to": "To",
    "journal.show": "Show",
    "journal.more": "Show older entries",
    "journal.loading": "Loading the journal…",
    "journal.failed": "Could not load the journal: {error}",
    "journal.count": "{n} entries, newest first",
    "journal.none": "No entry in this range.",
    "journal.countMore": "The newest {n} entries; older ones load as you ask for them",
    "journal.needFrom": "Choose when the range starts.",
    "journal.badRange": "The end must be after the start.",
    "journal.colTime": "Time",
    "journal.colAlarm": "Alarm",
    "journal.colEvent": "Event",
    "journal.colState": "State",
    "journal.colValue": "Value",
    "journal.colUser": "User",
    "journal.colComment": "Comment",
    "journal.event.activated": "Activated",
    "journal.event.cleared": "Cleared",
    "journal.event.acknowledged": "Acknowledged",
    "journal.event.shelved": "Shelved",
    "journal.event.unshelved": "Unshelved",
    "journal.event.shelveExpired": "Shelve expired",
    "journal.event.suppressed": "Suppressed",
    "journal.event.unsuppressed": "Unsuppressed",
    "journal.event.removedFromService": "Out of service",
    "journal.event.returnedToService": "Returned to service",
    "journal.event.condition": "Condition changed (hidden)",
    "journal.event.commented": "Comment",
    "kpi.period": "Period",
    "kpi.between": "{start} – {end} · the whole plant (consoles are not modelled yet)",
    "kpi.loading": "Computing…",
    "kpi.failed": "Could not load the alarm performance: {error}",
    "kpi.colMeasure": "Measure",
    "kpi.colValue": "Value",
    "kpi.colTarget": "Target (ISA-18.2 / EEMUA 191)",
    "kpi.activations": "Alarms that came in",
    "kpi.average": "Average per 10 minutes",
    "kpi.peak": "Peak in 10 minutes",
    "kpi.overManageable": "10-minute periods above 2",
    "kpi.inFlood": "Time in a flood",
    "kpi.chatteringCount": "Chattering alarms",
    "kpi.target.none": "—",
    "kpi.target.average": "about 1 per operator (2 at most is manageable)",
    "kpi.target.peak": "10 or fewer (more is a flood)",
    "kpi.target.overManageable": "as few as possible",
    "kpi.target.inFlood": "below 1 %",
    "kpi.target.chattering": "none",
    "kpi.badActors": "Top 10 bad actors",
    "kpi.floods": "Floods (more than 10 alarms in 10 minutes)",
    "kpi.chattering": "Chattering alarms (3 or more within 60 s)",
    "kpi.colAlarm": "Alarm",
    "kpi.colCount": "Activations",
    "kpi.colShare": "Share",
    "kpi.colFrom": "From",
    "kpi.colTo": "To",
    "kpi.colAlarms": "Alarms",
    "kpi.colEpisodes": "Episodes",
    "kpi.none": "No figures.",
    "kpi.noBadActors": "No alarm came in.",
    "kpi.noFloods": "No flood.",
    "kpi.noChattering": "No chattering alarm.",
    "connectors.label": "Connections",
    "connectors.title": "Connections",
    "connectors.open": "Show the state of each connection",
    "connectors.close": "Close",
    "connectors.summary": "{active} of {total} connections active",
    "connectors.updated": "{summary} · updated {time}",
    "connectors.stale": "Could not refresh: {error}",
    "connectors.colName": "Connection",
    "connectors.colState": "State",
    "connectors.colRate": "Reads/s",
    "connectors.colLatency": "Last read",
    "connectors.colErrors": "Errors",
    "connectors.colReconnects": "Reconnects",
    "connectors.totals": "{reads} reads, {points} points since start",
    "connectors.lastError": "Last error",
    "connectors.state.starting": "Starting",
    "connectors.state.active": "Active",
    "connectors.state.idle": "Idle",
    "connectors.state.degraded": "Degraded",
    "connectors.state.stopped": "Stopped",
    "unit.millis": "{n} ms",
    "unit.seconds": "{n} s",
    "tree.title": "Assets",
    "tree.filter": "Filter tags",
    "tree.all": "All equipment",
    "tree.noMatch": "No tag matches",
    "scope.all": "All equipment",
    "scope.count": "{n} machines",
    "scope.countOne": "1 machine",
    "cards.loading": "Loading tags…",
    "cards.none": "No tags yet. Values appear here as soon as a connector reports them.",
    "cards.loadFailed": "Could not load tags: {error}. Retrying…",
    "cards.stateTitle": "Machine state — click for its trend",
    "cards.updated": "Updated {time}",
    "quality.bad": "BAD",
    "quality.uncertain": "UNCERTAIN",
    "quality.badTitle": "Bad quality (status 0x{code}): the value is not trustworthy",
    "quality.uncertainTitle": "Uncertain quality (status 0x{code})",
    "value.none": "—",
    "value.on": "ON",
    "value.off": "OFF",
    "state.unknown": "UNKNOWN",
    "trend.range": "Time range",
    "trend.close": "Close trend",
    "trend.loading": "Loading…",
    "trend.noData": "No values in this range",
    "trend.failed": "Could not load the trend: {error}",
    "trend.noLibrary": "The chart library is missing (run 'make web-assets' on the server).",
    "trend.raw": "raw values, extending live",
    "trend.bucketed": "{bucket} buckets: average with min–max band, extending live",
    "trend.bucketedState": "{bucket} buckets: highest state code per bucket, extending live",
    "trend.avg": "avg",
    "trend.min": "min",
    "trend.max": "max",
    "trend.value": "value",
    "legend.running": "Running",
    "legend.idle": "Idle",
    "legend.setup": "Setup",
    "legend.down": "Down",
    "legend.unknown": "Unknown",
  },
};

const FALLBACK = "en";
const LANG_COOKIE = "shopfloor_lang";
const STORAGE_KEY = "shopfloor.lang";
const root = document.documentElement;
let current = FALLBACK;
let ready = null;

/** The languages this server has: English and each catalogue (from base.html). */
function available() {
  return (root.dataset.locales || FALLBACK).split(" ").filter(Boolean);
}

function cookieLocale() {
  for (const part of document.cookie.split(";")) {
    const [name, ...rest] = part.trim().split("=");
    if (name === LANG_COOKIE) return decodeURIComponent(rest.join("="));
  }
  return null;
}

/**
 * Pick the locale and load its catalogue: `?lang=` in the URL, then the logged-in user's
 * language, then the saved choice (the cookie the server renders by, then local storage),
 * then the browser's languages (the server's order, catalogue.request_locale).
 * Resolves to the locale once t() speaks it; a page's entry module awaits it before it
 * renders anything. Called again, it returns the same promise (one fetch per page).
 */
export function initLocale() {
  if (ready) return ready;
  const saved = cookieLocale() || storageGet(STORAGE_KEY);
  const wanted = [
    new URLSearchParams(location.search).get("lang"),
    root.dataset.userLocale, // the logged-in user's own (base.html), as the server reads it
    saved,
    ...(navigator.languages || [navigator.language]),
  ];
  current = FALLBACK;
  for (const tag of wanted) {
    const found = matchLocale(tag);
    if (found) {
      current = found;
      break;
    }
  }
  // A choice saved before the server read the cookie: hand it to the server too.
  const stored = matchLocale(storageGet(STORAGE_KEY));
  if (stored && !cookieLocale()) writeCookie(stored);
  root.lang = current;
  ready = current === FALLBACK ? Promise.resolve(current) : loadCatalogue(current);
  return ready;
}

/** Fetch a language's compiled catalogue; on failure the page stays in English. */
async function loadCatalogue(tag) {
  const urls = JSON.parse(root.dataset.catalogues || "{}");
  const base = (document.body?.dataset.base || "").replace(/\/$/, "");
  const url = urls[tag] || `${base}/static/i18n/${tag}.json`;
  try {
    const response = await fetch(url, { credentials: "same-origin" });
    if (!response.ok) throw new Error(`${response.status} ${response.statusText}`);
    STRINGS[tag] = { ...(STRINGS[tag] || {}), ...(await response.json()) };
  } catch (err) {
    console.warn(`the ${tag} strings could not be loaded (${err.message}): English it is`);
    current = FALLBACK;
    root.lang = current;
  }
  return current;
}

function matchLocale(tag) {
  if (!tag) return null;
  const tags = available();
  const lower = tag.toLowerCase();
  const exact = tags.find((known) => known.toLowerCase() === lower);
  if (exact) return exact;
  // zh, zh-Hans, zh-SG read Simplified Chinese; zh-TW / zh-HK do not get it by default.
  if (lower === "zh" || lower.startsWith("zh-hans") || lower === "zh-sg") {
    return tags.includes("zh-CN") ? "zh-CN" : null;
  }
  const base = lower.split("-")[0];
  return tags.find((known) => known.toLowerCase() === base) || null;
}

function writeCookie(tag) {
  const path = document.body?.dataset.base || "/";
  const secure = location.protocol === "https:" ? "; Secure" : "";
  document.cookie = `${LANG_COOKIE}=${encodeURIComponent(tag)}; Path=${path}; Max-Age=31536000; SameSite=Lax${secure}`;
}

/** The session's CSRF token (the readable cookie api.js sends too; "" before a login). */
function csrfToken() {
  for (const part of document.cookie.split(";")) {
    const [name, ...rest] = part.trim().split("=");
    if (name === "shopfloor_csrf") return decodeURIComponent(rest.join("="));
  }
  return "";
}

/**
 * Remember the user's language: the cookie (so the server renders the next page in it),
 * local storage and, when a user is logged in (base.html's data-user-locale), the user's
 * account (PATCH /api/v1/auth/me), so it follows the user to other browsers. Resolves once
 * stored; a refusal is logged and leaves the cookie's choice in force.
 */
export async function rememberLocale(tag) {
  storageSet(STORAGE_KEY, tag);
  writeCookie(tag);
  if (root.dataset.userLocale === undefined) return;
  const base = (document.body?.dataset.base || "").replace(/\/$/, "");
  try {
    const response = await fetch(`${base}/api/v1/auth/me`, {
      method: "PATCH",
      headers: {
        "Content-Type": "application/json",
        Accept: "application/json",
        "X-CSRF-Token": csrfToken(),
      },
      body: JSON.stringify({ locale: tag }),
      credentials: "same-origin",
    });
    if (!response.ok) throw new Error(`${response.status} ${response.statusText}`);
    root.dataset.userLocale = tag;
  } catch (err) {
    console.warn(`the language could not be saved with the account (${err.message})`);
  }
}

export function locale() {
  return current;
}

/**
 * Add a page's own English strings, `{en: {...}}`, to the table. Each page keeps its
 * strings in its own module (static/js/strings/) and registers them before `t()` runs.
 * (A translation table beside `en` still works until `shopfloor i18n migrate` moves it
 * into the catalogue.)
 */
export function registerStrings(table) {
  for (const [tag, strings] of Object.entries(table)) {
    STRINGS[tag] = { ...(STRINGS[tag] || {}), ...strings };
  }
}

/** Translate `key`, replacing `{name}` placeholders from `vars`. */
export function t(key, vars) {
  const text = STRINGS[current]?.[key] ?? STRINGS[FALLBACK][key] ?? key;
  if (!vars) return text;
  return text.replace(/\{(\w+)\}/g, (whole, name) => (name in vars ? String(vars[name]) : whole));
}

/**
 * Fill `data-i18n` (text), `data-i18n-placeholder`, `data-i18n-title` and
 * `data-i18n-aria-label` under `root`.
 */
export function applyI18n(root) {
  for (const el of root.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
  for (const el of root.querySelectorAll("[data-i18n-title]")) el.title = t(el.dataset.i18nTitle);
  for (const el of root.querySelectorAll("[data-i18n-placeholder]")) {
    el.placeholder = t(el.dataset.i18nPlaceholder);
  }
  for (const el of root.querySelectorAll("[data-i18n-aria-label]")) {
    el.setAttribute("aria-label", t(el.dataset.i18nAriaLabel));
    if (el.tagName === "BUTTON") el.title = t(el.dataset.i18nAriaLabel);
  }
}
