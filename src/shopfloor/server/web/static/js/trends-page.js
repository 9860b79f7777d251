// The trend explorer (/trends): tags picked from the asset tree, overlaid on one time axis
// with one value axis per unit. The history endpoint gives raw points for short windows
// and averages per bucket for longer ones (a few hundred per tag); zooming in fetches the
// zoomed window again at its own bucket. The CSV and Parquet links ask the same endpoint
// the same question, so a download holds exactly the points shown. The URL keeps the tags
// and the window, so a view can be shared.

import "./strings/trends.js";
import {
  AnalysisApi,
  chartTheme,
  escapeHtml,
  localInputToIso,
  msToLocalInput,
  readQuery,
  writeQuery,
} from "./analysis-common.js";
import { buildTree, sortedChildren } from "./assets.js";
import { QUALITY, formatDateTime, humanize, qualityOf, unitLabel } from "./format.js";
import { applyI18n, initLocale, locale, t } from "./i18n.js";

const $ = (id) => document.getElementById(id);

// Preset windows ending now.
const RANGES = Object.freeze({
  "15m": 15 * 60e3,
  "1h": 3600e3,
  "8h": 8 * 3600e3,
  "24h": 24 * 3600e3,
  "7d": 7 * 24 * 3600e3,
});
const RAW_UP_TO_MS = 15 * 60e3; // raw points up to 15 minutes (900 points of a 1 s tag)
const TARGET_POINTS = 600; // per tag, about one per two pixels of a wide chart
const BUCKETS = [
  ["1s", 1e3], ["2s", 2e3], ["5s", 5e3], ["10s", 10e3], ["15s", 15e3], ["30s", 30e3],
  ["1m", 60e3], ["2m", 120e3], ["5m", 300e3], ["10m", 600e3], ["15m", 900e3], ["30m", 1800e3],
  ["1h", 3600e3], ["2h", 7200e3], ["3h", 10800e3], ["6h", 21600e3], ["12h", 43200e3],
  ["1d", 86400e3],
];
const MAX_TAGS = 8;
const RAW_LIMIT = 20000; // per tag; a raw window of 15 minutes holds far fewer
const AXIS_GAP = 58; // px between stacked value axes on one side

initLocale();
applyI18n(document);
document.title = t("trends.pageTitle");

const api = new AnalysisApi(document.body.dataset.base || "");
const meta = new Map(); // tag path -> metadata
const view = readView();
let chart = null;
let loading = null; // AbortController of the read in flight
let zoomTimer = null;
let shown = null; // {from, to, bucket}: the window the chart holds

setupControls();
start();

function readView() {
  const q = readQuery();
  const tags = [...new Set(q.getAll("tag").filter(Boolean))].slice(0, MAX_TAGS);
  const from = Date.parse(q.get("from") || "");
  const to = Date.parse(q.get("to") || "");
  if (Number.isFinite(from) && Number.isFinite(to) && to > from) {
    return { tags, range: null, from, to };
  }
  const range = RANGES[q.get("range")] ? q.get("range") : "1h";
  return { tags, range, from: null, to: null };
}

function saveView() {
  writeQuery({
    tag: view.tags,
    range: view.range,
    from: view.range ? null : new Date(view.from).toISOString(),
    to: view.range ? null : new Date(view.to).toISOString(),
  });
}

/** The window to show now: a preset ends at this moment. */
function window_() {
  if (!view.range) return { from: view.from, to: view.to };
  const to = Date.now();
  return { from: to - RANGES[view.range], to };
}

/** Raw points for short windows, else the narrowest bucket giving at most ~600 points. */
export function bucketFor(spanMs) {
  if (spanMs <= RAW_UP_TO_MS) return null;
  const wanted = spanMs / TARGET_POINTS;
  const found = BUCKETS.find(([, ms]) => ms >= wanted);
  return (found || BUCKETS[BUCKETS.length - 1])[0];
}

