// Alarm performance of a period, from /api/v1/alarms/kpis, beside the ISA-18.2 and
// EEMUA 191 targets: alarm rate per 10 minutes, floods, the top 10 bad actors and the
// chattering alarms. Each figure is marked ok / warn / bad against its target.

import { formatDateTime, formatNumber, formatShare } from "./format.js";
import { t } from "./i18n.js";

// ISA-18.2 (table 5) and EEMUA 191: about 1 alarm per operator per 10 minutes is very
// likely acceptable, 2 the most manageable; more than 10 in 10 minutes is a flood, and
// less than 1 % of the time should be spent in one.
const ACCEPTABLE_PER_10MIN = 1;
const MANAGEABLE_PER_10MIN = 2;
const FLOOD_PER_10MIN = 10;
const FLOOD_SHARE = 0.01;

/** The figure rows: [id, label key, value text, target key, health or ""]. */
export function figures(k) {
  const avg = Number(k.average_per_10min);
  const rateHealth = avg <= ACCEPTABLE_PER_10MIN ? "ok" : avg <= MANAGEABLE_PER_10MIN ? "warn" : "bad";
  return [
    ["activations", "kpi.activations", formatNumber(k.activations), "kpi.target.none", ""],
    ["average", "kpi.average", formatNumber(round(avg, 2)), "kpi.target.average", rateHealth],
    [
      "peak",
      "kpi.peak",
      formatNumber(k.peak_per_10min),
      "kpi.target.peak",
      k.peak_per_10min <= FLOOD_PER_10MIN ? "ok" : "bad",
    ],
    [
      "overManageable",
      "kpi.overManageable",
      formatShare(k.share_over_manageable),
      "kpi.target.overManageable",
      k.share_over_manageable > 0 ? "warn" : "ok",
    ],
    [
      "inFlood",
      "kpi.inFlood",
      formatShare(k.share_in_flood),
      "kpi.target.inFlood",
      k.share_in_flood < FLOOD_SHARE ? "ok" : "bad",
    ],
    [
      "chattering",
      "kpi.chatteringCount",
      formatNumber(k.chattering.length),
      "kpi.target.chattering",
      k.chattering.length ? "bad" : "ok",
    ],
  ];
}

function round(n, digits) {
  const f = 10 ** digits;
  return Math.round(n * f) / f;
}

export class KpiView {
  constructor(api) {
    this.api = api;
    const $ = (id) => document.getElementById(id);
    this.el = {
      range: $("kpi-range"),
      status: $("kpi-status"),
      body: $("kpi-body"),
      figures: $("kpi-figures"),
      badActors: $("kpi-bad-actors"),
      floods: $("kpi-floods"),
      chattering: $("kpi-chattering"),
    };
    this.controller = null;
    this.el.range.addEventListener("change", () => this.load());
    $("kpi-filter").addEventListener("submit", (event) => {
      event.preventDefault();
      this.load();
    });
  }

  async load() {
    this.controller?.abort();
    const controller = new AbortController();
    this.controller = controller;
    this.setStatus(t("kpi.loading"), "busy");
    let kpis;
    try {
      kpis = await this.api.alarmKpis({ start: this.el.range.value, signal: controller.signal });
    } catch (err) {
      if (controller.signal.aborted) return;
      this.setStatus(t("kpi.failed", { error: err.message }), "error");
      return;
    }
    this.render(kpis);
    this.setStatus(
      t("kpi.between", {
        start: formatDateTime(Date.parse(kpis.start)),
        end: formatDateTime(Date.parse(kpis.end)),
      }),
      "",
    );
  }

  setStatus(text, kind) {
    this.el.status.textContent = text;
    if (kind) this.el.status.dataset.kind = kind;
    else delete this.el.status.dataset.kind;
  }

  render(k) {
    this.el.body.hidden = false;
    fill(
      this.el.figures,
      figures(k).map(([id, label, value, target, health]) => {
        const tr = document.createElement("tr");
        tr.dataset.kpi = id;
        if (health) tr.dataset.health = health;
        const th = document.createElement("th");
        th.scope = "row";
        th.textContent = t(label);
        tr.append(th);
        cellOf(tr, "value", "num kpi-value").textContent = value;
        cellOf(tr, "target", "kpi-target").textContent = t(target);
        return tr;
      }),
      "kpi.none",
    );
    fill(
      this.el.badActors,
      k.bad_actors.map((b) => {
        const tr = document.createElement("tr");
        tr.dataset.alarm = b.alarm;
        const th = document.createElement("th");
        th.scope = "row";
        th.className = "journal-alarm";
        th.textContent = b.alarm;
        tr.append(th);
        cellOf(tr, "count", "num").textContent = formatNumber(b.count);
        const share = cellOf(tr, "share", "kpi-share");
        const bar = document.createElement("span");
        bar.className = "kpi-bar";
        bar.setAttribute("aria-hidden", "true");
        // A custom property through the CSSOM: allowed under a strict style-src policy.
        bar.style.setProperty("--share", String(Math.max(0, Math.min(1, Number(b.share)))));
        const text = document.createElement("span");
        text.textContent = formatShare(b.share);
        share.append(bar, text);
        return tr;
      }),
      "kpi.noBadActors",
    );
    fill(
      this.el.floods,
      k.floods.map((f) => {
        const tr = document.createElement("tr");
        cellOf(tr, "start", "num").textContent = formatDateTime(Date.parse(f.start));
        cellOf(tr, "end", "num").textContent = formatDateTime(Date.parse(f.end));
        cellOf(tr, "alarms", "num").textContent = formatNumber(f.alarms);
        return tr;
      }),
      "kpi.noFloods",
    );
    fill(
      this.el.chattering,
      k.chattering.map((c) => {
        const tr = document.createElement("tr");
        tr.dataset.alarm = c.alarm;
        const th = document.createElement("th");
        th.scope = "row";
        th.className = "journal-alarm";
        th.textContent = c.alarm;
        tr.append(th);
        cellOf(tr, "episodes", "num").textContent = formatNumber(c.episodes);
        cellOf(tr, "activations", "num").textContent = formatNumber(c.activations);
        return tr;
      }),
      "kpi.noChattering",
    );
  }
}

/** Replace the table's body with `rows`, or one line saying there is none. */
function fill(table, rows, noneKey) {
  const body = document.createElement("tbody");
  if (rows.length) body.append(...rows);
  else {
    const cell = body.insertRow().insertCell();
    cell.colSpan = table.tHead.rows[0].cells.length;
    cell.className = "alarms-none";
    cell.textContent = t(noneKey);
  }
  for (const old of [...table.tBodies]) old.remove();
  table.append(body);
}

function cellOf(tr, col, className) {
  const td = tr.insertCell();
  td.dataset.col = col;
  td.className = className;
  return td;
}
