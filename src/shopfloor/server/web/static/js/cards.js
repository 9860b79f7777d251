// One card per machine: its state as a colour and a label, its live values with units and
// quality. Only changed values touch the DOM; a changed value flashes briefly.

import { groupByAsset, within } from "./assets.js";
import {
  QUALITY,
  formatTime,
  formatValue,
  humanize,
  qualityHex,
  qualityOf,
  rangeFraction,
  stateKey,
  stateLabel,
  unitLabel,
} from "./format.js";
import { t } from "./i18n.js";

const STATE_TAG = "state";

export class CardsView {
  constructor(container, store, { onTagClick, emptyEl, countEl }) {
    this.container = container;
    this.store = store;
    this.onTagClick = onTagClick;
    this.emptyEl = emptyEl;
    this.countEl = countEl;
    this.scope = "";
    this.cells = new Map(); // tag path -> {row, value, unit, badge, fill, meta}
    this.states = new Map(); // state tag path -> {card, badge, meta}
    this.footers = new Map(); // asset -> {el, paths}
    this.selected = null;
    container.addEventListener("click", (event) => {
      const target = event.target.closest("[data-path]");
      if (target && !target.disabled && container.contains(target)) {
        this.onTagClick(target.dataset.path);
      }
    });
  }

  /** Build the cards of every machine under `scope` ("" for the whole plant). */
  render(scope = this.scope) {
    this.scope = scope;
    this.cells.clear();
    this.states.clear();
    this.footers.clear();
    const groups = groupByAsset(this.store.tags.values());
    const cards = [];
    for (const [asset, tags] of groups) {
      if (!within(asset, scope) && !tags.some((tag) => within(tag.path, scope))) continue;
      cards.push(this.card(asset, tags));
    }
    this.container.replaceChildren(...cards);
    this.countEl.textContent =
      cards.length === 1 ? t("scope.countOne") : t("scope.count", { n: cards.length });
    this.showEmpty(cards.length ? null : t("cards.none"));
    this.update(this.store.values.keys(), { flash: false });
    this.select(this.selected);
  }

  showEmpty(message) {
    this.emptyEl.hidden = !message;
    this.emptyEl.textContent = message || "";
  }

  card(asset, tags) {
    const card = document.createElement("article");
    card.className = "card";
    card.dataset.asset = asset;
    card.dataset.state = "none";

    const head = document.createElement("header");
    head.className = "card-head";
    const title = document.createElement("div");
    title.className = "card-title";
    const h3 = document.createElement("h3");
    const segments = asset.split("/");
    h3.textContent = humanize(segments.at(-1) || asset);
    h3.title = asset;
    const where = document.createElement("span");
    where.className = "card-path";
    where.textContent = segments.slice(-3, -1).map(humanize).join(" › ");
    title.append(h3, where);
    head.append(title);

    const list = document.createElement("ul");
    list.className = "card-rows";
    for (const meta of tags) {
      if (meta.name === STATE_TAG || meta.path.endsWith("/" + STATE_TAG)) {
        const badge = document.createElement("button");
        badge.type = "button";
        badge.className = "state-badge";
        badge.dataset.path = meta.path;
        badge.title = t("cards.stateTitle");
        badge.textContent = t("state.unknown");
        head.append(badge);
        card.dataset.state = "unknown";
        this.states.set(meta.path, { card, badge, meta });
        continue;
      }
      list.append(this.row(meta));
    }
    const foot = document.createElement("footer");
    foot.className = "card-foot";
    this.footers.set(asset, { el: foot, paths: tags.map((tag) => tag.path) });
    card.append(head, list, foot);
    return card;
  }

  row(meta) {
    const li = document.createElement("li");
    // Text tags have no trend, so their row is not a button.
    const isText = meta.data_type === "string";
    const row = document.createElement(isText ? "div" : "button");
    if (!isText) row.type = "button";
    row.className = "tag-row";
    if (!isText) row.dataset.path = meta.path;
    row.dataset.tagPath = meta.path;
    row.dataset.unit = meta.unit || "";
    row.dataset.quality = QUALITY.GOOD;
    row.title = meta.description ? `${meta.path}\n${meta.description}` : meta.path;

    const name = document.createElement("span");
    name.className = "tag-name";
    name.textContent = humanize(meta.name ?? meta.path.split("/").at(-1));
    const reading = document.createElement("span");
    reading.className = "tag-reading";
    const value = document.createElement("span");
    value.className = isLabel(meta) ? "tag-value is-label" : "tag-value";
    value.textContent = t("value.none");
    const unit = document.createElement("span");
    unit.className = "tag-unit";
    unit.textContent = unitLabel(meta.unit);
    const badge = document.createElement("span");
    badge.className = "q-badge";
    badge.hidden = true;
    reading.append(badge, value, unit);
    row.append(name, reading);

    let fill = null;
    // A bar shows where a measurement sits in its range; an enumeration has no "where".
    if (!isLabel(meta) && rangeFraction(meta, meta.eng_low) !== null) {
      const bar = document.createElement("span");
      bar.className = "tag-bar";
      bar.setAttribute("aria-hidden", "true");
      fill = document.createElement("span");
      fill.className = "tag-bar-fill";
      bar.append(fill);
      row.append(bar);
    }
    li.append(row);
    this.cells.set(meta.path, { row, value, badge, fill, meta });
    return li;
  }

