// The alarm journal, newest first: every transition with its time, alarm, event, states,
// value, user and comment, filtered by alarm and time range.
//
// The API answers newest first and pages back with `before_seq`, so a range of any size
// opens at once with its latest entries; "Show older entries" draws more of what is loaded
// and, once that is all drawn, asks for the next older page.

import { STATE_KEYS, stateLabel } from "./alarm-labels.js";
import { formatDateTime, formatNumber } from "./format.js";
import { t } from "./i18n.js";

const PAGE = 500; // entries per request
const SHOW = 100; // rows drawn at a time ("Show older entries" adds as many again)

// Literal keys, so that a search of the source finds every string the page can show.
const EVENT_KEYS = Object.freeze({
  activated: "journal.event.activated",
  cleared: "journal.event.cleared",
  acknowledged: "journal.event.acknowledged",
  shelved: "journal.event.shelved",
  unshelved: "journal.event.unshelved",
  shelve_expired: "journal.event.shelveExpired",
  suppressed: "journal.event.suppressed",
  unsuppressed: "journal.event.unsuppressed",
  removed_from_service: "journal.event.removedFromService",
  returned_to_service: "journal.event.returnedToService",
  condition: "journal.event.condition",
  commented: "journal.event.commented",
});

function eventLabel(event) {
  return EVENT_KEYS[event] ? t(EVENT_KEYS[event]) : String(event ?? "?");
}

/** A `datetime-local` value (the browser's local time) as ISO 8601 UTC, or null. */
function localToIso(value) {
  if (!value) return null;
  const ms = new Date(value).getTime();
  return Number.isFinite(ms) ? new Date(ms).toISOString() : null;
}

export class JournalView {
  constructor(api) {
    this.api = api;
    const $ = (id) => document.getElementById(id);
    this.el = {
      form: $("journal-filter"),
      alarm: $("journal-alarm"),
      names: $("journal-alarm-names"),
      range: $("journal-range"),
      fromField: $("journal-from-field"),
      from: $("journal-from"),
      toField: $("journal-to-field"),
      to: $("journal-to"),
      status: $("journal-status"),
      table: $("journal-table"),
      more: $("journal-more"),
    };
    this.entries = []; // newest first
    this.shown = 0;
    this.complete = true; // no older page to ask for
    this.current = null; // the query of the entries shown
    this.loaded = false;
    this.controller = null;
    this.known = new Set();
    this.el.form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.load();
    });
    this.el.range.addEventListener("change", () => {
      const custom = this.el.range.value === "custom";
      this.el.fromField.hidden = !custom;
      this.el.toField.hidden = !custom;
      if (!custom) this.load();
    });
    this.el.more.addEventListener("click", () => this.more());
  }

  /** Offer these alarm names in the filter's list (with the ones seen in the journal). */
  suggest(names) {
    let added = false;
    for (const name of names) {
      if (!this.known.has(name)) {
        this.known.add(name);
        added = true;
      }
    }
    if (!added) return;
    const options = [...this.known].sort().map((name) => {
      const option = document.createElement("option");
      option.value = name;
      return option;
    });
    this.el.names.replaceChildren(...options);
  }

  /** The tab was opened: load once; afterwards the operator asks with "Show". */
  show() {
    if (!this.loaded) this.load();
  }

  /** Show the journal of one alarm (over the chosen range) the next time the tab opens. */
  filterTo(name) {
    this.el.alarm.value = name;
    this.loaded = false;
  }

  /** The query of the filter form, or an error text when the custom range is not valid. */
  query() {
    const alarm = this.el.alarm.value.trim() || null;
    if (this.el.range.value !== "custom") return { alarm, start: this.el.range.value, end: null };
    const start = localToIso(this.el.from.value);
    const end = localToIso(this.el.to.value);
    if (!start) return { error: t("journal.needFrom") };
    if (end && end <= start) return { error: t("journal.badRange") };
    return { alarm, start, end };
  }

  async load() {
    const query = this.query();
    if (query.error) {
      this.setStatus(query.error, "error");
      return;
    }
    this.loaded = true;
    this.current = query;
    this.entries = [];
    this.complete = false;
    if (await this.fetchOlder()) this.render(SHOW);
  }

  /** Draw SHOW more rows, fetching the next older page when everything loaded is drawn. */
  async more() {
    if (this.shown >= this.entries.length && !this.complete && !(await this.fetchOlder())) return;
    this.render(this.shown + SHOW);
  }

  /** Append the page before the oldest entry loaded; false when it failed or was replaced. */
  async fetchOlder() {
    this.controller?.abort();
    const controller = new AbortController();
    this.controller = controller;
    this.setStatus(t("journal.loading"), "busy");
    const oldest = this.entries[this.entries.length - 1];
    let batch;
    try {
      batch = await this.api.alarmJournal({
        ...this.current,
        beforeSeq: oldest ? oldest.seq : null,
        limit: PAGE,
        signal: controller.signal,
      });
    } catch (err) {
      if (controller.signal.aborted) return false; // a newer query replaced this one
      this.setStatus(t("journal.failed", { error: err.message }), "error");
      return false;
    }
    this.entries = this.entries.concat(batch);
    this.complete = batch.length < PAGE;
    this.suggest(batch.map((e) => e.alarm));
    const total = this.entries.length;
    const key = total ? (this.complete ? "journal.count" : "journal.countMore") : "journal.none";
    this.setStatus(t(key, { n: total }), "");
    return true;
  }

  setStatus(text, kind) {
    this.el.status.textContent = text;
    if (kind) this.el.status.dataset.kind = kind;
    else delete this.el.status.dataset.kind;
  }

  render(count) {
    const table = this.el.table;
    for (const body of [...table.tBodies]) body.remove();
    const body = document.createElement("tbody");
    this.shown = Math.min(count, this.entries.length);
    for (const entry of this.entries.slice(0, this.shown)) body.append(row(entry));
    table.append(body);
    this.el.more.hidden = this.shown >= this.entries.length && this.complete;
  }
}

function row(entry) {
  const tr = document.createElement("tr");
  tr.className = "journal-entry";
  tr.dataset.seq = String(entry.seq ?? "");
  tr.dataset.event = entry.event;
  tr.dataset.alarm = entry.alarm;
  const ms = Date.parse(entry.time);
  const time = add(tr, "time", "num");
  time.textContent = formatDateTime(ms);
  time.title = entry.time;
  add(tr, "alarm", "journal-alarm").textContent = entry.alarm;
  add(tr, "event").textContent = eventLabel(entry.event);
  const state = add(tr, "state");
  state.textContent =
    entry.before === entry.after
      ? stateLabel(entry.after)
      : `${stateLabel(entry.before)} → ${stateLabel(entry.after)}`;
  state.dataset.after = STATE_KEYS[entry.after] ? entry.after : "other";
  add(tr, "value", "num").textContent = formatNumber(entry.value);
  add(tr, "user").textContent = entry.user || "";
  add(tr, "comment", "journal-comment").textContent = entry.comment || "";
  return tr;
}

function add(tr, col, className = "") {
  const td = tr.insertCell();
  td.dataset.col = col;
  if (className) td.className = className;
  return td;
}
