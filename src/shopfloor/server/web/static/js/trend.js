// The trend panel: a tag's history from the series endpoint (bucketed for long ranges),
// extended live by the points the websocket brings. Apache ECharts draws it; the library is
// a classic script from /static/vendor that sets globalThis.echarts.

import { assetOf, nameOf } from "./assets.js";
import {
  QUALITY,
  chartLocale,
  decimalsFor,
  formatAxisNumber,
  formatDateTime,
  formatFixed,
  humanize,
  qualityOf,
  stateKey,
  unitLabel,
} from "./format.js";
import { t } from "./i18n.js";

// Short ranges show raw points; long ones ask the historian for buckets so the browser
// draws a few hundred points, not tens of thousands.
export const RANGES = Object.freeze({
  "15m": { ms: 15 * 60e3, bucket: null },
  "1h": { ms: 60 * 60e3, bucket: "15s" },
  "8h": { ms: 8 * 60 * 60e3, bucket: "1m" },
  "24h": { ms: 24 * 60 * 60e3, bucket: "5m" },
});

const RENDER_EVERY_MS = 250;

export class TrendPanel {
  /** `onChange({path, rangeKey})` runs when a trend opens, closes or changes range. */
  constructor(elements, { api, store, onChange }) {
    this.el = elements;
    this.api = api;
    this.store = store;
    this.onChange = onChange;
    this.path = null;
    this.meta = null;
    this.rangeKey = "15m";
    this.chart = null;
    this.series = null; // {mode: "raw" | "bucketed" | "bucketed-state", value or avg/min/max}
    this.pending = []; // live points that arrived while the history was loading
    this.loading = null; // AbortController of the request in flight
    this.renderTimer = null;

    elements.rangeGroup.addEventListener("click", (event) => {
      const button = event.target.closest("[data-range]");
      if (button) this.setRange(button.dataset.range);
    });
    elements.closeButton.addEventListener("click", () => this.close());
    document.addEventListener("keydown", (event) => {
      if (event.key === "Escape" && this.path) this.close();
    });
    store.addEventListener("values", (event) => this.onPoints(event.detail.points));
  }

  get isOpen() {
    return this.path !== null;
  }

  open(path, { rangeKey } = {}) {
    this.path = path;
    this.meta = this.store.tags.get(path) || { path, name: nameOf(path) };
    if (rangeKey && RANGES[rangeKey]) this.rangeKey = rangeKey;
    this.el.panel.hidden = false;
    const unit = unitLabel(this.meta.unit);
    const machine = humanize(assetOf(path).split("/").at(-1) || "");
    const name = humanize(this.meta.name ?? nameOf(path)) + (unit ? ` (${unit})` : "");
    this.el.title.textContent = machine ? `${machine} · ${name}` : name;
    this.el.title.title = path;
    this.markRange();
    this.changed();
    if (!this.ensureChart()) return;
    this.load();
  }

  changed() {
    this.onChange?.({ path: this.path, rangeKey: this.rangeKey });
  }

  close() {
    this.loading?.abort();
    this.path = null;
    this.series = null;
    this.el.panel.hidden = true;
    this.chart?.clear();
    this.changed();
  }

  setRange(key) {
    if (!RANGES[key] || key === this.rangeKey) return;
    this.rangeKey = key;
    this.markRange();
    if (this.path) this.load();
    this.changed();
  }

  markRange() {
    for (const button of this.el.rangeGroup.querySelectorAll("[data-range]")) {
      button.setAttribute("aria-pressed", String(button.dataset.range === this.rangeKey));
    }
  }

  ensureChart() {
    const echarts = globalThis.echarts;
    if (!echarts) {
      this.message(t("trend.noLibrary"));
      return false;
    }
    if (!this.chart) {
      this.chart = echarts.init(this.el.chart, null, {
        renderer: "canvas",
        locale: chartLocale(),
      });
      new ResizeObserver(() => this.chart.resize()).observe(this.el.chart);
    }
    return true;
  }

  message(text) {
    this.el.message.hidden = !text;
    this.el.message.textContent = text || "";
  }

