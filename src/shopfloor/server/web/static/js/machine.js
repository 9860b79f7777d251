// The machine page: one equipment's live values and trend, the state timeline of the
// shift its newest data is in, that shift's OEE with the losses, its stops, its health
// (anomaly score, remaining useful life) and its alarms.
//
// Live values come over the websocket, subscribed to the machine's path only; the rest is
// polled from the REST API. A section whose service the server does not run says so and
// the others carry on.

import "./strings/machine.js";
import { ApiClient } from "./api.js";
import { priorityLabel, stateLabel as alarmStateLabel } from "./alarm-labels.js";
import {
  QUALITY,
  formatNumber,
  formatShare,
  formatTime,
  formatValue,
  formatWhen,
  humanize,
  qualityOf,
  stateKey,
  unitLabel,
} from "./format.js";
import { applyI18n, initLocale, t } from "./i18n.js";
import { LiveSocket } from "./live.js";
import { Poller } from "./poller.js";
import { Store } from "./store.js";
import { TrendPanel } from "./trend.js";
import {
  bindConnection,
  dataNow,
  formatDuration,
  iso,
  renderLegend,
  shiftOee,
  stateText,
} from "./pagekit.js";

const $ = (id) => document.getElementById(id);
const SHIFT_EVERY_MS = 60_000;
const ALARMS_EVERY_MS = 15_000;
const LOSSES = [
  ["breakdowns_s", "machine.loss.breakdowns"],
  ["setup_adjustments_s", "machine.loss.setup"],
  ["small_stops_s", "machine.loss.smallStops"],
  ["reduced_speed_s", "machine.loss.reducedSpeed"],
  ["rejects_s", "machine.loss.rejects"],
];

initLocale();
applyI18n(document);
renderLegend($("legend"));

const main = $("main");
const equipment = main.dataset.equipment;
const machinePath = main.dataset.path;
const stateTag = `${machinePath}/state`;
const api = new ApiClient(document.body.dataset.base || "");
const store = new Store();
const live = new LiveSocket(api.liveUrl());
bindConnection(live, $("conn"), $("conn-label"));
const rows = new Map(); // tag path -> <tr>

const trend = new TrendPanel(
  {
    panel: $("trend"),
    chart: $("trend-chart"),
    title: $("trend-title"),
    sub: $("trend-sub"),
    message: $("trend-msg"),
    rangeGroup: $("trend-range"),
    closeButton: $("trend-close"),
  },
  {
    api,
    store,
    onChange: ({ path }) => {
      $("trend-hint").hidden = Boolean(path);
      for (const [p, row] of rows) row.setAttribute("aria-selected", String(p === path));
    },
  },
);
trend.rangeKey = "1h";

store.addEventListener("values", (event) => {
  for (const path of event.detail.changed) paintValue(path, true);
});

start();

async function start(attempt = 0) {
  try {
    const tags = (await api.tags()).filter((tag) => (tag.asset ?? "") === machinePath);
    store.setTags(tags);
    renderValues(tags);
    store.apply((await api.latest()).filter((v) => store.tags.has(v.path)));
  } catch (err) {
    $("values-body").replaceChildren(messageRow(4, t("machine.failed", { error: err.message })));
    setTimeout(() => start(attempt + 1), Math.min(10000, 1000 * 2 ** attempt));
    return;
  }
  live.subscribe(machinePath);
  live.addEventListener("snapshot", (event) => store.apply(event.detail.values));
  live.addEventListener("values", (event) => store.apply(event.detail.values));
  live.start();
  const first = defaultTrendTag([...store.tags.values()]);
  if (first) trend.open(first.path, { rangeKey: "1h" });
  if (store.tags.has(stateTag)) {
    new Poller(() => refreshShift(), SHIFT_EVERY_MS).start();
  } else {
    // Without a state there are no stops, no timeline and no OEE: one line says so.
    $("machine-state").hidden = true;
    $("no-state").hidden = false;
    for (const cls of ["panel-timeline", "panel-oee", "panel-downtime"]) {
      document.querySelector(`.${cls}`).hidden = true;
    }
  }
  new Poller(() => refreshAlarms(), ALARMS_EVERY_MS).start();
  healthLoop();
}

/** A temperature when the machine has one (what people look at first), else any number. */
function defaultTrendTag(tags) {
  const numeric = tags.filter((tag) => tag.data_type === "float");
  return numeric.find((tag) => /temp/i.test(tag.name)) || numeric[0] || tags[0] || null;
}

function messageRow(span, text) {
  const tr = document.createElement("tr");
  const td = document.createElement("td");
  td.colSpan = span;
  td.className = "page-msg";
  td.textContent = text;
  tr.append(td);
  return tr;
}

