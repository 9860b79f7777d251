// The plant overview: the asset tree and the floor, a tile per machine grouped by line.
//
// Tiles take their colour from the machine's `state` tag, live over the websocket; the OEE
// of the shift the plant's newest data is in (refreshed every minute) and the count of
// standing alarms (every 15 s) come from the REST API. A tile opens the machine page.

import "./strings/overview.js";
import { ApiClient } from "./api.js";
import { within } from "./assets.js";
import { formatShare, humanize, stateKey } from "./format.js";
import { applyI18n, initLocale, t } from "./i18n.js";
import { LiveSocket } from "./live.js";
import { Poller } from "./poller.js";
import { Store } from "./store.js";
import {
  bindConnection,
  dataNow,
  equipmentOf,
  renderLegend,
  shiftOee,
  stateText,
} from "./pagekit.js";

const $ = (id) => document.getElementById(id);
const OEE_EVERY_MS = 60_000;
const ALARMS_EVERY_MS = 15_000;

initLocale();
applyI18n(document);
renderLegend($("legend"));

const base = document.body.dataset.base || "";
const api = new ApiClient(base);
const store = new Store();
const live = new LiveSocket(api.liveUrl());
bindConnection(live, $("conn"), $("conn-label"));

/** equipment id -> {tile, path, stateTag} */
const tiles = new Map();
let scope = "";

start();

async function start(attempt = 0) {
  let tree;
  try {
    tree = await api.get("/api/v1/assets");
  } catch (err) {
    if (err.status === 404) {
      showMessage(t("overview.noAssets"));
      return;
    }
    showMessage(t("overview.failed", { error: err.message }));
    setTimeout(() => start(attempt + 1), Math.min(10000, 1000 * 2 ** attempt));
    return;
  }
  const machines = equipmentOf(tree);
  renderTree(tree);
  renderFloor(machines);
  $("overview-msg").hidden = true;

  store.addEventListener("values", (event) => {
    for (const path of event.detail.changed) paintState(path);
  });
  try {
    store.setTags(await api.tags());
    store.apply(await api.latest());
  } catch {
    // the socket's snapshot brings the values too
  }
  live.addEventListener("snapshot", (event) => store.apply(event.detail.values));
  live.addEventListener("values", (event) => store.apply(event.detail.values));
  live.start();
  new Poller(() => refreshOee(), OEE_EVERY_MS).start();
  new Poller(() => refreshAlarms(), ALARMS_EVERY_MS).start();
}

function showMessage(text) {
  $("overview-msg").textContent = text;
  $("overview-msg").hidden = false;
}

function renderTree(tree) {
  const list = document.createElement("ul");
  list.append(treeNode(tree));
  $("asset-tree").replaceChildren(list);
}

function treeNode(node) {
  const li = document.createElement("li");
  li.dataset.level = node.level;
  let label;
  if (node.level === "equipment") {
    label = document.createElement("a");
    label.href = `${base}/machines/${encodeURIComponent(node.name)}`;
    const dot = document.createElement("span");
    dot.className = "state-dot";
    dot.dataset.equipment = node.name;
    label.append(dot);
  } else {
    // An asset above the machines narrows the floor to it; the enterprise shows it all.
    label = document.createElement("button");
    label.type = "button";
    label.dataset.scope = node.level === "enterprise" ? "" : node.path;
    label.addEventListener("click", () => setScope(label.dataset.scope));
  }
  label.className = "tree-label";
  const name = document.createElement("span");
  name.textContent = humanize(node.name);
  const level = document.createElement("span");
  level.className = "tree-level";
  level.textContent = t(`level.${node.level}`);
  label.append(name, level);
  li.append(label);
  const children = node.children || [];
  if (children.length) {
    const ul = document.createElement("ul");
    ul.append(...children.map(treeNode));
    li.append(ul);
  }
  return li;
}

function renderFloor(machines) {
  const byLine = new Map();
  for (const m of machines) {
    const key = m.line ? m.line.path : "";
    if (!byLine.has(key)) byLine.set(key, { area: m.area, line: m.line, machines: [] });
    byLine.get(key).machines.push(m);
  }
  const sections = [];
  for (const { area, line, machines: inLine } of byLine.values()) {
    const section = document.createElement("section");
    section.className = "line";
    section.dataset.path = line ? line.path : "";
    const head = document.createElement("h2");
    head.className = "line-title";
    const areaName = document.createElement("span");
    areaName.className = "line-area";
    areaName.textContent = area ? humanize(area.name) : "";
    head.append(areaName, document.createTextNode(line ? humanize(line.name) : ""));
    const grid = document.createElement("div");
    grid.className = "tiles";
    grid.append(...inLine.map((m) => tile(m.node)));
    section.append(head, grid);
    sections.push(section);
  }
  $("floor").replaceChildren(...sections);
  const lines = new Set(machines.map((m) => m.line?.path)).size;
  $("overview-sub").textContent = t("overview.summary", { machines: machines.length, lines });
}