function setupControls() {
  $("trends-range").addEventListener("click", (event) => {
    const button = event.target.closest("[data-range]");
    if (!button) return;
    Object.assign(view, { range: button.dataset.range, from: null, to: null });
    load();
  });
  $("trends-window").addEventListener("submit", (event) => {
    event.preventDefault();
    const from = Date.parse(localInputToIso($("trends-from").value) || "");
    const to = Date.parse(localInputToIso($("trends-to").value) || "");
    if (!(Number.isFinite(from) && Number.isFinite(to) && to > from)) {
      status(t("trends.badRange"), true);
      return;
    }
    Object.assign(view, { range: null, from, to });
    load();
  });
  $("trends-zoom-out").addEventListener("click", () => {
    const { from, to } = shown || window_();
    const span = to - from;
    const end = Math.min(Date.now(), to + span / 2);
    Object.assign(view, { range: null, from: end - 2 * span, to: end });
    load();
  });
  $("picker-filter").addEventListener("input", applyFilter);
  $("picker-tree").addEventListener("change", (event) => {
    const box = event.target.closest("input[type=checkbox][data-path]");
    if (!box) return;
    const path = box.dataset.path;
    if (box.checked) {
      if (view.tags.length >= MAX_TAGS) {
        box.checked = false;
        status(t("trends.tooMany", { n: MAX_TAGS }), true);
        return;
      }
      view.tags.push(path);
    } else {
      view.tags = view.tags.filter((p) => p !== path);
    }
    load();
  });
}

async function start() {
  try {
    for (const tag of await api.tags()) meta.set(tag.path, tag);
    // A shared link may name a tag that no longer exists: leave it out, not the view.
    view.tags = view.tags.filter((path) => meta.has(path));
  } catch (err) {
    status(t("trends.failed", { error: err.message }), true);
  }
  renderPicker();
  load();
}

function renderPicker() {
  const root = buildTree(meta.values());
  const selected = new Set(view.tags);
  const build = (node) => {
    if (node.tag && node.children.size === 0) {
      const label = document.createElement("label");
      label.title = node.path;
      label.dataset.path = node.path;
      const box = document.createElement("input");
      box.type = "checkbox";
      box.dataset.path = node.path;
      box.checked = selected.has(node.path);
      const name = document.createElement("span");
      name.textContent = humanize(node.name);
      label.append(box, name);
      const unit = unitLabel(node.tag.unit);
      if (unit) {
        const u = document.createElement("span");
        u.className = "tag-unit";
        u.textContent = unit;
        label.append(u);
      }
      return label;
    }
    const details = document.createElement("details");
    details.dataset.path = node.path;
    details.open = view.tags.some((p) => p.startsWith(`${node.path}/`));
    const summary = document.createElement("summary");
    summary.textContent = humanize(node.name);
    details.append(summary, ...sortedChildren(node).map(build));
    return details;
  };
  // A chain of single assets at the top (one enterprise, one site) is opened already.
  let node = root;
  while (node.children.size === 1 && ![...node.children.values()][0].tag) {
    node = [...node.children.values()][0];
  }
  $("picker-tree").replaceChildren(...sortedChildren(node).map(build));
}

function applyFilter() {
  const text = $("picker-filter").value.trim().toLowerCase();
  const tree = $("picker-tree");
  for (const label of tree.querySelectorAll("label[data-path]")) {
    label.hidden = Boolean(text) && !label.dataset.path.toLowerCase().includes(text);
  }
  for (const details of [...tree.querySelectorAll("details")].reverse()) {
    const visible = details.querySelector("label[data-path]:not([hidden])");
    details.hidden = !visible;
    if (text) details.open = Boolean(visible);
  }
}

function status(text, bad = false) {
  const el = $("trends-status");
  el.textContent = text;
  el.dataset.bad = bad ? "true" : "false";
}

function message(text) {
  $("trends-msg").hidden = !text;
  $("trends-msg").textContent = text || "";
}

function markRange() {
  for (const button of $("trends-range").querySelectorAll("[data-range]")) {
    button.setAttribute("aria-pressed", String(button.dataset.range === view.range));
  }
}

