// The OEE and downtime page (/oee): one query (scope, grouping, range) drives four API
// reads — OEE over the whole range, OEE per group, the downtime Pareto and the stop list —
// and the stop list lets an operator give a stop its reason (PUT, audited). The query is
// kept in the URL so a view can be shared.

import "./strings/oee.js";
import {
  AnalysisApi,
  cell,
  chartTheme,
  escapeHtml,
  formatDuration,
  formatInstant,
  formatInteger,
  formatPercent,
  localInputToIso,
  msToLocalInput,
  readQuery,
  writeQuery,
} from "./analysis-common.js";
import { chartLocale, humanize } from "./format.js";
import { applyI18n, initLocale, locale, t } from "./i18n.js";
import { bindActingUser } from "./acting-user.js";
import { storageSet } from "./storage.js";

const $ = (id) => document.getElementById(id);
const NAME_KEY = "shopfloor.operator"; // the name the alarm panel remembers too
const LOSSES = [
  "breakdowns_s",
  "setup_adjustments_s",
  "small_stops_s",
  "reduced_speed_s",
  "rejects_s",
];
const RANGES = ["-8h", "-24h", "-7d", "-30d"];
const GROUPS = ["shift", "day", "hour"];
const PARETO_BY = ["reason", "equipment", "shift"];
const MAX_STOP_ROWS = 500;

await initLocale();
applyI18n(document);
document.title = t("oee.pageTitle");

const api = new AnalysisApi(document.body.dataset.base || "");
const view = readView();
const meta = new Map(); // tag path -> tag metadata (state and reason labels)
let paretoChart = null;
let generation = 0; // answers of an older query are dropped

setupControls();
start();

async function start() {
  try {
    const [tree, tags] = await Promise.all([api.get("/api/v1/assets"), api.tags()]);
    for (const tag of tags) meta.set(tag.path, tag);
    fillScopes(tree);
  } catch (err) {
    status(t("oee.failed", { error: err.message }), true);
  }
  load();
}

function readView() {
  const q = readQuery();
  const pick = (value, allowed, fallback) => (allowed.includes(value) ? value : fallback);
  const custom = q.get("from") && q.get("to");
  return {
    scope: q.get("scope") || "",
    group: pick(q.get("group"), GROUPS, "shift"),
    range: custom ? "custom" : pick(q.get("range"), RANGES, "-24h"),
    from: custom ? q.get("from") : null,
    to: custom ? q.get("to") : null,
    by: pick(q.get("by"), PARETO_BY, "reason"),
  };
}

function saveView() {
  writeQuery({
    scope: view.scope,
    group: view.group,
    range: view.range === "custom" ? null : view.range,
    from: view.range === "custom" ? view.from : null,
    to: view.range === "custom" ? view.to : null,
    by: view.by,
  });
}

function setupControls() {
  $("oee-group").value = view.group;
  $("oee-range").value = view.range;
  $("pareto-by").value = view.by;
  if (view.range === "custom") {
    $("oee-from").value = msToLocalInput(Date.parse(view.from));
    $("oee-to").value = msToLocalInput(Date.parse(view.to));
  }
  showCustom();
  $("oee-range").addEventListener("change", () => {
    if ($("oee-range").value === "custom" && !$("oee-from").value) {
      const now = Date.now();
      $("oee-from").value = msToLocalInput(now - 24 * 3600e3);
      $("oee-to").value = msToLocalInput(now);
    }
    showCustom();
  });
  $("oee-query").addEventListener("submit", (event) => {
    event.preventDefault();
    const range = $("oee-range").value;
    if (range === "custom") {
      const from = localInputToIso($("oee-from").value);
      const to = localInputToIso($("oee-to").value);
      if (!from || !to) return status(t("oee.needRange"), true);
      if (Date.parse(to) <= Date.parse(from)) return status(t("oee.badRange"), true);
      Object.assign(view, { from, to });
    }
    Object.assign(view, {
      scope: $("oee-scope").value,
      group: $("oee-group").value,
      range,
    });
    load();
  });
  // Choosing a scope, a grouping or a preset shows it at once; a new custom range waits
  // for its from and to, and Show.
  for (const id of ["oee-scope", "oee-group"]) {
    $(id).addEventListener("change", () => $("oee-query").requestSubmit());
  }
  $("oee-range").addEventListener("change", () => {
    if ($("oee-range").value !== "custom") $("oee-query").requestSubmit();
  });
  $("pareto-by").addEventListener("change", () => {
    view.by = $("pareto-by").value;
    saveView();
    loadPareto(generation).catch((err) => status(t("oee.failed", { error: err.message }), true));
  });
  bindActingUser($("stops-operator"), api);
  $("stops-table").addEventListener("change", (event) => {
    const select = event.target.closest("select[data-reason]");
    if (select) assignReason(select);
  });
}

