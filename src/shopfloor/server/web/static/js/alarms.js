// Standing alarms: a top-bar indicator ("Alarms 2", red while one is unacknowledged) and a
// panel listing every alarm that is not normal, refreshed from /api/v1/alarms, where an
// operator acknowledges them. The operator's name is remembered in this browser.

import { formatTime } from "./format.js";
import { t } from "./i18n.js";
import { Poller } from "./poller.js";
import { storageGet, storageSet } from "./storage.js";

const POLL_MS = 2000;
const NAME_KEY = "shopfloor.operator";
const ACKABLE = new Set(["unacknowledged", "returned_unacknowledged"]);
const STATE_KEYS = Object.freeze({
  unacknowledged: "alarms.state.unacknowledged",
  acknowledged: "alarms.state.acknowledged",
  returned_unacknowledged: "alarms.state.returned",
  shelved: "alarms.state.shelved",
  suppressed: "alarms.state.suppressed",
  out_of_service: "alarms.state.outOfService",
});
const PRIORITY_KEYS = Object.freeze({
  critical: "alarms.priority.critical",
  high: "alarms.priority.high",
  medium: "alarms.priority.medium",
  low: "alarms.priority.low",
});

/** "bad" while an urgent alarm waits for acknowledgement, "warn" for any other waiting. */
export function alarmHealth(alarm) {
  if (!ACKABLE.has(alarm.state)) return "ok";
  return alarm.priority === "critical" || alarm.priority === "high" ? "bad" : "warn";
}

export class AlarmsView {
  /**
   * @param elements {button, count, panel, table, sub, closeButton, operator} of the page.
   * @param api the ApiClient.
   */
  constructor(elements, api) {
    this.el = elements;
    this.api = api;
    this.poller = new Poller(() => this.poll(), POLL_MS);
    elements.button.addEventListener("click", () => (this.isOpen ? this.close() : this.open()));
    elements.closeButton.addEventListener("click", () => this.close());
    elements.operator.value = storageGet(NAME_KEY) || "";
    elements.operator.addEventListener("change", () => storageSet(NAME_KEY, elements.operator.value));
    elements.table.addEventListener("click", (event) => {
      const button = event.target.closest("button[data-ack]");
      if (button) this.acknowledge(button.dataset.ack, button);
    });
  }

  get isOpen() {
    return !this.el.panel.hidden;
  }

  start() {
    this.poller.start();
  }

  async poll() {
    try {
      this.show(await this.api.alarms());
    } catch (err) {
      if (err.status === 404) this.show(null); // a server without an alarm engine
      else this.el.sub.textContent = t("alarms.stale", { error: err.message });
    }
  }

  open() {
    this.el.panel.hidden = false;
    this.el.button.setAttribute("aria-expanded", "true");
    this.el.panel.focus({ preventScroll: true });
    this.poller.now();
  }

  close() {
    this.el.panel.hidden = true;
    this.el.button.setAttribute("aria-expanded", "false");
  }

  async acknowledge(name, button) {
    const user = this.el.operator.value.trim();
    if (!user) {
      this.el.operator.focus();
      this.el.sub.textContent = t("alarms.needName");
      return;
    }
    button.disabled = true;
    try {
      await this.api.acknowledge(name, user);
      this.poller.now();
    } catch (err) {
      this.el.sub.textContent = t("alarms.failed", { error: err.message });
      button.disabled = false;
    }
  }

  show(alarms) {
    const button = this.el.button;
    if (alarms === null) {
      button.hidden = true;
      this.close();
      return;
    }
    button.hidden = false;
    const waiting = alarms.filter((a) => ACKABLE.has(a.state));
    button.dataset.health = alarms.reduce(
      (worst, a) => (rank(alarmHealth(a)) < rank(worst) ? alarmHealth(a) : worst),
      "ok",
    );
    this.el.count.textContent = String(alarms.length);
    button.title = t("alarms.summary", { standing: alarms.length, waiting: waiting.length });
    this.el.sub.textContent = t("alarms.updated", {
      summary: button.title,
      time: formatTime(Date.now()),
    });
    this.render(alarms);
  }

  render(alarms) {
    const table = this.el.table;
    for (const body of [...table.tBodies]) body.remove();
    const body = document.createElement("tbody");
    if (!alarms.length) {
      const row = body.insertRow();
      const cell = row.insertCell();
      cell.colSpan = 5;
      cell.className = "alarms-none";
      cell.textContent = t("alarms.none");
    }
    for (const alarm of alarms) {
      const row = body.insertRow();
      row.className = "connector alarm";
      row.dataset.alarm = alarm.name;
      row.dataset.health = alarmHealth(alarm);
      row.dataset.state = alarm.state;
      const head = document.createElement("th");
      head.scope = "row";
      const message = document.createElement("span");
      message.className = "connector-name";
      message.textContent = alarm.message;
      const tag = document.createElement("span");
      tag.className = "connector-kind";
      tag.textContent = alarm.tag;
      head.append(message, tag);
      row.append(head);
      row.insertCell().textContent = t(PRIORITY_KEYS[alarm.priority] || alarm.priority);
      const state = row.insertCell();
      state.className = "alarm-state";
      state.textContent = t(STATE_KEYS[alarm.state] || alarm.state);
      const since = row.insertCell();
      since.className = "num";
      since.textContent = formatTime(Date.parse(alarm.since));
      const action = row.insertCell();
      if (ACKABLE.has(alarm.state)) {
        const ack = document.createElement("button");
        ack.type = "button";
        ack.className = "alarm-ack";
        ack.dataset.ack = alarm.name;
        ack.textContent = t("alarms.acknowledge");
        action.append(ack);
      }
    }
    table.append(body);
  }
}

function rank(health) {
  return { bad: 0, warn: 1, ok: 2 }[health];
}
