// Entry module: wires the API client, the live socket, the store and the views together.
// The URL's hash keeps the chosen asset, trended tag and range, so a view can be bookmarked.

import { ApiClient } from "./api.js";
import { nameOf } from "./assets.js";
import { CardsView } from "./cards.js";
import { AlarmsView } from "./alarms.js";
import { ConnectionsView } from "./connections.js";
import { humanize } from "./format.js";
import { applyI18n, initLocale, t } from "./i18n.js";
import { LiveSocket } from "./live.js";
import { StatusView } from "./status.js";
import { Store } from "./store.js";
import { AssetTree } from "./tree.js";
import { TrendPanel } from "./trend.js";

const $ = (id) => document.getElementById(id);

initLocale();
applyI18n(document);

const api = new ApiClient(document.body.dataset.base || "");
const store = new Store();
const view = readHash();

const status = new StatusView(
  {
    conn: $("conn"),
    connLabel: $("conn-label"),
    rate: $("stat-rate"),
    stored: $("stat-stored"),
    tags: $("stat-tags"),
    version: $("foot-version"),
    pending: $("foot-pending"),
    updated: $("foot-updated"),
  },
  api,
);

const connections = new ConnectionsView(
  {
    button: $("connectors-btn"),
    count: $("connectors-count"),
    panel: $("connectors-panel"),
    table: $("connectors-table"),
    sub: $("connectors-sub"),
    closeButton: $("connectors-close"),
  },
  api,
);

const alarms = new AlarmsView(
  {
    button: $("alarms-btn"),
    count: $("alarms-count"),
    panel: $("alarms-panel"),
    table: $("alarms-table"),
    sub: $("alarms-sub"),
    closeButton: $("alarms-close"),
    operator: $("alarms-operator"),
  },
  api,
);

const cards = new CardsView($("cards"), store, {
  onTagClick: (path) => trend.open(path),
  emptyEl: $("empty"),
  countEl: $("scope-count"),
});

const tree = new AssetTree($("tree"), $("tree-filter"), {
  onSelectAsset: (path) => {
    setScope(path);
    closeNavOnNarrow();
  },
  onSelectTag: (path) => {
    trend.open(path);
    closeNavOnNarrow();
  },
});

const trend = new TrendPanel(
  {
    panel: $("trend"),
    chart: $("trend-chart"),
    title: $("trend-title"),
    sub: $("trend-sub"),
    message: $("trend-msg"),
    rangeGroup: $("range"),
    closeButton: $("trend-close"),
  },
  {
    api,
    store,
    onChange: ({ path, rangeKey }) => {
      view.tag = path;
      view.range = rangeKey;
      cards.select(path);
      tree.markTag(path);
      writeHash();
    },
  },
);

// Values of tags that the list does not have yet mean new tags: fetch the list again,
// at most every 10 s.
const tagsReloader = {
  timer: null,
  lastMs: 0,
  soon() {
    if (this.timer || !store.tags.size) return;
    const wait = Math.max(1000, 10000 - (Date.now() - this.lastMs));
    this.timer = setTimeout(async () => {
      this.lastMs = Date.now();
      try {
        store.setTags(await api.tags());
      } catch {
        // the next unknown value tries again
      }
      this.timer = null;
    }, wait);
  },
};

const live = new LiveSocket(api.liveUrl());
live.addEventListener("status", (event) => status.showConnection(event.detail));
live.addEventListener("snapshot", (event) => store.apply(event.detail.values));
live.addEventListener("values", (event) => store.apply(event.detail.values));

store.addEventListener("values", (event) => {
  const { changed, unknown } = event.detail;
  cards.update(changed);
  tree.updateStates(store, changed);
  status.showUpdated(store.lastDataTs);
  if (unknown.length) tagsReloader.soon();
});

store.addEventListener("tags", () => {
  tree.render(store.tags.values());
  cards.render(view.asset);
  tree.setActive(view.asset);
  tree.refreshAllStates(store);
  if (view.tag && store.tags.has(view.tag) && !trend.isOpen) trend.open(view.tag, { rangeKey: view.range });
});

renderLegend();
setupNavToggle();
setScopeTitle(view.asset);
cards.showEmpty(t("cards.loading"));
status.start();
connections.start();
alarms.start();
live.start();
// The navigation's "Alarms" link (/#alarms) opens the standing alarms here, once the first
// poll has shown the indicator (a server without an alarm engine never shows it).
if (view.alarms) openAlarmsSoon();
window.addEventListener("hashchange", () => {
  if (readHash().alarms) openAlarmsSoon();
});

function openAlarmsSoon(attempt = 0) {
  if (!$("alarms-btn").hidden) {
    alarms.open();
    writeHash();
  } else if (attempt < 40) {
    setTimeout(() => openAlarmsSoon(attempt + 1), 250);
  }
}
loadTags();

function setScope(path) {
  view.asset = path;
  tree.setActive(path);
  cards.render(path);
  setScopeTitle(path);
  writeHash();
}

function setScopeTitle(path) {
  $("scope-title").textContent = path ? humanize(nameOf(path)) : t("scope.all");
  $("scope-title").title = path;
}

/** Load the tag list, retrying with backoff while the server is starting or away. */
async function loadTags(attempt = 0) {
  try {
    store.setTags(await api.tags());
    // The socket's snapshot brings the values too; this makes the first paint not wait for it.
    store.apply(await api.latest());
  } catch (err) {
    if (!store.tags.size) cards.showEmpty(t("cards.loadFailed", { error: err.message }));
    setTimeout(() => loadTags(attempt + 1), Math.min(10000, 1000 * 2 ** attempt));
  }
}

function renderLegend() {
  const items = ["running", "idle", "setup", "down", "unknown"].map((key) => {
    const li = document.createElement("li");
    li.dataset.state = key;
    li.textContent = t(`legend.${key}`);
    return li;
  });
  $("legend").replaceChildren(...items);
}

function setupNavToggle() {
  const button = $("nav-toggle");
  button.addEventListener("click", () => {
    const open = document.body.classList.toggle("nav-open");
    button.setAttribute("aria-expanded", String(open));
  });
}

function closeNavOnNarrow() {
  if (document.body.classList.contains("nav-open")) {
    document.body.classList.remove("nav-open");
    $("nav-toggle").setAttribute("aria-expanded", "false");
  }
}

function readHash() {
  const params = new URLSearchParams(location.hash.slice(1));
  return {
    asset: params.get("asset") || "",
    tag: params.get("tag"),
    range: params.get("range"),
    alarms: params.has("alarms"),
  };
}

function writeHash() {
  const params = new URLSearchParams();
  if (view.asset) params.set("asset", view.asset);
  if (view.tag) params.set("tag", view.tag);
  if (view.tag && view.range && view.range !== "15m") params.set("range", view.range);
  const hash = params.toString();
  history.replaceState(null, "", hash ? `#${hash}` : location.pathname + location.search);
}
