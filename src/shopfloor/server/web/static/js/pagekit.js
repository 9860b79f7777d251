// What the overview and the machine page share: the live connection indicator, the state
// legend, the equipment of the asset tree, the data clock and the shift's OEE query.

import { t } from "./i18n.js";
import { stateKey } from "./format.js";

export const STATE_ORDER = Object.freeze(["running", "idle", "setup", "down", "unknown"]);

/** Show the live socket's state in the `#conn` pill (the same pill as on the live page). */
export function bindConnection(live, conn, label) {
  live.addEventListener("status", (event) => {
    const { state, retryInMs } = event.detail;
    conn.dataset.state = state;
    label.textContent =
      state === "reconnecting" && retryInMs
        ? t("conn.reconnectingIn", { s: Math.ceil(retryInMs / 1000) })
        : t(`conn.${state}`);
  });
}

/** Fill a `<ul class="legend">` with the machine states' colours and names. */
export function renderLegend(list) {
  list.replaceChildren(
    ...STATE_ORDER.map((key) => {
      const li = document.createElement("li");
      li.dataset.state = key;
      li.textContent = t(`legend.${key}`);
      return li;
    }),
  );
}

/** The translated name of a machine state value (1 running … 4 down). */
export function stateText(value) {
  return t(`legend.${stateKey(value)}`);
}

/**
 * Every equipment node of the `/api/v1/assets` tree with the area and line it stands in,
 * in the tree's order.
 */
export function equipmentOf(tree) {
  const found = [];
  const walk = (node, area, line) => {
    if (node.level === "area") area = node;
    if (node.level === "line") line = node;
    if (node.level === "equipment") found.push({ node, area, line });
    for (const child of node.children || []) walk(child, area, line);
  };
  if (tree) walk(tree, null, null);
  return found;
}

/** The last path segment: an equipment's id. */
export function idOf(path) {
  return path.slice(path.lastIndexOf("/") + 1);
}

/**
 * "Now" as the data says it: the newest point's time when there is one. A simulated plant
 * that replays a backfilled day runs behind the wall clock, and a shift is the one its
 * newest data is in, not the empty one the wall clock is in.
 */
export function dataNow(store) {
  return store.lastDataTs ?? Date.now();
}

export function iso(ms) {
  return new Date(ms).toISOString();
}

/**
 * OEE of the shift `nowMs` is in, for one machine: the last row of `group=shift` over the
 * day before `nowMs` (a shift is never longer than that). Resolves to {row, query}, the row
 * null when the machine has no OEE in that time.
 */
export async function shiftOee(api, equipment, nowMs) {
  const query = {
    equipment,
    group: "shift",
    start: iso(nowMs - 24 * 3600e3),
    end: iso(nowMs),
  };
  const body = await api.get("/api/v1/oee", query);
  const rows = body.rows || [];
  return { row: rows.length ? rows[rows.length - 1] : null, query };
}

/** A duration in seconds as "45 s", "12 min", "3 h 05 min". */
export function formatDuration(seconds) {
  const s = Math.max(0, Math.round(Number(seconds) || 0));
  if (s < 60) return t("dur.s", { s });
  if (s < 3600) return t("dur.m", { m: Math.round(s / 60) });
  const h = Math.floor(s / 3600);
  return t("dur.hm", { h, m: String(Math.floor((s % 3600) / 60)).padStart(2, "0") });
}