  /** Show the latest points of `paths`; flash the values that changed. */
  update(paths, { flash = true } = {}) {
    const touchedAssets = new Set();
    this.toFlash = flash ? [] : null;
    for (const path of paths) {
      const point = this.store.values.get(path);
      if (!point) continue;
      const cell = this.cells.get(path);
      if (cell) {
        this.showValue(cell, point);
        touchedAssets.add(cell.row.closest(".card")?.dataset.asset);
        continue;
      }
      const state = this.states.get(path);
      if (state) {
        this.showState(state, point);
        touchedAssets.add(state.card.dataset.asset);
      }
    }
    for (const asset of touchedAssets) this.showUpdated(asset);
    if (this.toFlash?.length) restartAnimations(this.toFlash);
    this.toFlash = null;
  }

  showValue(cell, point) {
    const text = formatValue(cell.meta, point);
    const quality = qualityOf(point.quality);
    if (cell.value.textContent !== text) {
      cell.value.textContent = text;
      this.toFlash?.push([cell.value, "flash"]);
    }
    if (cell.row.dataset.quality !== quality) {
      cell.row.dataset.quality = quality;
      cell.badge.hidden = quality === QUALITY.GOOD;
      cell.badge.textContent =
        quality === QUALITY.BAD ? t("quality.bad") : quality === QUALITY.UNCERTAIN ? "?" : "";
    }
    if (quality !== QUALITY.GOOD) {
      const key = quality === QUALITY.BAD ? "quality.badTitle" : "quality.uncertainTitle";
      cell.badge.title = t(key, { code: qualityHex(point.quality) });
    }
    if (cell.fill) {
      const fraction = rangeFraction(cell.meta, point.value);
      // A custom property set through the CSSOM: allowed under a strict style-src CSP.
      cell.fill.style.setProperty("--fill", fraction === null ? "0" : fraction.toFixed(4));
    }
  }

  showState(state, point) {
    const bad = qualityOf(point.quality) === QUALITY.BAD;
    const key = bad ? "unknown" : stateKey(point.value);
    const label = bad ? t("state.unknown") : stateLabel(state.meta, point.value);
    if (state.card.dataset.state !== key || state.badge.textContent !== label) {
      state.card.dataset.state = key;
      state.badge.dataset.state = key;
      state.badge.textContent = label;
      this.toFlash?.push([state.card, "state-changed"]);
    }
  }

  showUpdated(asset) {
    const footer = this.footers.get(asset);
    if (!footer) return;
    let latest = -Infinity;
    for (const path of footer.paths) {
      const ts = this.store.values.get(path)?.ts;
      if (ts > latest) latest = ts;
    }
    if (Number.isFinite(latest)) footer.el.textContent = t("cards.updated", { time: formatTime(latest) });
  }

  /** Mark the tag whose trend is open. */
  select(path) {
    this.selected = path;
    for (const el of this.container.querySelectorAll("[aria-pressed]")) {
      el.removeAttribute("aria-pressed");
    }
    if (!path) return;
    const el = this.cells.get(path)?.row ?? this.states.get(path)?.badge;
    if (el) el.setAttribute("aria-pressed", "true");
  }
}

/** Values shown as words (enumerations, booleans) are set smaller than numbers. */
function isLabel(meta) {
  return meta.data_type === "bool" || Boolean(meta.states && Object.keys(meta.states).length);
}

/** Restart a CSS animation on many elements with a single reflow. */
function restartAnimations(pairs) {
  for (const [el, className] of pairs) el.classList.remove(className);
  void document.body.offsetWidth; // one reflow, so re-adding the classes restarts them
  for (const [el, className] of pairs) el.classList.add(className);
}
