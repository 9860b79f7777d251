// Connector health: a top-bar indicator ("Connections 3/3", coloured by the worst state) and
// a panel that lists every connector the server runs, refreshed from /api/v1/connectors.
// A server without connectors (or without the endpoint) shows no indicator at all.

import { formatCount, formatMs, formatRate, formatTime } from "./format.js";
import { t } from "./i18n.js";
import { Poller } from "./poller.js";

const POLL_MS = 5000;

// How worried an operator should be about each state. A state this page does not know yet
// counts as a warning rather than as healthy.
const HEALTH = Object.freeze({
  active: "ok",
  starting: "warn",
  idle: "warn",
  degraded: "bad",
  stopped: "bad",
});
const SEVERITY = Object.freeze({ bad: 0, warn: 1, ok: 2 });
// Literal keys, so that a search of the source finds every string the page can show.
const STATE_KEYS = Object.freeze({
  starting: "connectors.state.starting",
  active: "connectors.state.active",
  idle: "connectors.state.idle",
  degraded: "connectors.state.degraded",
  stopped: "connectors.state.stopped",
});

/** "ok", "warn" or "bad" for one connector state. */
export function healthOf(state) {
  return HEALTH[state] ?? "warn";
}

/** The worst health among `connectors`: what the indicator's colour says. */
export function overallHealth(connectors) {
  let worst = "ok";
  for (const connector of connectors) {
    const health = healthOf(connector.state);
    if (SEVERITY[health] < SEVERITY[worst]) worst = health;
  }
  return worst;
}

function stateLabel(state) {
  return STATE_KEYS[state] ? t(STATE_KEYS[state]) : String(state ?? "?");
}

/** Worst first, so a failing connection is at the top of a long list; then by name. */
function byConcern(a, b) {
  const diff = SEVERITY[healthOf(a.state)] - SEVERITY[healthOf(b.state)];
  return diff || String(a.name).localeCompare(String(b.name), undefined, { numeric: true });
}

export class ConnectionsView {
  /**
   * @param elements {button, count, panel, table, sub, closeButton} from the template.
   * @param api the ApiClient.
   */
  constructor(elements, api) {
    this.el = elements;
    this.api = api;
    this.poller = new Poller(() => this.poll(), POLL_MS);
    this.rows = new Map(); // connector key -> {body, cells}
    this.summary = "";
    this.hasData = false;

    elements.button.addEventListener("click", () => (this.isOpen ? this.close() : this.open()));
    elements.closeButton.addEventListener("click", () => this.close());
    // Capture phase on the document: Esc closes this panel first, and only this panel (the
    // trend listens for Esc on the document too).
    document.addEventListener(
      "keydown",
      (event) => {
        if (event.key !== "Escape" || !this.isOpen) return;
        event.stopPropagation();
        event.preventDefault();
        this.close();
      },
      true,
    );
    // A popover: a press anywhere else, or focus moving elsewhere, closes it.
    document.addEventListener("pointerdown", (event) => {
      if (this.isOpen && !this.owns(event.target)) this.close({ restoreFocus: false });
    });
    elements.panel.addEventListener("focusout", (event) => {
      if (this.isOpen && event.relatedTarget && !this.owns(event.relatedTarget)) {
        this.close({ restoreFocus: false });
      }
    });
    window.addEventListener("resize", () => {
      if (this.isOpen) this.place();
    });
  }

  get isOpen() {
    return !this.el.panel.hidden;
  }

  owns(node) {
    return this.el.panel.contains(node) || this.el.button.contains(node);
  }

  start() {
    this.poller.start();
  }

  async poll() {
    let connectors;
    try {
      connectors = await this.api.connectors();
    } catch (err) {
      // An older server has no such endpoint: it runs no connector this page can show.
      if (err.status === 404) this.show([]);
      else this.showStale(err);
      return;
    }
    this.show(connectors);
  }

  open() {
    if (this.el.button.hidden) return;
    this.el.panel.hidden = false;
    this.el.button.setAttribute("aria-expanded", "true");
    this.place();
    this.el.panel.focus({ preventScroll: true });
    this.poller.now(); // show fresh figures, not ones up to 5 s old
  }

  close({ restoreFocus = true } = {}) {
    if (!this.isOpen) return;
    const hadFocus = this.el.panel.contains(document.activeElement);
    this.el.panel.hidden = true;
    this.el.button.setAttribute("aria-expanded", "false");
    if (restoreFocus && hadFocus && !this.el.button.hidden) this.el.button.focus();
  }

  /** Right-align the panel with its button, inside the window. */
  place() {
    const rect = this.el.button.getBoundingClientRect();
    const width = this.el.panel.offsetWidth;
    const room = Math.max(8, window.innerWidth - width - 8);
    const right = Math.min(Math.max(8, window.innerWidth - rect.right), room);
    // A custom property set through the CSSOM: allowed under a strict style-src CSP.
    this.el.panel.style.setProperty("--panel-right", `${Math.round(right)}px`);
  }