function showCustom() {
  const custom = $("oee-range").value === "custom";
  $("oee-from-field").hidden = !custom;
  $("oee-to-field").hidden = !custom;
}

/** Lines and machines that have stop events (a `state` tag), from the asset tree. */
function fillScopes(tree) {
  const lines = [];
  const machines = [];
  const walk = (node, line) => {
    const here = node.level === "line" ? node : line;
    if (node.level === "equipment" && (node.tags || []).includes("state")) {
      machines.push(node);
      if (here && !lines.includes(here)) lines.push(here);
    }
    for (const child of node.children || []) walk(child, here);
  };
  walk(tree, null);
  const select = $("oee-scope");
  const group = (label, nodes, kind) => {
    const optgroup = document.createElement("optgroup");
    optgroup.label = label;
    for (const node of nodes) {
      const option = document.createElement("option");
      option.value = `${kind}:${node.path}`;
      option.textContent = humanize(node.name);
      option.title = node.path;
      optgroup.append(option);
    }
    return optgroup;
  };
  select.append(group(t("oee.lines"), lines, "line"), group(t("oee.machines"), machines, "equipment"));
  select.value = view.scope;
  if (select.value !== view.scope) view.scope = "";
}

/** The API parameters of the page's query. */
function query() {
  const params = {};
  const cut = view.scope.indexOf(":");
  if (cut > 0) params[view.scope.slice(0, cut)] = view.scope.slice(cut + 1);
  if (view.range === "custom") {
    params.start = view.from;
    params.end = view.to;
  } else {
    params.start = view.range;
    params.end = "now";
  }
  return params;
}

async function load() {
  saveView();
  const mine = ++generation;
  status(t("oee.loading"));
  const params = query();
  // A scope without OEE machines (conveyors, utilities) still has stops: the OEE answer's
  // refusal is shown in its place and the downtime below is not held back by it.
  const oee = Promise.all([
    api.get("/api/v1/oee", { ...params, group: "none" }),
    api.get("/api/v1/oee", { ...params, group: view.group }),
  ]).catch((err) => {
    if (err.status === 422 && /ideal_cycle_s/.test(err.message)) return null;
    throw err;
  });
  try {
    const [answers] = await Promise.all([oee, loadPareto(mine), loadStops(mine)]);
    if (mine !== generation) return;
    const [total, grouped] = answers || [null, null];
    renderSummary(total?.rows[0] || null, { noOee: !answers });
    renderGroups(grouped?.rows || []);
    const range = total || { start: params.start, end: params.end };
    const [from, to] = [formatInstant(range.start), formatInstant(range.end)];
    status(from && to ? t("oee.between", { start: from, end: to }) : "");
    document.body.dataset.loaded = String(mine);
  } catch (err) {
    if (mine === generation) status(t("oee.failed", { error: err.message }), true);
  }
}

function status(text, bad = false) {
  const el = $("oee-status");
  el.textContent = text;
  el.dataset.bad = bad ? "true" : "false";
}

function showFigure(key, value) {
  const dd = document.querySelector(`#oee-figures [data-figure="${key}"] dd`);
  dd.textContent = formatPercent(value);
  dd.dataset.value = value === null || value === undefined ? "" : String(value);
}