function setExports(params) {
  for (const [id, format] of [["export-csv", "csv"], ["export-parquet", "parquet"]]) {
    const link = $(id);
    if (!params) {
      link.removeAttribute("href");
      link.setAttribute("aria-disabled", "true");
      continue;
    }
    link.href = api.url("/api/v1/history", { ...params, format });
    link.setAttribute("aria-disabled", "false");
    link.title = t("trends.exportTitle", { format: format.toUpperCase() });
  }
}

/** The history query of a window; the chart and both downloads use it unchanged. */
function historyParams(from, to, bucket) {
  return {
    tags: view.tags.join(","),
    from: new Date(from).toISOString(),
    to: new Date(to).toISOString(),
    interval: bucket,
    // Averaging machine states means nothing: their buckets show the highest code instead.
    agg: bucket ? (view.tags.some(hasStates) ? "avg,max" : "avg") : null,
    limit: bucket ? null : RAW_LIMIT,
  };
}

async function load() {
  saveView();
  markRange();
  const { from, to } = window_();
  $("trends-from").value = msToLocalInput(from);
  $("trends-to").value = msToLocalInput(to);
  loading?.abort();
  if (!view.tags.length) {
    shown = null;
    setExports(null);
    chart?.clear();
    status("");
    message(t("trends.pick"));
    return;
  }
  if (!globalThis.echarts) {
    message(t("trends.noLibrary"));
    return;
  }
  const controller = new AbortController();
  loading = controller;
  const bucket = bucketFor(to - from);
  const params = historyParams(from, to, bucket);
  status(t("trends.loading"));
  let rows;
  try {
    rows = await api.get("/api/v1/history", { ...params, time_format: "ms" }, {
      signal: controller.signal,
    });
  } catch (err) {
    if (controller.signal.aborted) return;
    status(t("trends.failed", { error: err.message }), true);
    return;
  }
  if (controller.signal.aborted) return;
  loading = null;
  shown = { from, to, bucket };
  setExports(params);
  const vars = { start: formatDateTime(from), end: formatDateTime(to), bucket };
  const bucketKey = view.tags.some(hasStates) ? "trends.bucketedStates" : "trends.bucketed";
  status(bucket ? t(bucketKey, vars) : t("trends.raw", vars));
  message(rows.length ? null : t("trends.noData"));
  render(rows, bucket);
  document.body.dataset.loaded = `${from}-${to}-${bucket || "raw"}`;
}

function hasStates(path) {
  return Object.keys(meta.get(path)?.states || {}).length > 0;
}

/** Rows of the long history table as one [[ms, value]] series per tag. */
function seriesData(rows, bucket) {
  const byTag = new Map(view.tags.map((path) => [path, []]));
  for (const row of rows) {
    const data = byTag.get(row.path);
    if (!data) continue;
    let value = bucket ? (hasStates(row.path) ? row.max : row.avg) : row.value;
    if (!bucket && qualityOf(row.quality) === QUALITY.BAD) value = null;
    data.push([row.time, value ?? null]);
  }
  return byTag;
}