function renderValues(tags) {
  rows.clear();
  const sorted = [...tags].sort((a, b) => a.name.localeCompare(b.name, undefined, { numeric: true }));
  $("values-body").replaceChildren(
    ...sorted.map((tag) => {
      const tr = document.createElement("tr");
      tr.dataset.tag = tag.path;
      tr.tabIndex = 0;
      tr.title = tag.description || tag.path;
      const name = document.createElement("td");
      name.textContent = humanize(tag.name);
      const value = document.createElement("td");
      value.className = "num value";
      value.textContent = t("value.none");
      const unit = document.createElement("td");
      unit.textContent = unitLabel(tag.unit);
      const time = document.createElement("td");
      time.className = "num time";
      tr.append(name, value, unit, time);
      tr.addEventListener("click", () => trend.open(tag.path));
      tr.addEventListener("keydown", (event) => {
        if (event.key === "Enter" || event.key === " ") {
          event.preventDefault();
          trend.open(tag.path);
        }
      });
      rows.set(tag.path, tr);
      return tr;
    }),
  );
}

function paintValue(path, flash) {
  const point = store.values.get(path);
  if (path === stateTag) paintState(point);
  const tr = rows.get(path);
  if (!tr || !point) return;
  const cell = tr.querySelector(".value");
  // The machine state in the page's language; other tags as the live page shows them.
  cell.textContent =
    path === stateTag && qualityOf(point.quality) !== QUALITY.BAD && point.value !== null
      ? stateText(point.value)
      : formatValue(store.tags.get(path), point);
  tr.querySelector(".time").textContent = formatTime(point.ts);
  tr.dataset.quality = qualityOf(point.quality);
  if (flash) {
    cell.classList.remove("flash");
    void cell.offsetWidth; // restart the animation
    cell.classList.add("flash");
  }
}

function paintState(point) {
  const badge = $("machine-state");
  const value = point && qualityOf(point.quality) !== QUALITY.BAD ? point.value : null;
  badge.dataset.state = stateKey(value);
  badge.textContent = stateText(value);
}

/** OEE, stops and the state timeline of the shift the newest data is in. */
async function refreshShift() {
  const now = dataNow(store);
  let window = { start: now - 8 * 3600e3, end: now };
  try {
    const { row } = await shiftOee(api, equipment, now);
    showOee(row);
    if (row) window = { start: Date.parse(row.shift_start || row.start), end: Date.parse(row.end) };
  } catch (err) {
    showOee(null, err);
  }
  let events;
  try {
    const body = await api.get("/api/v1/downtime", {
      equipment,
      start: iso(window.start),
      end: iso(window.end),
    });
    events = body.events || [];
  } catch (err) {
    showStops(null, err);
    showTimeline(window, null);
    return;
  }
  showStops(events);
  showTimeline(window, events);
}

function showOee(row, err) {
  const msg = $("oee-msg");
  $("oee-oee").textContent = formatShare(row?.oee);
  $("oee-a").textContent = formatShare(row?.availability);
  $("oee-p").textContent = formatShare(row?.performance);
  $("oee-q").textContent = formatShare(row?.quality);
  $("oee-oee").dataset.value = row?.oee ?? "";
  $("oee-sub").textContent = row?.shift ? t("machine.shift", { shift: row.shift }) : "";
  msg.hidden = !err;
  // 422: the machine has no parts and ideal cycle time, so OEE does not apply to it.
  msg.textContent = !err ? "" : err.status === 422 ? t("machine.noParts") : t("machine.noOee", { error: err.message });
  msg.title = err ? err.message : "";
  $("oee-kpis").hidden = Boolean(err);
  $("oee-losses-title").hidden = !row;
  const planned = row?.planned_s || 0;
  $("oee-losses").replaceChildren(
    ...(row
      ? LOSSES.map(([key, label]) => {
          const seconds = row.losses?.[key] ?? 0;
          const li = document.createElement("li");
          li.className = "loss";
          li.dataset.loss = key;
          const name = document.createElement("span");
          name.textContent = t(label);
          const bar = document.createElement("span");
          bar.className = "loss-bar";
          const fill = document.createElement("span");
          // Set through the CSSOM, which the CSP allows (a style="" attribute it does not).
          fill.style.width = `${planned > 0 ? Math.min(100, (100 * seconds) / planned) : 0}%`;
          bar.append(fill);
          const time = document.createElement("span");
          time.className = "loss-time";
          time.textContent = formatDuration(seconds);
          li.append(name, bar, time);
          return li;
        })
      : []),
  );
}

function showStops(events, err) {
  const msg = $("downtime-msg");
  if (!events) {
    $("downtime-body").replaceChildren();
    msg.hidden = false;
    msg.textContent = t("machine.noAnalytics", { error: err.message });
    return;
  }
  msg.hidden = events.length > 0;
  msg.textContent = events.length ? "" : t("machine.noStops");
  const newestFirst = [...events].sort((a, b) => b.start_ns - a.start_ns);
  $("downtime-body").replaceChildren(
    ...newestFirst.map((e) => {
      const tr = document.createElement("tr");
      tr.dataset.start = e.start;
      const cells = [
        formatWhen(Date.parse(e.start)),
        formatDuration(e.duration_s) + (e.ongoing ? ` (${t("machine.ongoing")})` : ""),
        stateText(e.state),
        e.reason_label ? humanize(e.reason_label) : String(e.reason ?? "–"),
        (e.loss ? humanize(e.loss) : "–") + (e.micro_stop ? ` · ${t("machine.micro")}` : ""),
      ];
      cells.forEach((text, i) => {
        const td = document.createElement("td");
        if (i === 1) td.className = "num";
        td.textContent = text;
        tr.append(td);
      });
      return tr;
    }),
  );
}

