// The audit log on the admin page: filters (time range, user, action, outcome), pages of
// PAGE rows newest first (Older / Newer), the hash chain's check as a badge, and the
// filtered rows as CSV in the order of writing (built here from the JSON the API answers:
// every page, not just the shown one).

import { formatWhen } from "./format.js";
import { t } from "./i18n.js";

const PAGE = 50;
const CSV_BATCH = 1000;
const CSV_MAX = 100_000; // a browser tab holds this much comfortably
const CSV_COLUMNS = ["seq", "time", "user", "action", "target", "outcome", "client", "old", "new", "detail", "hash"];

/** A value of an entry's detail as one short text: numbers and flags as JSON, text as is. */
function show(value) {
  if (value === undefined) return "";
  return typeof value === "string" ? value : JSON.stringify(value);
}

/** What an entry changed, "old → new", or "" when its detail holds neither. */
export function change(detail) {
  if (!detail || (!("old" in detail) && !("new" in detail))) return "";
  return `${show(detail.old) || "–"} → ${show(detail.new) || "–"}`;
}

/** One CSV field (RFC 4180): quoted when it holds a comma, a quote or a line break. */
function csvField(value) {
  const text = value === null || value === undefined ? "" : String(value);
  return /[",\r\n]/.test(text) ? `"${text.replaceAll('"', '""')}"` : text;
}

export function toCsv(entries) {
  const lines = [CSV_COLUMNS.join(",")];
  for (const e of entries) {
    const d = e.detail || {};
    const row = [e.seq, e.time, e.user, e.action, e.target, e.outcome, e.client, show(d.old), show(d.new), JSON.stringify(d), e.hash];
    lines.push(row.map(csvField).join(","));
  }
  return lines.join("\r\n") + "\r\n";
}

export class AuditView {
  /** @param el {form, body, sub, msg, badge, prev, next, page, csv} of the page. */
  constructor(api, el) {
    this.api = api;
    this.el = el;
    this.pages = [null]; // before_seq of each page shown so far, newest first (Newer pops)
    el.form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.reload();
    });
    el.next.addEventListener("click", () => {
      this.pages.push(this.oldestSeq);
      this.load();
    });
    el.prev.addEventListener("click", () => {
      if (this.pages.length > 1) this.pages.pop();
      this.load();
    });
    el.csv.addEventListener("click", () => this.exportCsv());
  }

  /** The API's query from the filters; a time field the browser left empty is no bound. */
  query() {
    const data = new FormData(this.el.form);
    const when = (key) => {
      const value = data.get(key);
      return value ? new Date(value).toISOString() : null;
    };
    return {
      since: when("since"),
      until: when("until"),
      user: data.get("user")?.trim() || null,
      action: data.get("action")?.trim() || null,
      outcome: data.get("outcome") || null,
    };
  }

  /** Back to the first page of the filters, and check the chain again. */
  reload() {
    this.pages = [null];
    this.load();
    this.verify();
  }

  async verify() {
    const badge = this.el.badge;
    try {
      const chain = await this.api.get("/api/v1/audit/verify");
      badge.dataset.chain = chain.intact ? "intact" : "broken";
      badge.textContent = chain.intact
        ? t("admin.chainIntact", { rows: chain.rows })
        : t("admin.chainBroken", { seq: chain.broken_seq });
      badge.title = t("admin.chainHead", { seq: chain.head_seq, hash: chain.head_hash });
    } catch (err) {
      badge.dataset.chain = "unknown";
      badge.textContent = err.status === 404 ? t("admin.noAudit") : t("admin.chainUnknown");
      badge.title = err.message;
    }
  }

  async load() {
    const { body, msg, sub, prev, next, page } = this.el;
    const beforeSeq = this.pages[this.pages.length - 1];
    let entries;
    try {
      // one more than a page: whether an older page exists without asking again
      entries = await this.api.get("/api/v1/audit", {
        ...this.query(),
        order: "desc",
        before_seq: beforeSeq,
        limit: PAGE + 1,
      });
    } catch (err) {
      body.replaceChildren();
      msg.hidden = false;
      msg.textContent = err.status === 404 ? t("admin.noAudit") : t("admin.failed", { error: err.message });
      prev.disabled = next.disabled = true;
      return;
    }
    const more = entries.length > PAGE;
    const shown = entries.slice(0, PAGE);
    this.oldestSeq = shown.length ? shown[shown.length - 1].seq : beforeSeq;
    msg.hidden = shown.length > 0;
    msg.textContent = shown.length ? "" : t("admin.auditNone");
    sub.textContent = t("admin.auditOrder");
    page.textContent = shown.length ? t("admin.auditPage", { n: this.pages.length }) : "";
    prev.disabled = this.pages.length <= 1;
    next.disabled = !more;
    body.replaceChildren(...shown.map((e) => this.row(e)));
  }

  row(e) {
    const tr = document.createElement("tr");
    tr.dataset.seq = e.seq;
    tr.dataset.action = e.action;
    tr.dataset.outcome = e.outcome;
    const values = [
      String(e.seq),
      formatWhen(Date.parse(e.time)),
      e.user,
      e.action + (e.detail?.step ? ` (${e.detail.step})` : ""),
      e.target,
      t(`admin.outcome.${e.outcome}`),
      change(e.detail),
    ];
    values.forEach((text, i) => {
      const td = document.createElement("td");
      if (i === 0) td.className = "num";
      if (i === 5) td.className = "outcome";
      if (i === 6) td.className = "change";
      td.textContent = text;
      tr.append(td);
    });
    tr.title = JSON.stringify(e.detail);
    return tr;
  }

  /** Every row the filters select, as a CSV file the browser downloads. */
  async exportCsv() {
    const { msg } = this.el;
    const all = [];
    let after = 0;
    try {
      while (all.length < CSV_MAX) {
        const batch = await this.api.get("/api/v1/audit", { ...this.query(), after_seq: after, limit: CSV_BATCH });
        all.push(...batch);
        if (batch.length < CSV_BATCH) break;
        after = batch[batch.length - 1].seq;
      }
    } catch (err) {
      msg.hidden = false;
      msg.textContent = t("admin.failed", { error: err.message });
      return;
    }
    const blob = new Blob([toCsv(all)], { type: "text/csv;charset=utf-8" });
    const link = document.createElement("a");
    link.href = URL.createObjectURL(blob);
    link.download = `shopfloor-audit-${new Date().toISOString().slice(0, 19).replaceAll(":", "")}.csv`;
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 10_000);
  }
}