  async load() {
    this.loading?.abort();
    const controller = new AbortController();
    this.loading = controller;
    const path = this.path;
    const range = RANGES[this.rangeKey];
    this.series = null;
    this.pending = [];
    this.chart.clear();
    this.message(t("trend.loading"));
    this.el.sub.textContent = !range.bucket
      ? t("trend.raw")
      : hasStates(this.meta)
        ? t("trend.bucketedState", { bucket: range.bucket })
        : t("trend.bucketed", { bucket: range.bucket });
    let body;
    try {
      // The window ends at the newest data time, not at this tablet's (or the server's)
      // clock: a demo replaying yesterday, or a plant whose devices lag, still shows its
      // last 15 minutes of data. Before any data, the server's clock decides.
      const anchor = await this.store.whenData(2000);
      if (controller.signal.aborted) return;
      const span = Number.isFinite(anchor)
        ? { start: isoTime(anchor - range.ms), end: isoTime(anchor + 1) }
        : { start: `-${this.rangeKey}` };
      body = await this.api.series(path, {
        ...span,
        bucket: range.bucket,
        agg: range.bucket ? "avg,min,max" : null,
        signal: controller.signal,
      });
    } catch (err) {
      if (controller.signal.aborted) return;
      this.message(t("trend.failed", { error: err.message }));
      return;
    }
    if (controller.signal.aborted || path !== this.path) return;
    this.loading = null;
    this.series = fromResponse(body);
    // Averaging machine states means nothing: their buckets show the highest code instead.
    if (this.series.mode === "bucketed" && hasStates(this.meta)) this.series.mode = "bucketed-state";
    for (const [ts, point] of this.pending) this.append(ts, point);
    this.pending = [];
    this.message(seriesLength(this.series) ? null : t("trend.noData"));
    this.render();
  }

  onPoints(points) {
    if (!this.path) return;
    for (const [path, point] of points) {
      if (path !== this.path) continue;
      if (this.series) this.append(point.ts, point);
      else this.pending.push([point.ts, point]);
    }
    // Other tags' points move the data clock too, which stretches the held last value.
    if (this.series) this.scheduleRender();
  }

  /** Add one live point after the history; older or repeated points are ignored. */
  append(ts, point) {
    const line = liveColumn(this.series);
    const last = line.length ? line[line.length - 1][0] : -Infinity;
    if (!(ts > last)) return;
    const value = qualityOf(point.quality) === QUALITY.BAD ? null : point.value;
    line.push([ts, value]);
    // Drop what has scrolled out of the window (measured on data time, not the tablet's clock).
    const oldest = ts - RANGES[this.rangeKey].ms;
    for (const key of ["value", "avg", "min", "max"]) {
      const column = this.series[key];
      if (!column) continue;
      let cut = 0;
      while (cut < column.length - 1 && column[cut][0] < oldest) cut += 1;
      if (cut) column.splice(0, cut);
    }
    if (line.length === 1) this.message(null);
  }

  scheduleRender() {
    if (this.renderTimer) return;
    this.renderTimer = setTimeout(() => {
      this.renderTimer = null;
      this.render();
    }, RENDER_EVERY_MS);
  }

  render() {
    if (!this.chart || !this.series || !this.path) return;
    this.chart.setOption(this.option(), { notMerge: false, lazyUpdate: true });
  }

  option() {
    const css = getComputedStyle(document.documentElement);
    const color = (name) => css.getPropertyValue(name).trim();
    const meta = this.meta;
    const rangeMs = RANGES[this.rangeKey].ms;
    const states = hasStates(meta) ? meta.states : null;
    const stepped = Boolean(states) || meta.data_type === "int" || meta.data_type === "bool";
    const decimals = decimalsFor(meta, null);
    const unit = unitLabel(meta.unit);
    const axisText = { color: color("--text-muted"), fontSize: 11 };
    const splitLine = { lineStyle: { color: color("--chart-grid") } };
    const series = [];
    const line = color("--accent");

    if (this.series.mode !== "bucketed") {
      series.push({
        id: "value",
        name: t("trend.value"),
        type: "line",
        data: liveColumn(this.series),
        showSymbol: false,
        step: stepped ? "end" : false,
        connectNulls: false,
        lineStyle: {
          width: meta.name === "state" ? 3 : 1.6,
          color: states && meta.name === "state" ? undefined : line,
        },
        itemStyle: { color: line },
        areaStyle: stepped ? undefined : { color: color("--chart-area") },
      });
    } else {
      // The min–max band is a transparent "min" line with the "max − min" difference
      // stacked on top of it and filled.
      const diff = this.series.max.map(([ts, hi], i) => {
        const lo = this.series.min[i]?.[1];
        return [ts, hi === null || lo === null || lo === undefined ? null : hi - lo];
      });
      series.push(
        {
          id: "min",
          name: t("trend.min"),
          type: "line",
          data: this.series.min,
          stack: "band",
          showSymbol: false,
          lineStyle: { opacity: 0 },
          silent: true,
        },
        {
          id: "band",
          name: "band",
          type: "line",
          data: diff,
          stack: "band",
          showSymbol: false,
          lineStyle: { opacity: 0 },
          areaStyle: { color: color("--chart-band") },
          silent: true,
        },
        {
          id: "avg",
          name: t("trend.avg"),
          type: "line",
          data: this.series.avg,
          showSymbol: false,
          step: stepped ? "end" : false,
          lineStyle: { width: 1.6, color: line },
          itemStyle: { color: line },
        },
      );
    }

    // Report-by-exception tags send nothing while unchanged: hold the last value up to the
    // newest data time the page has seen, dashed, so a quiet tag does not look stale.
    const mainIndex = series.length - 1;
    const tail = liveColumn(this.series).at(-1);
    const now = this.store.lastDataTs;
    if (tail && tail[1] !== null && now > tail[0]) {
      series.push({
        id: "hold",
        type: "line",
        data: [tail, [now, tail[1]]],
        showSymbol: false,
        silent: true,
        step: stepped ? "end" : false,
        lineStyle: {
          width: 1.2,
          type: "dashed",
          color: states && meta.name === "state" ? undefined : line,
          opacity: 0.7,
        },
        tooltip: { show: false },
      });
    }

    // Enumerated machine states: colour each step of the line with its state's colour.
    const visualMap =
      states && meta.name === "state"
      ? {
          show: false,
          seriesIndex: series.length > mainIndex + 1 ? [mainIndex, mainIndex + 1] : mainIndex,
          dimension: 1,
          pieces: Object.keys(states).map((key) => ({
            gte: Number(key) - 0.5,
            lt: Number(key) + 0.5,
            color: color(`--state-${stateKey(key)}`),
          })),
          outOfRange: { color: color("--state-unknown") },
        }
      : undefined;

    return {
      animation: false,
      visualMap,
      backgroundColor: "transparent",
      textStyle: { fontFamily: css.getPropertyValue("--font-ui") },
      grid: { left: 12, right: 20, top: 26, bottom: 8, containLabel: true },
      tooltip: {
        trigger: "axis",
        className: "chart-tip",
        backgroundColor: color("--panel-raised"),
        borderColor: color("--border-strong"),
        textStyle: { color: color("--text"), fontSize: 12 },
        axisPointer: { lineStyle: { color: color("--text-muted") } },
        formatter: (items) => this.tooltip(items, { decimals, unit, states }),
      },
      xAxis: {
        type: "time",
        min: (extent) => extent.max - rangeMs,
        axisLabel: { ...axisText, hideOverlap: true },
        axisLine: { lineStyle: { color: color("--border-strong") } },
        splitLine: { show: false },
      },
      yAxis: {
        type: "value",
        scale: !states,
        name: unit,
        nameTextStyle: { ...axisText, align: "right" },
        axisLabel: {
          ...axisText,
          formatter: states ? (v) => states[String(v)] ?? "" : (v) => formatAxisNumber(v),
        },
        minInterval: stepped ? 1 : 0,
        interval: states ? 1 : undefined,
        min: states ? 0 : undefined,
        max: states ? Math.max(...Object.keys(states).map(Number)) + 0.5 : undefined,
        splitLine,
      },
      series,
    };
  }