function renderSummary(row, { noOee = false } = {}) {
  for (const key of ["oee", "availability", "performance", "quality"]) showFigure(key, row?.[key]);
  const planned = row?.planned_s || 0;
  $("oee-formula").textContent = planned
    ? t("oee.formula", {
        a: formatPercent(row.availability),
        p: formatPercent(row.performance),
        q: formatPercent(row.quality),
        oee: formatPercent(row.oee),
      })
    : t(noOee ? "oee.noOee" : "oee.noPlan");
  $("oee-capped").hidden = !row?.performance_capped;
  const body = $("oee-losses").tBodies[0];
  body.replaceChildren(
    ...LOSSES.map((key) => {
      const seconds = row?.losses?.[key] ?? null;
      const tr = document.createElement("tr");
      tr.dataset.loss = key;
      tr.dataset.seconds = seconds === null ? "" : String(seconds);
      const th = document.createElement("th");
      th.scope = "row";
      th.textContent = t(`oee.loss.${key}`);
      tr.append(
        th,
        cell(formatDuration(seconds), "num"),
        cell(planned && seconds !== null ? formatPercent(seconds / planned) : "–", "num"),
      );
      return tr;
    }),
  );
  const counts = [
    ["planned", formatDuration(row?.planned_s)],
    ["run", formatDuration(row?.run_s)],
    ["parts", `${formatInteger(row?.good)} / ${formatInteger(row?.total)}`],
    ["stops", `${formatInteger(row?.stops)} (${formatInteger(row?.micro_stops)})`],
  ];
  $("oee-counts").replaceChildren(
    ...counts.map(([key, text]) => {
      const div = document.createElement("div");
      div.dataset.count = key;
      const dt = document.createElement("dt");
      dt.textContent = t(`oee.${key}`);
      const dd = document.createElement("dd");
      dd.textContent = text;
      div.append(dt, dd);
      return div;
    }),
  );
}

function groupLabel(row) {
  if (view.group === "shift") {
    return row.shift ? `${row.shift} · ${formatInstant(row.shift_start)}` : t("oee.outsideShifts");
  }
  if (view.group === "day") {
    const [y, m, d] = String(row.day).split("-").map(Number);
    return new Date(y, m - 1, d).toLocaleDateString(locale(), { dateStyle: "medium" });
  }
  return formatInstant(row.hour);
}

function renderGroups(rows) {
  const body = $("oee-groups").tBodies[0];
  if (!rows.length) {
    const tr = document.createElement("tr");
    const td = cell(t("oee.noRows"), "empty-row");
    td.colSpan = 7;
    tr.append(td);
    body.replaceChildren(tr);
    return;
  }
  body.replaceChildren(
    ...rows.map((row) => {
      const tr = document.createElement("tr");
      tr.dataset.start = row.start;
      tr.append(
        cell(groupLabel(row)),
        cell(formatPercent(row.oee), "num strong"),
        cell(formatPercent(row.availability), "num"),
        cell(formatPercent(row.performance), "num"),
        cell(formatPercent(row.quality), "num"),
        cell(`${formatInteger(row.good)} / ${formatInteger(row.total)}`, "num"),
        cell(formatInteger(row.stops), "num"),
      );
      return tr;
    }),
  );
}

async function loadPareto(mine) {
  const answer = await api.get("/api/v1/downtime/pareto", { ...query(), by: view.by });
  if (mine !== generation) return;
  renderPareto(answer.rows || []);
}

function paretoLabel(row) {
  if (view.by === "reason") return row.key === "0" ? t("pareto.noReason") : row.label || row.key;
  if (view.by === "shift") return row.label || t("oee.outsideShifts");
  return humanize(row.key);
}

