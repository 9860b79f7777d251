// Standing alarms: a top-bar indicator ("Alarms 2", red while an urgent one is
// unacknowledged) and a panel with three tabs: the standing alarms, where an operator
// acknowledges, shelves, unshelves and comments (alarm-actions.js), the journal
// (alarm-journal.js) and the alarm performance (alarm-kpis.js). The operator's name is
// remembered in this browser.

import { AlarmActions } from "./alarm-actions.js";
import { JournalView } from "./alarm-journal.js";
import { KpiView } from "./alarm-kpis.js";
import { priorityLabel, stateLabel } from "./alarm-labels.js";
import { formatNumber, formatTime, formatWhen } from "./format.js";
import { t } from "./i18n.js";
import { Poller } from "./poller.js";
import { bindActingUser } from "./acting-user.js";
import { storageSet } from "./storage.js";

const POLL_MS = 2000;
const NAME_KEY = "shopfloor.operator";
export const ACKABLE = new Set(["unacknowledged", "returned_unacknowledged"]);
// Literal keys, so that a search of the source finds every string the page can show.
const ACTION_KEYS = Object.freeze({
  acknowledge: "alarms.action.acknowledge",
  shelve: "alarms.action.shelve",
  unshelve: "alarms.action.unshelve",
  comment: "alarms.action.comment",
});

/** "bad" while an urgent alarm waits for acknowledgement, "warn" for any other waiting. */
export function alarmHealth(alarm) {
  if (!ACKABLE.has(alarm.state)) return "ok";
  return alarm.priority === "critical" || alarm.priority === "high" ? "bad" : "warn";
}

/** The actions an operator can take on an alarm in `state`, in the order shown. */
export function actionsFor(state) {
  const actions = [];
  if (ACKABLE.has(state)) actions.push("acknowledge");
  if (state === "shelved") actions.push("unshelve");
  else if (state !== "out_of_service" && state !== "suppressed") actions.push("shelve");
  actions.push("comment");
  return actions;
}

