// The admin page: the connectors this server runs and the remote edges, the writes switch
// of each connector that may write (turned on only after a confirmation), the audit log
// (admin-audit.js), users and tokens when the server has them and the user's own
// password and second factor (admin-users.js, issue 8's API).
//
// The name typed at the top is who acts (X-Shopfloor-User) until logins exist; it is the
// same name the alarm panel remembers.

import "./strings/admin.js";
import { ApiClient } from "./api.js";
import { AuditView } from "./admin-audit.js";
import { bindActingUser } from "./acting-user.js";
import { UsersView } from "./admin-users.js";
import { confirmDialog } from "./confirm.js";
import { formatMs, formatNumber, formatRate, formatWhen } from "./format.js";
import { applyI18n, initLocale, t } from "./i18n.js";
import { Poller } from "./poller.js";

const $ = (id) => document.getElementById(id);
const HEALTH_EVERY_MS = 5_000;

await initLocale();
applyI18n(document);

const api = new ApiClient(document.body.dataset.base || "");
const userInput = $("admin-user");
bindActingUser(userInput, api);

/** The acting user's name; focuses the field and returns "" when it is empty. */
function actingUser() {
  const name = userInput.value.trim();
  if (!name) userInput.focus();
  return name;
}

function cells(tr, values, numeric = []) {
  values.forEach((text, i) => {
    const td = document.createElement("td");
    if (numeric.includes(i)) td.className = "num";
    td.textContent = text;
    tr.append(td);
  });
  return tr;
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

// ------------------------------------------------------------ connections and edges
async function refreshHealth() {
  try {
    const [connectors, edges] = await Promise.all([
      api.connectors(),
      api.get("/api/v1/edges").then((body) => body.edges || []),
    ]);
    showConnectors(connectors);
    showEdges(edges);
    $("connections-sub").textContent = t("admin.updated", { time: formatWhen(Date.now()) });
  } catch (err) {
    $("connections-sub").textContent = t("admin.failed", { error: err.message });
  }
}

function showConnectors(rows) {
  const body = $("connectors-body");
  if (!rows.length) {
    body.replaceChildren(messageRow(8, t("admin.noConnectors")));
    return;
  }
  body.replaceChildren(
    ...rows.map((c) => {
      const tr = document.createElement("tr");
      tr.dataset.connector = c.name;
      tr.dataset.state = c.state;
      return cells(
        tr,
        [
          c.name,
          c.kind,
          t(`connectors.state.${c.state}`),
          formatRate(c.reads_per_s),
          formatMs(c.last_read_ms),
          formatNumber(c.errors),
          formatNumber(c.reconnects),
          c.last_error || "–",
        ],
        [3, 4, 5, 6],
      );
    }),
  );
}

function showEdges(rows) {
  const body = $("edges-body");
  if (!rows.length) {
    body.replaceChildren(messageRow(6, t("admin.noEdges")));
    return;
  }
  body.replaceChildren(
    ...rows.map((e) => {
      const tr = document.createElement("tr");
      tr.dataset.edge = e.edge;
      const outbox = e.status?.buffer;
      const backlog = outbox?.batches != null
        ? t("admin.backlog", { batches: formatNumber(outbox.batches), points: formatNumber(outbox.points ?? 0) })
        : "–";
      return cells(
        tr,
        [
          e.edge,
          e.last_seen ? formatWhen(Date.parse(e.last_seen)) : "–",
          e.skew_s == null ? "–" : t("unit.seconds", { n: formatNumber(e.skew_s) }),
          backlog,
          `${formatNumber(e.batches)} / ${formatNumber(e.points)}`,
          formatNumber(e.gaps),
        ],
        [2, 3, 4, 5],
      );
    }),
  );
}

// ---------------------------------------------------------------- writes switches
async function refreshSwitches() {
  const msg = $("writes-msg");
  let body;
  try {
    body = await api.get("/api/v1/writes");
  } catch (err) {
    $("switches-body").replaceChildren();
    msg.hidden = false;
    msg.textContent = err.status === 404 ? t("admin.noWriters") : t("admin.failed", { error: err.message });
    return;
  }
  msg.hidden = body.connectors.length > 0;
  msg.textContent = body.connectors.length ? "" : t("admin.noWriters");
  $("switches-body").replaceChildren(
    ...body.connectors.map((c) => {
      const tr = document.createElement("tr");
      tr.dataset.connector = c.connector;
      tr.dataset.enabled = String(c.enabled);
      const tags = body.tags.filter((tag) => tag.connector === c.connector).map((tag) => tag.path);
      cells(tr, [c.connector, tags.join(", ") || "–"]);
      const td = document.createElement("td");
      const state = document.createElement("span");
      state.className = "writes-state";
      state.textContent = c.enabled ? t("admin.writesOn") : t("admin.writesOff");
      const button = document.createElement("button");
      button.type = "button";
      button.className = "admin-btn" + (c.enabled ? "" : " admin-btn-primary");
      button.dataset.action = c.enabled ? "disable" : "enable";
      button.textContent = c.enabled ? t("admin.disable") : t("admin.enable");
      button.addEventListener("click", () => toggle(c.connector, !c.enabled, tags));
      td.append(state, " ", button);
      tr.append(td);
      return tr;
    }),
  );
}

async function toggle(connector, enabled, tags) {
  const msg = $("writes-msg");
  const user = actingUser();
  if (!user) {
    msg.hidden = false;
    msg.textContent = t("admin.needName");
    return;
  }
  if (enabled) {
    // Turning writes on lets operators change the equipment: ask first, naming what.
    const ok = await confirmDialog($("confirm-dialog"), {
      title: t("admin.enableTitle", { connector }),
      text: [t("admin.enableText", { connector }), tags.join(", ")],
      ok: t("admin.enable"),
    });
    if (!ok) return;
  }
  try {
    await api.put(
      `/api/v1/connectors/${encodeURIComponent(connector)}/writes`,
      { enabled },
      { headers: { "X-Shopfloor-User": user } },
    );
    msg.hidden = true;
  } catch (err) {
    msg.hidden = false;
    msg.textContent = t("admin.failed", { error: err.message });
  }
  await refreshSwitches();
  audit.reload();
}

const audit = new AuditView(api, {
  form: $("audit-filters"),
  body: $("audit-body"),
  sub: $("audit-sub"),
  msg: $("audit-msg"),
  badge: $("chain-badge"),
  prev: $("audit-prev"),
  next: $("audit-next"),
  page: $("audit-page"),
  csv: $("audit-csv"),
});

new Poller(() => refreshHealth(), HEALTH_EVERY_MS).start();
refreshSwitches();
new UsersView(api, $, $("confirm-dialog")).load();
audit.reload();