function tile(node) {
  const id = node.name;
  const a = document.createElement("a");
  a.className = "tile";
  a.href = `${base}/machines/${encodeURIComponent(id)}`;
  a.dataset.equipment = id;
  a.dataset.path = node.path;
  const hasState = (node.tags || []).includes("state");
  a.dataset.state = hasState ? "unknown" : "none";
  a.setAttribute("aria-label", t("overview.open", { name: id }));
  a.innerHTML = `
    <span class="tile-head">
      <span class="tile-name"></span>
      <span class="tile-alarms" hidden></span>
    </span>
    <span class="tile-desc"></span>
    <span class="tile-foot">
      <span class="tile-state"><span class="state-dot"></span><span class="tile-state-label"></span></span>
      <span class="tile-oee"><span class="tile-oee-label"></span><span class="tile-oee-value">–</span></span>
    </span>`;
  a.querySelector(".tile-name").textContent = humanize(id);
  a.querySelector(".tile-desc").textContent = node.metadata?.description || node.template || "";
  a.querySelector(".tile-state-label").textContent = hasState
    ? t("state.unknown")
    : t("overview.noState");
  a.querySelector(".tile-oee-label").textContent = t("overview.oee");
  a.querySelector(".tile-alarms").title = t("overview.alarmsTitle");
  tiles.set(id, { tile: a, path: node.path, stateTag: hasState ? `${node.path}/state` : null });
  return a;
}

function paintState(path) {
  if (!path.endsWith("/state")) return;
  for (const [id, entry] of tiles) {
    if (entry.stateTag !== path) continue;
    const value = store.values.get(path)?.value;
    const key = stateKey(value);
    entry.tile.dataset.state = key;
    entry.tile.querySelector(".tile-state-label").textContent = stateText(value);
    const dot = document.querySelector(`.tree-label .state-dot[data-equipment="${CSS.escape(id)}"]`);
    if (dot) dot.dataset.state = key;
  }
}

function setScope(path) {
  scope = path;
  // A line stays when it is in the chosen asset or holds it (a cell); tiles when in it.
  for (const section of document.querySelectorAll("#floor .line")) {
    const p = section.dataset.path;
    section.hidden = !(within(p, scope) || within(scope, p));
  }
  for (const { tile: el, path: p } of tiles.values()) el.hidden = !within(p, scope);
  for (const label of document.querySelectorAll(".tree-label[data-scope]")) {
    label.setAttribute("aria-pressed", String(label.dataset.scope === scope));
  }
}

/** OEE of the current shift per machine; machines without OEE show "no OEE". */
async function refreshOee() {
  const now = dataNow(store);
  let oeeMachines;
  try {
    const all = await api.get("/api/v1/oee", {
      group: "none",
      start: new Date(now - 3600e3).toISOString(),
      end: new Date(now).toISOString(),
    });
    oeeMachines = new Set(all.equipment || []);
  } catch {
    oeeMachines = new Set(); // a server without analytics: no OEE anywhere
  }
  await Promise.all(
    [...tiles].map(async ([id, entry]) => {
      const value = entry.tile.querySelector(".tile-oee-value");
      if (!oeeMachines.has(id)) {
        entry.tile.dataset.oee = "none";
        value.textContent = t("overview.noOee");
        return;
      }
      try {
        const { row } = await shiftOee(api, id, now);
        const oee = row?.oee ?? null;
        entry.tile.dataset.oee = oee === null ? "null" : String(oee);
        value.textContent = formatShare(oee);
        const oeeBox = entry.tile.querySelector(".tile-oee");
        oeeBox.title = row?.shift ? t("overview.oeeTitle", { shift: row.shift }) : "";
        oeeBox.dataset.level = oee === null ? "" : oee >= 0.85 ? "good" : oee >= 0.6 ? "fair" : "poor";
      } catch {
        // kept as it was; the next refresh tries again
      }
    }),
  );
}

/** Standing alarms per machine: counted by the alarm's tag path. */
async function refreshAlarms() {
  let alarms;
  try {
    alarms = await api.alarms();
  } catch {
    return; // a server without an alarm engine, or away: no badges
  }
  for (const entry of tiles.values()) {
    const n = alarms.filter((a) => (a.tag || "").startsWith(entry.path + "/")).length;
    const badge = entry.tile.querySelector(".tile-alarms");
    entry.tile.dataset.alarms = String(n);
    badge.hidden = n === 0;
    badge.textContent = t("overview.alarms", { n });
  }
}