  show(connectors) {
    const button = this.el.button;
    if (!connectors.length) {
      this.close({ restoreFocus: false });
      button.hidden = true;
      button.dataset.health = "none";
      this.hasData = false;
      return;
    }
    this.hasData = true;
    const active = connectors.filter((c) => c.state === "active").length;
    const total = connectors.length;
    this.summary = t("connectors.summary", { active, total });
    button.hidden = false;
    button.dataset.health = overallHealth(connectors);
    delete button.dataset.stale;
    button.title = this.summary;
    this.el.count.textContent = `${active}/${total}`;
    this.el.sub.textContent = t("connectors.updated", {
      summary: this.summary,
      time: formatTime(Date.now()),
    });
    delete this.el.sub.dataset.stale;
    this.renderRows([...connectors].sort(byConcern));
  }

  /** Keep the last figures, dimmed, and say why they are not fresh. */
  showStale(err) {
    if (!this.hasData) return;
    const message = t("connectors.stale", { error: err.message });
    this.el.button.dataset.stale = "true";
    this.el.button.title = `${this.summary}\n${message}`;
    this.el.sub.textContent = message;
    this.el.sub.dataset.stale = "true";
  }

  renderRows(connectors) {
    const seen = new Set();
    const order = [];
    for (const connector of connectors) {
      // Names are unique per server; the kind and a counter keep odd configurations apart.
      let key = `${connector.name}\u0000${connector.kind}`;
      for (let n = 2; seen.has(key); n += 1) key = `${connector.name}\u0000${connector.kind}#${n}`;
      seen.add(key);
      let row = this.rows.get(key);
      if (!row) {
        row = this.row(connector);
        this.rows.set(key, row);
      }
      this.update(row, connector);
      order.push(row.body);
    }
    for (const [key, row] of this.rows) {
      if (!seen.has(key)) {
        row.body.remove();
        this.rows.delete(key);
      }
    }
    // Move rows only when the order changed: moving a row drops a text selection inside it,
    // and someone may be copying an error message.
    const current = [...this.el.table.tBodies];
    if (current.length !== order.length || current.some((body, i) => body !== order[i])) {
      this.el.table.append(...order);
    }
  }

  row(connector) {
    const body = document.createElement("tbody");
    body.className = "connector";
    body.dataset.name = connector.name;

    const main = document.createElement("tr");
    const head = document.createElement("th");
    head.scope = "row";
    const name = document.createElement("span");
    name.className = "connector-name";
    name.textContent = connector.name;
    const kind = document.createElement("span");
    kind.className = "connector-kind";
    kind.textContent = connector.kind;
    head.append(name, kind);

    const stateCell = document.createElement("td");
    const state = document.createElement("span");
    state.className = "connector-state";
    stateCell.append(state);

    const numbers = {};
    const cells = [head, stateCell];
    for (const column of ["rate", "latency", "errors", "reconnects"]) {
      const td = document.createElement("td");
      td.className = "num";
      td.dataset.col = column;
      numbers[column] = td;
      cells.push(td);
    }
    main.append(...cells);

    const errorRow = document.createElement("tr");
    errorRow.className = "connector-error-row";
    errorRow.hidden = true;
    const errorCell = document.createElement("td");
    errorCell.colSpan = cells.length;
    const errorLabel = document.createElement("span");
    errorLabel.className = "connector-error-label";
    errorLabel.textContent = t("connectors.lastError");
    const error = document.createElement("pre");
    error.className = "connector-error";
    errorCell.append(errorLabel, error);
    errorRow.append(errorCell);

    body.append(main, errorRow);
    return { body, head, state, numbers, errorRow, error };
  }

  update(row, connector) {
    const health = healthOf(connector.state);
    setData(row.body, "health", health);
    setData(row.body, "state", String(connector.state));
    setText(row.state, stateLabel(connector.state));
    const title = t("connectors.totals", {
      reads: formatCount(connector.reads),
      points: formatCount(connector.points),
    });
    if (row.head.title !== title) row.head.title = title;
    setText(row.numbers.rate, formatRate(connector.reads_per_s));
    // No read yet: a zero duration would claim an instant answer.
    setText(row.numbers.latency, connector.reads > 0 ? formatMs(connector.last_read_ms) : "–");
    setText(row.numbers.errors, formatCount(connector.errors));
    setText(row.numbers.reconnects, formatCount(connector.reconnects));
    const showError = health === "bad" && Boolean(connector.last_error);
    row.errorRow.hidden = !showError;
    setText(row.error, showError ? String(connector.last_error) : "");
  }
}

function setText(el, text) {
  if (el.textContent !== text) el.textContent = text;
}

function setData(el, key, value) {
  if (el.dataset[key] !== value) el.dataset[key] = value;
}