export class AlarmsView {
  /**
   * @param elements {button, count, panel, table, sub, closeButton, operator} of the page.
   * @param api the ApiClient.
   */
  constructor(elements, api) {
    this.el = elements;
    this.api = api;
    this.alarms = [];
    this.poller = new Poller(() => this.poll(), POLL_MS);
    this.actions = new AlarmActions(document.getElementById("alarm-action"), {
      api,
      operator: () => this.operator(),
      done: () => this.poller.now(),
    });
    this.journal = new JournalView(api);
    this.kpis = new KpiView(api);
    this.tab = "standing";

    elements.button.addEventListener("click", () => (this.isOpen ? this.close() : this.open()));
    elements.closeButton.addEventListener("click", () => this.close());
    bindActingUser(elements.operator, api);
    elements.table.addEventListener("click", (event) => {
      const history = event.target.closest("button[data-history]");
      if (history) {
        this.journal.filterTo(history.dataset.history);
        this.showTab("journal");
        return;
      }
      const button = event.target.closest("button[data-action]");
      if (!button) return;
      const alarm = this.alarms.find((a) => a.name === button.dataset.alarm);
      if (alarm) this.actions.open(button.dataset.action, alarm, button);
    });
    for (const tab of elements.panel.querySelectorAll("[role=tab]")) {
      tab.addEventListener("click", () => this.showTab(tab.dataset.tab));
    }
    elements.panel
      .querySelector("[role=tablist]")
      .addEventListener("keydown", (event) => this.tabKey(event));
    // Esc closes an open action form first, then the panel; only this panel.
    document.addEventListener(
      "keydown",
      (event) => {
        if (event.key !== "Escape" || !this.isOpen) return;
        event.stopPropagation();
        event.preventDefault();
        if (this.actions.isOpen) this.actions.close();
        else this.close();
      },
      true,
    );
    document.addEventListener("pointerdown", (event) => {
      if (this.isOpen && !this.owns(event.target)) this.close({ restoreFocus: false });
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

  operator() {
    const name = this.el.operator.value.trim();
    if (name) storageSet(NAME_KEY, name);
    else this.el.operator.focus();
    return name;
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
    if (this.el.button.hidden) return;
    this.el.panel.hidden = false;
    this.el.button.setAttribute("aria-expanded", "true");
    this.place();
    this.el.panel.focus({ preventScroll: true });
    this.poller.now();
    if (this.tab !== "standing") this.showTab(this.tab);
  }

  close({ restoreFocus = true } = {}) {
    if (!this.isOpen) return;
    const hadFocus = this.el.panel.contains(document.activeElement);
    this.actions.close();
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
    this.el.panel.style.setProperty("--panel-right", `${Math.round(right)}px`);
  }

  /** Show one of "standing", "journal", "kpis"; the journal and KPIs load when shown. */
  showTab(name) {
    this.tab = name;
    for (const tab of this.el.panel.querySelectorAll("[role=tab]")) {
      const selected = tab.dataset.tab === name;
      tab.setAttribute("aria-selected", String(selected));
      tab.tabIndex = selected ? 0 : -1;
      document.getElementById(tab.getAttribute("aria-controls")).hidden = !selected;
    }
    this.el.panel.dataset.tab = name;
    this.place();
    if (name === "journal") {
      this.journal.suggest(this.alarms.map((a) => a.name));
      this.journal.show();
    } else if (name === "kpis") {
      this.kpis.load();
    }
  }

  /** Arrow keys move between the tabs (the WAI-ARIA tabs pattern). */
  tabKey(event) {
    const tabs = [...this.el.panel.querySelectorAll("[role=tab]")];
    const at = tabs.findIndex((tab) => tab.dataset.tab === this.tab);
    const step = { ArrowRight: 1, ArrowLeft: -1 }[event.key];
    if (!step) return;
    event.preventDefault();
    const next = tabs[(at + step + tabs.length) % tabs.length];
    this.showTab(next.dataset.tab);
    next.focus();
  }

  show(alarms) {
    const button = this.el.button;
    if (alarms === null) {
      this.close({ restoreFocus: false });
      button.hidden = true;
      return;
    }
    button.hidden = false;
    this.alarms = alarms;
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
    this.actions.refresh(alarms);
  }

  render(alarms) {
    const table = this.el.table;
    // Keep the focus on an action button across the redraw (keyboard operators).
    const focused = document.activeElement?.closest?.("#alarms-table button[data-action]");
    const keep = focused && [focused.dataset.alarm, focused.dataset.action];
    for (const body of [...table.tBodies]) body.remove();
    const body = document.createElement("tbody");
    if (!alarms.length) {
      const row = body.insertRow();
      const cell = row.insertCell();
      cell.colSpan = 6;
      cell.className = "alarms-none";
      cell.textContent = t("alarms.none");
    }
    for (const alarm of alarms) body.append(this.row(alarm));
    table.append(body);
    if (keep) {
      for (const b of table.querySelectorAll("button[data-action]")) {
        if (b.dataset.alarm === keep[0] && b.dataset.action === keep[1]) b.focus();
      }
    }
  }

  row(alarm) {
    const row = document.createElement("tr");
    row.className = "connector alarm";
    row.dataset.alarm = alarm.name;
    row.dataset.health = alarmHealth(alarm);
    row.dataset.state = alarm.state;
    row.dataset.priority = alarm.priority;
    const head = document.createElement("th");
    head.scope = "row";
    head.dataset.col = "alarm";
    const message = document.createElement("span");
    message.className = "connector-name";
    message.textContent = alarm.message;
    // The name opens the alarm's journal (Ignition's "show history").
    const name = document.createElement("button");
    name.type = "button";
    name.className = "connector-kind alarm-history";
    name.dataset.history = alarm.name;
    name.title = t("alarms.history");
    name.textContent = alarm.name;
    head.append(message, name);
    row.append(head);

    const priority = cell(row, "priority");
    const badge = document.createElement("span");
    badge.className = "alarm-priority";
    badge.textContent = priorityLabel(alarm.priority);
    priority.append(badge);
    const state = cell(row, "state", "alarm-state");
    if (alarm.state === "shelved" && alarm.shelved_until) {
      state.textContent = t("alarms.shelvedUntil", {
        time: formatWhen(Date.parse(alarm.shelved_until)),
      });
      state.title = alarm.shelved_until;
    } else {
      state.textContent = stateLabel(alarm.state);
    }
    cell(row, "value", "num").textContent = formatNumber(alarm.value);
    const since = cell(row, "since", "num");
    since.textContent = formatWhen(Date.parse(alarm.since));
    since.title = alarm.since;

    const actions = cell(row, "actions", "alarm-actions");
    for (const action of actionsFor(alarm.state)) {
      const button = document.createElement("button");
      button.type = "button";
      button.className = action === "acknowledge" ? "alarm-btn alarm-btn-primary" : "alarm-btn";
      button.dataset.action = action;
      button.dataset.alarm = alarm.name;
      button.textContent = t(ACTION_KEYS[action]);
      actions.append(button);
    }
    return row;
  }
}

function cell(row, col, className = "") {
  const td = row.insertCell();
  td.dataset.col = col;
  if (className) td.className = className;
  return td;
}

function rank(health) {
  return { bad: 0, warn: 1, ok: 2 }[health];
}