function render(rows, bucket) {
  if (!chart) {
    chart = globalThis.echarts.init($("trends-chart"), null, {
      renderer: "canvas",
      locale: locale().startsWith("zh") ? "ZH" : "EN",
    });
    new ResizeObserver(() => chart.resize()).observe($("trends-chart"));
    chart.on("datazoom", onZoom);
  }
  const theme = chartTheme();
  const data = seriesData(rows, bucket);
  const units = [...new Set(view.tags.map((p) => unitLabel(meta.get(p)?.unit)))];
  const left = units.filter((_, i) => i % 2 === 0).length;
  const right = units.length - left;
  const number = new Intl.NumberFormat(locale(), { maximumFractionDigits: 3 });
  const yAxis = units.map((unit, i) => {
    // An axis of machine states alone is labelled with the states' names.
    const onAxis = view.tags.filter((p) => unitLabel(meta.get(p)?.unit) === unit);
    const states = onAxis.every(hasStates) ? meta.get(onAxis[0])?.states : null;
    const same = states && onAxis.every((p) => sameStates(meta.get(p).states, states));
    return axisFor(unit, i, same ? states : null, theme, number);
  });
  const series = view.tags.map((path) => {
    const tag = meta.get(path);
    const unit = unitLabel(tag?.unit);
    const stepped = tag?.data_type === "int" || tag?.data_type === "bool";
    return {
      id: path,
      name: humanize(path.split("/").slice(-2).join(" · ")),
      type: "line",
      yAxisIndex: units.indexOf(unit),
      data: data.get(path),
      showSymbol: false,
      step: stepped && !bucket ? "end" : false,
      connectNulls: false,
      lineStyle: { width: 1.6 },
      emphasis: { disabled: true },
    };
  });
  chart.setOption(
    {
      animation: false,
      backgroundColor: "transparent",
      textStyle: { fontFamily: theme.font },
      legend: { top: 0, textStyle: theme.axisText, type: "scroll" },
      grid: { left: 20 + left * AXIS_GAP, right: 20 + Math.max(right, 0) * AXIS_GAP, top: 44, bottom: 60 },
      tooltip: {
        trigger: "axis",
        ...theme.tooltip,
        axisPointer: { lineStyle: { color: theme.color("--text-muted") } },
        formatter: (items) => tooltip(items, number),
      },
      xAxis: {
        type: "time",
        min: shown.from,
        max: shown.to,
        axisLabel: { ...theme.axisText, hideOverlap: true },
        axisLine: { lineStyle: { color: theme.color("--border-strong") } },
        splitLine: { show: false },
      },
      yAxis,
      dataZoom: [
        { type: "inside", xAxisIndex: 0, filterMode: "none" },
        {
          type: "slider",
          xAxisIndex: 0,
          filterMode: "none",
          bottom: 8,
          height: 22,
          textStyle: theme.axisText,
          borderColor: theme.color("--border-strong"),
        },
      ],
      series,
    },
    { notMerge: true },
  );
}

function axisFor(unit, i, states, theme, number) {
  return {
    type: "value",
    scale: !states,
    position: i % 2 === 0 ? "left" : "right",
    offset: Math.floor(i / 2) * AXIS_GAP,
    name: unit || t("trends.noUnit"),
    nameTextStyle: theme.axisText,
    axisLine: { show: true, lineStyle: { color: theme.color("--border-strong") } },
    axisLabel: {
      ...theme.axisText,
      formatter: states ? (v) => states[String(v)] ?? "" : (v) => number.format(v),
    },
    minInterval: states ? 1 : 0,
    interval: states ? 1 : undefined,
    min: states ? 0 : undefined,
    max: states ? Math.max(...Object.keys(states).map(Number)) + 0.5 : undefined,
    splitLine: i === 0 ? theme.splitLine : { show: false },
  };
}

function sameStates(a, b) {
  return JSON.stringify(a) === JSON.stringify(b);
}

function tooltip(items, number) {
  if (!items.length) return "";
  const ts = items[0].value[0];
  const body = items
    .map((item) => {
      const unit = unitLabel(meta.get(item.seriesId)?.unit);
      const v = item.value[1];
      const states = meta.get(item.seriesId)?.states || {};
      let text = v === null || v === undefined ? "—" : `${number.format(v)} ${unit}`.trim();
      if (hasStates(item.seriesId) && v !== null && v !== undefined) {
        text = states[String(Math.round(v))] ?? text;
      }
      return (
        `<span class="tip-k">${escapeHtml(item.seriesName)}</span>` +
        `<span class="tip-v">${escapeHtml(text)}</span>`
      );
    })
    .join("");
  return `<div class="tip-time">${escapeHtml(formatDateTime(ts))}</div><div class="tip-grid">${body}</div>`;
}

/** After a zoom settles, show the zoomed window on its own bucket (finer when narrower). */
function onZoom() {
  clearTimeout(zoomTimer);
  zoomTimer = setTimeout(() => {
    if (!shown || !chart) return;
    const zoom = chart.getOption().dataZoom?.[0];
    if (!zoom) return;
    const span = shown.to - shown.from;
    const from = Math.round(shown.from + (span * zoom.start) / 100);
    const to = Math.round(shown.from + (span * zoom.end) / 100);
    if (!(to > from) || (from === shown.from && to === shown.to)) return;
    Object.assign(view, { range: null, from, to });
    load();
  }, 350);
}