function showTimeline(window, events) {
  const bar = $("timeline");
  const span = window.end - window.start;
  $("timeline-sub").textContent = t("machine.window", {
    from: formatWhen(window.start),
    to: formatWhen(window.end),
  });
  const axis = [0, 0.25, 0.5, 0.75, 1].map((f) => {
    const tick = document.createElement("span");
    tick.textContent = formatTime(window.start + f * span);
    return tick;
  });
  $("timeline-axis").replaceChildren(...axis);
  if (!events || !(span > 0)) {
    bar.dataset.empty = "";
    bar.replaceChildren();
    return;
  }
  delete bar.dataset.empty;
  // Running is the bar's own colour; each stop covers its part of the shift.
  bar.replaceChildren(
    ...events.map((e) => {
      const from = Math.max(window.start, Date.parse(e.start));
      const to = Math.min(window.end, e.end ? Date.parse(e.end) : window.end);
      const seg = document.createElement("span");
      seg.className = "timeline-seg";
      seg.dataset.state = stateKey(e.state);
      seg.style.left = `${(100 * (from - window.start)) / span}%`;
      seg.style.width = `${(100 * Math.max(0, to - from)) / span}%`;
      seg.title = `${stateText(e.state)} · ${formatWhen(from)} · ${formatDuration((to - from) / 1000)}`;
      return seg;
    }),
  );
}

async function refreshAlarms() {
  const msg = $("malarms-msg");
  let alarms;
  try {
    alarms = await api.get("/api/v1/alarms", { state: "all" });
  } catch (err) {
    $("malarms-body").replaceChildren();
    msg.hidden = false;
    msg.textContent = err.status === 404 ? t("machine.alarmsOff") : t("machine.failed", { error: err.message });
    return;
  }
  const mine = alarms.filter((a) => (a.tag || "").startsWith(machinePath + "/"));
  msg.hidden = mine.length > 0;
  msg.textContent = mine.length ? "" : t("machine.noAlarms");
  $("malarms-body").replaceChildren(
    ...mine.map((a) => {
      const tr = document.createElement("tr");
      tr.dataset.alarm = a.name;
      tr.dataset.alarmState = a.state;
      const cells = [
        a.message || a.name.slice(machinePath.length + 1),
        priorityLabel(a.priority),
        alarmStateLabel(a.state),
        a.state === "normal" ? "" : formatWhen(Date.parse(a.since)),
        formatNumber(a.value),
      ];
      cells.forEach((text, i) => {
        const td = document.createElement("td");
        if (i === 4) td.className = "num";
        td.textContent = text;
        tr.append(td);
      });
      tr.title = a.name;
      return tr;
    }),
  );
}

/** Health every minute; monitors the server does not run (404) stay off until it restarts. */
async function healthLoop() {
  if ((await refreshHealth()) === "on") setTimeout(healthLoop, SHIFT_EVERY_MS);
}

/** Anomaly score and RUL; resolves to "off" when the server runs neither monitor. */
async function refreshHealth() {
  let off = 0;
  try {
    const body = await api.get("/api/v1/anomaly", { equipment });
    const latest = body.machines?.[0]?.latest;
    $("health-score").textContent = latest ? formatNumber(latest.score) : "–";
    $("health-anomaly-msg").textContent = latest
      ? t("machine.anomalyLatest", { time: formatWhen(Date.parse(latest.time)), cause: latest.cause ?? "–" })
      : t("machine.anomalyNone");
  } catch (err) {
    $("health-score").textContent = "–";
    if (err.status === 404) off += 1;
    $("health-anomaly-msg").textContent =
      err.status === 404 ? t("machine.anomalyOff") : t("machine.failed", { error: err.message });
    $("health-anomaly-msg").title = err.message;
  }
  try {
    const body = await api.get("/api/v1/rul", { equipment });
    const row = body.machines?.[0];
    const rul = $("health-rul");
    const msg = $("health-rul-msg");
    if (row?.status === "estimate") {
      rul.textContent = t("machine.rulHours", { n: formatNumber(Math.round(row.rul_hours)) });
      msg.textContent = t("machine.rulEstimate", {
        threshold: formatNumber(row.threshold),
        time: formatWhen(Date.parse(row.failure_time)),
      });
    } else {
      rul.textContent = "–";
      msg.textContent =
        row?.status === "no_estimate"
          ? t("machine.rulNoEstimate", { reason: row.reason })
          : t("machine.rulPending");
    }
  } catch (err) {
    $("health-rul").textContent = "–";
    if (err.status === 404) off += 1;
    $("health-rul-msg").textContent =
      err.status === 404 ? t("machine.rulOff") : t("machine.failed", { error: err.message });
    $("health-rul-msg").title = err.message;
  }
  return off === 2 ? "off" : "on";
}