function renderPareto(allRows) {
  const message = $("pareto-msg");
  const rows = allRows.filter((row) => row.downtime_s > 0);
  message.hidden = rows.length > 0;
  message.textContent = rows.length ? "" : t("pareto.none");
  const echarts = globalThis.echarts;
  if (!echarts) return;
  if (!paretoChart) {
    paretoChart = echarts.init($("pareto-chart"), null, {
      renderer: "canvas",
      locale: chartLocale(),
    });
    new ResizeObserver(() => paretoChart.resize()).observe($("pareto-chart"));
  }
  const theme = chartTheme();
  const hours = new Intl.NumberFormat(locale(), { maximumFractionDigits: 2 });
  const percent = new Intl.NumberFormat(locale(), { style: "percent", maximumFractionDigits: 0 });
  paretoChart.setOption(
    {
      animation: false,
      backgroundColor: "transparent",
      textStyle: { fontFamily: theme.font },
      grid: { left: 12, right: 12, top: 36, bottom: 8, containLabel: true },
      legend: { top: 0, textStyle: theme.axisText },
      tooltip: {
        trigger: "axis",
        ...theme.tooltip,
        formatter: (items) => {
          const row = rows[items[0]?.dataIndex];
          if (!row) return "";
          return (
            `<div class="tip-time">${escapeHtml(paretoLabel(row))}</div><div class="tip-grid">` +
            `<span class="tip-k">${escapeHtml(t("pareto.downtime"))}</span>` +
            `<span class="tip-v">${escapeHtml(formatDuration(row.downtime_s))}</span>` +
            `<span class="tip-k">${escapeHtml(t("pareto.cumulative"))}</span>` +
            `<span class="tip-v">${escapeHtml(formatPercent(row.cumulative_share))}</span>` +
            `<span class="tip-k"></span>` +
            `<span class="tip-v">${escapeHtml(t("pareto.stops", { n: formatInteger(row.stops) }))}</span>` +
            `</div>`
          );
        },
      },
      xAxis: {
        type: "category",
        data: rows.map(paretoLabel),
        axisLabel: { ...theme.axisText, interval: 0, hideOverlap: true },
        axisLine: { lineStyle: { color: theme.color("--border-strong") } },
      },
      yAxis: [
        {
          type: "value",
          name: t("pareto.downtime"),
          nameTextStyle: { ...theme.axisText, align: "left" },
          axisLabel: { ...theme.axisText, formatter: (v) => hours.format(v) },
          splitLine: theme.splitLine,
        },
        {
          type: "value",
          min: 0,
          max: 100,
          name: t("pareto.cumulative"),
          nameTextStyle: { ...theme.axisText, align: "right" },
          axisLabel: { ...theme.axisText, formatter: (v) => percent.format(v / 100) },
          splitLine: { show: false },
        },
      ],
      series: [
        {
          id: "downtime",
          name: t("pareto.downtime"),
          type: "bar",
          data: rows.map((row) => row.downtime_s / 3600),
          itemStyle: { color: theme.color("--state-down") },
          barMaxWidth: 48,
        },
        {
          id: "cumulative",
          name: t("pareto.cumulative"),
          type: "line",
          yAxisIndex: 1,
          data: rows.map((row) => row.cumulative_share * 100),
          itemStyle: { color: theme.color("--accent") },
          lineStyle: { color: theme.color("--accent"), width: 2 },
        },
      ],
    },
    { notMerge: true },
  );
}

async function loadStops(mine) {
  const answer = await api.get("/api/v1/downtime", query());
  if (mine !== generation) return;
  renderStops(answer.events || []);
}

function renderStops(events) {
  const sorted = [...events].sort((a, b) => b.start_ns - a.start_ns);
  $("stops-sub").textContent =
    sorted.length > MAX_STOP_ROWS
      ? t("stops.countCut", { n: formatInteger(sorted.length), shown: formatInteger(MAX_STOP_ROWS) })
      : t("stops.count", { n: formatInteger(sorted.length) });
  const body = $("stops-table").tBodies[0];
  if (!sorted.length) {
    const tr = document.createElement("tr");
    const td = cell(t("stops.none"), "empty-row");
    td.colSpan = 7;
    tr.append(td);
    body.replaceChildren(tr);
    return;
  }
  body.replaceChildren(...sorted.slice(0, MAX_STOP_ROWS).map(stopRow));
}