  /** Tooltip HTML built from classes only (a strict CSP forbids inline style attributes). */
  tooltip(items, { decimals, unit, states }) {
    if (!items.length) return "";
    const ts = items[0].value[0];
    const byId = Object.fromEntries(items.map((item) => [item.seriesId, item.value[1]]));
    const fmt = (v) => {
      if (v === null || v === undefined) return "—";
      if (states) return states[String(Math.round(v))] ?? String(v);
      return formatFixed(v, decimals);
    };
    const rows = [];
    if (this.series.mode !== "bucketed") rows.push([t("trend.value"), fmt(byId.value)]);
    else {
      const lo = byId.min;
      const hi = lo === null || lo === undefined || byId.band == null ? null : lo + byId.band;
      rows.push([t("trend.avg"), fmt(byId.avg)], [t("trend.min"), fmt(lo)], [t("trend.max"), fmt(hi)]);
    }
    const body = rows
      .map(
        ([k, v]) =>
          `<span class="tip-k">${escapeHtml(k)}</span>` +
          `<span class="tip-v">${escapeHtml(v)} ${escapeHtml(unit)}</span>`,
      )
      .join("");
    return `<div class="tip-time">${escapeHtml(formatDateTime(ts))}</div><div class="tip-grid">${body}</div>`;
  }
}

/** The series endpoint's columns as [[ms, value]] arrays for ECharts. */
export function fromResponse(body) {
  const columns = body?.columns || {};
  const ts = (columns.ts || []).map((s) => (typeof s === "number" ? s : Date.parse(s)));
  if (body?.bucket) {
    const pick = (key) => ts.map((ms, i) => [ms, columns[key]?.[i] ?? null]);
    return { mode: "bucketed", avg: pick("avg"), min: pick("min"), max: pick("max") };
  }
  const values = columns.value || [];
  const quality = columns.quality || [];
  return {
    mode: "raw",
    value: ts.map((ms, i) => [ms, qualityOf(quality[i]) === QUALITY.BAD ? null : values[i] ?? null]),
  };
}

/** The column that live points extend and that the main line draws. */
function liveColumn(series) {
  if (series.mode === "raw") return series.value;
  return series.mode === "bucketed-state" ? series.max : series.avg;
}

function seriesLength(series) {
  return liveColumn(series).length;
}

function hasStates(meta) {
  return Boolean(meta?.states && Object.keys(meta.states).length);
}

function isoTime(ms) {
  return new Date(ms).toISOString();
}

function escapeHtml(s) {
  return String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}