function stopRow(event) {
  const tr = document.createElement("tr");
  tr.dataset.equipment = event.equipment;
  // The ISO start keeps every nanosecond; start_ns does not survive a JavaScript number.
  tr.dataset.start = event.start;
  if (event.ongoing) tr.dataset.ongoing = "true";
  const start = event.start_known
    ? formatInstant(event.start)
    : t("stops.before", { time: formatInstant(event.start) });
  const duration = formatDuration(event.duration_s) + (event.ongoing ? ` (${t("stops.ongoing")})` : "");
  const states = meta.get(`${event.path}/state`)?.states || {};
  const loss = t(`loss.${event.loss}`) + (event.micro_stop ? ` · ${t("stops.micro")}` : "");
  const a = event.assigned;
  const assigned = a
    ? t("stops.assignedBy", { user: a.user, time: formatInstant(a.at) }) +
      (a.comment ? ` · ${a.comment}` : "")
    : "";
  const machineCell = cell(humanize(event.equipment));
  machineCell.title = event.path;
  tr.append(
    machineCell,
    cell(start),
    cell(duration, "num"),
    cell(states[String(event.state)] || t("stops.stateUnknown")),
    reasonCell(event, start),
    cell(loss),
    cell(assigned),
  );
  return tr;
}

/** A select of the machine's reason codes; a stop whose start is not known gets the label. */
function reasonCell(event, startText) {
  const td = document.createElement("td");
  const codes = meta.get(`${event.path}/down_reason`)?.states || {};
  const label = event.reason_label || (event.reason ? String(event.reason) : t("stops.noReason"));
  if (!event.start_known || !Object.keys(codes).length) {
    td.textContent = label;
    return td;
  }
  const select = document.createElement("select");
  select.dataset.reason = "";
  select.setAttribute(
    "aria-label",
    t("stops.reasonFor", { machine: humanize(event.equipment), time: startText }),
  );
  const known = new Set();
  for (const [code, text] of Object.entries(codes).sort((a, b) => Number(a[0]) - Number(b[0]))) {
    const option = document.createElement("option");
    option.value = code;
    option.textContent = Number(code) === 0 ? t("stops.noReason") : text;
    known.add(Number(code));
    select.append(option);
  }
  if (!known.has(event.reason)) {
    const option = document.createElement("option");
    option.value = String(event.reason);
    option.textContent = label;
    select.append(option);
  }
  select.value = String(event.reason);
  select.dataset.current = String(event.reason);
  td.append(select);
  return td;
}

async function assignReason(select) {
  const tr = select.closest("tr");
  const user = $("stops-operator").value.trim();
  const machine = humanize(tr.dataset.equipment);
  const time = tr.cells[1].textContent;
  const out = $("stops-status");
  if (!user) {
    select.value = select.dataset.current;
    out.textContent = t("stops.needName");
    out.dataset.bad = "true";
    $("stops-operator").focus();
    return;
  }
  storageSet(NAME_KEY, user);
  select.disabled = true;
  const reason = Number(select.value);
  try {
    const equipment = encodeURIComponent(tr.dataset.equipment);
    const path = `/api/v1/downtime/${equipment}/${encodeURIComponent(tr.dataset.start)}`;
    const comment = $("stops-comment").value.trim();
    const event = await api.put(path, { reason, user, comment });
    $("stops-comment").value = "";
    select.dataset.current = String(event.reason);
    out.textContent = t("stops.saved", {
      machine,
      time,
      reason: select.selectedOptions[0]?.textContent ?? String(reason),
    });
    out.dataset.bad = "false";
    load(); // the stop's hours are computed again with the new reason
  } catch (err) {
    select.value = select.dataset.current;
    out.textContent = t("stops.failed", { error: err.message });
    out.dataset.bad = "true";
  } finally {
    select.disabled = false;
  }
}
